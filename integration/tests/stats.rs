//! Stats, metrics and container events through a real berthd: usage read from the
//! containers' cgroups, the writable layer and the pod's network namespace, the cAdvisor
//! metrics the kubelet scrapes, and the GetContainerEvents stream.

use berth_integration::pods::{busybox, container_metrics, metric_descriptors, pod_metrics, Node};
use berth_integration::{scaled, Berthd};
use berth_proto::*;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// A pod labelled `pod=<name>` in namespace `stats-ns` (the metrics' labels show both).
async fn run_pod(node: &Node, name: &str) -> String {
    let mut config = node.pod_config(name, Path::new(""));
    config.metadata.as_mut().unwrap().namespace = "stats-ns".into();
    config.labels = HashMap::from([("pod".into(), name.into())]);
    node.run_pod_with(config).await
}

async fn create(node: &Node, pod: &str, name: &str, args: &[&str]) -> String {
    node.create(pod, busybox(name, args)).await.unwrap()
}

async fn start(berthd: &Berthd, id: &str) {
    berthd
        .runtime()
        .start_container(StartContainerRequest { container_id: id.into() })
        .await
        .unwrap();
}

async fn container_stats(berthd: &Berthd, id: &str) -> ContainerStats {
    berthd
        .runtime()
        .container_stats(ContainerStatsRequest { container_id: id.into() })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap()
}

async fn pod_stats(berthd: &Berthd, id: &str) -> PodSandboxStats {
    berthd
        .runtime()
        .pod_sandbox_stats(PodSandboxStatsRequest { pod_sandbox_id: id.into() })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap()
}

async fn list_stats(berthd: &Berthd, filter: ContainerStatsFilter) -> Vec<String> {
    let mut ids: Vec<String> = berthd
        .runtime()
        .list_container_stats(ListContainerStatsRequest { filter: Some(filter) })
        .await
        .unwrap()
        .into_inner()
        .stats
        .into_iter()
        .map(|s| s.attributes.unwrap().id)
        .collect();
    ids.sort();
    ids
}

fn v(x: &Option<UInt64Value>) -> u64 {
    x.as_ref().map_or(0, |v| v.value)
}

/// Polls `f` until it returns `Some`, for up to `secs`.
async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + scaled(Duration::from_secs(secs));
    loop {
        match f().await {
            Ok(t) => return t,
            Err(last) if Instant::now() > deadline => panic!("{what}: {last}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

/// The whole disk holding `path`: its `MAJ:MIN` and `/dev` name. `None` off block devices
/// (tmpfs, overlay and btrfs have anonymous device numbers, without a /sys/dev/block entry).
fn disk_of(path: &Path) -> Option<(String, String)> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).ok()?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let mut sys = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok()?;
    // Per-cgroup block I/O is counted on the disk, not on its partitions.
    if sys.join("partition").exists() {
        sys.pop();
    }
    let uevent = std::fs::read_to_string(sys.join("uevent")).ok()?;
    let get = |k: &str| uevent.lines().find_map(|l| l.strip_prefix(k)).map(str::to_string);
    Some((format!("{}:{}", get("MAJOR=")?, get("MINOR=")?), format!("/dev/{}", get("DEVNAME=")?)))
}

/// Whether the host counts the block I/O of pod cgroup `rel` on `disk` (`MAJ:MIN`), made
/// so on v1 where it can be: there berth reads blk-throttle's counters, and (seen on a 6.18
/// kernel) blk-throttle counts nothing on a device until some cgroup has had a throttle
/// limit on it. A limit of 1 TiB/s on the pod starts the counting and limits nothing.
fn count_block_io(rel: &str, disk: &str) -> bool {
    let v1 = Path::new("/sys/fs/cgroup/blkio").join(rel);
    if v1.is_dir() {
        let limit = format!("{disk} {}", 1u64 << 40);
        return std::fs::write(v1.join("blkio.throttle.write_bps_device"), limit).is_ok();
    }
    let v2 = Path::new("/sys/fs/cgroup").join(rel).join("cgroup.controllers");
    std::fs::read_to_string(v2).is_ok_and(|c| c.split_whitespace().any(|x| x == "io"))
}

/// The v2 cgroup directory of `rel`: the one tree, or a hybrid host's `unified` one.
fn v2_cgroup(rel: &str) -> PathBuf {
    let root = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        Path::new("/sys/fs/cgroup")
    } else {
        Path::new("/sys/fs/cgroup/unified")
    };
    root.join(rel)
}

