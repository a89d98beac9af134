//! ListMetricDescriptors and ListPodSandboxMetrics: container and pod usage as the
//! cAdvisor metrics the kubelet serves on `/metrics/cadvisor`, so with
//! PodAndContainerStatsFromCRI it needs no cAdvisor of its own.
//!
//! CRI metric values are integers: `*_seconds_total` counters are whole seconds, as with
//! containerd and CRI-O.

use super::container_stats::usages;
use super::{errors, Cri};
use berth_proto::{
    ContainerMetrics, ListMetricDescriptorsResponse, ListPodSandboxMetricsResponse, Metric,
    MetricDescriptor, MetricType, PodSandboxMetrics, UInt64Value,
};
use berth_runtime::container::record::ContainerRecord;
use berth_runtime::sandbox::{Filter, SandboxRecord, SandboxState};
use berth_runtime::shim::protocol::Status as ShimStatus;
use berth_runtime::stats::pressure::Pressure;
use berth_runtime::stats::ContainerUsage;
use std::collections::HashMap;
use std::sync::Arc;
use tonic::Status;

/// Which label keys a metric carries after the base ones.
#[derive(Clone, Copy)]
enum Extra {
    None,
    Interface,
    Device,
    Failure,
}

const BASE_LABELS: [&str; 5] = ["pod", "namespace", "container", "id", "image"];

struct Desc {
    name: &'static str,
    help: &'static str,
    counter: bool,
    extra: Extra,
}

const fn d(name: &'static str, help: &'static str, counter: bool, extra: Extra) -> Desc {
    Desc { name, help, counter, extra }
}

