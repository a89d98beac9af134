//! cgroup v2 hosts (systemd as PID 1, one unified hierarchy, every controller): what the
//! kubelet's limits become in the files of a container's and a pod's cgroup. These tests
//! need such a host and run in the VM lane (`integration/vm/run-lane-tests.sh`); on other
//! hosts they are ignored, and run anyway they fail at once naming the host they need.
//! Behaviour under the limits (OOM kill, pids, devices) is tested host-neutrally in
//! `security.rs`, which the lane runs too.

use berth_integration::pods::{busybox, Node};
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
    let dir = pod_dir.join(&id);
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
