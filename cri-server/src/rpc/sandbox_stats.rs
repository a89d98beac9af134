//! PodSandboxStats and ListPodSandboxStats.

use super::container_stats::{cpu, io, memory, to_cri as container_to_cri, usages};
use super::sandbox_status::metadata;
use super::{errors, Cri};
use crate::rpc_span::record_pod;
use berth_proto::{
    LinuxPodSandboxStats, ListPodSandboxStatsRequest, ListPodSandboxStatsResponse,
    NetworkInterfaceUsage, NetworkUsage, PodSandboxAttributes, PodSandboxStats,
    PodSandboxStatsRequest, PodSandboxStatsResponse, ProcessUsage, UInt64Value,
};
use berth_runtime::sandbox::{Filter, SandboxRecord};
use berth_runtime::stats::netdev::DEFAULT_INTERFACE;
use berth_runtime::stats::InterfaceStats;
use std::collections::HashMap;
use std::sync::Arc;
use tonic::Status;

pub async fn pod_sandbox_stats(
    cri: &Cri,
    req: PodSandboxStatsRequest,
) -> Result<PodSandboxStatsResponse, Status> {
    if req.pod_sandbox_id.is_empty() {
        return Err(errors::missing("pod_sandbox_id"));
    }
    let rec = cri.inner.sandboxes.status(&req.pod_sandbox_id).map_err(errors::runtime)?;
    record_pod(&rec.id);
    let stats = collect(cri, vec![rec.into()]).await?.pop();
    Ok(PodSandboxStatsResponse { stats })
}

pub async fn list_pod_sandbox_stats(
    cri: &Cri,
    req: ListPodSandboxStatsRequest,
) -> Result<ListPodSandboxStatsResponse, Status> {
    let f = req.filter.unwrap_or_default();
    let filter = Filter {
        id: Some(f.id).filter(|id| !id.is_empty()),
        state: None,
        labels: f.label_selector.into_iter().collect(),
    };
    let pods = cri.inner.sandboxes.list(&filter).map_err(errors::runtime)?;
    Ok(ListPodSandboxStatsResponse { stats: collect(cri, pods).await? })
}

async fn collect(cri: &Cri, pods: Vec<Arc<SandboxRecord>>) -> Result<Vec<PodSandboxStats>, Status> {
    let refs: Vec<&SandboxRecord> = pods.iter().map(|p| &**p).collect();
    let pod_usages = cri.inner.stats.pods(&refs).await;
    let containers = cri.inner.containers.list().map_err(errors::runtime)?;
    let by_id: HashMap<String, Arc<SandboxRecord>> =
        pods.iter().map(|p| (p.id.clone(), p.clone())).collect();
    let (c_usages, c_recs) = usages(cri, &by_id, containers).await;
    let mut out = Vec::with_capacity(pods.len());
    for (pod, u) in pods.iter().zip(pod_usages) {
        let containers = c_recs
            .iter()
            .zip(&c_usages)
            .filter(|(r, _)| r.pod_id == pod.id)
            .map(|(r, cu)| container_to_cri(r, cu))
            .collect();
        let network = u.network.as_ref().map(|ifs| network(u.usage.timestamp, ifs));
        out.push(PodSandboxStats {
            attributes: Some(PodSandboxAttributes {
                id: pod.id.clone(),
                metadata: Some(metadata(pod)),
                labels: pod.labels.clone().into_iter().collect(),
                annotations: pod.annotations.clone().into_iter().collect(),
            }),
            linux: Some(LinuxPodSandboxStats {
                cpu: Some(cpu(&u.usage)),
                memory: Some(memory(&u.usage)),
                network,
                process: Some(ProcessUsage {
                    timestamp: u.usage.timestamp,
                    process_count: Some(UInt64Value { value: u.usage.cgroup.process.processes }),
                }),
                containers,
                io: Some(io(&u.usage)),
            }),
            windows: None,
        });
    }
    Ok(out)
}

fn network(timestamp: i64, ifs: &[InterfaceStats]) -> NetworkUsage {
    let cri = |i: &InterfaceStats| NetworkInterfaceUsage {
        name: i.name.clone(),
        rx_bytes: Some(UInt64Value { value: i.rx_bytes }),
        rx_errors: Some(UInt64Value { value: i.rx_errors }),
        tx_bytes: Some(UInt64Value { value: i.tx_bytes }),
        tx_errors: Some(UInt64Value { value: i.tx_errors }),
    };
    NetworkUsage {
        timestamp,
        default_interface: ifs.iter().find(|i| i.name == DEFAULT_INTERFACE).map(cri),
        interfaces: ifs.iter().filter(|i| i.name != DEFAULT_INTERFACE).map(cri).collect(),
    }
}
