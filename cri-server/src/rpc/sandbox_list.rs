//! ListPodSandbox with its filters (id or unique prefix, state, label selector).

use super::sandbox_status::{metadata, state};
use super::{errors, Cri};
use berth_proto::{ListPodSandboxRequest, ListPodSandboxResponse, PodSandbox, PodSandboxState};
use berth_runtime::sandbox::{Filter, SandboxState};
use tonic::Status;

pub async fn list_pod_sandbox(
    cri: &Cri,
    req: ListPodSandboxRequest,
) -> Result<ListPodSandboxResponse, Status> {
    let filter = match req.filter {
        None => Filter::default(),
        Some(f) => Filter {
            id: Some(f.id).filter(|id| !id.is_empty()),
            state: match f.state.map(|s| PodSandboxState::try_from(s.state)) {
                None => None,
                Some(Ok(PodSandboxState::SandboxReady)) => Some(SandboxState::Ready),
                Some(Ok(PodSandboxState::SandboxNotready)) => Some(SandboxState::NotReady),
                Some(Err(_)) => {
                    return Err(Status::invalid_argument("filter.state: unknown pod state"))
                }
            },
            labels: f.label_selector.into_iter().collect(),
        },
    };
    let records = cri.inner.sandboxes.list(&filter).map_err(errors::runtime)?;
    let items = records
        .into_iter()
        .map(|r| PodSandbox {
            id: r.id.clone(),
            metadata: Some(metadata(&r)),
            state: state(r.state),
            created_at: r.created_at,
            labels: r.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            annotations: r.annotations.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            runtime_handler: r.runtime_handler.clone(),
        })
        .collect();
    Ok(ListPodSandboxResponse { items })
}
