//! ContainerStatus and ListContainers.

use super::container_lifecycle::{cri_signal, effective_stop_signal};
use super::{errors, Cri};
use crate::rpc_span::record_container;
use berth_proto::{
    Container, ContainerMetadata, ContainerState, ContainerStatus, ContainerStatusRequest,
    ContainerStatusResponse, ImageSpec, ListContainersRequest, ListContainersResponse, Mount,
};
use berth_runtime::container::record::ContainerRecord;
use berth_runtime::container::Observed;
use berth_runtime::shim::protocol::Status as ShimStatus;
use std::collections::HashMap;
use tonic::Status;

fn state_of(o: &Observed) -> ContainerState {
    match o.status {
        ShimStatus::Created => ContainerState::ContainerCreated,
        ShimStatus::Running => ContainerState::ContainerRunning,
        ShimStatus::Stopped => ContainerState::ContainerExited,
    }
}

pub async fn container_status(
    cri: &Cri,
    req: ContainerStatusRequest,
) -> Result<ContainerStatusResponse, Status> {
    if req.container_id.is_empty() {
        return Err(errors::missing("container_id"));
    }
    record_container(&req.container_id);
    let rec = cri.inner.containers.get(&req.container_id).map_err(errors::runtime)?;
    let o = cri.inner.containers.observe(&rec).await;
    let (reason, message) = match (o.status, o.unknown, o.oom_killed, o.exit_code) {
        (ShimStatus::Stopped, true, _, _) => {
            ("Unknown", "the container's shim and exit record are gone")
        }
        (ShimStatus::Stopped, _, true, _) => ("OOMKilled", ""),
        (ShimStatus::Stopped, _, _, 0) => ("Completed", ""),
        (ShimStatus::Stopped, _, _, _) => ("Error", ""),
        _ => ("", ""),
    };
    let info = if req.verbose {
        let spec: serde_json::Value = std::fs::read(rec.bundle.join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let info = serde_json::json!({
            "pid": o.pid,
            "sandboxID": rec.pod_id,
            "bundle": rec.bundle,
            "rootfs": rec.rootfs,
            "runtimeSpec": spec,
        });
        HashMap::from([("info".to_string(), info.to_string())])
    } else {
        HashMap::new()
    };
    let status = ContainerStatus {
        id: rec.id.clone(),
        metadata: Some(ContainerMetadata { name: rec.name.clone(), attempt: rec.attempt }),
        state: state_of(&o) as i32,
        created_at: rec.created_at,
        started_at: o.started_at,
        finished_at: o.finished_at,
        exit_code: if o.status == ShimStatus::Stopped { o.exit_code } else { 0 },
        image: Some(ImageSpec { image: rec.image.clone(), ..Default::default() }),
        image_ref: image_ref(&rec),
        image_id: rec.image_id.to_string(),
        user: rec.user.as_ref().map(|u| berth_proto::ContainerUser {
            linux: Some(berth_proto::LinuxContainerUser {
                uid: u.uid.into(),
                gid: u.gid.into(),
                supplemental_groups: u.supplemental_groups.iter().map(|&g| g.into()).collect(),
            }),
        }),
        stop_signal: cri_signal(effective_stop_signal(cri, &rec)) as i32,
        reason: reason.into(),
        message: message.into(),
        labels: rec.labels.clone().into_iter().collect(),
        annotations: rec.annotations.clone().into_iter().collect(),
        mounts: rec
            .mounts
            .iter()
            .map(|m| Mount {
                container_path: m.container_path.clone(),
                host_path: m.host_path.clone(),
                readonly: m.readonly,
                propagation: m.propagation.into(),
                image: m.image.as_ref().map(|i| berth_proto::ImageSpec {
                    image: i.image.clone(),
                    image_ref: i.image_ref.clone(),
                    ..Default::default()
                }),
                image_sub_path: m.image.as_ref().map(|i| i.sub_path.clone()).unwrap_or_default(),
                ..Default::default()
            })
            .collect(),
        log_path: rec.log_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        resources: rec.resources.as_ref().map(|r| berth_proto::ContainerResources {
            linux: Some(super::container_spec::resources_to_cri(r)),
            ..Default::default()
        }),
    };
    Ok(ContainerStatusResponse { status: Some(status), info })
}

pub async fn list_containers(
    cri: &Cri,
    req: ListContainersRequest,
) -> Result<ListContainersResponse, Status> {
    let filter = req.filter.unwrap_or_default();
    let mut out = Vec::new();
    for rec in cri.inner.containers.list().map_err(errors::runtime)? {
        if !filter.id.is_empty() && !rec.id.starts_with(&filter.id) {
            continue;
        }
        if !filter.pod_sandbox_id.is_empty() && !rec.pod_id.starts_with(&filter.pod_sandbox_id) {
            continue;
        }
        if !filter.label_selector.iter().all(|(k, v)| rec.labels.get(k) == Some(v)) {
            continue;
        }
        let o = cri.inner.containers.observe(&rec).await;
        let state = state_of(&o);
        if let Some(wanted) = &filter.state {
            if wanted.state != state as i32 {
                continue;
            }
        }
        out.push(to_cri(&rec, state));
    }
    Ok(ListContainersResponse { containers: out })
}

/// The digest reference the container was created from (the id for old records).
fn image_ref(rec: &ContainerRecord) -> String {
    if rec.image_ref.is_empty() {
        rec.image_id.to_string()
    } else {
        rec.image_ref.clone()
    }
}

fn to_cri(rec: &ContainerRecord, state: ContainerState) -> Container {
    Container {
        id: rec.id.clone(),
        pod_sandbox_id: rec.pod_id.clone(),
        metadata: Some(ContainerMetadata { name: rec.name.clone(), attempt: rec.attempt }),
        image: Some(ImageSpec { image: rec.image.clone(), ..Default::default() }),
        image_ref: image_ref(rec),
        image_id: rec.image_id.to_string(),
        state: state as i32,
        created_at: rec.created_at,
        labels: rec.labels.clone().into_iter().collect(),
        annotations: rec.annotations.clone().into_iter().collect(),
    }
}
