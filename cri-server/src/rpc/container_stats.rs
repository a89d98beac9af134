//! ContainerStats and ListContainerStats.

use super::{errors, Cri};
use crate::rpc_span::record_container;
use berth_proto::{
    ContainerAttributes, ContainerMetadata, ContainerStats, ContainerStatsRequest,
    ContainerStatsResponse, CpuUsage, FilesystemIdentifier, FilesystemUsage, IoUsage,
    ListContainerStatsRequest, ListContainerStatsResponse, MemoryUsage, PsiData, PsiStats,
    SwapUsage, UInt64Value,
};
use berth_runtime::container::record::ContainerRecord;
use berth_runtime::sandbox::{Filter, SandboxRecord};
use berth_runtime::stats::pressure::{self, Psi};
use berth_runtime::stats::{ContainerUsage, Usage};
use std::collections::HashMap;
use std::sync::Arc;
use tonic::Status;

pub async fn container_stats(
    cri: &Cri,
    req: ContainerStatsRequest,
) -> Result<ContainerStatsResponse, Status> {
    if req.container_id.is_empty() {
        return Err(errors::missing("container_id"));
    }
    record_container(&req.container_id);
    let rec = cri.inner.containers.get(&req.container_id).map_err(errors::runtime)?;
    let stats = collect(cri, vec![rec.into()]).await?.pop();
    let stats = stats.ok_or_else(|| {
        Status::not_found(format!("the pod of container {:?} is gone", req.container_id))
    })?;
    Ok(ContainerStatsResponse { stats: Some(stats) })
}

pub async fn list_container_stats(
    cri: &Cri,
    req: ListContainerStatsRequest,
) -> Result<ListContainerStatsResponse, Status> {
    let filter = req.filter.unwrap_or_default();
    let all = cri.inner.containers.list().map_err(errors::runtime)?;
    if filter.id.is_empty() && filter.pod_sandbox_id.is_empty() && filter.label_selector.is_empty()
    {
        // A full listing knows every live container: forget samples of the others.
        let pods = pods(cri)?;
        let ids: Vec<&str> = all.iter().map(|c| c.id.as_str()).collect();
        let pod_ids: Vec<&str> = pods.keys().map(String::as_str).collect();
        cri.inner.stats.retain(&ids, &pod_ids);
    }
    let wanted: Vec<Arc<ContainerRecord>> = all
        .into_iter()
        .filter(|c| filter.id.is_empty() || c.id.starts_with(&filter.id))
        .filter(|c| {
            filter.pod_sandbox_id.is_empty() || c.pod_id.starts_with(&filter.pod_sandbox_id)
        })
        .filter(|c| filter.label_selector.iter().all(|(k, v)| c.labels.get(k) == Some(v)))
        .collect();
    Ok(ListContainerStatsResponse { stats: collect(cri, wanted).await? })
}

fn pods(cri: &Cri) -> Result<HashMap<String, Arc<SandboxRecord>>, Status> {
    let pods = cri.inner.sandboxes.list(&Filter::default()).map_err(errors::runtime)?;
    Ok(pods.into_iter().map(|p| (p.id.clone(), p)).collect())
}

/// Stats of `recs`, in order; containers whose pod is gone are left out.
pub async fn collect(
    cri: &Cri,
    recs: Vec<Arc<ContainerRecord>>,
) -> Result<Vec<ContainerStats>, Status> {
    let pods = pods(cri)?;
    let (usages, recs) = usages(cri, &pods, recs).await;
    Ok(recs.iter().zip(&usages).map(|(r, u)| to_cri(r, u)).collect())
}

/// Usage of the containers of `recs` whose pod is in `pods`, with those records.
pub async fn usages(
    cri: &Cri,
    pods: &HashMap<String, Arc<SandboxRecord>>,
    recs: Vec<Arc<ContainerRecord>>,
) -> (Vec<ContainerUsage>, Vec<Arc<ContainerRecord>>) {
    let recs: Vec<Arc<ContainerRecord>> =
        recs.into_iter().filter(|r| pods.contains_key(&r.pod_id)).collect();
    let items: Vec<_> = recs
        .iter()
        .map(|r| (&**r, &*pods[&r.pod_id], cri.inner.images.writable_layer(&r.id)))
        .collect();
    let usages = cri.inner.stats.containers(&items).await;
    (usages, recs)
}

fn value(v: u64) -> Option<UInt64Value> {
    Some(UInt64Value { value: v })
}

/// The kernel counts stall time in microseconds; the CRI in nanoseconds.
fn psi(p: Option<Psi>) -> Option<PsiStats> {
    let data = |d: pressure::PsiData| PsiData {
        total: d.total_us.saturating_mul(1000),
        avg10: d.avg10,
        avg60: d.avg60,
        avg300: d.avg300,
    };
    p.map(|p| PsiStats { full: p.full.map(data), some: Some(data(p.some)) })
}

pub fn cpu(u: &Usage) -> CpuUsage {
    CpuUsage {
        timestamp: u.timestamp,
        usage_core_nano_seconds: value(u.cgroup.cpu.usage_ns),
        usage_nano_cores: u.nano_cores.and_then(value),
        psi: psi(u.cgroup.pressure.and_then(|p| p.cpu)),
    }
}

/// Block I/O pressure; the CRI carries no byte counters here (cAdvisor metrics do).
pub fn io(u: &Usage) -> IoUsage {
    IoUsage { timestamp: u.timestamp, psi: psi(u.cgroup.pressure.and_then(|p| p.io)) }
}

pub fn memory(u: &Usage) -> MemoryUsage {
    let m = &u.cgroup.memory;
    MemoryUsage {
        timestamp: u.timestamp,
        working_set_bytes: value(m.working_set),
        available_bytes: m.available().and_then(value),
        usage_bytes: value(m.usage),
        rss_bytes: value(m.rss),
        page_faults: value(m.page_faults),
        major_page_faults: value(m.major_page_faults),
        psi: psi(u.cgroup.pressure.and_then(|p| p.memory)),
    }
}

pub fn to_cri(rec: &ContainerRecord, u: &ContainerUsage) -> ContainerStats {
    ContainerStats {
        attributes: Some(ContainerAttributes {
            id: rec.id.clone(),
            metadata: Some(ContainerMetadata { name: rec.name.clone(), attempt: rec.attempt }),
            labels: rec.labels.clone().into_iter().collect(),
            annotations: rec.annotations.clone().into_iter().collect(),
        }),
        cpu: Some(cpu(&u.usage)),
        memory: Some(memory(&u.usage)),
        writable_layer: u.writable_layer.as_ref().map(|l| FilesystemUsage {
            timestamp: u.usage.timestamp,
            fs_id: Some(FilesystemIdentifier { mountpoint: l.mountpoint.display().to_string() }),
            used_bytes: value(l.bytes),
            inodes_used: value(l.inodes),
        }),
        swap: Some(SwapUsage {
            timestamp: u.usage.timestamp,
            swap_available_bytes: None,
            swap_usage_bytes: value(u.usage.cgroup.memory.swap),
        }),
        io: Some(io(&u.usage)),
    }
}
