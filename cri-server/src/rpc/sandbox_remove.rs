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
    cri.inner.sandboxes.remove(&req.pod_sandbox_id).await.map_err(errors::sandbox)?;
    Ok(RemovePodSandboxResponse {})
}
