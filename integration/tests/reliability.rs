//! Reliability: berthd SIGKILLed at random points of concurrent pod churn, a host reboot,
//! long churn with flat resources, concurrent load with a deadline, many exec probes, a
//! shim killed as the OOM killer would, and random malformed requests.
//!
//! Each test runs a bounded form by default; `BERTH_LONG=1` runs the full length
//! (20 rounds x 20 pods, 2,000 churn cycles, 10,000 execs). `BERTH_SEED=N` replays the
//! crash test's random schedule.

use berth_integration::pods::{busybox, Node};
use berth_proto::*;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn long() -> bool {
    std::env::var("BERTH_LONG").is_ok_and(|v| v == "1")
}

/// A small seeded generator (xorshift64*) so a failing schedule can be replayed exactly.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    std::env::var("BERTH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_b347)
}

/// Numbers from /proc/PID/status and /proc/PID/fd.
#[derive(Debug, Clone, Copy)]
struct Usage {
    fds: usize,
    threads: u64,
    rss_kib: u64,
}

fn usage(pid: u32) -> Usage {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    Usage { fds, threads: field("Threads:"), rss_kib: field("VmRSS:") }
}

/// (pid, ppid, state, cmdline) of every process.
fn processes() -> Vec<(i32, i32, char, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let mut f = rest.split_whitespace();
        let state = f.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        out.push((pid, ppid, state, String::from_utf8_lossy(&cmd).replace('\0', " ")));
    }
    out
}

/// Zombies whose parent is `parent` or one of this node's shims.
fn zombies_under(node: &Node) -> Vec<i32> {
    let state = node.berthd.state_dir().display().to_string();
    let procs = processes();
    let mut parents: HashSet<i32> = procs
        .iter()
        .filter(|p| p.3.contains("berth-shim") && p.3.contains(&state))
        .map(|p| p.0)
        .collect();
    parents.extend(node.berthd.pid().map(|p| p as i32));
    procs.iter().filter(|p| p.2 == 'Z' && parents.contains(&p.1)).map(|p| p.0).collect()
}

/// SIGKILLs this node's shims (and so, as their subreaper dies, leaves their containers to
/// be killed with them: a shim's containers live in its pod's cgroup, which we empty).
fn kill_shims(node: &Node, pod_cgroup_hint: Option<&str>) -> usize {
    let state = node.berthd.state_dir().display().to_string();
    let shims: Vec<i32> = processes()
        .iter()
        .filter(|p| p.3.contains("berth-shim") && p.3.contains(&state))
        .map(|p| p.0)
        .collect();
    for pid in &shims {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = pod_cgroup_hint;
    shims.len()
}

/// Kills every process left in the test's cgroups (containers whose shim died).
fn kill_cgroup_processes(node: &Node) {
    for dir in node.env.cgroups() {
        for d in walk(&dir) {
            let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&e.path()));
        }
    }
    out
}

async fn remove_all(node: &Node) {
    let mut rt = node.berthd.runtime();
    for p in node.list_pods().await {
        rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: p.id.clone() }).await.unwrap();
        rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: p.id }).await.unwrap();
    }
}

/// Waits (5 s) until no shim of this node is left.
async fn wait_no_shims(node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while node.shim_processes() > 0 {
        assert!(Instant::now() < deadline, "{} shims outlived their pods", node.shim_processes());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Nothing of any pod is left: the host checks plus berthd's own directories.
async fn assert_node_clean(node: &Node) {
    wait_no_shims(node).await;
    node.env.assert_no_leaks(&node.berthd).await;
    let root = node.berthd.root_dir();
    let state = node.berthd.state_dir();
    for dir in [root.join("snapshots/containers"), state.join("containers")] {
        let left: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "left in {}: {left:?}", dir.display());
    }
}

/// One pod with one container, the whole way; any step may fail (berthd is being killed).
async fn run_one(
    node: &Node,
    name: String,
    logs: &Path,
) -> Result<(String, String), tonic::Status> {
    let mut rt = node.berthd.runtime();
    let pod = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(node.pod_config(&name, logs)),
            runtime_handler: String::new(),
        })
        .await?
        .into_inner()
        .pod_sandbox_id;
    let id = node.create(&pod, busybox("c", &["sleep", "100000"])).await?;
    rt.start_container(StartContainerRequest { container_id: id.clone() }).await?;
    Ok((pod, id))
}

