//! Containers through a real berthd: busybox pulled from a loopback registry, run in a
//! pod by the pod's shim, with logs, exit codes, stop timeouts and clean removal.

use berth_integration::pods::{busybox, Node};
use berth_proto::*;
use std::time::{Duration, Instant};

async fn a_container_runs_logs_exits_and_is_removed(node: Node) {
    let berthd = &node.berthd;
    let logs = tempfile::tempdir().unwrap();
    let pod_id = node.run_pod("ctr", logs.path()).await;
    let mut rt = berthd.runtime();

    let id = node
        .create(&pod_id, busybox("echo", &["sh", "-c", "echo hello; echo oops >&2; exit 3"]))
        .await
        .unwrap();
    assert_eq!(node.status(&id).await.state, ContainerState::ContainerCreated as i32);
    rt.start_container(StartContainerRequest { container_id: id.clone() }).await.unwrap();
    let s = node.wait_exited(&id).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (3, "Error"));
    assert!(s.started_at > 0 && s.finished_at >= s.started_at, "{s:?}");
    assert_eq!(s.log_path, logs.path().join("echo.log").display().to_string());
    let log = std::fs::read_to_string(logs.path().join("echo.log")).unwrap();
    assert!(log.lines().any(|l| l.ends_with(" stdout F hello")), "{log}");
    assert!(log.lines().any(|l| l.ends_with(" stderr F oops")), "{log}");

    // The kubelet's retry (the same request) gets the same container; a different one
    // under the same name is refused.
    let retry = busybox("echo", &["sh", "-c", "echo hello; echo oops >&2; exit 3"]);
    assert_eq!(node.create(&pod_id, retry).await.unwrap(), id);
    let again = node.create(&pod_id, busybox("echo", &["true"])).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::AlreadyExists);

    // A long-running one: running, then stopped after its grace period.
    let sleeper = node.create(&pod_id, busybox("sleeper", &["sleep", "1000"])).await.unwrap();
    rt.start_container(StartContainerRequest { container_id: sleeper.clone() }).await.unwrap();
    assert_eq!(node.status(&sleeper).await.state, ContainerState::ContainerRunning as i32);
    let listed = rt
        .list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                state: Some(ContainerStateValue { state: ContainerState::ContainerRunning as i32 }),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(listed.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), [sleeper.as_str()]);
    // The image is named by the id PullImage and ImageStatus give, in ContainerStatus and
    // ListContainers alike, both as image_ref and image_id (critest v1.36's image
    // identifier consistency).
    let image_id = berthd
        .image()
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec { image: "busybox".into(), ..Default::default() }),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .image
        .unwrap()
        .id;
    assert!(image_id.starts_with("sha256:"), "{image_id}");
    let s = node.status(&sleeper).await;
    // image_id is the image's id everywhere; image_ref the digest reference it came from.
    assert_eq!([s.image_id.as_str(), listed[0].image_id.as_str()], [image_id.as_str(); 2]);
    assert!(s.image_ref.contains("busybox@sha256:"), "{}", s.image_ref);
    assert_eq!(listed[0].image_ref, s.image_ref);
    let t = Instant::now();
    rt.stop_container(StopContainerRequest { container_id: sleeper.clone(), timeout: 1 })
        .await
        .unwrap();
    assert!(t.elapsed() >= Duration::from_millis(900), "the grace period was not given");
    let s = node.wait_exited(&sleeper).await;
    // sleep is PID 1 of its pid namespace and ignores SIGTERM: SIGKILL ends it.
    assert_eq!(s.exit_code, 137, "{s:?}");
    rt.stop_container(StopContainerRequest { container_id: sleeper.clone(), timeout: 1 })
        .await
        .unwrap();

    rt.remove_container(RemoveContainerRequest { container_id: id.clone() }).await.unwrap();
    rt.remove_container(RemoveContainerRequest { container_id: id.clone() }).await.unwrap();
    let err = rt
        .container_status(ContainerStatusRequest { container_id: id, verbose: false })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // Removing the pod removes its remaining container and its shim.
    assert_eq!(node.shim_processes(), 1);
    rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod_id.clone() }).await.unwrap();
    rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod_id }).await.unwrap();
    assert!(rt
        .list_containers(ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers
        .is_empty());
    let deadline = Instant::now() + Duration::from_secs(5);
    while node.shim_processes() > 0 {
        assert!(Instant::now() < deadline, "the pod's shim outlived the pod");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!berthd
        .state_dir()
        .join("containers")
        .read_dir()
        .is_ok_and(|mut d| d.next().is_some()));
    node.env.assert_no_leaks(berthd).await;
}