/// Every metric berth reports: ListPodSandboxMetrics never sends a name not listed here.
const DESCRIPTORS: &[Desc] = &[
    d(
        "container_cpu_usage_seconds_total",
        "Cumulative CPU time consumed in seconds.",
        true,
        Extra::None,
    ),
    d(
        "container_cpu_user_seconds_total",
        "Cumulative user CPU time consumed in seconds.",
        true,
        Extra::None,
    ),
    d(
        "container_cpu_system_seconds_total",
        "Cumulative system CPU time consumed in seconds.",
        true,
        Extra::None,
    ),
    d(
        "container_cpu_cfs_periods_total",
        "Number of elapsed enforcement period intervals.",
        true,
        Extra::None,
    ),
    d(
        "container_cpu_cfs_throttled_periods_total",
        "Number of throttled period intervals.",
        true,
        Extra::None,
    ),
    d(
        "container_cpu_cfs_throttled_seconds_total",
        "Total time duration the container has been throttled.",
        true,
        Extra::None,
    ),
    d(
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed.",
        false,
        Extra::None,
    ),
    d("container_memory_working_set_bytes", "Current working set in bytes.", false, Extra::None),
    d("container_memory_rss", "Size of RSS in bytes.", false, Extra::None),
    d("container_memory_cache", "Number of bytes of page cache memory.", false, Extra::None),
    d("container_memory_mapped_file", "Size of memory mapped files in bytes.", false, Extra::None),
    d("container_memory_swap", "Container swap usage in bytes.", false, Extra::None),
    d(
        "container_memory_max_usage_bytes",
        "Maximum memory usage recorded in bytes.",
        false,
        Extra::None,
    ),
    d("container_memory_failcnt", "Number of memory usage hits limits.", true, Extra::None),
    d(
        "container_memory_total_active_file_bytes",
        "Amount of active file cache memory in bytes.",
        false,
        Extra::None,
    ),
    d(
        "container_memory_total_inactive_file_bytes",
        "Amount of inactive file cache memory in bytes.",
        false,
        Extra::None,
    ),
    d(
        "container_memory_failures_total",
        "Cumulative count of memory allocation failures.",
        true,
        Extra::Failure,
    ),
    d(
        "container_oom_events_total",
        "Count of out of memory events observed for the container.",
        true,
        Extra::None,
    ),
    d(
        "container_fs_usage_bytes",
        "Number of bytes that are consumed by the container on this filesystem.",
        false,
        Extra::Device,
    ),
    d(
        "container_fs_inodes_used",
        "Number of inodes used by the container on this filesystem.",
        false,
        Extra::Device,
    ),
    d(
        "container_fs_reads_bytes_total",
        "Cumulative count of bytes read.",
        true,
        Extra::Device,
    ),
    d(
        "container_fs_writes_bytes_total",
        "Cumulative count of bytes written.",
        true,
        Extra::Device,
    ),
    d("container_fs_reads_total", "Cumulative count of reads completed.", true, Extra::Device),
    d("container_fs_writes_total", "Cumulative count of writes completed.", true, Extra::Device),
    d(
        "container_pressure_cpu_waiting_seconds_total",
        "Total time duration tasks in the container have waited due to CPU congestion.",
        true,
        Extra::None,
    ),
    d(
        "container_pressure_cpu_stalled_seconds_total",
        "Total time duration no tasks in the container could make progress due to CPU congestion.",
        true,
        Extra::None,
    ),
    d(
        "container_pressure_memory_waiting_seconds_total",
        "Total time duration tasks in the container have waited due to memory congestion.",
        true,
        Extra::None,
    ),
    d(
        "container_pressure_memory_stalled_seconds_total",
        "Total time duration no tasks in the container could make progress due to memory congestion.",
        true,
        Extra::None,
    ),
    d(
        "container_pressure_io_waiting_seconds_total",
        "Total time duration tasks in the container have waited due to IO congestion.",
        true,
        Extra::None,
    ),
    d(
        "container_pressure_io_stalled_seconds_total",
        "Total time duration no tasks in the container could make progress due to IO congestion.",
        true,
        Extra::None,
    ),
    d(
        "container_processes",
        "Number of processes running inside the container.",
        false,
        Extra::None,
    ),
    d("container_threads", "Number of threads running inside the container.", false, Extra::None),
    d(
        "container_threads_max",
        "Maximum number of threads allowed inside the container, 0 if unlimited.",
        false,
        Extra::None,
    ),
    d("container_last_seen", "Last time a container was seen by the exporter.", false, Extra::None),
    d(
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds.",
        false,
        Extra::None,
    ),
    d("container_spec_cpu_shares", "CPU share of the container.", false, Extra::None),
    d("container_spec_cpu_period", "CPU period of the container.", false, Extra::None),
    d("container_spec_cpu_quota", "CPU quota of the container.", false, Extra::None),
    d("container_spec_memory_limit_bytes", "Memory limit for the container.", false, Extra::None),
    d(
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received.",
        true,
        Extra::Interface,
    ),
    d(
        "container_network_receive_packets_total",
        "Cumulative count of packets received.",
        true,
        Extra::Interface,
    ),
    d(
        "container_network_receive_packets_dropped_total",
        "Cumulative count of packets dropped while receiving.",
        true,
        Extra::Interface,
    ),
    d(
        "container_network_receive_errors_total",
        "Cumulative count of errors encountered while receiving.",
        true,
        Extra::Interface,
    ),
    d(
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted.",
        true,
        Extra::Interface,
    ),
    d(
        "container_network_transmit_packets_total",
        "Cumulative count of packets transmitted.",
        true,
        Extra::Interface,
    ),
    d(
        "container_network_transmit_packets_dropped_total",
        "Cumulative count of packets dropped while transmitting.",
        true,
        Extra::Interface,
    ),
    d(
        "container_network_transmit_errors_total",
        "Cumulative count of errors encountered while transmitting.",
        true,
        Extra::Interface,
    ),
];

fn label_keys(extra: Extra) -> Vec<String> {
    let extra: &[&str] = match extra {
        Extra::None => &[],
        Extra::Interface => &["interface"],
        Extra::Device => &["device"],
        Extra::Failure => &["failure_type", "scope"],
    };
    BASE_LABELS.iter().chain(extra).map(|s| s.to_string()).collect()
}

pub fn list_metric_descriptors() -> ListMetricDescriptorsResponse {
    let descriptors = DESCRIPTORS
        .iter()
        .map(|d| MetricDescriptor {
            name: d.name.into(),
            help: d.help.into(),
            label_keys: label_keys(d.extra),
        })
        .collect();
    ListMetricDescriptorsResponse { descriptors }
}

/// Collects metrics for one label set.
struct Out {
    base: Vec<String>,
    metrics: Vec<Metric>,
}