async fn remove_one(node: &Node, pod: String) -> Result<(), tonic::Status> {
    let mut rt = node.berthd.runtime();
    rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await?;
    rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod }).await?;
    Ok(())
}

/// After a restart: every pod and container berthd reports is whole, the host holds exactly
/// what the ready pods need, and what ran before the crash and was not being removed runs.
async fn check_consistent(node: &Node, kept_running: &[String], round: usize) {
    let mut rt = node.berthd.runtime();
    let listed = node.list_pods().await;
    let mut ready = 0;
    for p in &listed {
        let st = rt
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: p.id.clone(),
                verbose: false,
            })
            .await
            .unwrap_or_else(|e| panic!("round {round}: listed pod {} has no status: {e:?}", p.id))
            .into_inner()
            .status
            .unwrap();
        if st.state == PodSandboxState::SandboxReady as i32 {
            ready += 1;
            let ip = st.network.map(|n| n.ip).unwrap_or_default();
            assert!(!ip.is_empty(), "round {round}: ready pod {} has no IP", p.id);
        }
    }
    let pod_ids: HashSet<_> = listed.iter().map(|p| p.id.clone()).collect();
    let cs = node.list_containers().await;
    for c in &cs {
        assert!(
            pod_ids.contains(&c.pod_sandbox_id),
            "round {round}: container {} lost its pod",
            c.id
        );
        let st = node.status(&c.id).await;
        assert!(
            st.state != ContainerState::ContainerUnknown as i32,
            "round {round}: container {} is UNKNOWN: {st:?}",
            c.id
        );
    }
    for id in kept_running {
        let st = node.status(id).await;
        assert_eq!(
            st.state,
            ContainerState::ContainerRunning as i32,
            "round {round}: container {id} ran before the crash: {st:?}"
        );
    }
    // Exactly the ready pods hold a lease and a veth; at most one shim per pod.
    assert_eq!(node.env.leases(&node.berthd).await, ready, "round {round}: IP leases");
    let deadline = Instant::now() + Duration::from_secs(3);
    while node.env.bridge_ports().len() as u64 != ready && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(node.env.bridge_ports().len() as u64, ready, "round {round}: veths");
    assert!(
        node.shim_processes() <= listed.len(),
        "round {round}: {} shims for {} pods",
        node.shim_processes(),
        listed.len()
    );
}

