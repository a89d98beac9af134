//! RemovePodSandbox: idempotent; stops the pod first if needed.

use super::{errors, Cri};
use crate::rpc_span::record_pod;
use berth_proto::{RemovePodSandboxRequest, RemovePodSandboxResponse};
use tonic::Status;

pub async fn remove_pod_sandbox(
    cri: &Cri,
    req: RemovePodSandboxRequest,
) -> Result<RemovePodSandboxResponse, Status> {
    if req.pod_sandbox_id.is_empty() {
        return Err(errors::missing("pod_sandbox_id"));
    }
    record_pod(&req.pod_sandbox_id);
    // Containers (and the pod's shim) go first, so their cgroups and mounts are gone
    // before the pod's own.
    if let Ok(pod) = cri.inner.sandboxes.status(&req.pod_sandbox_id) {
        cri.inner
            .containers
            .remove_pod(&cri.inner.images, &pod.id)
            .await
            .map_err(errors::runtime)?;
    }
    cri.inner.sandboxes.remove(&req.pod_sandbox_id).await.map_err(errors::runtime)?;
    Ok(RemovePodSandboxResponse {})
}