async fn containers_outlive_a_berthd_crash_and_exits_meanwhile_are_reported(mut node: Node) {
    let logs = tempfile::tempdir().unwrap();
    let pod_id = node.run_pod("crash", logs.path()).await;
    let mut ids = Vec::new();
    for (name, args) in
        [("runs", vec!["sleep", "1000"]), ("exits", vec!["sh", "-c", "sleep 1; exit 7"])]
    {
        ids.push(node.run(&pod_id, busybox(name, &args)).await);
    }
    node.berthd.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await; // "exits" ends while berthd is down
    node.berthd.restart().await;
    assert_eq!(node.status(&ids[0]).await.state, ContainerState::ContainerRunning as i32);
    let s = node.wait_exited(&ids[1]).await;
    assert_eq!(s.exit_code, 7, "{s:?}");
    node.remove_pod_and_check(&pod_id).await;
}

async fn exec_sync_and_log_reopen(node: Node) {
    let berthd = &node.berthd;
    let logs = tempfile::tempdir().unwrap();
    let pod_id = node.run_pod("exec", logs.path()).await;
    let mut rt = berthd.runtime();
    let id =
        node.create(&pod_id, busybox("svc", &["sh", "-c", "echo up; sleep 1000"])).await.unwrap();
    // Not running yet: exec is refused.
    let err = rt
        .exec_sync(ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["true".into()],
            timeout: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains(&format!("container {id} is not running")), "{err:?}");
    rt.start_container(StartContainerRequest { container_id: id.clone() }).await.unwrap();

    let exec = |cmd: &[&str], timeout: i64| ExecSyncRequest {
        container_id: id.clone(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout,
    };
    let r = rt
        .exec_sync(exec(&["sh", "-c", "echo out; echo err >&2; hostname; exit 5"], 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.stdout.as_slice(), r.stderr.as_slice(), r.exit_code),
        (&b"out\nexec\n"[..], &b"err\n"[..], 5)
    );
    let t = Instant::now();
    let err = rt.exec_sync(exec(&["sleep", "30"], 1)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    assert!(t.elapsed() < Duration::from_secs(10));

    // The kubelet rotates the log by renaming it, then asks for a reopen.
    let log = logs.path().join("svc.log");
    std::fs::rename(&log, logs.path().join("svc.log.1")).unwrap();
    rt.reopen_container_log(ReopenContainerLogRequest { container_id: id.clone() }).await.unwrap();
    assert!(log.exists(), "the log was not reopened");
    assert!(std::fs::read_to_string(logs.path().join("svc.log.1"))
        .unwrap()
        .contains("stdout F up"));

    // Once it has stopped, exec is refused again, naming the container.
    rt.stop_container(StopContainerRequest { container_id: id.clone(), timeout: 0 }).await.unwrap();
    let err = rt.exec_sync(exec(&["true"], 0)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains(&format!("container {id} is not running")), "{err:?}");

    node.remove_pod_and_check(&pod_id).await;
}

async fn an_image_in_use_keeps_its_layers_until_its_last_container_goes(node: Node) {
    let berthd = &node.berthd;
    let logs = tempfile::tempdir().unwrap();
    let pod_id = node.run_pod("inuse", logs.path()).await;
    let mut rt = berthd.runtime();
    let id = node.create(&pod_id, busybox("svc", &["sleep", "1000"])).await.unwrap();
    rt.start_container(StartContainerRequest { container_id: id.clone() }).await.unwrap();
    let layers = || std::fs::read_dir(berthd.root_dir().join("snapshots/layers")).unwrap().count();
    assert_eq!(layers(), 1);

    // The kubelet's image GC may remove an image a container still uses.
    berthd
        .image()
        .remove_image(RemoveImageRequest {
            image: Some(ImageSpec { image: "busybox".into(), ..Default::default() }),
        })
        .await
        .unwrap();
    assert!(berthd
        .image()
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images
        .is_empty());
    assert_eq!(layers(), 1, "a layer in use was removed");
    let r = rt
        .exec_sync(ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["cat".into(), "/etc/passwd".into()],
            timeout: 5,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        String::from_utf8_lossy(&r.stdout).contains("root:"),
        "the rootfs is no longer readable"
    );

    rt.remove_container(RemoveContainerRequest { container_id: id }).await.unwrap();
    assert_eq!(layers(), 0, "the last user is gone: the layer must go");
    rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod_id.clone() }).await.unwrap();
    rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod_id }).await.unwrap();
    node.env.assert_no_leaks(berthd).await;
}