#[tokio::test]
async fn sigkill_at_random_points_of_concurrent_churn_leaves_a_consistent_node() {
    let (rounds, width) = if long() { (20, 20) } else { (6, 6) };
    let seed = seed();
    eprintln!("crash churn: {rounds} rounds x {width} pods, BERTH_SEED={seed}");
    let mut rng = Rng::new(seed);
    let mut node = Node::start().await;
    let logs = Arc::new(tempfile::tempdir().unwrap());
    let mut serial = 0;
    for round in 0..rounds {
        // What runs now and is not touched this round must survive the crash.
        let before: Vec<(String, String)> = node
            .list_containers()
            .await
            .into_iter()
            .filter(|c| c.state == ContainerState::ContainerRunning as i32)
            .map(|c| (c.pod_sandbox_id, c.id))
            .collect();
        let mut doomed = HashSet::new();
        for (pod, _) in &before {
            if rng.below(2) == 0 {
                doomed.insert(pod.clone());
            }
        }
        // Half the time a crash point inside a step, else a random moment.
        let points = [
            "sandbox.recorded",
            "sandbox.netns",
            "sandbox.cgroup",
            "sandbox.network",
            "container.rootfs",
            "container.created",
        ];
        let point = (rng.below(2) == 0).then(|| points[rng.below(points.len() as u64) as usize]);
        // Short enough to land while the calls run (6 pods take about a second).
        let delay = Duration::from_millis(5 + rng.below(60 * width as u64));
        if let Some(point) = point {
            node.berthd.kill();
            node.berthd.set_env(vec![("BERTH_CRASH_AT".into(), point.into())]);
            node.berthd.restart().await;
        }
        {
            let node_ref: &Node = &node;
            let mut ops = Vec::new();
            for _ in 0..width {
                serial += 1;
                let logs = logs.clone();
                let name = format!("p{serial}");
                ops.push(futures::future::Either::Left(async move {
                    let _ = run_one(node_ref, name, logs.path()).await;
                }));
            }
            for pod in doomed.iter().cloned() {
                ops.push(futures::future::Either::Right(async move {
                    let _ = remove_one(node_ref, pod).await;
                }));
            }
            let mut work = Box::pin(futures::future::join_all(ops));
            // The crash point kills berthd by itself; otherwise we do, at the random moment.
            let finished = tokio::time::timeout(delay, &mut work).await.is_ok();
            eprintln!(
                "round {round}: crash {:?} after {delay:?} (work finished first: {finished})",
                point
            );
            // SIGKILL by pid: the calls in flight still borrow the node; they fail fast now.
            let pid = node_ref.berthd.pid().unwrap();
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            tokio::time::timeout(Duration::from_secs(30), work)
                .await
                .expect("calls to a dead berthd did not end");
        }
        node.berthd.kill(); // reaps it
        node.berthd.set_env(vec![]);
        node.berthd.restart().await;
        let kept: Vec<String> =
            before.iter().filter(|(p, _)| !doomed.contains(p)).map(|(_, c)| c.clone()).collect();
        check_consistent(&node, &kept, round).await;
        // The next operations succeed.
        let (pod, _) = run_one(&node, format!("next{round}"), logs.path())
            .await
            .unwrap_or_else(|e| panic!("round {round}: a pod after the restart: {e:?}"));
        remove_one(&node, pod).await.unwrap();
        // Finish the removals the crash interrupted, as the kubelet would retry them.
        for pod in &doomed {
            remove_one(&node, pod.clone()).await.unwrap();
        }
    }
    remove_all(&node).await;
    assert_node_clean(&node).await;
}

#[tokio::test]
async fn after_a_host_reboot_old_pods_are_notready_containers_exited_and_removable() {
    let mut node = Node::start().await;
    let logs = tempfile::tempdir().unwrap();
    let pod = node.run_pod("boot", logs.path()).await;
    let running = node.run(&pod, busybox("runs", &["sleep", "100000"])).await;
    let exited = node.run(&pod, busybox("exits", &["sh", "-c", "exit 3"])).await;
    assert_eq!(node.wait_exited(&exited).await.exit_code, 3);

    // The reboot: berthd and the shims gone, the volatile state's mounts and files gone.
    node.berthd.kill();
    assert!(kill_shims(&node, None) > 0);
    kill_cgroup_processes(&node);
    let state = node.berthd.state_dir();
    let mut mounts = berth_integration::leaks::mounts_under(&state);
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH).unwrap();
    }
    std::fs::remove_dir_all(&state).unwrap();
    node.berthd.restart().await;

    let mut rt = node.berthd.runtime();
    let st = rt
        .pod_sandbox_status(PodSandboxStatusRequest { pod_sandbox_id: pod.clone(), verbose: false })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(st.state, PodSandboxState::SandboxNotready as i32);
    let s = node.status(&running).await;
    assert_eq!(s.state, ContainerState::ContainerExited as i32, "{s:?}");
    assert!(!s.reason.is_empty(), "an exit nobody saw still says why: {s:?}");
    // An exit berthd had seen before the reboot keeps its code, times and reason (the
    // shim's exit file went with the volatile state; berthd's record did not).
    let s = node.status(&exited).await;
    assert_eq!(s.state, ContainerState::ContainerExited as i32, "{s:?}");
    assert_eq!(s.exit_code, 3, "{s:?}");
    assert_eq!(s.reason, "Error", "{s:?}");
    assert!(s.started_at > 0 && s.finished_at >= s.started_at, "{s:?}");
    // The node keeps working beside the dead pod, then removes it.
    let fresh = node.run_pod("afterboot", logs.path()).await;
    let c = node.run(&fresh, busybox("c", &["sleep", "100000"])).await;
    assert_eq!(node.status(&c).await.state, ContainerState::ContainerRunning as i32);
    remove_all(&node).await;
    assert_node_clean(&node).await;
}