impl Out {
    fn new(base: Vec<String>) -> Self {
        Self { base, metrics: Vec::new() }
    }

    /// Adds `name` (which must be in [`DESCRIPTORS`]) with the extra label values.
    fn add(&mut self, name: &'static str, extra: &[&str], value: u64) {
        let Some(d) = DESCRIPTORS.iter().find(|d| d.name == name) else {
            debug_assert!(false, "metric {name} has no descriptor");
            return;
        };
        let metric_type = if d.counter { MetricType::Counter } else { MetricType::Gauge };
        let mut label_values = self.base.clone();
        label_values.extend(extra.iter().map(|s| s.to_string()));
        self.metrics.push(Metric {
            name: name.into(),
            // Gathered now, not cached: the CRI wants 0 then.
            timestamp: 0,
            metric_type: metric_type as i32,
            label_values,
            value: Some(UInt64Value { value }),
        });
    }
}

const NS: u64 = 1_000_000_000;
/// Microseconds per second (PSI totals are in microseconds).
const US: u64 = 1_000_000;

pub async fn list_pod_sandbox_metrics(cri: &Cri) -> Result<ListPodSandboxMetricsResponse, Status> {
    let pods: Vec<Arc<SandboxRecord>> = cri
        .inner
        .sandboxes
        .list(&Filter::default())
        .map_err(errors::runtime)?
        .into_iter()
        .filter(|p| p.state == SandboxState::Ready)
        .collect();
    let refs: Vec<&SandboxRecord> = pods.iter().map(|p| &**p).collect();
    let pod_usages = cri.inner.stats.pods(&refs).await;

    // Running containers only: the others have no cgroup worth reporting.
    let mut running = Vec::new();
    let mut started = HashMap::new();
    for rec in cri.inner.containers.list().map_err(errors::runtime)? {
        let o = cri.inner.containers.observe(&rec).await;
        if o.status == ShimStatus::Running {
            started.insert(rec.id.clone(), o.started_at);
            running.push(rec);
        }
    }
    let by_id: HashMap<String, Arc<SandboxRecord>> =
        pods.iter().map(|p| (p.id.clone(), p.clone())).collect();
    let (c_usages, c_recs) = usages(cri, &by_id, running).await;
    let now_s = berth_runtime::clock::now_ns() as u64 / NS;

    let mut pod_metrics = Vec::with_capacity(pods.len());
    for (pod, u) in pods.iter().zip(pod_usages) {
        let mut out = Out::new(base(pod, "", &pod.id, ""));
        for i in u.network.iter().flatten() {
            let ifname = [i.name.as_str()];
            out.add("container_network_receive_bytes_total", &ifname, i.rx_bytes);
            out.add("container_network_receive_packets_total", &ifname, i.rx_packets);
            out.add("container_network_receive_packets_dropped_total", &ifname, i.rx_dropped);
            out.add("container_network_receive_errors_total", &ifname, i.rx_errors);
            out.add("container_network_transmit_bytes_total", &ifname, i.tx_bytes);
            out.add("container_network_transmit_packets_total", &ifname, i.tx_packets);
            out.add("container_network_transmit_packets_dropped_total", &ifname, i.tx_dropped);
            out.add("container_network_transmit_errors_total", &ifname, i.tx_errors);
        }
        let container_metrics = c_recs
            .iter()
            .zip(&c_usages)
            .filter(|(r, _)| r.pod_id == pod.id)
            .map(|(r, cu)| ContainerMetrics {
                container_id: r.id.clone(),
                metrics: container(pod, r, cu, started.get(&r.id).copied().unwrap_or(0), now_s),
            })
            .collect();
        pod_metrics.push(PodSandboxMetrics {
            pod_sandbox_id: pod.id.clone(),
            metrics: out.metrics,
            container_metrics,
        });
    }
    Ok(ListPodSandboxMetricsResponse { pod_metrics })
}

