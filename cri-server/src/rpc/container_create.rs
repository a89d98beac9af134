//! CreateContainer: the CRI config becomes a domain `ContainerSpec`; the domain checks it
//! against the pod, the image and the host, and creates the container (or nothing).

use super::{container_spec, errors, Cri};
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
    let config = container_spec::to_spec(config).map_err(Status::invalid_argument)?;
    berth_runtime::selinux::check_container(&config, berth_runtime::selinux::enabled())
        .map_err(Status::invalid_argument)?;
    let pod = cri.inner.sandboxes.status(&req.pod_sandbox_id).map_err(errors::runtime)?;
    // On a task of its own: a kubelet that gives up (its deadline passes, the stream is
    // reset) must not cut a create off half-way; its retry then finds the finished one.
    let task = {
        let cri = cri.clone();
        let create =
            async move { cri.inner.containers.create(&cri.inner.images, &pod, config).await };
        tokio::spawn(tracing::Instrument::in_current_span(create))
    };
    let id = task
        .await
        .map_err(|e| Status::internal(format!("container create task: {e}")))?
        .map_err(errors::runtime)?;
    record_container(&id);
    Ok(CreateContainerResponse { container_id: id })
}
