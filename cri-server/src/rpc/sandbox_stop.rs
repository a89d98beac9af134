//! StopPodSandbox: idempotent; the pod's network is reclaimed and it becomes NOTREADY.

use super::{errors, Cri};
use crate::rpc_span::record_pod;
use berth_proto::{StopPodSandboxRequest, StopPodSandboxResponse};
use tonic::Status;

pub async fn stop_pod_sandbox(
    cri: &Cri,
    req: StopPodSandboxRequest,
) -> Result<StopPodSandboxResponse, Status> {
    if req.pod_sandbox_id.is_empty() {
        return Err(errors::missing("pod_sandbox_id"));
    }
    record_pod(&req.pod_sandbox_id);
    // The pod's containers are stopped first: the CRI says a stopped pod runs nothing.
    if let Ok(pod) = cri.inner.sandboxes.status(&req.pod_sandbox_id) {
        cri.inner.containers.stop_pod(&pod.id).await.map_err(errors::runtime)?;
    }
    cri.inner.sandboxes.stop(&req.pod_sandbox_id).await.map_err(errors::runtime)?;
    Ok(StopPodSandboxResponse {})
}