/// Size of the metadata database files under berthd's root.
fn db_bytes(root: &Path) -> u64 {
    walk(root)
        .iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.ends_with(".redb") || n.ends_with(".db")
        })
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

#[tokio::test]
async fn churn_keeps_fds_threads_rss_and_the_database_flat() {
    let cycles = if long() { 2000 } else { 60 };
    let warmup = 10.min(cycles / 4);
    let node = Node::start().await;
    let logs = tempfile::tempdir().unwrap();
    let pid = node.berthd.pid().unwrap();
    let mut rt = node.berthd.runtime();
    let mut base = None;
    let mut base_db = 0;
    let t = Instant::now();
    for i in 0..cycles {
        let pod = node.run_pod(&format!("churn{}", i % 7), logs.path()).await;
        let id = node.run(&pod, busybox("c", &["sleep", "100000"])).await;
        rt.stop_container(StopContainerRequest { container_id: id.clone(), timeout: 0 })
            .await
            .unwrap();
        rt.remove_container(RemoveContainerRequest { container_id: id }).await.unwrap();
        remove_one(&node, pod).await.unwrap();
        if i + 1 == warmup {
            wait_no_shims(&node).await;
            base = Some(usage(pid));
            base_db = db_bytes(&node.berthd.root_dir());
        }
    }
    wait_no_shims(&node).await;
    let base = base.unwrap();
    let end = usage(pid);
    let db = db_bytes(&node.berthd.root_dir());
    eprintln!(
        "churn: {cycles} cycles in {:?}; fds {} -> {}, threads {} -> {}, RSS {} -> {} KiB, db {base_db} -> {db} bytes",
        t.elapsed(),
        base.fds,
        end.fds,
        base.threads,
        end.threads,
        base.rss_kib,
        end.rss_kib
    );
    // Bounds: a few fds for pooled connections, tokio's blocking pool may grow to its
    // idle set, RSS may grow by allocator fragmentation, not per cycle.
    assert!(end.fds <= base.fds + 8, "fds grew: {base:?} -> {end:?}");
    assert!(end.threads <= base.threads + 16, "threads grew: {base:?} -> {end:?}");
    assert!(end.rss_kib <= base.rss_kib + 32 * 1024, "RSS grew: {base:?} -> {end:?}");
    // redb grows in regions; the bound must not scale with cycles.
    assert!(db <= base_db.max(1 << 20) * 4, "metadata db grew: {base_db} -> {db}");
    assert!(node.list_pods().await.is_empty() && node.list_containers().await.is_empty());
    assert_node_clean(&node).await;
}

#[tokio::test]
async fn hundred_concurrent_pods_and_containers_with_a_responsive_runtime() {
    let n = 100;
    let node = Arc::new(Node::start().await);
    let logs = Arc::new(tempfile::tempdir().unwrap());
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The probe measures the slowest Version and ListPodSandbox answer during the load.
    let probe = {
        let node = node.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut rt = node.berthd.runtime();
            let mut worst = Duration::ZERO;
            let mut probes = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let t = Instant::now();
                tokio::time::timeout(
                    Duration::from_secs(10),
                    rt.version(VersionRequest::default()),
                )
                .await
                .expect("Version hung during the load")
                .unwrap();
                tokio::time::timeout(
                    Duration::from_secs(10),
                    rt.list_pod_sandbox(ListPodSandboxRequest::default()),
                )
                .await
                .expect("ListPodSandbox hung during the load")
                .unwrap();
                worst = worst.max(t.elapsed());
                probes += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (worst, probes)
        })
    };
    let t = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..n {
        let node = node.clone();
        let logs = logs.clone();
        tasks.push(tokio::spawn(
            async move { run_one(&node, format!("load{i}"), logs.path()).await },
        ));
    }
    let results = tokio::time::timeout(Duration::from_secs(240), futures::future::join_all(tasks))
        .await
        .expect("deadlock: 100 concurrent runs did not finish in 240 s");
    let elapsed = t.elapsed();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let (worst, probes) = probe.await.unwrap();
    let mut ok = 0;
    for r in results {
        match r.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => {
                // A refusal must say what and why, never an opaque internal error.
                assert!(
                    e.code() != tonic::Code::Unknown && !e.message().is_empty(),
                    "unclear error under load: {e:?}"
                );
            }
        }
    }
    eprintln!("load: {ok}/{n} ran in {elapsed:?}; {probes} probes, slowest {worst:?}");
    assert_eq!(ok, n, "every run succeeds on an idle node");
    assert!(worst < Duration::from_secs(5), "runtime unresponsive under load: {worst:?}");
    let running = node
        .list_containers()
        .await
        .iter()
        .filter(|c| c.state == ContainerState::ContainerRunning as i32)
        .count();
    assert_eq!(running, n);
    remove_all(&node).await;
    assert_node_clean(&node).await;
}

