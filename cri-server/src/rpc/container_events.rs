//! GetContainerEvents: the lifecycle event stream behind the kubelet's evented PLEG.
//!
//! Each event carries the pod's status and its containers' statuses as they are when the
//! event is delivered. A subscriber that falls too far behind gets RESOURCE_EXHAUSTED
//! and its stream ends (it must resubscribe and relist); berthd stopping ends streams.

use super::{sandbox_status, Cri};
use berth_proto::{ContainerEventResponse, ContainerEventType, PodSandboxStatusRequest};
use berth_runtime::events::{ContainerEvent, EventKind, Subscription};
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;
use tonic::Status;

pub fn get_container_events(
    cri: &Cri,
) -> impl Stream<Item = Result<ContainerEventResponse, Status>> + Send + 'static {
    let sub = cri.inner.containers.events().subscribe();
    futures::stream::unfold(Some((sub, cri.clone())), |state| async move {
        let (mut sub, cri) = state?;
        match next(&mut sub).await? {
            Ok(event) => {
                let response = to_cri(&cri, event).await;
                Some((Ok(response), Some((sub, cri))))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

/// The next event; `None` when the stream should end quietly.
async fn next(sub: &mut Subscription) -> Option<Result<ContainerEvent, Status>> {
    let Subscription { events, closed } = sub;
    tokio::select! {
        r = events.recv() => match r {
            Ok(e) => Some(Ok(e)),
            Err(RecvError::Lagged(n)) => Some(Err(Status::resource_exhausted(format!(
                "container events: this subscriber fell {n} events behind and was dropped; \
                 subscribe again and relist"
            )))),
            Err(RecvError::Closed) => None,
        },
        _ = closed.wait_for(|c| *c) => None,
    }
}

fn kind(k: EventKind) -> ContainerEventType {
    match k {
        EventKind::Created => ContainerEventType::ContainerCreatedEvent,
        EventKind::Started => ContainerEventType::ContainerStartedEvent,
        EventKind::Stopped => ContainerEventType::ContainerStoppedEvent,
        EventKind::Deleted => ContainerEventType::ContainerDeletedEvent,
    }
}

async fn to_cri(cri: &Cri, e: ContainerEvent) -> ContainerEventResponse {
    let status = sandbox_status::pod_sandbox_status(
        cri,
        PodSandboxStatusRequest { pod_sandbox_id: e.pod_id.clone(), verbose: false },
    )
    .await
    .ok();
    let (pod_sandbox_status, containers_statuses) = match status {
        Some(s) => (s.status, s.containers_statuses),
        // The pod is gone: what is left of its containers.
        None => (None, sandbox_status::containers_statuses(cri, &e.pod_id).await),
    };
    ContainerEventResponse {
        container_id: e.container_id,
        container_event_type: kind(e.kind) as i32,
        created_at: e.created_at,
        pod_sandbox_status,
        containers_statuses,
    }
}
