//! Security contexts and volumes through a real berthd: seccomp modes, capability-gated
//! syscalls, users and groups, read-only roots, masked paths and mount propagation.

use berth_integration::pods::{busybox, busybox_with, Node};
use berth_proto::*;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::path::Path;
use std::time::{Duration, Instant};

fn legacy_seccomp(path: &str, add_caps: &[&str]) -> LinuxContainerSecurityContext {
    #[allow(deprecated)]
    LinuxContainerSecurityContext {
        seccomp_profile_path: path.into(),
        capabilities: Some(Capability {
            add_capabilities: add_caps.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The `Seccomp:` mode of the container's own processes: 0 off, 2 filtered.
async fn seccomp_mode(node: &Node, id: &str) -> String {
    let status = node.exec_ok(id, &["cat", "/proc/self/status"]).await;
    let line = status.lines().find(|l| l.starts_with("Seccomp:")).unwrap().to_string();
    line.split_whitespace().nth(1).unwrap().to_string()
}

#[tokio::test]
async fn seccomp_profiles_and_capability_gated_syscalls() {
    let node = Node::start().await;
    let logs = tempfile::tempdir().unwrap();
    let pod = node.run_pod("seccomp", logs.path()).await;
    let sleep = ["sleep", "1000"];

    // No profile asked for is unconfined (Kubernetes' rule); runtime/default filters.
    let none = node.run(&pod, busybox_with("none", &sleep, legacy_seccomp("", &[]))).await;
    assert_eq!(seccomp_mode(&node, &none).await, "0");
    let dflt = node.run(&pod, busybox_with("dflt", &sleep, legacy_seccomp("docker/default", &[])));
    let dflt = dflt.await;
    assert_eq!(seccomp_mode(&node, &dflt).await, "2");
    let r = node.exec(&dflt, &["hostname", "other"]).await.unwrap();
    assert_ne!(r.exit_code, 0, "sethostname without SYS_ADMIN must fail");

    // SYS_ADMIN lifts the filter on sethostname (in the pod's own UTS namespace).
    let sc = legacy_seccomp("runtime/default", &["SYS_ADMIN"]);
    let admin = node.run(&pod, busybox_with("admin", &sleep, sc)).await;
    assert_eq!(seccomp_mode(&node, &admin).await, "2");
    node.exec_ok(&admin, &["hostname", "renamed"]).await;
    assert_eq!(node.exec_ok(&admin, &["hostname"]).await.trim(), "renamed");

    // A profile path that is neither a known name nor localhost/ is refused at create.
    let err = node
        .create(&pod, busybox_with("bad", &sleep, legacy_seccomp("/etc/profile.json", &[])))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("seccomp_profile_path"), "{err:?}");

    node.remove_pod_and_check(&pod).await;
}

#[tokio::test]
async fn run_as_group_without_a_user_is_refused_and_nothing_is_left() {
    let node = Node::start().await;
    let logs = tempfile::tempdir().unwrap();
    let pod = node.run_pod("group", logs.path()).await;
    let sc = LinuxContainerSecurityContext {
        run_as_group: Some(Int64Value { value: 1002 }),
        ..Default::default()
    };
    let err = node.create(&pod, busybox_with("g", &["id"], sc)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("run_as_group"), "{err:?}");
    let listed = node.list_containers().await;
    assert!(listed.is_empty(), "a refused container was recorded: {listed:?}");
    // Nor its cgroup, which berthd makes beside the spec (refused here).
    let cgroups = node.env.container_cgroups();
    assert!(cgroups.is_empty(), "cgroups of a refused container: {cgroups:?}");
    // The name is free again.
    let sc = LinuxContainerSecurityContext {
        run_as_user: Some(Int64Value { value: 1001 }),
        run_as_group: Some(Int64Value { value: 1002 }),
        ..Default::default()
    };
    let id = node.run(&pod, busybox_with("g", &["sleep", "1000"], sc)).await;
    assert_eq!(node.exec_ok(&id, &["id", "-u"]).await.trim(), "1001");
    assert_eq!(node.exec_ok(&id, &["id", "-g"]).await.trim(), "1002");
    node.remove_pod_and_check(&pod).await;
}

/// A host directory that is its own shared mount, as kubelet volumes with
/// Bidirectional propagation are.
struct SharedDir {
    dir: tempfile::TempDir,
}

impl SharedDir {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        mount(Some(p), p, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>).unwrap();
        mount(None::<&str>, p, None::<&str>, MsFlags::MS_SHARED | MsFlags::MS_REC, None::<&str>)
            .unwrap();
        SharedDir { dir }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SharedDir {
    fn drop(&mut self) {
        for sub in ["from-host", "from-container"] {
            let _ = umount2(&self.path().join(sub), MntFlags::MNT_DETACH);
        }
        let _ = umount2(self.path(), MntFlags::MNT_DETACH);
    }
}

#[tokio::test]
async fn bidirectional_volume_propagates_both_ways_and_private_does_not() {
    let node = Node::start().await;
    let logs = tempfile::tempdir().unwrap();
    let pod = node.run_pod("prop", logs.path()).await;
    let shared = SharedDir::new();
    let vol = shared.path().display().to_string();
    let volume = |propagation: MountPropagation| Mount {
        container_path: vol.clone(),
        host_path: vol.clone(),
        propagation: propagation as i32,
        ..Default::default()
    };
    let privileged = LinuxContainerSecurityContext { privileged: true, ..Default::default() };
    let mut cfg = busybox_with("rshared", &["sleep", "1000"], privileged.clone());
    cfg.mounts = vec![volume(MountPropagation::PropagationBidirectional)];
    let rshared = node.run(&pod, cfg).await;
    let mut cfg = busybox_with("private", &["sleep", "1000"], privileged);
    cfg.mounts = vec![volume(MountPropagation::PropagationPrivate)];
    let private = node.run(&pod, cfg).await;

    // Host → container: a tmpfs mounted on the host after the start shows inside.
    let from_host = shared.path().join("from-host");
    std::fs::create_dir(&from_host).unwrap();
    mount(Some("tmpfs"), &from_host, Some("tmpfs"), MsFlags::empty(), None::<&str>).unwrap();
    std::fs::write(from_host.join("flag"), "host").unwrap();
    let inside = format!("{vol}/from-host/flag");
    assert_eq!(node.exec_ok(&rshared, &["cat", &inside]).await, "host");
    let r = node.exec(&private, &["cat", &inside]).await.unwrap();
    assert_ne!(r.exit_code, 0, "a private volume received a host mount");

    // Container → host: a bind made inside shows on the host.
    let target = format!("{vol}/from-container");
    node.exec_ok(&rshared, &["mkdir", "-p", &target]).await;
    node.exec_ok(&rshared, &["mount", "--bind", "/etc", &target]).await;
    assert!(
        shared.path().join("from-container/passwd").exists(),
        "the container's mount did not reach the host"
    );

    // Nothing of the container's own tree (its /proc, /dev, rootfs) leaked to the host.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let rootfs_leaks: Vec<&str> = mountinfo
        .lines()
        .filter(|l| l.contains(node.berthd.root_dir().to_str().unwrap()))
        .filter(|l| l.contains("/proc ") || l.contains("/dev "))
        .collect();
    assert!(rootfs_leaks.is_empty(), "container mounts appeared on the host: {rootfs_leaks:?}");

    umount2(&shared.path().join("from-container"), MntFlags::MNT_DETACH).unwrap();
    node.remove_pod_and_check(&pod).await;
    drop(shared);
}

#[tokio::test]
async fn read_only_root_and_masked_paths() {
    let node = Node::start().await;
    let logs = tempfile::tempdir().unwrap();
    let pod = node.run_pod("ro", logs.path()).await;
    let sc = LinuxContainerSecurityContext { readonly_rootfs: true, ..Default::default() };
    let id = node.run(&pod, busybox_with("ro", &["sleep", "1000"], sc)).await;
    let r = node.exec(&id, &["touch", "/newfile"]).await.unwrap();
    assert_ne!(r.exit_code, 0, "a read-only root took a write");
    assert!(String::from_utf8_lossy(&r.stderr).contains("Read-only"), "{r:?}");
    // The default masked set: /proc/timer_list reads as empty, /proc/sys is read-only.
    assert_eq!(
        node.exec_ok(&id, &["wc", "-c", "/proc/timer_list"]).await.split_whitespace().next(),
        Some("0")
    );
    let r = node.exec(&id, &["sh", "-c", "echo 1 > /proc/sys/kernel/domainname"]).await.unwrap();
    assert_ne!(r.exit_code, 0);
    let plain = node.run(&pod, busybox("plain", &["sleep", "1000"])).await;
    node.exec_ok(&plain, &["touch", "/newfile"]).await;
    node.remove_pod_and_check(&pod).await;
}

fn pid_mode(mode: NamespaceMode, target: &str) -> LinuxContainerSecurityContext {
    LinuxContainerSecurityContext {
        namespace_options: Some(NamespaceOption {
            pid: mode as i32,
            target_id: target.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Host pids of processes whose comm is `name`.
fn host_pids_named(name: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .collect()
}

#[tokio::test]
async fn pod_pid_namespace_has_an_init_and_target_joins_a_container() {
    let node = Node::start().await;
    let logs = tempfile::tempdir().unwrap();
    let mut config = node.pod_config("pidpod", logs.path());
    config.linux.as_mut().unwrap().security_context = Some(LinuxSandboxSecurityContext {
        namespace_options: Some(NamespaceOption {
            pid: NamespaceMode::Pod as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    let before = host_pids_named("berth-pod-init");
    let pod = node.run_pod_with(config).await;
    let pod_mode = pid_mode(NamespaceMode::Pod, "");
    let a = node.run(&pod, busybox_with("a", &["sleep", "1001"], pod_mode.clone())).await;
    let b = node.run(&pod, busybox_with("b", &["sleep", "1002"], pod_mode)).await;
    // PID 1 is the pod's init, not a container; each container sees the other's process.
    assert_eq!(node.exec_ok(&a, &["cat", "/proc/1/comm"]).await.trim(), "berth-pod-init");
    let ps = node.exec_ok(&b, &["ps", "-o", "args"]).await;
    assert!(ps.contains("sleep 1001") && ps.contains("sleep 1002"), "{ps}");
    let inits: Vec<i32> =
        host_pids_named("berth-pod-init").into_iter().filter(|p| !before.contains(p)).collect();
    assert_eq!(inits.len(), 1, "one init per pod: {inits:?}");

    // TARGET joins one container's namespace (what ephemeral debug containers do).
    let plain = node.run(&pod, busybox("plain", &["sleep", "1003"])).await;
    let debug = node
        .run(
            &pod,
            busybox_with("debug", &["sleep", "1004"], pid_mode(NamespaceMode::Target, &plain)),
        )
        .await;
    let ps = node.exec_ok(&debug, &["ps", "-o", "args"]).await;
    assert!(ps.contains("sleep 1003") && !ps.contains("sleep 1001"), "{ps}");
    let err = node
        .create(&pod, busybox_with("bad", &["true"], pid_mode(NamespaceMode::Target, "nope")))
        .await
        .unwrap_err();
    assert!(err.message().contains("target_id"), "{err:?}");

    // Stopping the pod ends its init with its containers.
    node.berthd
        .runtime()
        .stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod.clone() })
        .await
        .unwrap();
    assert!(
        std::fs::metadata(format!("/proc/{}", inits[0])).is_err(),
        "the pod's init outlived StopPodSandbox"
    );
    node.remove_pod_and_check(&pod).await;
}

/// The container's memory limit as its own cgroup reports it (v1 or v2).
async fn memory_limit_seen_inside(node: &Node, id: &str) -> String {
    let script = "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null \
                  || cat /sys/fs/cgroup/memory.max";
    node.exec_ok(id, &["sh", "-c", script]).await.trim().to_string()
}

#[tokio::test]
async fn resources_update_live_and_are_reported() {
    let node = Node::start().await;
    let logs = tempfile::tempdir().unwrap();
    let pod = node.run_pod("res", logs.path()).await;
    let mut cfg = busybox("svc", &["sleep", "1000"]);
    cfg.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            cpu_shares: 512,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = node.run(&pod, cfg).await;
    assert_eq!(memory_limit_seen_inside(&node, &id).await, (64u64 << 20).to_string());

    let update = LinuxContainerResources {
        memory_limit_in_bytes: 128 << 20,
        cpu_shares: 256,
        cpu_quota: 50_000,
        cpu_period: 100_000,
        ..Default::default()
    };
    let mut rt = node.berthd.runtime();
    rt.update_container_resources(UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(update.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(memory_limit_seen_inside(&node, &id).await, (128u64 << 20).to_string());
    let reported = node.status(&id).await.resources.and_then(|r| r.linux).unwrap();
    assert_eq!((reported.memory_limit_in_bytes, reported.cpu_shares), (128 << 20, 256));
    assert_eq!(reported.cpu_quota, 50_000);

    // Unknown and exited containers are refused with a clear error.
    let err = rt
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: "nope".into(),
            linux: Some(update.clone()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    rt.stop_container(StopContainerRequest { container_id: id.clone(), timeout: 0 }).await.unwrap();
    let err = rt
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(update),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    node.remove_pod_and_check(&pod).await;
}

/// A limit file of the pod cgroup `parent` as the host sees it: the v1 memory/cpu
/// hierarchy's file, or the v2 tree's.
fn pod_cgroup_file(parent: &str, v1: (&str, &str), v2: &str) -> String {
    let rel = parent.trim_start_matches('/');
    let v1 = Path::new("/sys/fs/cgroup").join(v1.0).join(rel).join(v1.1);
    let v2 = Path::new("/sys/fs/cgroup").join(rel).join(v2);
    let path = if v1.exists() { v1 } else { v2 };
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// In-place pod resize: UpdatePodSandboxResources sets the pod cgroup's limits, and the
/// pod's containers (and status) go on; bad values, unknown and stopped pods are refused.
#[tokio::test]
async fn pod_resources_update_in_place() {
    let node = Node::start().await;
    let logs = tempfile::tempdir().unwrap();
    let config = node.pod_config("podres", logs.path());
    let parent = config.linux.as_ref().unwrap().cgroup_parent.clone();
    let pod = node.run_pod_with(config).await;
    let id = node.run(&pod, busybox("svc", &["sleep", "1000"])).await;
    let mut rt = node.berthd.runtime();
    let resources = LinuxContainerResources {
        memory_limit_in_bytes: 200 << 20,
        cpu_quota: 30_000,
        cpu_period: 100_000,
        cpu_shares: 512,
        ..Default::default()
    };
    let update = |r: LinuxContainerResources, pod: &str| UpdatePodSandboxResourcesRequest {
        pod_sandbox_id: pod.into(),
        resources: Some(r),
        overhead: None,
    };
    rt.update_pod_sandbox_resources(update(resources.clone(), &pod)).await.unwrap();
    let memory = pod_cgroup_file(&parent, ("memory", "memory.limit_in_bytes"), "memory.max");
    assert_eq!(memory.trim(), (200u64 << 20).to_string());
    let quota = pod_cgroup_file(&parent, ("cpu", "cpu.cfs_quota_us"), "cpu.max");
    assert!(quota.starts_with("30000"), "cpu quota of the pod cgroup: {quota}");
    assert_eq!(node.status(&id).await.state, ContainerState::ContainerRunning as i32);

    let bad = LinuxContainerResources { cpu_period: -1, ..resources.clone() };
    let err = rt.update_pod_sandbox_resources(update(bad, &pod)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("resources.cpu_period"), "{err:?}");
    let err = rt.update_pod_sandbox_resources(update(resources.clone(), "nope")).await;
    assert_eq!(err.unwrap_err().code(), tonic::Code::NotFound);
    let err = rt
        .update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest::default())
        .await
        .unwrap_err();
    assert!(err.message().contains("pod_sandbox_id"), "{err:?}");
    rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await.unwrap();
    let err = rt.update_pod_sandbox_resources(update(resources, &pod)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    node.remove_pod_and_check(&pod).await;
}

/// The effective capability mask of `cmd`'s process in the container.
async fn cap_eff(node: &Node, id: &str) -> u64 {
    let status = node.exec_ok(id, &["cat", "/proc/self/status"]).await;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap().trim().to_string();
    u64::from_str_radix(&hex, 16).unwrap()
}

#[tokio::test]
async fn capabilities_default_added_dropped_and_privileged() {
    const CHOWN: u64 = 1 << 0;
    const NET_ADMIN: u64 = 1 << 12;
    const SYS_ADMIN: u64 = 1 << 21;
    let node = Node::start().await;
    let logs = tempfile::tempdir().unwrap();
    let pod = node.run_pod("caps", logs.path()).await;
    let caps = |add: &[&str], drop: &[&str]| LinuxContainerSecurityContext {
        capabilities: Some(Capability {
            add_capabilities: add.iter().map(|c| c.to_string()).collect(),
            drop_capabilities: drop.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let sleep = ["sleep", "1000"];
    let dflt = node.run(&pod, busybox("dflt", &sleep)).await;
    let m = cap_eff(&node, &dflt).await;
    assert!(m & CHOWN != 0 && m & NET_ADMIN == 0 && m & SYS_ADMIN == 0, "{m:#x}");
    let added = node.run(&pod, busybox_with("added", &sleep, caps(&["NET_ADMIN"], &[]))).await;
    assert_eq!(cap_eff(&node, &added).await, m | NET_ADMIN);
    let dropped = node.run(&pod, busybox_with("dropped", &sleep, caps(&[], &["CHOWN"]))).await;
    assert_eq!(cap_eff(&node, &dropped).await, m & !CHOWN);
    let only = node.run(&pod, busybox_with("only", &sleep, caps(&["CAP_CHOWN"], &["ALL"]))).await;
    assert_eq!(cap_eff(&node, &only).await, CHOWN);
    let privileged = LinuxContainerSecurityContext { privileged: true, ..Default::default() };
    let all = node.run(&pod, busybox_with("all", &sleep, privileged)).await;
    let host_bound = std::fs::read_to_string("/proc/self/status").unwrap();
    let host_bound = host_bound.lines().find_map(|l| l.strip_prefix("CapBnd:")).unwrap().trim();
    assert_eq!(cap_eff(&node, &all).await, u64::from_str_radix(host_bound, 16).unwrap());
    node.remove_pod_and_check(&pod).await;
}

#[tokio::test]
async fn users_and_supplemental_groups_from_the_request() {
    let node = Node::start().await;
    let logs = tempfile::tempdir().unwrap();
    let pod = node.run_pod("users", logs.path()).await;
    let sc = LinuxContainerSecurityContext {
        run_as_user: Some(Int64Value { value: 1234 }),
        run_as_group: Some(Int64Value { value: 2345 }),
        supplemental_groups: vec![3456, 4567],
        ..Default::default()
    };
    let id = node.run(&pod, busybox_with("u", &["sleep", "1000"], sc)).await;
    assert_eq!(node.exec_ok(&id, &["id", "-u"]).await.trim(), "1234");
    assert_eq!(node.exec_ok(&id, &["id", "-g"]).await.trim(), "2345");
    let groups = node.exec_ok(&id, &["id", "-G"]).await;
    for g in ["2345", "3456", "4567"] {
        assert!(groups.split_whitespace().any(|x| x == g), "{g} missing from {groups}");
    }
    // root by name resolves through the image's own /etc/passwd.
    let sc = LinuxContainerSecurityContext { run_as_username: "root".into(), ..Default::default() };
    let root = node.run(&pod, busybox_with("r", &["sleep", "1000"], sc)).await;
    assert_eq!(node.exec_ok(&root, &["id", "-u"]).await.trim(), "0");
    let sc =
        LinuxContainerSecurityContext { run_as_username: "nosuch".into(), ..Default::default() };
    let err = node.create(&pod, busybox_with("n", &["true"], sc)).await.unwrap_err();
    assert!(err.message().contains("nosuch"), "{err:?}");
    // The failed create (refused in the shim) left no cgroup behind: only the two
    // running containers have one, in each hierarchy.
    let cgroups = node.env.container_cgroups();
    let ids = [&id, &root];
    let strays: Vec<_> =
        cgroups.iter().filter(|p| !ids.iter().any(|id| p.ends_with(id.as_str()))).collect();
    assert!(strays.is_empty(), "cgroups of a failed create: {strays:?}");
    node.remove_pod_and_check(&pod).await;
}

/// www-data (33) is in the image's `users` group (100): Merge adds it, Strict does not;
/// ContainerStatus.user says what the process really got, primary group included.
#[tokio::test]
async fn supplemental_groups_policy_merge_and_strict() {
    let node = Node::start().await;
    let logs = tempfile::tempdir().unwrap();
    let pod = node.run_pod("sgpolicy", logs.path()).await;
    let features = node.berthd.runtime().status(StatusRequest { verbose: false }).await.unwrap();
    let features = features.into_inner().features.expect("Status.features");
    assert!(features.supplemental_groups_policy, "{features:?}");
    for (name, policy, want) in [
        ("merge", SupplementalGroupsPolicy::Merge, vec![33, 100, 1234]),
        ("strict", SupplementalGroupsPolicy::Strict, vec![33, 1234]),
    ] {
        let sc = LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 33 }),
            supplemental_groups: vec![1234],
            supplemental_groups_policy: policy as i32,
            ..Default::default()
        };
        let id = node.run(&pod, busybox_with(name, &["sleep", "1000"], sc)).await;
        let mut got: Vec<i64> = node
            .exec_ok(&id, &["id", "-G"])
            .await
            .split_whitespace()
            .map(|g| g.parse().unwrap())
            .collect();
        got.sort();
        got.dedup();
        assert_eq!(got, want, "{name}: id -G");
        let user = node.status(&id).await.user.and_then(|u| u.linux).expect("status.user");
        let mut groups = user.supplemental_groups.clone();
        groups.sort();
        assert_eq!((user.uid, user.gid, groups), (33, 33, want), "{name}: status.user");
    }
    let sc = LinuxContainerSecurityContext { supplemental_groups_policy: 7, ..Default::default() };
    let err = node.create(&pod, busybox_with("bad", &["true"], sc)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("supplemental_groups_policy"), "{err:?}");
    node.remove_pod_and_check(&pod).await;
}

#[tokio::test]
async fn memory_limit_ends_in_oomkilled() {
    let node = Node::start().await;
    let logs = tempfile::tempdir().unwrap();
    let pod = node.run_pod("oom", logs.path()).await;
    let mut cfg = busybox("hog", &["sh", "-c", "head -c 512m /dev/zero | tail"]);
    cfg.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            memory_limit_in_bytes: 16 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = node.run(&pod, cfg).await;
    let s = node.wait_exited(&id).await;
    assert_eq!(s.reason, "OOMKilled", "{s:?}");
    assert_eq!(s.exit_code, 137, "killed by SIGKILL: {s:?}");
    node.remove_pod_and_check(&pod).await;
}

/// Host processes whose command line is exactly `args`.
fn processes_running(args: &[&str]) -> usize {
    let want: Vec<u8> = args.iter().flat_map(|a| a.bytes().chain([0])).collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|c| *c == want)
        .count()
}

#[tokio::test]
async fn the_configured_pids_limit_holds() {
    let node = Node::start_with_config("[containers]\npids_limit = 12\n").await;
    let logs = tempfile::tempdir().unwrap();
    let pod = node.run_pod("pids", logs.path()).await;
    let id = node.run(&pod, busybox("forker", &["sleep", "1718"])).await;
    // The shell gives up at the first fork the limit refuses.
    let script = "i=0; while [ $i -lt 40 ]; do sleep 1717 & i=$((i+1)); done";
    let r = node.exec(&id, &["sh", "-c", script]).await.unwrap();
    assert_ne!(r.exit_code, 0, "forty forks succeeded under a limit of 12");
    // The shell exits at its first refused fork, while children it forked just before may
    // not have become `sleep` yet (on a loaded machine): count once they all have.
    let deadline = Instant::now() + berth_integration::scaled(Duration::from_secs(5));
    let mut sleepers = processes_running(&["sleep", "1717"]);
    while sleepers < 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        sleepers = processes_running(&["sleep", "1717"]);
    }
    // The container's sleep and the exec's shell take two of the twelve.
    assert!((5..=10).contains(&sleepers), "{sleepers} sleepers under a limit of 12");
    node.remove_pod_and_check(&pod).await;
}

#[tokio::test]
async fn devices_requested_refused_and_privileged() {
    let node = Node::start().await;
    let logs = tempfile::tempdir().unwrap();
    let pod = node.run_pod("devs", logs.path()).await;
    // A host block device (a loop device, which opens even unbound): a node for it can
    // be made (CAP_MKNOD) but not opened.
    let (major, minor) = (7, 0);
    let mut cfg = busybox("plain", &["sleep", "1000"]);
    cfg.devices = vec![Device {
        container_path: "/dev/extra/null".into(),
        host_path: "/dev/null".into(),
        permissions: "rw".into(),
    }];
    let plain = node.run(&pod, cfg).await;
    let mknod = format!("mknod /tmp/disk b {major} {minor} && head -c 1 /tmp/disk");
    let r = node.exec(&plain, &["sh", "-c", &mknod]).await.unwrap();
    assert_ne!(r.exit_code, 0, "a container read the host's disk");
    assert!(String::from_utf8_lossy(&r.stderr).contains("not permitted"), "{r:?}");
    node.exec_ok(&plain, &["sh", "-c", "echo x > /dev/extra/null"]).await;

    let privileged = LinuxContainerSecurityContext { privileged: true, ..Default::default() };
    let all = node.run(&pod, busybox_with("all", &["sleep", "1000"], privileged)).await;
    node.exec_ok(&all, &["sh", "-c", &mknod]).await;
    let err = node
        .create(&pod, {
            let mut c = busybox("bad", &["true"]);
            c.devices = vec![Device { host_path: "/etc/hostname".into(), ..Default::default() }];
            c
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("devices[0].host_path"), "{err:?}");
    node.remove_pod_and_check(&pod).await;
}

/// A host directory with a tmpfs mounted inside it (at `tmpfs/`).
struct DirWithSubmount {
    dir: tempfile::TempDir,
}

impl DirWithSubmount {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("tmpfs");
        std::fs::create_dir(&sub).unwrap();
        mount(Some("tmpfs"), &sub, Some("tmpfs"), MsFlags::empty(), None::<&str>).unwrap();
        DirWithSubmount { dir }
    }
}

impl Drop for DirWithSubmount {
    fn drop(&mut self) {
        let _ = umount2(&self.dir.path().join("tmpfs"), MntFlags::MNT_DETACH);
    }
}

#[tokio::test]
async fn read_only_volumes_recursive_or_not() {
    let node = Node::start().await;
    let logs = tempfile::tempdir().unwrap();
    let pod = node.run_pod("rro", logs.path()).await;
    let host = DirWithSubmount::new();
    let volume = |recursive: bool, readonly: bool, propagation: MountPropagation| Mount {
        container_path: "/mnt".into(),
        host_path: host.dir.path().display().to_string(),
        readonly,
        recursive_read_only: recursive,
        propagation: propagation as i32,
        ..Default::default()
    };
    let with = |name: &str, m: Mount| {
        let mut c = busybox(name, &["sleep", "1000"]);
        c.mounts = vec![m];
        c
    };
    let private = MountPropagation::PropagationPrivate;
    // Read-only, not recursively: the volume refuses writes, its submount takes them.
    let plain = node.run(&pod, with("plain", volume(false, true, private))).await;
    let r = node.exec(&plain, &["touch", "/mnt/top"]).await.unwrap();
    assert_ne!(r.exit_code, 0, "a read-only volume took a write");
    node.exec_ok(&plain, &["touch", "/mnt/tmpfs/file"]).await;
    // Recursively read-only: the submount refuses writes too.
    let rro = node.run(&pod, with("rro", volume(true, true, private))).await;
    let r = node.exec(&rro, &["touch", "/mnt/tmpfs/other"]).await.unwrap();
    assert_ne!(r.exit_code, 0);
    assert!(String::from_utf8_lossy(&r.stderr).contains("Read-only"), "{r:?}");
    // Combinations that cannot hold are refused, naming the field.
    for (name, m) in [
        ("rw", volume(true, false, private)),
        ("slave", volume(true, true, MountPropagation::PropagationHostToContainer)),
        ("shared", volume(true, true, MountPropagation::PropagationBidirectional)),
    ] {
        let err = node.create(&pod, with(name, m)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{name}: {err:?}");
        assert!(err.message().contains("recursive_read_only"), "{name}: {err:?}");
    }
    let status = node.berthd.runtime().status(StatusRequest { verbose: false }).await.unwrap();
    let native = status.into_inner().runtime_handlers.into_iter().find(|h| h.name.is_empty());
    assert!(native.unwrap().features.unwrap().recursive_read_only_mounts);
    node.remove_pod_and_check(&pod).await;
}

/// berth does not label: on a host with SELinux, requests for labels are refused naming
/// the field; without it (this machine, the VM lane) they are ignored, as containerd does.
#[tokio::test]
async fn selinux_options_refused_with_selinux_ignored_without() {
    let selinux = Path::new("/sys/fs/selinux/enforce").exists();
    let node = Node::start().await;
    let logs = tempfile::tempdir().unwrap();
    let options = || Some(SeLinuxOption { level: "s0:c1,c2".into(), ..Default::default() });

    let mut pod_config = node.pod_config("selinux", logs.path());
    let linux = pod_config.linux.get_or_insert_with(Default::default);
    linux.security_context.get_or_insert_with(Default::default).selinux_options = options();
    let ran = node
        .berthd
        .runtime()
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config),
            runtime_handler: node.handler.clone(),
        })
        .await;
    let pod = match (selinux, ran) {
        (false, Ok(r)) => r.into_inner().pod_sandbox_id,
        (true, Err(e)) => {
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
            assert!(e.message().contains("config.linux.security_context.selinux_options"), "{e:?}");
            node.run_pod("selinux", logs.path()).await
        }
        (_, other) => panic!("SELinux {selinux}: {other:?}"),
    };

    let sc = LinuxContainerSecurityContext { selinux_options: options(), ..Default::default() };
    let labelled = busybox_with("labelled", &["sleep", "1000"], sc);
    let mut relabel = busybox("relabel", &["sleep", "1000"]);
    let vol = tempfile::tempdir().unwrap();
    relabel.mounts = vec![Mount {
        container_path: "/vol".into(),
        host_path: vol.path().display().to_string(),
        selinux_relabel: true,
        ..Default::default()
    }];
    for (cfg, field) in [
        (labelled, "config.linux.security_context.selinux_options"),
        (relabel, "config.mounts[0].selinux_relabel"),
    ] {
        if selinux {
            let err = node.create(&pod, cfg).await.unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
            assert!(err.message().contains(field), "{err:?}");
        } else {
            let id = node.run(&pod, cfg).await;
            assert_eq!(node.exec_ok(&id, &["echo", "ran"]).await.trim(), "ran", "{field}");
        }
    }
    node.remove_pod_and_check(&pod).await;
}
