//! UpdatePodSandboxResources: in-place pod resize of the pod cgroup.

use super::sandbox_run::resources;
use super::{errors, Cri};
use crate::rpc_span::record_pod;
use berth_proto::{UpdatePodSandboxResourcesRequest, UpdatePodSandboxResourcesResponse};
use tonic::Status;

/// The kubelet resizes the pod cgroup itself and then tells the runtime; berth applies the
/// same limits to the pod cgroup (a no-op when they match) and records them, so a pod
/// whose cgroup berth made itself (no `cgroup_parent`) is resized too. `resources` are
/// the pod's own limits; without them the `overhead` alone sizes the pod, as at
/// RunPodSandbox.
pub async fn update_pod_sandbox_resources(
    cri: &Cri,
    req: UpdatePodSandboxResourcesRequest,
) -> Result<UpdatePodSandboxResourcesResponse, Status> {
    if req.pod_sandbox_id.is_empty() {
        return Err(errors::missing("pod_sandbox_id"));
    }
    record_pod(&req.pod_sandbox_id);
    let (limits, field) = match (&req.resources, &req.overhead) {
        (Some(r), _) => (r, "resources"),
        (None, Some(o)) => (o, "overhead"),
        (None, None) => return Ok(UpdatePodSandboxResourcesResponse {}),
    };
    cri.inner
        .sandboxes
        .update_resources(&req.pod_sandbox_id, resources(limits), field)
        .await
        .map_err(errors::runtime)?;
    Ok(UpdatePodSandboxResourcesResponse {})
}