/// The timed-out probes' `sleep 30` processes still alive in this node's cgroups.
fn timed_out_commands(node: &Node) -> usize {
    processes()
        .iter()
        .filter(|p| p.3 == "sleep 30 " && p.2 != 'Z')
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{}/cgroup", p.0))
                .is_ok_and(|c| c.contains(&node.env.cgroup_root))
        })
        .count()
}

#[tokio::test]
async fn many_exec_probes_leave_no_zombie_fd_or_thread() {
    let execs = if long() { 10_000 } else { 400 };
    let node = Node::start().await;
    let logs = tempfile::tempdir().unwrap();
    let pod = node.run_pod("probe", logs.path()).await;
    let id = node.run(&pod, busybox("svc", &["sleep", "100000"])).await;
    let pid = node.berthd.pid().unwrap();
    // Warm up pools before the baseline.
    for _ in 0..20 {
        node.exec_ok(&id, &["true"]).await;
    }
    let base = usage(pid);
    let mut rt = node.berthd.runtime();
    let t = Instant::now();
    let mut timed_out = 0;
    let concurrency = 8;
    for chunk in 0..execs / concurrency {
        let calls = (0..concurrency).map(|k| {
            let mut rt = rt.clone();
            let id = id.clone();
            // One in 50 times out (a probe whose command hangs).
            let slow = (chunk * concurrency + k) % 50 == 0;
            async move {
                let (cmd, timeout) = if slow {
                    (vec!["sleep".to_string(), "30".to_string()], 1)
                } else {
                    (vec!["sh".to_string(), "-c".to_string(), "echo ok".to_string()], 5)
                };
                rt.exec_sync(ExecSyncRequest { container_id: id, cmd, timeout }).await
            }
        });
        for r in futures::future::join_all(calls).await {
            match r {
                Ok(r) => assert_eq!((r.into_inner().stdout, 0), (b"ok\n".to_vec(), 0)),
                Err(e) if e.code() == tonic::Code::DeadlineExceeded => timed_out += 1,
                Err(e) => panic!("exec: {e:?}"),
            }
        }
    }
    // Timed-out commands are killed and reaped, not left behind.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let zombies = zombies_under(&node);
        let left = timed_out_commands(&node);
        if zombies.is_empty() && left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after {execs} execs: zombies {zombies:?}, timed-out commands still running: {left}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let end = usage(pid);
    eprintln!(
        "exec: {execs} probes ({timed_out} timed out) in {:?}; fds {} -> {}, threads {} -> {}, RSS {} -> {} KiB",
        t.elapsed(),
        base.fds,
        end.fds,
        base.threads,
        end.threads,
        base.rss_kib,
        end.rss_kib
    );
    assert!(timed_out > 0);
    assert!(end.fds <= base.fds + 8, "fds grew: {base:?} -> {end:?}");
    assert!(end.threads <= base.threads + 16, "threads grew: {base:?} -> {end:?}");
    let _ = &mut rt;
    node.remove_pod_and_check(&pod).await;
}

#[tokio::test]
async fn a_shim_killed_like_the_oom_killer_gives_exited_containers_and_a_working_node() {
    let node = Node::start().await;
    let logs = tempfile::tempdir().unwrap();
    let pod = node.run_pod("oomshim", logs.path()).await;
    let id = node.run(&pod, busybox("svc", &["sleep", "100000"])).await;
    assert_eq!(kill_shims(&node, None), 1);
    // The shim was the containers' subreaper; the kernel does not kill them with it.
    // Unmonitored, they are reported exited, and removing the pod must end them.
    let s = node.wait_exited(&id).await;
    assert!(!s.reason.is_empty(), "{s:?}");
    // The node keeps working: a new pod and container run.
    let pod2 = node.run_pod("after", logs.path()).await;
    let c = node.run(&pod2, busybox("c", &["sleep", "100000"])).await;
    assert_eq!(node.status(&c).await.state, ContainerState::ContainerRunning as i32);
    remove_all(&node).await;
    assert_node_clean(&node).await;
}