async fn stop_signal_reaches_a_handler_installed_after_the_stop_began(node: Node) {
    let logs = tempfile::tempdir().unwrap();
    let pod_id = node.run_pod("latetrap", logs.path()).await;
    // sh is PID 1: until its trap exists, SIGTERM is dropped by the kernel.
    let script = "sleep 0.5; trap 'exit 0' TERM; while true; do sleep 0.1; done";
    let id = node.run(&pod_id, busybox("late", &["sh", "-c", script])).await;
    let t = Instant::now();
    node.berthd
        .runtime()
        .stop_container(StopContainerRequest { container_id: id.clone(), timeout: 20 })
        .await
        .unwrap();
    let s = node.wait_exited(&id).await;
    assert_eq!(s.exit_code, 0, "the handler never got SIGTERM: {s:?}");
    assert!(t.elapsed() < Duration::from_secs(10), "waited out the grace period");
    node.remove_pod_and_check(&pod_id).await;
}

/// The ids critest v1.36 compares, the digest reference, and a request's stop signal.
#[tokio::test]
async fn image_identity_and_the_requests_stop_signal() {
    let node = Node::start().await;
    let logs = tempfile::tempdir().unwrap();
    let pod_id = node.run_pod("identity", logs.path()).await;
    let pulled = node
        .berthd
        .image()
        .pull_image(PullImageRequest {
            image: Some(ImageSpec { image: "busybox".into(), ..Default::default() }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .image_ref;
    let mut cfg =
        busybox("usr1", &["sh", "-c", "trap 'exit 0' USR1; while true; do sleep 0.1; done"]);
    cfg.stop_signal = Signal::Sigusr1 as i32;
    let id = node.run(&pod_id, cfg).await;
    let s = node.status(&id).await;
    assert_eq!(s.image_id, pulled, "ContainerStatus.image_id is the pulled image's id");
    assert!(
        s.image_ref.contains("/library/busybox@sha256:"),
        "ContainerStatus.image_ref is a digest reference: {}",
        s.image_ref
    );
    assert_eq!(s.stop_signal, Signal::Sigusr1 as i32);
    let listed = node.list_containers().await;
    assert_eq!(listed.iter().map(|c| c.image_id.as_str()).collect::<Vec<_>>(), [pulled.as_str()]);

    // SIGUSR1, not SIGTERM (which sh as PID 1 would drop), ends it at once.
    let t = Instant::now();
    node.berthd
        .runtime()
        .stop_container(StopContainerRequest { container_id: id.clone(), timeout: 30 })
        .await
        .unwrap();
    assert_eq!(node.wait_exited(&id).await.exit_code, 0);
    assert!(t.elapsed() < Duration::from_secs(10), "the stop signal was not SIGUSR1");

    let plain = node.create(&pod_id, busybox("plain", &["true"])).await.unwrap();
    assert_eq!(node.status(&plain).await.stop_signal, Signal::Sigterm as i32);
    let mut bad = busybox("bad", &["true"]);
    bad.stop_signal = 1000;
    let err = node.create(&pod_id, bad).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("stop_signal"), "{err:?}");
    node.remove_pod_and_check(&pod_id).await;
}

/// What the kubelet's image GC, eviction and evented PLEG read: pinned images, the
/// writable layers' filesystem, and the pod's containers in its status.
#[tokio::test]
async fn pinned_images_container_filesystems_and_the_pods_container_statuses() {
    let node = Node::start_with_config("[image]\npinned = [\"busybox\"]\n").await;
    let images = node.berthd.image().list_images(ListImagesRequest::default()).await.unwrap();
    let images = images.into_inner().images;
    assert_eq!(images.iter().map(|i| i.pinned).collect::<Vec<_>>(), [true], "{images:?}");

    let logs = tempfile::tempdir().unwrap();
    let pod_id = node.run_pod("fsinfo", logs.path()).await;
    let script = "head -c 3000000 /dev/zero > /big; sleep 1000";
    let id = node.run(&pod_id, busybox("writer", &["sh", "-c", script])).await;
    let deadline = Instant::now() + berth_integration::scaled(Duration::from_secs(10));
    let (image_fs, container_fs) = loop {
        let info =
            node.berthd.image().image_fs_info(ImageFsInfoRequest {}).await.unwrap().into_inner();
        let used = |f: &FilesystemUsage| f.used_bytes.as_ref().map_or(0, |u| u.value);
        let c = info.container_filesystems.first().cloned().expect("container_filesystems");
        if used(&c) >= 3_000_000 || Instant::now() > deadline {
            assert!(used(&c) >= 3_000_000, "the 3 MB the container wrote: {c:?}");
            break (info.image_filesystems[0].clone(), c);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // One filesystem under the test's root: the kubelet must not see a split disk.
    assert_eq!(image_fs.fs_id, container_fs.fs_id);

    let status = node
        .berthd
        .runtime()
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(status.timestamp > 0);
    let listed: Vec<(&str, i32)> =
        status.containers_statuses.iter().map(|c| (c.id.as_str(), c.state)).collect();
    assert_eq!(listed, [(id.as_str(), ContainerState::ContainerRunning as i32)]);
    node.remove_pod_and_check(&pod_id).await;
}

#[tokio::test]
async fn the_runc_handler_runs_containers_through_runc_and_unknown_handlers_are_refused() {
    let node = Node::start_runc().await;
    let logs = tempfile::tempdir().unwrap();
    let pod_id = node.run_pod("viarunc", logs.path()).await;
    let id = node.run(&pod_id, busybox("svc", &["sleep", "1000"])).await;
    // runc keeps its own state for the container under the pod's shim directory.
    let runc_state = node.berthd.state_dir().join("shims").join(&pod_id).join("oci-runtime");
    assert!(runc_state.join(&id).join("state.json").is_file(), "runc did not run {id}");
    let listed = std::process::Command::new(berth_integration::pods::runc_binary())
        .arg("--root")
        .arg(&runc_state)
        .arg("list")
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.lines().any(|l| l.starts_with(&id) && l.contains("running")), "{listed}");
    let status = node.berthd.runtime().status(StatusRequest { verbose: false }).await.unwrap();
    let handlers: Vec<String> =
        status.into_inner().runtime_handlers.into_iter().map(|h| h.name).collect();
    assert_eq!(handlers, ["", "runc"]);

    let mut config = node.pod_config("nohandler", logs.path());
    config.metadata.as_mut().unwrap().uid = "other".into();
    let err = node
        .berthd
        .runtime()
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: "kata".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("runtime_handler"), "{err:?}");
    node.remove_pod_and_check(&pod_id).await;
    assert!(!runc_state.join(&id).exists(), "runc's state outlived the container");
}

#[tokio::test]
async fn a_crash_during_create_container_leaves_nothing_after_restart() {
    let mut node = Node::start().await;
    let logs = tempfile::tempdir().unwrap();
    let pod_id = node.run_pod("crashcreate", logs.path()).await;
    for point in ["container.rootfs", "container.created"] {
        node.create_crashing_at(point, &pod_id, busybox("svc", &["sleep", "1000"])).await;
        let listed = node.list_containers().await;
        assert!(listed.is_empty(), "{point}: {listed:?}");
        let leftovers: Vec<_> = std::fs::read_dir(node.berthd.state_dir().join("containers"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(leftovers.is_empty(), "{point}: bundles left: {leftovers:?}");
        let snapshots = node.berthd.root_dir().join("snapshots/containers");
        let left = std::fs::read_dir(&snapshots).map(|d| d.count()).unwrap_or(0);
        assert_eq!(left, 0, "{point}: writable layers left in {}", snapshots.display());
        let cgroups = node.env.container_cgroups();
        assert!(cgroups.is_empty(), "{point}: container cgroups left: {cgroups:?}");
        // The name is free: the kubelet's retry succeeds.
        let id = node.run(&pod_id, busybox("svc", &["sleep", "1000"])).await;
        node.remove_container(&id).await;
    }
    node.remove_pod_and_check(&pod_id).await;
}

#[tokio::test]
async fn a_crash_once_the_create_is_recorded_leaves_the_container_to_the_kubelets_retry() {
    let mut node = Node::start().await;
    let logs = tempfile::tempdir().unwrap();
    let pod_id = node.run_pod("crashrecorded", logs.path()).await;
    // The record lands while the shim sets the container up; berthd dies before it
    // answers.
    let svc = busybox("svc", &["sleep", "1000"]);
    node.create_crashing_at("container.recorded", &pod_id, svc).await;
    let listed = node.list_containers().await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].state, ContainerState::ContainerCreated as i32, "{listed:?}");
    // The kubelet's retry of the same create gets that container, which starts and runs.
    let id = node.create(&pod_id, busybox("svc", &["sleep", "1000"])).await.unwrap();
    assert_eq!(id, listed[0].id);
    node.berthd
        .runtime()
        .start_container(StartContainerRequest { container_id: id.clone() })
        .await
        .unwrap();
    assert_eq!(node.exec_ok(&id, &["echo", "up"]).await, "up\n");
    node.berthd
        .runtime()
        .stop_container(StopContainerRequest { container_id: id.clone(), timeout: 0 })
        .await
        .unwrap();
    node.remove_container(&id).await;
    node.remove_pod_and_check(&pod_id).await;
}

/// The mount points of the host's cgroup v1 hierarchies (none on a cgroup v2-only host).
fn v1_hierarchies() -> Vec<std::path::PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split(' ').next() == Some("cgroup"))
                .then(|| left.split(' ').nth(4).unwrap().into())
        })
        .collect()
}

