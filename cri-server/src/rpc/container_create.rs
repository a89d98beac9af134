//! CreateContainer.

use super::{errors, Cri};
use crate::rpc_span::{record_container, record_pod};
use berth_proto::{CreateContainerRequest, CreateContainerResponse};
use tonic::Status;

pub async fn create_container(
    cri: &Cri,
    req: CreateContainerRequest,
) -> Result<CreateContainerResponse, Status> {
    if req.pod_sandbox_id.is_empty() {
        return Err(errors::missing("pod_sandbox_id"));
    }
    record_pod(&req.pod_sandbox_id);
    let config = req.config.ok_or_else(|| errors::missing("config"))?;
    let pod = cri.inner.sandboxes.status(&req.pod_sandbox_id).map_err(errors::sandbox)?;
    let id = cri
        .inner
        .containers
        .create(&cri.inner.images, &pod, config)
        .await
        .map_err(errors::container)?;
    record_container(&id);
    Ok(CreateContainerResponse { container_id: id })
}