async fn remove_pods(berthd: &Berthd, pods: &[String]) {
    let mut rt = berthd.runtime();
    for pod in pods {
        rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await.unwrap();
        rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod.clone() })
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn stats_and_metrics_of_busy_containers_and_their_pod() {
    let node = Node::start().await;
    let (berthd, env) = (&node.berthd, &node.env);
    let pod = run_pod(&node, "busy").await;
    let pod_cgroup = env.cgroup_parent("busy").trim_start_matches('/').to_string();
    let disk = disk_of(&berthd.root_dir());
    let block_io = disk.as_ref().is_some_and(|(dev, _)| count_block_io(&pod_cgroup, dev));
    // 4 MiB written past the page cache: cgroup v1 charges buffered writes to whoever
    // writes them back, not to the container.
    let burn = create(
        &node,
        &pod,
        "burn",
        &[
            "sh",
            "-c",
            "dd if=/dev/zero of=/direct bs=64k count=64 oflag=direct conv=fsync 2>/dev/null; \
             head -c 4000000 /dev/zero > /big; while :; do :; done",
        ],
    )
    .await;
    // dd fills a 72 MiB buffer, then blocks forever writing it to a pipe nobody reads:
    // 72 MiB of anonymous memory, all of it working set.
    let mem =
        create(&node, &pod, "mem", &["sh", "-c", "dd if=/dev/zero bs=72M count=1 | sleep 1000"])
            .await;
    let idle = create(&node, &pod, "idle", &["sleep", "1000"]).await;

    // A created container has stats too (zeros: its process has not run).
    let s = container_stats(berthd, &idle).await;
    assert_eq!(s.attributes.as_ref().unwrap().metadata.as_ref().unwrap().name, "idle");
    assert!(s.cpu.is_some() && s.memory.is_some(), "{s:?}");

    start(berthd, &burn).await;
    start(berthd, &mem).await;

    let s = eventually(30, "a busy loop uses about one core", || async {
        let s = container_stats(berthd, &burn).await;
        let cpu = s.cpu.unwrap();
        let cores = v(&cpu.usage_nano_cores) as f64 / 1e9;
        if cores > 0.3 && v(&cpu.usage_core_nano_seconds) > 0 {
            Ok(s)
        } else {
            Err(format!("{cores} cores, {cpu:?}"))
        }
    })
    .await;
    let layer = s.writable_layer.unwrap();
    assert!(v(&layer.used_bytes) >= 4_000_000, "{layer:?}");
    assert!(v(&layer.inodes_used) >= 2, "{layer:?}");
    assert!(!layer.fs_id.unwrap().mountpoint.is_empty());

    eventually(30, "a container holding 72 MiB has that working set", || async {
        let m = container_stats(berthd, &mem).await.memory.unwrap();
        if v(&m.working_set_bytes) > 64 * MIB && v(&m.usage_bytes) >= v(&m.working_set_bytes) {
            Ok(())
        } else {
            Err(format!("{m:?}"))
        }
    })
    .await;

    // Filters: id (or prefix), pod, labels.
    let mut all = vec![burn.clone(), mem.clone(), idle.clone()];
    all.sort();
    assert_eq!(list_stats(berthd, ContainerStatsFilter::default()).await, all);
    let by_pod = ContainerStatsFilter { pod_sandbox_id: pod.clone(), ..Default::default() };
    assert_eq!(list_stats(berthd, by_pod).await, all);
    let by_id = ContainerStatsFilter { id: burn[..12].into(), ..Default::default() };
    assert_eq!(list_stats(berthd, by_id).await, vec![burn.clone()]);
    let by_label = ContainerStatsFilter {
        label_selector: HashMap::from([("c".into(), "mem".into())]),
        ..Default::default()
    };
    assert_eq!(list_stats(berthd, by_label).await, vec![mem.clone()]);
    let none = ContainerStatsFilter { pod_sandbox_id: "nope".into(), ..Default::default() };
    assert!(list_stats(berthd, none).await.is_empty());

    // The pod: its cgroup holds its containers', and its network counts traffic to it.
    let ip = berthd
        .runtime()
        .pod_sandbox_status(PodSandboxStatusRequest { pod_sandbox_id: pod.clone(), verbose: false })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
        .network
        .unwrap()
        .ip;
    let rx = |s: &PodSandboxStats| {
        let net = s.linux.as_ref().unwrap().network.as_ref().unwrap();
        let eth0 = net.default_interface.as_ref().expect("eth0");
        assert_eq!(eth0.name, "eth0");
        v(&eth0.rx_bytes)
    };
    let before = pod_stats(berthd, &pod).await;
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    for _ in 0..200 {
        sock.send_to(&[7u8; 1000], (ip.as_str(), 9)).unwrap();
    }
    let after = eventually(10, "pod rx bytes grow with traffic", || async {
        let after = pod_stats(berthd, &pod).await;
        if rx(&after) >= rx(&before) + 200_000 {
            Ok(after)
        } else {
            Err(format!("rx {} -> {}", rx(&before), rx(&after)))
        }
    })
    .await;
    let linux = after.linux.as_ref().unwrap();
    assert_eq!(after.attributes.as_ref().unwrap().id, pod);
    assert!(v(&linux.process.as_ref().unwrap().process_count) >= 2, "{:?}", linux.process);
    assert!(v(&linux.memory.as_ref().unwrap().working_set_bytes) > 64 * MIB);
    assert!(v(&linux.cpu.as_ref().unwrap().usage_core_nano_seconds) > 0);
    assert_eq!(linux.containers.len(), 3);
    let listed = berthd
        .runtime()
        .list_pod_sandbox_stats(ListPodSandboxStatsRequest {
            filter: Some(PodSandboxStatsFilter {
                label_selector: HashMap::from([("pod".into(), "busy".into())]),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(listed.len(), 1);

    // Metrics: every one is described, with as many label values as keys.
    let descriptors: HashMap<String, usize> = metric_descriptors(berthd)
        .await
        .into_iter()
        .map(|d| (d.name, d.label_keys.len()))
        .collect();
    let ours = pod_metrics(berthd, &pod).await;
    let mut seen = HashSet::new();
    let every = ours.metrics.iter().chain(ours.container_metrics.iter().flat_map(|c| &c.metrics));
    for m in every {
        let keys = descriptors.get(&m.name).unwrap_or_else(|| panic!("{} undescribed", m.name));
        assert_eq!(*keys, m.label_values.len(), "{m:?}");
        seen.insert(m.name.clone());
    }
    for name in [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_network_receive_bytes_total",
        "container_network_transmit_bytes_total",
        "container_fs_usage_bytes",
        "container_processes",
    ] {
        assert!(seen.contains(name), "{name} missing");
    }
    let rx_metric = ours
        .metrics
        .iter()
        .find(|m| m.name == "container_network_receive_bytes_total" && m.label_values[5] == "eth0")
        .unwrap();
    assert!(v(&rx_metric.value) >= 200_000);
    let ws = ours
        .container_metrics
        .iter()
        .find(|c| c.container_id == mem)
        .and_then(|c| c.metrics.iter().find(|m| m.name == "container_memory_working_set_bytes"))
        .unwrap();
    assert!(v(&ws.value) > 64 * MIB);
    assert_eq!(ws.label_values[..3], ["busy", "stats-ns", "mem"]);

    // Block I/O, by device, where the host counts it for the disk under berthd's root.
    match (&disk, block_io) {
        (Some((_, name)), true) => {
            eventually(20, "burn's direct writes are counted on its disk", || async {
                let ms = container_metrics(berthd, &pod, &burn).await;
                let on_disk = |metric: &str| {
                    let m = ms.iter().find(|m| m.name == metric && m.label_values[5] == *name);
                    m.map_or(0, |m| v(&m.value))
                };
                let (bytes, writes) = (
                    on_disk("container_fs_writes_bytes_total"),
                    on_disk("container_fs_writes_total"),
                );
                if bytes >= 4 * MIB && writes >= 1 {
                    Ok(())
                } else {
                    Err(format!("{bytes} bytes in {writes} writes on {name}: {ms:?}"))
                }
            })
            .await;
        }
        // A test that checked nothing must not pass: berthd's root (the test's temporary
        // directory) has to be on a block device the host accounts per cgroup.
        _ => panic!("no per-cgroup block I/O counting for {disk:?}: put TMPDIR on a disk"),
    }

    // Pressure: sent exactly when the container's v2 cgroup has PSI files (a v2 host with
    // PSI, or a hybrid one: the kernel keeps PSI per cgroup of the unified tree too).
    let burn_cgroup = format!("{pod_cgroup}/{}", berth_integration::leaks::container_cgroup(&burn));
    let psi_file = v2_cgroup(&burn_cgroup).join("cpu.pressure");
    let psi = std::fs::read_to_string(&psi_file).is_ok_and(|t| t.starts_with("some"));
    let ms = container_metrics(berthd, &pod, &burn).await;
    for name in [
        "container_pressure_cpu_waiting_seconds_total",
        "container_pressure_memory_waiting_seconds_total",
        "container_pressure_io_waiting_seconds_total",
    ] {
        assert_eq!(ms.iter().any(|m| m.name == name), psi, "{name}, {}", psi_file.display());
    }

    // Unknown ids.
    let mut rt = berthd.runtime();
    let err = rt
        .container_stats(ContainerStatsRequest { container_id: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    let err = rt
        .pod_sandbox_stats(PodSandboxStatsRequest { pod_sandbox_id: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    let err = rt.container_stats(ContainerStatsRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("container_id"), "{err:?}");

    remove_pods(berthd, &[pod]).await;
    env.assert_no_leaks(berthd).await;
}

type Seen = Vec<(String, i32)>;

/// Reads events until `want` arrived, then a little longer to catch extras.
async fn collect_events(
    mut stream: tonic::Streaming<ContainerEventResponse>,
    want: usize,
) -> (Seen, Vec<ContainerEventResponse>) {
    let mut seen = Vec::new();
    let mut full = Vec::new();
    let deadline = Instant::now() + scaled(Duration::from_secs(180));
    loop {
        let wait = if seen.len() >= want {
            Duration::from_secs(1)
        } else {
            scaled(Duration::from_secs(60))
        };
        assert!(Instant::now() < deadline, "only {} of {want} events", seen.len());
        match tokio::time::timeout(wait, stream.message()).await {
            Ok(Ok(Some(e))) => {
                seen.push((e.container_id.clone(), e.container_event_type));
                if full.len() < 8 {
                    full.push(e);
                }
            }
            Ok(other) => panic!("event stream ended: {other:?}"),
            Err(_) if seen.len() >= want => return (seen, full),
            Err(_) => panic!(
                "no event for {:?}; {} of {want}",
                scaled(Duration::from_secs(60)),
                seen.len()
            ),
        }
    }
}

#[tokio::test]
async fn events_of_every_container_once_and_in_order() {
    use ContainerEventType::*;
    let node = Node::start().await;
    let (berthd, env) = (&node.berthd, &node.env);
    let pods = vec![
        run_pod(&node, "ev0").await,
        run_pod(&node, "ev1").await,
        run_pod(&node, "ev2").await,
        run_pod(&node, "ev3").await,
    ];
    let order = [
        ContainerCreatedEvent as i32,
        ContainerStartedEvent as i32,
        ContainerStoppedEvent as i32,
        ContainerDeletedEvent as i32,
    ];

    // One container, two subscribers: its four events, in order, with statuses.
    let a = berthd.runtime().get_container_events(GetEventsRequest {}).await.unwrap().into_inner();
    let b = berthd.runtime().get_container_events(GetEventsRequest {}).await.unwrap().into_inner();
    let (ta, tb) = (tokio::spawn(collect_events(a, 4)), tokio::spawn(collect_events(b, 4)));
    let one = create(&node, &pods[0], "one", &["sh", "-c", "sleep 0.2"]).await;
    start(berthd, &one).await;
    // It exits by itself: STOPPED comes from the runtime watching, not from a StopContainer.
    eventually(20, "container exits", || async {
        let s = berthd
            .runtime()
            .container_status(ContainerStatusRequest { container_id: one.clone(), verbose: false })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        if s.state == ContainerState::ContainerExited as i32 {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await;
    berthd
        .runtime()
        .remove_container(RemoveContainerRequest { container_id: one.clone() })
        .await
        .unwrap();
    for t in [ta, tb] {
        let (seen, full) = t.await.unwrap();
        let want: Seen = order.iter().map(|k| (one.clone(), *k)).collect();
        assert_eq!(seen, want);
        let created = &full[0];
        assert!(created.created_at > 0);
        assert_eq!(created.pod_sandbox_status.as_ref().unwrap().id, pods[0]);
        assert!(created.containers_statuses.iter().any(|c| c.id == one));
        assert!(full.windows(2).all(|w| w[0].created_at <= w[1].created_at));
    }

    // 100 containers over four pods change state at once: exactly 400 events.
    let stream =
        berthd.runtime().get_container_events(GetEventsRequest {}).await.unwrap().into_inner();
    let collector = tokio::spawn(collect_events(stream, 400));
    let ids: Vec<String> = futures::future::join_all((0..100).map(|i| {
        let (node, pod) = (&node, &pods[i % 4]);
        async move {
            let id = create(node, pod, &format!("c{i}"), &["true"]).await;
            start(&node.berthd, &id).await;
            id
        }
    }))
    .await;
    let running = |berthd: &Berthd| {
        let mut rt = berthd.runtime();
        async move {
            let cs = rt.list_containers(ListContainersRequest::default()).await.unwrap();
            let n = cs
                .into_inner()
                .containers
                .iter()
                .filter(|c| c.state != ContainerState::ContainerExited as i32)
                .count();
            if n == 0 {
                Ok(())
            } else {
                Err(format!("{n} not exited"))
            }
        }
    };
    eventually(60, "all 100 exit", || running(berthd)).await;
    futures::future::join_all(ids.iter().map(|id| {
        let mut rt = berthd.runtime();
        let id = id.clone();
        async move {
            rt.remove_container(RemoveContainerRequest { container_id: id }).await.unwrap();
        }
    }))
    .await;
    let (seen, _) = collector.await.unwrap();
    assert_eq!(seen.len(), 400, "events: {}", seen.len());
    let mut per: HashMap<&str, Vec<i32>> = HashMap::new();
    for (id, kind) in &seen {
        per.entry(id.as_str()).or_default().push(*kind);
    }
    assert_eq!(per.len(), 100);
    for id in &ids {
        assert_eq!(per[id.as_str()], order, "{id}");
    }

    remove_pods(berthd, &pods).await;
    env.assert_no_leaks(berthd).await;
}

#[tokio::test]
async fn exits_while_berthd_was_restarted_are_events_and_shutdown_ends_streams() {
    use ContainerEventType::*;
    let mut node = Node::start().await;
    let pod = run_pod(&node, "restart").await;
    // It must outlive berthd's restart (which takes far longer under emulation), or its
    // exit happens before the stream below is opened and no subscriber could see it.
    let secs = scaled(Duration::from_secs(3)).as_secs().to_string();
    let id = create(&node, &pod, "later", &["sleep", &secs]).await;
    start(&node.berthd, &id).await;
    node.berthd.kill();
    node.berthd.restart().await;
    let (mut berthd, env) = (node.berthd, node.env);

    // The restarted berthd watches the container it found running: its exit is an event.
    let mut stream =
        berthd.runtime().get_container_events(GetEventsRequest {}).await.unwrap().into_inner();
    let e = tokio::time::timeout(scaled(Duration::from_secs(20)), stream.message())
        .await
        .expect("a STOPPED event")
        .unwrap()
        .unwrap();
    assert_eq!(
        (e.container_id.as_str(), e.container_event_type),
        (id.as_str(), ContainerStoppedEvent as i32)
    );
    berthd
        .runtime()
        .remove_container(RemoveContainerRequest { container_id: id.clone() })
        .await
        .unwrap();
    let e = stream.message().await.unwrap().unwrap();
    assert_eq!(e.container_event_type, ContainerDeletedEvent as i32);
    remove_pods(&berthd, &[pod]).await;
    env.assert_no_leaks(&berthd).await;

    // An open event stream does not hold berthd's shutdown up to its timeout.
    let t = Instant::now();
    assert!(berthd.stop().await.success());
    assert!(t.elapsed() < scaled(Duration::from_secs(5)), "shutdown took {:?}", t.elapsed());
    assert!(!matches!(stream.message().await, Ok(Some(_))));
}