#[tokio::test]
async fn a_pods_first_container_takes_the_spare_cgroup_made_with_the_pod() {
    let node = Node::start().await;
    let logs = tempfile::tempdir().unwrap();
    let pod_id = node.run_pod("spare", logs.path()).await;
    let rel = node.env.cgroup_parent("spare");
    let rel = rel.trim_start_matches('/');
    // Where the kernel renames cgroups (v1) and berth's cgroupfs driver makes containers'
    // cgroups, the pod has a spare for its first container; on a v2-only host (or with
    // the systemd driver) none anywhere.
    let v1 = if berth_integration::leaks::systemd_driver() { Vec::new() } else { v1_hierarchies() };
    let spares = |h: &[std::path::PathBuf]| {
        h.iter().filter(|m| m.join(rel).join("berth-spare").is_dir()).count()
    };
    assert_eq!(spares(&v1), v1.len(), "spares in {v1:?}");
    let everywhere: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .chain([std::path::PathBuf::from("/sys/fs/cgroup")])
        .collect();
    assert_eq!(spares(&everywhere), v1.len(), "spares outside the v1 hierarchies");
    let first = node.run(&pod_id, busybox("first", &["sleep", "1000"])).await;
    let second = node.run(&pod_id, busybox("second", &["sleep", "1000"])).await;
    assert_eq!(spares(&everywhere), 0, "the spare outlived the first create");
    for id in [&first, &second] {
        // Its directory in every v1 hierarchy, with the container's process in it.
        for h in &v1 {
            let procs = std::fs::read_to_string(h.join(rel).join(id).join("cgroup.procs"));
            assert!(procs.is_ok_and(|p| !p.trim().is_empty()), "{id} not in {}", h.display());
        }
    }
    node.remove_pod_and_check(&pod_id).await;
    // A pod with no container gives its spare back with its cgroup.
    let idle = node.run_pod("spare", logs.path()).await;
    assert_eq!(spares(&v1), v1.len());
    node.remove_pod_and_check(&idle).await;
    assert!(node.env.cgroups().is_empty(), "{:?}", node.env.cgroups());
}

