//! Container and pod resource usage: CPU, memory, processes, block I/O and pressure from
//! cgroups (v1, v2 or both on a hybrid host), the writable layer's disk use, and the pod's
//! network counters from inside its network namespace.
//!
//! * [`cgroup`]: one cgroup's figures, with [`io`] and [`pressure`];
//! * [`netdev`]: a netns's interface counters;
//! * [`fs`]: a writable layer's bytes and inodes; [`sampler`]: CPU rate between samples;
//! * [`Stats`]: reads all of it for container and pod records.

pub mod cgroup;
pub mod fs;
pub mod io;
pub mod netdev;
pub mod pressure;
pub mod sampler;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cgroupfs::Hierarchy;
use crate::clock::now_ns;
use crate::container::record::ContainerRecord;
use crate::sandbox::SandboxRecord;
pub use cgroup::CgroupStats;
pub use fs::LayerUsage;
pub use netdev::InterfaceStats;
use sampler::Sampler;

/// How long a first request waits between two CPU readings, so even the first answer for
/// a cgroup has a rate (`crictl stats` asks once).
const FIRST_WINDOW: Duration = Duration::from_millis(200);

/// The figures of one cgroup at one instant.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub timestamp: i64,
    pub cgroup: CgroupStats,
    /// CPU use averaged since the previous sample, in nano-cores.
    pub nano_cores: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct ContainerUsage {
    pub usage: Usage,
    pub writable_layer: Option<LayerUsage>,
}

#[derive(Debug, Clone, Default)]
pub struct PodUsage {
    pub usage: Usage,
    /// `None`: the pod uses the host's network (its counters are not the pod's).
    pub network: Option<Vec<InterfaceStats>>,
}

/// The stats reader: the host's cgroup hierarchies and the CPU samples.
pub struct Stats {
    hierarchies: Vec<Hierarchy>,
    sampler: Sampler,
}

impl Stats {
    /// Reads the cgroup hierarchies mounted in berthd's mount namespace.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self::with_hierarchies(crate::cgroupfs::hierarchies()?))
    }

    pub fn with_hierarchies(hierarchies: Vec<Hierarchy>) -> Self {
        Self { hierarchies, sampler: Sampler::default() }
    }

    /// The cgroup berth gives a container: `<pod cgroup>/<container id>`, or its scope.
    pub fn container_cgroup(pod: &SandboxRecord, container_id: &str) -> String {
        crate::sandbox::cgroup::container_cgroup_dir(&pod.cgroup, container_id)
    }

    /// Usage of containers, each given with its pod and its writable layer (the upper
    /// directory).
    pub async fn containers(
        &self,
        items: &[(&ContainerRecord, &SandboxRecord, PathBuf)],
    ) -> Vec<ContainerUsage> {
        let targets: Vec<(String, String)> = items
            .iter()
            .map(|(c, p, _)| (c.id.clone(), Self::container_cgroup(p, &c.id)))
            .collect();
        let usages = self.cgroups(targets).await;
        let uppers: Vec<PathBuf> = items.iter().map(|(_, _, u)| u.clone()).collect();
        let layers = crate::traced::spawn_blocking(move || {
            uppers.iter().map(|u| fs::usage(u).ok()).collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        usages
            .into_iter()
            .enumerate()
            .map(|(i, usage)| ContainerUsage {
                usage,
                writable_layer: layers.get(i).cloned().flatten(),
            })
            .collect()
    }

    /// Usage of pods: their pod cgroup (which holds their containers') and network.
    pub async fn pods(&self, pods: &[&SandboxRecord]) -> Vec<PodUsage> {
        let targets: Vec<(String, String)> =
            pods.iter().map(|p| (pod_key(&p.id), p.cgroup.clone())).collect();
        let usages = self.cgroups(targets).await;
        let mut out = Vec::with_capacity(pods.len());
        for (pod, usage) in pods.iter().zip(usages) {
            let network = match &pod.netns {
                Some(ns) => Some(self.network(ns, &pod.id).await),
                None => None,
            };
            out.push(PodUsage { usage, network });
        }
        out
    }

    async fn network(&self, netns: &Path, pod_id: &str) -> Vec<InterfaceStats> {
        // A pod being torn down loses its netns under us: report no interfaces then.
        netdev::read(netns).await.unwrap_or_else(|e| {
            tracing::debug!(pod_id, error = %e, "no network counters");
            Vec::new()
        })
    }

    /// Reads `(sample key, cgroup)` pairs. Cgroups never sampled before are read twice,
    /// [`FIRST_WINDOW`] apart (once for all of them), so each answer carries a CPU rate.
    async fn cgroups(&self, targets: Vec<(String, String)>) -> Vec<Usage> {
        let hs = self.hierarchies.clone();
        let rels: Vec<String> = targets.iter().map(|(_, r)| r.clone()).collect();
        let mut usages = read_all(hs.clone(), rels).await;
        let mut again = Vec::new();
        for (i, ((key, _), u)) in targets.iter().zip(usages.iter_mut()).enumerate() {
            let fresh = !self.sampler.has(key);
            u.nano_cores = self.sampler.rate(key, u.timestamp, u.cgroup.cpu.usage_ns);
            if fresh && u.cgroup.exists {
                again.push(i);
            }
        }
        if !again.is_empty() {
            tokio::time::sleep(FIRST_WINDOW).await;
            let rels: Vec<String> = again.iter().map(|&i| targets[i].1.clone()).collect();
            for (&i, u) in again.iter().zip(read_all(hs, rels).await) {
                let nano_cores =
                    self.sampler.rate(&targets[i].0, u.timestamp, u.cgroup.cpu.usage_ns);
                usages[i] = Usage { nano_cores, ..u };
            }
        }
        usages
    }

    /// Forgets the CPU samples of containers and pods that no longer exist.
    pub fn retain(&self, containers: &[&str], pods: &[&str]) {
        self.sampler.retain(|k| match k.strip_prefix("pod/") {
            Some(p) => pods.contains(&p),
            None => containers.contains(&k),
        });
    }
}

fn pod_key(id: &str) -> String {
    format!("pod/{id}")
}

async fn read_all(hs: Vec<Hierarchy>, rels: Vec<String>) -> Vec<Usage> {
    let n = rels.len();
    crate::traced::spawn_blocking(move || {
        rels.iter()
            .map(|rel| {
                let mut cgroup = cgroup::read(&hs, rel);
                io::name_devices(&mut cgroup.io, Path::new(io::SYS_DEV_BLOCK));
                Usage { timestamp: now_ns(), cgroup, nano_cores: None }
            })
            .collect()
    })
    .await
    .unwrap_or_else(|_| vec![Usage::default(); n])
}
