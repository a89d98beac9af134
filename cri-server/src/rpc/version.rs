//! Version: who is serving CRI.

use berth_proto::{VersionRequest, VersionResponse};

/// The CRI API version berth speaks.
pub const RUNTIME_API_VERSION: &str = "v1";

pub fn version(_req: VersionRequest) -> VersionResponse {
    VersionResponse {
        // The version of the kubelet-runtime API itself; every CRI runtime reports 0.1.0.
        version: "0.1.0".into(),
        runtime_name: "berth".into(),
        runtime_version: env!("CARGO_PKG_VERSION").into(),
        runtime_api_version: RUNTIME_API_VERSION.into(),
    }
}
