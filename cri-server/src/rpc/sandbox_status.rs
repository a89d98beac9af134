//! PodSandboxStatus.

use super::sandbox_run::{id_map_to_cri, ns_mode_to_cri};
use super::{container_status, errors, Cri};
use crate::rpc_span::record_pod;
use berth_proto::{
    ContainerStatus, ContainerStatusRequest, LinuxPodSandboxStatus, Namespace, NamespaceMode,
    NamespaceOption, PodIp, PodSandboxMetadata, PodSandboxNetworkStatus, PodSandboxState,
    PodSandboxStatus, PodSandboxStatusRequest, PodSandboxStatusResponse, UserNamespace,
};
use berth_runtime::sandbox::{SandboxRecord, SandboxState};
use std::collections::HashMap;
use tonic::Status;

pub async fn pod_sandbox_status(
    cri: &Cri,
    req: PodSandboxStatusRequest,
) -> Result<PodSandboxStatusResponse, Status> {
    if req.pod_sandbox_id.is_empty() {
        return Err(errors::missing("pod_sandbox_id"));
    }
    let sandboxes = &cri.inner.sandboxes;
    let rec = sandboxes.status(&req.pod_sandbox_id).map_err(errors::runtime)?;
    record_pod(&rec.id);
    let info = if req.verbose {
        HashMap::from([("info".to_string(), sandboxes.verbose_info(&rec))])
    } else {
        HashMap::new()
    };
    // The evented PLEG reads the pod's containers from here, at this time.
    let timestamp = berth_runtime::clock::now_ns();
    let containers_statuses = containers_statuses(cri, &rec.id).await;
    Ok(PodSandboxStatusResponse { status: Some(to_cri(rec)), info, containers_statuses, timestamp })
}

/// The status of each container of the pod.
pub async fn containers_statuses(cri: &Cri, pod_id: &str) -> Vec<ContainerStatus> {
    let mut out = Vec::new();
    let all = cri.inner.containers.list().unwrap_or_default();
    for c in all.iter().filter(|c| c.pod_id == pod_id) {
        let req = ContainerStatusRequest { container_id: c.id.clone(), verbose: false };
        if let Ok(s) = container_status::container_status(cri, req).await {
            out.extend(s.status);
        }
    }
    out
}

pub fn metadata(rec: &SandboxRecord) -> PodSandboxMetadata {
    PodSandboxMetadata {
        name: rec.metadata.name.clone(),
        uid: rec.metadata.uid.clone(),
        namespace: rec.metadata.namespace.clone(),
        attempt: rec.metadata.attempt,
    }
}

pub fn state(s: SandboxState) -> i32 {
    match s {
        SandboxState::Ready => PodSandboxState::SandboxReady as i32,
        SandboxState::NotReady | SandboxState::Creating => PodSandboxState::SandboxNotready as i32,
    }
}

/// The pod's primary address and the others (CNI mode may give several, IPv6 too).
fn network_status(rec: &SandboxRecord) -> PodSandboxNetworkStatus {
    let mut ips: Vec<String> = rec.ips.iter().map(|ip| ip.to_string()).collect();
    if ips.is_empty() {
        ips.extend(rec.ip.map(|ip| ip.to_string()));
    }
    let mut ips = ips.into_iter();
    PodSandboxNetworkStatus {
        ip: ips.next().unwrap_or_default(),
        additional_ips: ips.map(|ip| PodIp { ip }).collect(),
    }
}

fn to_cri(rec: SandboxRecord) -> PodSandboxStatus {
    PodSandboxStatus {
        id: rec.id.clone(),
        metadata: Some(metadata(&rec)),
        state: state(rec.state),
        created_at: rec.created_at,
        network: Some(network_status(&rec)),
        linux: Some(LinuxPodSandboxStatus {
            namespaces: Some(Namespace {
                options: Some(NamespaceOption {
                    network: ns_mode_to_cri(rec.network),
                    pid: ns_mode_to_cri(rec.pid),
                    ipc: ns_mode_to_cri(rec.ipc),
                    target_id: String::new(),
                    userns_options: Some(match &rec.userns {
                        Some(u) => UserNamespace {
                            mode: NamespaceMode::Pod as i32,
                            uids: vec![id_map_to_cri(&u.uid)],
                            gids: vec![id_map_to_cri(&u.gid)],
                        },
                        None => {
                            UserNamespace { mode: NamespaceMode::Node as i32, ..Default::default() }
                        }
                    }),
                }),
            }),
        }),
        labels: rec.labels.into_iter().collect(),
        annotations: rec.annotations.into_iter().collect(),
        runtime_handler: rec.runtime_handler,
    }
}