/// Waits (5 s) until `node` runs `n` shims.
async fn wait_shims(node: &Node, n: usize) {
    let deadline = Instant::now() + berth_integration::scaled(Duration::from_secs(5));
    while node.shim_processes() != n {
        assert!(Instant::now() < deadline, "{} shims, expected {n}", node.shim_processes());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_pods_shim_starts_with_the_pod_and_is_restarted_if_it_died() {
    let node = Node::start().await;
    let logs = tempfile::tempdir().unwrap();
    // RunPodSandbox starts the pod's shim; containers created at once all find that one.
    let pod_id = node.run_pod("early", logs.path()).await;
    wait_shims(&node, 1).await;
    let creates =
        ["a", "b", "c"].map(|name| node.create(&pod_id, busybox(name, &["sleep", "1000"])));
    for id in futures::future::join_all(creates).await {
        let id = id.unwrap();
        node.berthd
            .runtime()
            .start_container(StartContainerRequest { container_id: id.clone() })
            .await
            .unwrap();
        assert_eq!(node.status(&id).await.state, ContainerState::ContainerRunning as i32);
    }
    assert_eq!(node.shim_processes(), 1);

    // A pod whose shim died before its first container: the container starts a new one.
    let other = node.run_pod("shimless", logs.path()).await;
    wait_shims(&node, 2).await;
    let pid_file = node.berthd.state_dir().join("shims").join(&other).join("shim.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    wait_shims(&node, 1).await;
    let id = node.run(&other, busybox("late", &["sleep", "1000"])).await;
    assert_eq!(node.exec_ok(&id, &["echo", "up"]).await, "up\n");
    assert_eq!(node.shim_processes(), 2);

    let mut rt = node.berthd.runtime();
    rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod_id.clone() }).await.unwrap();
    rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod_id }).await.unwrap();
    node.remove_pod_and_check(&other).await;
}