/// A random string from the shapes that break parsers and path joins.
fn hostile(rng: &mut Rng) -> String {
    match rng.below(12) {
        0 => String::new(),
        1 => "../../../../etc/passwd".into(),
        2 => "/etc/shadow".into(),
        3 => "a\0b".into(),
        4 => "x".repeat(1 + rng.below(70_000) as usize),
        5 => "é/..//./\u{202e}".into(),
        6 => "..".into(),
        7 => format!("{:064x}", rng.next()),
        8 => "/".into(),
        9 => "-1".into(),
        10 => "busybox@sha256:zz".into(),
        _ => (0..rng.below(40)).map(|_| char::from(rng.below(256) as u8)).collect(),
    }
}

fn hostile_int(rng: &mut Rng) -> i64 {
    [0, -1, i64::MIN, i64::MAX, 1 << 40, rng.next() as i64][rng.below(6) as usize]
}

/// Sends a random malformed request; returns the call's name for messages.
async fn random_request(
    node: &Node,
    rng: &mut Rng,
    pod: &str,
    logs: &Path,
) -> (String, Result<(), tonic::Status>) {
    let mut rt = node.berthd.runtime();
    let mut img = node.berthd.image();
    let s = hostile(rng);
    let n = hostile_int(rng);
    let pick = rng.below(12);
    let r: Result<(), tonic::Status> = match pick {
        0 => rt
            .container_status(ContainerStatusRequest { container_id: s.clone(), verbose: true })
            .await
            .map(drop),
        1 => rt
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: s.clone(),
                verbose: true,
            })
            .await
            .map(drop),
        2 => {
            rt.remove_container(RemoveContainerRequest { container_id: s.clone() }).await.map(drop)
        }
        3 => rt
            .stop_container(StopContainerRequest { container_id: s.clone(), timeout: n })
            .await
            .map(drop),
        4 => rt
            .exec_sync(ExecSyncRequest {
                container_id: s.clone(),
                cmd: vec![s.clone()],
                timeout: n,
            })
            .await
            .map(drop),
        5 => {
            let mut c = busybox("bad", &["true"]);
            match rng.below(5) {
                0 => c.log_path = s.clone(),
                1 => {
                    c.mounts = vec![Mount {
                        container_path: s.clone(),
                        host_path: hostile(rng),
                        ..Default::default()
                    }]
                }
                2 => c.metadata = Some(ContainerMetadata { name: s.clone(), attempt: n as u32 }),
                3 => c.working_dir = s.clone(),
                _ => {
                    c.linux = Some(LinuxContainerConfig {
                        resources: Some(LinuxContainerResources {
                            memory_limit_in_bytes: n,
                            cpu_shares: n,
                            cpu_quota: n,
                            cpu_period: n,
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                }
            }
            let r = node.create(pod, c).await;
            if let Ok(id) = &r {
                let _ =
                    rt.remove_container(RemoveContainerRequest { container_id: id.clone() }).await;
            }
            r.map(drop)
        }
        6 => {
            let mut config = node.pod_config("badpod", logs);
            match rng.below(4) {
                0 => config.log_directory = s.clone(),
                1 => config.hostname = s.clone(),
                2 => {
                    config.metadata = Some(PodSandboxMetadata {
                        name: s.clone(),
                        uid: s.clone(),
                        namespace: s.clone(),
                        attempt: n as u32,
                    })
                }
                _ => config.linux.as_mut().unwrap().cgroup_parent = s.clone(),
            }
            let r = rt
                .run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(config),
                    runtime_handler: String::new(),
                })
                .await;
            if let Ok(r) = &r {
                let _ = remove_one(node, r.get_ref().pod_sandbox_id.clone()).await;
            }
            r.map(drop)
        }
        7 => img
            .pull_image(PullImageRequest {
                image: Some(ImageSpec { image: s.clone(), ..Default::default() }),
                ..Default::default()
            })
            .await
            .map(drop),
        8 => img
            .image_status(ImageStatusRequest {
                image: Some(ImageSpec { image: s.clone(), ..Default::default() }),
                verbose: true,
            })
            .await
            .map(drop),
        9 => img
            .remove_image(RemoveImageRequest {
                image: Some(ImageSpec { image: s.clone(), ..Default::default() }),
            })
            .await
            .map(drop),
        10 => rt
            .reopen_container_log(ReopenContainerLogRequest { container_id: s.clone() })
            .await
            .map(drop),
        _ => rt
            .create_container(CreateContainerRequest {
                pod_sandbox_id: s.clone(),
                config: None,
                sandbox_config: None,
            })
            .await
            .map(drop),
    };
    (format!("call {pick} with {:?}/{n}", s.chars().take(40).collect::<String>()), r)
}

