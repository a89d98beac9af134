//! CheckpointContainer: the kubelet's forensic checkpoint of a running container, an
//! archive at the requested location (runtime::container::checkpoint says what is in it).

use super::{errors, Cri};
use crate::rpc_span::record_container;
use berth_proto::{CheckpointContainerRequest, CheckpointContainerResponse};
use std::time::Duration;
use tonic::Status;

pub async fn checkpoint_container(
    cri: &Cri,
    req: CheckpointContainerRequest,
) -> Result<CheckpointContainerResponse, Status> {
    if req.container_id.is_empty() {
        return Err(errors::missing("container_id"));
    }
    if req.timeout < 0 {
        return Err(Status::invalid_argument(format!(
            "timeout: {} seconds; want 0 (the default) or more",
            req.timeout
        )));
    }
    record_container(&req.container_id);
    let timeout = Duration::from_secs(req.timeout as u64);
    cri.inner
        .containers
        .checkpoint(&cri.inner.images, &req.container_id, &req.location, timeout)
        .await
        .map_err(errors::runtime)?;
    Ok(CheckpointContainerResponse {})
}
