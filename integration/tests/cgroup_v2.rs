//! cgroup v2 hosts (systemd as PID 1, one unified hierarchy, every controller): what the
//! kubelet's limits become in the files of a container's and a pod's cgroup. These tests
//! need such a host and run in the VM lane (`integration/vm/run-lane-tests.sh`); on other
//! hosts they are ignored, and run anyway they fail at once naming the host they need.
//! Behaviour under the limits (OOM kill, pids, devices) is tested host-neutrally in
//! `security.rs`, which the lane runs too.

use berth_integration::pods::{busybox, container_metrics, metric_descriptors, Node};
use berth_proto::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const MIB: i64 = 1 << 20;

fn require_v2() {
    assert!(
        Path::new("/sys/fs/cgroup/cgroup.controllers").exists(),
        "this test needs a cgroup v2-only host: run it in the VM lane (integration/vm)"
    );
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("read {}/{file}: {e}", dir.display()))
        .trim()
        .to_string()
}

fn has(list: &str, controllers: &[&str]) -> bool {
    controllers.iter().all(|c| list.split_whitespace().any(|x| x == *c))
}

#[tokio::test]
#[ignore = "needs a cgroup v2-only host: integration/vm/run-lane-tests.sh runs it"]
async fn pod_and_container_limits_are_the_v2_files() {
    require_v2();
    let node = Node::start_with_config("[containers]\npids_limit = 50\n").await;
    let logs = tempfile::tempdir().unwrap();
    let mut config = node.pod_config("limits", logs.path());
    let linux = config.linux.as_mut().unwrap();
    linux.resources = Some(LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 200_000,
        cpu_shares: 1024,
        memory_limit_in_bytes: 256 * MIB,
        ..Default::default()
    });
    let pod_dir = PathBuf::from("/sys/fs/cgroup")
        .join(node.env.cgroup_parent("limits").trim_start_matches('/'));
    let pod = node.run_pod_with(config).await;
    assert_eq!(read(&pod_dir, "cpu.max"), "200000 100000");
    assert_eq!(read(&pod_dir, "cpu.weight"), "39");
    assert_eq!(read(&pod_dir, "memory.max"), (256 * MIB).to_string());
    let delegated = read(&pod_dir, "cgroup.subtree_control");
    assert!(has(&delegated, &["cpu", "memory", "pids", "cpuset", "io"]), "{delegated}");

    let mut cfg = busybox("svc", &["sleep", "1000"]);
    cfg.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 * MIB,
            memory_swap_limit_in_bytes: 64 * MIB,
            cpuset_cpus: "0".into(),
            cpuset_mems: "0".into(),
            hugepage_limits: vec![HugepageLimit { page_size: "2MB".into(), limit: 4 << 20 }],
            unified: HashMap::from([("memory.high".to_string(), (48 * MIB).to_string())]),
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = node.run(&pod, cfg).await;
    let dir = pod_dir.join(berth_integration::leaks::container_cgroup(&id));
    assert_eq!(read(&dir, "cpu.max"), "50000 100000");
    assert_eq!(read(&dir, "cpu.weight"), "20", "shares 512 as a weight");
    assert_eq!(read(&dir, "memory.max"), (64 * MIB).to_string());
    if dir.join("memory.swap.max").exists() {
        assert_eq!(read(&dir, "memory.swap.max"), "0", "swap limit = memory limit: no swap");
    }
    assert_eq!(read(&dir, "memory.high"), (48 * MIB).to_string());
    assert_eq!(read(&dir, "cpuset.cpus"), "0");
    assert_eq!(read(&dir, "cpuset.mems"), "0");
    assert_eq!(read(&dir, "pids.max"), "50");
    assert_eq!(read(&dir, "hugetlb.2MB.max"), (4 << 20).to_string());
    // The container sees its own cgroup as the root of its cgroup namespace.
    let inside = node.exec_ok(&id, &["cat", "/sys/fs/cgroup/memory.max"]).await;
    assert_eq!(inside.trim(), (64 * MIB).to_string());
    let procs = read(&dir, "cgroup.procs");
    assert_eq!(procs.lines().count(), 1, "the container's process alone: {procs}");
    // An exec'd process runs in the container's cgroup (the shim forks it straight in).
    let exec_cgroup = node.exec_ok(&id, &["cat", "/proc/self/cgroup"]).await;
    let container_cgroup = dir.strip_prefix("/sys/fs/cgroup").unwrap().display().to_string();
    assert_eq!(exec_cgroup.trim(), format!("0::/{container_cgroup}"), "an exec's cgroup");

    // A live update rewrites the files.
    node.berthd
        .runtime()
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(LinuxContainerResources {
                cpu_period: 100_000,
                cpu_quota: 25_000,
                cpu_shares: 2048,
                memory_limit_in_bytes: 128 * MIB,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(read(&dir, "cpu.max"), "25000 100000");
    assert_eq!(read(&dir, "cpu.weight"), "79");
    assert_eq!(read(&dir, "memory.max"), (128 * MIB).to_string());

    node.remove_pod_and_check(&pod).await;
    assert!(!pod_dir.exists(), "the pod cgroup outlived the pod");
}

#[tokio::test]
#[ignore = "needs a cgroup v2-only host: integration/vm/run-lane-tests.sh runs it"]
async fn a_limit_the_host_cannot_apply_is_refused() {
    require_v2();
    let node = Node::start().await;
    let logs = tempfile::tempdir().unwrap();
    let pod = node.run_pod("badlimit", logs.path()).await;
    // A unified key naming no file of the cgroup fails the create with its name, and
    // leaves no container behind.
    let mut cfg = busybox("bad", &["sleep", "1000"]);
    cfg.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            unified: HashMap::from([("memory.nosuch".to_string(), "1".to_string())]),
            ..Default::default()
        }),
        ..Default::default()
    });
    let err = node.create(&pod, cfg).await.unwrap_err();
    assert!(err.message().contains("memory.nosuch"), "{err:?}");
    assert!(node.list_containers().await.is_empty(), "a half-made container is listed");
    node.remove_pod_and_check(&pod).await;
}

