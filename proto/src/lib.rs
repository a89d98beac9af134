//! The CRI `runtime.v1` protocol as berth uses it.
//!
//! The types, the tonic server traits and the clients are generated at build time from the
//! upstream `api.proto` of Kubernetes 1.36 (`cri-api/`, see its README); nothing here is
//! hand-written protobuf. This crate only adds the unix-socket plumbing every client of
//! berthd needs, and the compiled descriptors so tests can walk the request surface.

#[allow(clippy::all, missing_docs)]
mod generated {
    tonic::include_proto!("runtime.v1");
}
pub use generated::*;

/// The CRI `api.proto` compiled to a `google.protobuf.FileDescriptorSet`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("cri_descriptor");

/// The CRI release the wire types come from (`k8s.io/cri-api`).
pub const CRI_API_RELEASE: &str = "v0.36.3";

pub use image_service_client::ImageServiceClient;
pub use image_service_server::{ImageService, ImageServiceServer};
pub use runtime_service_client::RuntimeServiceClient;
pub use runtime_service_server::{RuntimeService, RuntimeServiceServer};

use std::path::{Path, PathBuf};
use tonic::transport::{Channel, Endpoint, Uri};

/// Opens a gRPC channel to a CRI endpoint on a unix socket, the way the kubelet does.
///
/// Accepts either a bare path or a `unix://` URL.
pub async fn connect_unix(endpoint: impl AsRef<str>) -> Result<Channel, tonic::transport::Error> {
    let path = socket_path(endpoint.as_ref());
    // The authority is ignored for unix sockets; tonic only needs a syntactically valid URI.
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
}

/// The filesystem path of a `unix://` endpoint (or of a bare path).
pub fn socket_path(endpoint: &str) -> PathBuf {
    Path::new(endpoint.strip_prefix("unix://").unwrap_or(endpoint)).to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_forms() {
        assert_eq!(
            socket_path("unix:///run/berth/berth.sock"),
            PathBuf::from("/run/berth/berth.sock")
        );
        assert_eq!(socket_path("/tmp/x.sock"), PathBuf::from("/tmp/x.sock"));
    }
}
