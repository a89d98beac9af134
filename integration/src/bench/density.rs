//! The runtime's own memory: every process whose name says it belongs to the runtime
//! (its daemon, per-pod shims or monitors, pause or init processes), with RSS and PSS
//! from `/proc/<pid>/smaps_rollup`.

use crate::bench::endpoint::Target;
use crate::bench::workloads::{start_pods, stop_pods};
use serde::Serialize;
use std::collections::BTreeMap;

/// berth, containerd (with runc) and CRI-O (with conmon).
pub const DEFAULT_PROCESSES: &[&str] = &[
    "berthd",
    "berth-shim",
    "berth-pod-init",
    "containerd",
    "containerd-shim",
    "containerd-shim-runc-v2",
    "pause",
    "crio",
    "conmon",
];

#[derive(Debug, Default, Clone, Serialize)]
pub struct Usage {
    pub processes: usize,
    pub rss_kib: u64,
    pub pss_kib: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub pods: usize,
    /// By process name, with no pods and with `pods` pods.
    pub idle: BTreeMap<String, Usage>,
    pub loaded: BTreeMap<String, Usage>,
}

fn total(m: &BTreeMap<String, Usage>) -> Usage {
    m.values().fold(Usage::default(), |a, u| Usage {
        processes: a.processes + u.processes,
        rss_kib: a.rss_kib + u.rss_kib,
        pss_kib: a.pss_kib + u.pss_kib,
    })
}

impl Report {
    /// Every named process together, idle and loaded.
    pub fn totals(&self) -> (Usage, Usage) {
        (total(&self.idle), total(&self.loaded))
    }

    /// RSS and PSS (KiB) the runtime's processes grew by per pod.
    pub fn per_pod(&self) -> (f64, f64) {
        let (i, l) = self.totals();
        let per = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / self.pods.max(1) as f64;
        (per(i.rss_kib, l.rss_kib), per(i.pss_kib, l.pss_kib))
    }

    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<26} {:>6} {:>12} {:>12} {:>6} {:>12} {:>12}\n",
            "process", "idle n", "idle RSS KiB", "idle PSS KiB", "n", "RSS KiB", "PSS KiB"
        );
        let names: std::collections::BTreeSet<&String> =
            self.idle.keys().chain(self.loaded.keys()).collect();
        let row = |name: &str, i: &Usage, l: &Usage| {
            format!(
                "{name:<26} {:>6} {:>12} {:>12} {:>6} {:>12} {:>12}\n",
                i.processes, i.rss_kib, i.pss_kib, l.processes, l.rss_kib, l.pss_kib
            )
        };
        for n in names {
            let i = self.idle.get(n).cloned().unwrap_or_default();
            let l = self.loaded.get(n).cloned().unwrap_or_default();
            out.push_str(&row(n, &i, &l));
        }
        let (i, l) = self.totals();
        out.push_str(&row("total", &i, &l));
        let (rss, pss) = self.per_pod();
        out.push_str(&format!(
            "per pod ({} pods): RSS {rss:.0} KiB, PSS {pss:.0} KiB\n",
            self.pods
        ));
        out
    }
}

/// The runtime's processes now, by name.
pub fn measure(names: &[String]) -> BTreeMap<String, Usage> {
    let mut by_name: BTreeMap<String, Usage> = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return by_name };
    for entry in dir.flatten() {
        let path = entry.path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else { continue };
        let comm = comm.trim();
        // comm is cut to 15 bytes: match names by that prefix.
        let Some(name) = names.iter().find(|n| n.as_bytes()[..n.len().min(15)] == *comm.as_bytes())
        else {
            continue;
        };
        let Ok(rollup) = std::fs::read_to_string(path.join("smaps_rollup")) else { continue };
        let field = |key: &str| -> u64 {
            rollup
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let u = by_name.entry(name.clone()).or_default();
        u.processes += 1;
        u.rss_kib += field("Rss:");
        u.pss_kib += field("Pss:");
    }
    by_name
}

/// The runtime's processes with no pods of ours, then with `pods` pods running on `t`.
pub async fn run(t: &Target, image: &str, pods: usize, names: &[String]) -> anyhow::Result<Report> {
    let idle = measure(names);
    let (ids, _) = start_pods(t, image, pods, 10, "density").await?;
    // Let start-up allocations settle (lazy page faults, freed buffers).
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let loaded = measure(names);
    stop_pods(t, &ids).await?;
    Ok(Report { pods, idle, loaded })
}