#[tokio::test]
#[ignore = "needs a cgroup v2-only host: integration/vm/run-lane-tests.sh runs it"]
async fn pressure_and_block_io_metrics_of_a_busy_container() {
    require_v2();
    /// `(some, full)` totals of a pressure file, in microseconds.
    fn totals(text: &str) -> (u64, Option<u64>) {
        let total = |kind: &str| {
            let line = text.lines().find(|l| l.starts_with(kind))?;
            line.split_whitespace().find_map(|kv| kv.strip_prefix("total="))?.parse().ok()
        };
        (total("some ").expect("a some line"), total("full "))
    }
    let node = Node::start().await;
    let logs = tempfile::tempdir().unwrap();
    let pod = node.run_pod("pressure", logs.path()).await;
    let pod_dir = PathBuf::from("/sys/fs/cgroup")
        .join(node.env.cgroup_parent("pressure").trim_start_matches('/'));
    // 4 MiB written past the page cache, then a busy loop. The writes go to a host
    // directory under /var/tmp: /tmp, where berthd's root is, may be a tmpfs.
    let volume = tempfile::tempdir_in("/var/tmp").unwrap();
    let script = "dd if=/dev/zero of=/data/direct bs=64k count=64 oflag=direct conv=fsync \
                  2>/dev/null; while :; do :; done";
    let mut cfg = busybox("busy", &["sh", "-c", script]);
    cfg.mounts = vec![Mount {
        container_path: "/data".into(),
        host_path: volume.path().display().to_string(),
        ..Default::default()
    }];
    let id = node.run(&pod, cfg).await;
    let dir = pod_dir.join(berth_integration::leaks::container_cgroup(&id));
    let metrics = || container_metrics(&node.berthd, &pod, &id);
    let value = |ms: &[Metric], name: &str| {
        ms.iter().find(|m| m.name == name).map(|m| m.value.as_ref().map_or(0, |v| v.value))
    };

    let descriptors: Vec<String> =
        metric_descriptors(&node.berthd).await.into_iter().map(|d| d.name).collect();
    for resource in ["cpu", "memory", "io"] {
        for kind in ["waiting", "stalled"] {
            let name = format!("container_pressure_{resource}_{kind}_seconds_total");
            assert!(descriptors.contains(&name), "{name} undescribed");
        }
    }

    // Block I/O: the writes are the container's where /var/tmp is on a block device (not
    // on tmpfs or overlay).
    let dev = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(volume.path()).unwrap().dev()
    };
    let on_disk =
        Path::new(&format!("/sys/dev/block/{}:{}", libc::major(dev), libc::minor(dev))).exists();
    assert!(dir.join("io.stat").exists(), "io is not delegated to {}", dir.display());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let ms = metrics().await;
        let io = [
            "container_fs_reads_bytes_total",
            "container_fs_writes_bytes_total",
            "container_fs_reads_total",
            "container_fs_writes_total",
        ];
        let fs: Vec<&Metric> = ms.iter().filter(|m| io.contains(&m.name.as_str())).collect();
        let written: u64 = fs
            .iter()
            .filter(|m| m.name == "container_fs_writes_bytes_total")
            .map(|m| m.value.as_ref().map_or(0, |v| v.value))
            .sum();
        for m in &fs {
            let device = m.label_values.last().unwrap();
            assert!(device.starts_with("/dev/") || device.contains(':'), "{m:?}");
        }
        if !on_disk || written >= 4 << 20 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{written} bytes written; io.stat: {}; {fs:?}",
            read(&dir, "io.stat")
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }

    // Pressure: each total in whole seconds, between the file's before and after the
    // scrape; "stalled" exactly where the file has a full line.
    let files = ["cpu.pressure", "memory.pressure", "io.pressure"];
    let before: Vec<_> = files.iter().map(|f| totals(&read(&dir, f))).collect();
    let ms = metrics().await;
    let after: Vec<_> = files.iter().map(|f| totals(&read(&dir, f))).collect();
    for (i, resource) in ["cpu", "memory", "io"].into_iter().enumerate() {
        let waiting = value(&ms, &format!("container_pressure_{resource}_waiting_seconds_total"))
            .unwrap_or_else(|| panic!("no {resource} waiting"));
        assert!(
            (before[i].0 / 1_000_000..=after[i].0 / 1_000_000).contains(&waiting),
            "{resource} waiting {waiting} s, file {:?}..{:?} us",
            before[i],
            after[i]
        );
        let stalled = value(&ms, &format!("container_pressure_{resource}_stalled_seconds_total"));
        match (before[i].1, after[i].1) {
            (Some(b), Some(a)) => {
                let s = stalled.unwrap_or_else(|| panic!("no {resource} stalled"));
                assert!((b / 1_000_000..=a / 1_000_000).contains(&s), "{resource} stalled {s}");
            }
            _ => assert_eq!(stalled, None, "{resource}: the kernel has no full line"),
        }
    }

    node.remove_pod_and_check(&pod).await;
}