/// The container's process leads its own session, and none of its standard descriptors
/// is on a mount outside its mount namespace (the host's /dev/null for a container without
/// stdin): both are what CRIU needs to checkpoint it.
async fn the_process_leads_its_session_on_its_own_mounts(node: Node) {
    let logs = tempfile::tempdir().unwrap();
    let pod = node.run_pod("session", logs.path()).await;
    let id = node.run(&pod, busybox("leader", &["sleep", "1000"])).await;
    let stat = node.exec_ok(&id, &["cat", "/proc/1/stat"]).await;
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    // state, ppid, pgrp, session
    assert_eq!((fields[2], fields[3]), ("1", "1"), "process group and session of pid 1: {stat}");
    let mounts: Vec<String> = node
        .exec_ok(&id, &["cat", "/proc/1/mountinfo"])
        .await
        .lines()
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    for fd in 0..3 {
        // Pipes (the output) live on the kernel's pipe mount, which CRIU dumps as pipes.
        let target = node.exec_ok(&id, &["readlink", &format!("/proc/1/fd/{fd}")]).await;
        if target.starts_with("pipe:") {
            continue;
        }
        let info = node.exec_ok(&id, &["cat", &format!("/proc/1/fdinfo/{fd}")]).await;
        let mnt = info.lines().find_map(|l| l.strip_prefix("mnt_id:")).unwrap().trim();
        assert!(
            mounts.iter().any(|m| m == mnt),
            "fd {fd} ({target}) on mount {mnt}: not the container's"
        );
    }
    node.remove_pod_and_check(&pod).await;
}

// Every test runs twice: with the native executor and with runc as the pod's runtime
// handler, which must behave the same through CRI.
macro_rules! with_each_handler {
    ($($name:ident),* $(,)?) => {
        mod native {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Node::start().await).await
            })*
        }
        mod runc {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Node::start_runc().await).await
            })*
        }
    };
}

with_each_handler!(
    a_container_runs_logs_exits_and_is_removed,
    containers_outlive_a_berthd_crash_and_exits_meanwhile_are_reported,
    exec_sync_and_log_reopen,
    an_image_in_use_keeps_its_layers_until_its_last_container_goes,
    stop_signal_reaches_a_handler_installed_after_the_stop_began,
    the_process_leads_its_session_on_its_own_mounts,
);