fn base(pod: &SandboxRecord, container: &str, id: &str, image: &str) -> Vec<String> {
    [pod.metadata.name.as_str(), pod.metadata.namespace.as_str(), container, id, image]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn container(
    pod: &SandboxRecord,
    rec: &ContainerRecord,
    u: &ContainerUsage,
    started_at_ns: i64,
    now_s: u64,
) -> Vec<Metric> {
    let mut out = Out::new(base(pod, &rec.name, &rec.id, &rec.image));
    let (cpu, mem, proc, spec) = (
        &u.usage.cgroup.cpu,
        &u.usage.cgroup.memory,
        &u.usage.cgroup.process,
        &u.usage.cgroup.spec,
    );
    out.add("container_cpu_usage_seconds_total", &[], cpu.usage_ns / NS);
    out.add("container_cpu_user_seconds_total", &[], cpu.user_ns / NS);
    out.add("container_cpu_system_seconds_total", &[], cpu.system_ns / NS);
    out.add("container_cpu_cfs_periods_total", &[], cpu.periods);
    out.add("container_cpu_cfs_throttled_periods_total", &[], cpu.throttled_periods);
    out.add("container_cpu_cfs_throttled_seconds_total", &[], cpu.throttled_ns / NS);
    out.add("container_memory_usage_bytes", &[], mem.usage);
    out.add("container_memory_working_set_bytes", &[], mem.working_set);
    out.add("container_memory_rss", &[], mem.rss);
    out.add("container_memory_cache", &[], mem.cache);
    out.add("container_memory_mapped_file", &[], mem.mapped_file);
    out.add("container_memory_swap", &[], mem.swap);
    out.add("container_memory_max_usage_bytes", &[], mem.max_usage);
    out.add("container_memory_failcnt", &[], mem.failcnt);
    out.add("container_memory_total_active_file_bytes", &[], mem.active_file);
    out.add("container_memory_total_inactive_file_bytes", &[], mem.inactive_file);
    out.add("container_memory_failures_total", &["pgfault", "container"], mem.page_faults);
    out.add("container_memory_failures_total", &["pgmajfault", "container"], mem.major_page_faults);
    out.add("container_oom_events_total", &[], mem.oom_kills);
    if let Some(l) = &u.writable_layer {
        let dev = l.mountpoint.display().to_string();
        out.add("container_fs_usage_bytes", &[&dev], l.bytes);
        out.add("container_fs_inodes_used", &[&dev], l.inodes);
    }
    for dev in &u.usage.cgroup.io.devices {
        let name = [dev.name.as_str()];
        out.add("container_fs_reads_bytes_total", &name, dev.read_bytes);
        out.add("container_fs_writes_bytes_total", &name, dev.write_bytes);
        out.add("container_fs_reads_total", &name, dev.reads);
        out.add("container_fs_writes_total", &name, dev.writes);
    }
    if let Some(p) = &u.usage.cgroup.pressure {
        pressure(&mut out, p);
    }
    out.add("container_processes", &[], proc.processes);
    out.add("container_threads", &[], proc.threads);
    out.add("container_threads_max", &[], proc.threads_max.unwrap_or(0));
    out.add("container_last_seen", &[], now_s);
    out.add("container_start_time_seconds", &[], started_at_ns.max(0) as u64 / NS);
    out.add("container_spec_cpu_shares", &[], spec.cpu_shares);
    out.add("container_spec_cpu_period", &[], spec.cpu_period);
    out.add("container_spec_cpu_quota", &[], spec.cpu_quota.unwrap_or(0));
    out.add("container_spec_memory_limit_bytes", &[], mem.limit.unwrap_or(0));
    out.metrics
}

/// The PSI totals, as cAdvisor names them: "waiting" is the `some` line, "stalled" the
/// `full` one, which a kernel may not have (then that metric is not sent).
fn pressure(out: &mut Out, p: &Pressure) {
    let resources = [
        (
            p.cpu,
            "container_pressure_cpu_waiting_seconds_total",
            "container_pressure_cpu_stalled_seconds_total",
        ),
        (
            p.memory,
            "container_pressure_memory_waiting_seconds_total",
            "container_pressure_memory_stalled_seconds_total",
        ),
        (
            p.io,
            "container_pressure_io_waiting_seconds_total",
            "container_pressure_io_stalled_seconds_total",
        ),
    ];
    for (psi, waiting, stalled) in resources {
        let Some(psi) = psi else { continue };
        out.add(waiting, &[], psi.some.total_us / US);
        if let Some(full) = psi.full {
            out.add(stalled, &[], full.total_us / US);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_runtime::stats::io::DeviceIo;
    use berth_runtime::stats::pressure::{Psi, PsiData};

    #[test]
    fn descriptors_are_unique_and_label_counts_match() {
        let list = list_metric_descriptors().descriptors;
        let mut names: Vec<&str> = list.iter().map(|d| d.name.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DESCRIPTORS.len());
        for name in [
            "container_cpu_usage_seconds_total",
            "container_memory_working_set_bytes",
            "container_network_receive_bytes_total",
        ] {
            assert!(names.contains(&name), "{name}");
        }

        let pod = SandboxRecord::default();
        let rec = ContainerRecord {
            id: "c".into(),
            pod_id: String::new(),
            name: "n".into(),
            attempt: 0,
            image: "busybox".into(),
            image_id: berth_runtime::digest::Digest::of(b"x"),
            labels: Default::default(),
            annotations: Default::default(),
            log_path: String::new(),
            log_file: None,
            mounts: Vec::new(),
            tty: false,
            stdin: false,
            stdin_once: false,
            created_at: 0,
            bundle: Default::default(),
            rootfs: Default::default(),
            resources: None,
            creating: false,
            request: String::new(),
            exit: None,
            image_ref: String::new(),
            user: None,
            stop_signal: 0,
        };
        let mut u =
            ContainerUsage { writable_layer: Some(Default::default()), ..Default::default() };
        let metrics = container(&pod, &rec, &u, 0, 0);
        assert!(!metrics.iter().any(|m| m.name.starts_with("container_pressure_")));
        assert!(!metrics.iter().any(|m| m.name.starts_with("container_fs_reads")));

        let psi = |some_us, full_us: Option<u64>| Psi {
            some: PsiData { total_us: some_us, ..Default::default() },
            full: full_us.map(|t| PsiData { total_us: t, ..Default::default() }),
        };
        u.usage.cgroup.pressure = Some(Pressure {
            cpu: Some(psi(2_500_000, None)),
            memory: Some(psi(1, Some(0))),
            io: Some(psi(7_000_000, Some(3_999_999))),
        });
        let dev = |name: &str, write_bytes| DeviceIo {
            name: name.into(),
            read_bytes: 1,
            write_bytes,
            reads: 2,
            writes: 3,
            ..Default::default()
        };
        u.usage.cgroup.io.devices = vec![dev("/dev/vda", 4096), dev("8:16", 5)];
        let metrics = container(&pod, &rec, &u, 0, 0);
        for m in &metrics {
            let d = list.iter().find(|d| d.name == m.name).expect("described");
            assert_eq!(d.label_keys.len(), m.label_values.len(), "{}", m.name);
        }
        let value = |name: &str, device: Option<&str>| {
            let found = metrics.iter().filter(|m| m.name == name).find(|m| {
                device.is_none_or(|dev| m.label_values.last().map(String::as_str) == Some(dev))
            });
            found.map(|m| m.value.as_ref().unwrap().value)
        };
        assert_eq!(value("container_fs_writes_bytes_total", Some("/dev/vda")), Some(4096));
        assert_eq!(value("container_fs_writes_bytes_total", Some("8:16")), Some(5));
        assert_eq!(value("container_fs_reads_bytes_total", Some("8:16")), Some(1));
        assert_eq!(value("container_fs_reads_total", Some("/dev/vda")), Some(2));
        assert_eq!(value("container_fs_writes_total", Some("/dev/vda")), Some(3));
        // Whole seconds, and no "stalled" where the kernel has no full line.
        assert_eq!(value("container_pressure_cpu_waiting_seconds_total", None), Some(2));
        assert_eq!(value("container_pressure_cpu_stalled_seconds_total", None), None);
        assert_eq!(value("container_pressure_memory_waiting_seconds_total", None), Some(0));
        assert_eq!(value("container_pressure_memory_stalled_seconds_total", None), Some(0));
        assert_eq!(value("container_pressure_io_waiting_seconds_total", None), Some(7));
        assert_eq!(value("container_pressure_io_stalled_seconds_total", None), Some(3));
        let pressure = list.iter().filter(|d| d.name.starts_with("container_pressure_"));
        assert_eq!(pressure.count(), 6);
    }
}
