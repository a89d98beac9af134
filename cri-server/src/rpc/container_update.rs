//! UpdateContainerResources: new cgroup limits for a created or running container.

use super::{container_spec, errors, Cri};
use crate::rpc_span::record_container;
use berth_proto::{UpdateContainerResourcesRequest, UpdateContainerResourcesResponse};
use tonic::Status;

pub async fn update_container_resources(
    cri: &Cri,
    req: UpdateContainerResourcesRequest,
) -> Result<UpdateContainerResourcesResponse, Status> {
    if req.container_id.is_empty() {
        return Err(errors::missing("container_id"));
    }
    record_container(&req.container_id);
    // Windows resources mean nothing here; a request without Linux ones changes nothing.
    let Some(linux) = req.linux else { return Ok(UpdateContainerResourcesResponse {}) };
    cri.inner
        .containers
        .update_resources(&req.container_id, &container_spec::resources(&linux))
        .await
        .map_err(errors::runtime)?;
    Ok(UpdateContainerResourcesResponse {})
}