#[tokio::test]
async fn random_malformed_requests_get_errors_never_panics_hangs_or_host_changes() {
    let calls = if long() { 5000 } else { 300 };
    let seed = seed();
    eprintln!("bad input: {calls} calls, BERTH_SEED={seed}");
    let mut rng = Rng::new(seed);
    let node = Node::start().await;
    let logs = tempfile::tempdir().unwrap();
    let pod = node.run_pod("target", logs.path()).await;
    let pid = node.berthd.pid().unwrap();
    let etc = std::fs::metadata("/etc/passwd").unwrap().modified().unwrap();
    for i in 0..calls {
        let (what, r) = tokio::time::timeout(
            Duration::from_secs(20),
            random_request(&node, &mut rng, &pod, logs.path()),
        )
        .await
        .unwrap_or_else(|_| panic!("request {i} hung"));
        if let Err(e) = r {
            assert!(
                e.code() != tonic::Code::Unknown && e.code() != tonic::Code::Unavailable,
                "{i}: {what}: {e:?}"
            );
            assert!(!e.message().is_empty(), "{i}: {what}: an error must say why");
        }
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists(), "{i}: {what}: berthd died");
    }
    assert!(!node.berthd.log().contains("panicked"), "a handler panicked");
    assert_eq!(std::fs::metadata("/etc/passwd").unwrap().modified().unwrap(), etc);
    // Only the target pod is left; nothing the random calls made outlived them.
    assert_eq!(node.list_pods().await.len(), 1);
    assert!(node.list_containers().await.is_empty());
    node.remove_pod_and_check(&pod).await;
}

/// A tmpfs of `size` mounted on a fresh directory; unmounted on drop.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn new(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size}").as_str()),
        )
        .unwrap();
        SmallDisk(dir)
    }
    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.0.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

#[tokio::test]
async fn a_full_log_disk_drops_output_but_the_container_runs_to_its_exit() {
    let node = Node::start().await;
    let disk = SmallDisk::new("256k");
    let pod = node.run_pod("fulllog", disk.path()).await;
    // 4 MB of output into a 256 KiB disk, then an exit code the status must carry.
    let id = node
        .run(
            &pod,
            busybox(
                "noisy",
                &["sh", "-c", "yes 0123456789abcdef0123456789abcdef | head -c 4000000; exit 4"],
            ),
        )
        .await;
    let s = node.wait_exited(&id).await;
    assert_eq!(s.exit_code, 4, "{s:?}");
    let log = std::fs::metadata(disk.path().join("noisy.log")).unwrap().len();
    assert!(log > 0 && log <= 256 * 1024, "log {log} bytes");
    // The shim reported the failure once, not once per read.
    let shim_log: u64 = walk(&node.berthd.state_dir().join("shims"))
        .iter()
        .filter_map(|d| std::fs::metadata(d.join("shim.log")).ok())
        .map(|m| m.len())
        .sum();
    assert!(shim_log < 16 * 1024, "the shim's own log grew to {shim_log} bytes");
    // The node keeps working: the pod takes another container, exec works.
    let c = node.run(&pod, busybox("quiet", &["sleep", "100000"])).await;
    assert_eq!(node.exec_ok(&c, &["echo", "hi"]).await, "hi\n");
    node.remove_pod_and_check(&pod).await;
}
