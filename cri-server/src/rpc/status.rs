//! Status: whether the runtime and the pod network are ready, as the kubelet sees them.

use super::Cri;
use berth_proto::{
    RuntimeCondition, RuntimeFeatures, RuntimeHandler, RuntimeHandlerFeatures, RuntimeStatus,
    StatusRequest, StatusResponse,
};
use std::collections::HashMap;

/// Condition types the kubelet reads (k8s.io/cri-api).
pub const RUNTIME_READY: &str = "RuntimeReady";
pub const NETWORK_READY: &str = "NetworkReady";

pub async fn status(cri: &Cri, req: StatusRequest) -> StatusResponse {
    let runtime = match cri.inner.layout.check_writable() {
        Ok(()) => condition(RUNTIME_READY, None),
        Err(message) => condition(RUNTIME_READY, Some(("RuntimeStateNotWritable", message))),
    };
    let network = match cri.inner.sandboxes.network_readiness().await {
        berth_network::Readiness::Ready => condition(NETWORK_READY, None),
        berth_network::Readiness::NotReady { reason, message } => {
            condition(NETWORK_READY, Some((&reason, message)))
        }
    };
    let info = if req.verbose { verbose_info(cri) } else { HashMap::new() };
    StatusResponse {
        status: Some(RuntimeStatus { conditions: vec![runtime, network] }),
        info,
        runtime_handlers: cri
            .inner
            .containers
            .runtime_handlers()
            .into_iter()
            .map(|name| RuntimeHandler {
                features: Some(RuntimeHandlerFeatures {
                    // The native executor does `rro` itself; an OCI runtime may not.
                    recursive_read_only_mounts: name.is_empty(),
                    // Pod user namespaces with idmapped rootfs: the native executor only.
                    user_namespaces: name.is_empty(),
                }),
                name,
            })
            .collect(),
        features: Some(RuntimeFeatures {
            supplemental_groups_policy: true,
            // A pod user namespace needs the pod's own network namespace (refused at
            // RunPodSandbox otherwise).
            user_namespaces_host_network: false,
        }),
    }
}

fn condition(kind: &str, failure: Option<(&str, String)>) -> RuntimeCondition {
    match failure {
        None => RuntimeCondition { r#type: kind.into(), status: true, ..Default::default() },
        Some((reason, message)) => {
            RuntimeCondition { r#type: kind.into(), status: false, reason: reason.into(), message }
        }
    }
}

/// `crictl info` shows these: the effective config, where it came from, and what the
/// kubelet told us at run time. Values are JSON, as the CRI asks.
fn verbose_info(cri: &Cri) -> HashMap<String, String> {
    let inner = &cri.inner;
    let config = serde_json::to_string(&inner.config).unwrap_or_else(|e| format!("\"{e}\""));
    let runtime = serde_json::json!({
        "configFile": inner.config_path.as_ref().map(|p| p.display().to_string()),
        "podCIDR": *inner.pod_cidr.lock().unwrap_or_else(|p| p.into_inner()),
        "version": env!("CARGO_PKG_VERSION"),
    });
    let network = inner.sandboxes.network_info().to_string();
    HashMap::from([
        ("config".to_string(), config),
        ("runtime".to_string(), runtime.to_string()),
        ("network".to_string(), network),
    ])
}
