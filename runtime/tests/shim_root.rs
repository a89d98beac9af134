//! Root tests of the shim and the native executor: a busybox rootfs, a real `berth-shim`
//! process, containers in namespaces the test pins. Skipped (passing) when not root.
//! Every test shuts its shim down, removes its cgroups and pins, and checks for leaks.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_runtime::oci_defaults::{default_spec, PodNamespaces};
use berth_runtime::shim::client::{spawn, ExitWait, ShimClient};
use berth_runtime::shim::protocol::{CreateRequest, Status};
use berth_runtime::shim::{read_exit, ShimPaths};
use oci_spec::runtime::{
    Capabilities, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder,
    LinuxResourcesBuilder, Spec,
};

/// These tests run real containers: without root or busybox they must fail, not pass
/// having checked nothing.
fn require_root() {
    assert!(nix::unistd::geteuid().is_root(), "the shim tests run containers: run them as root");
    assert!(
        Path::new("/bin/busybox").exists(),
        "install Debian's busybox-static for the shim tests"
    );
}

/// The shim cargo built beside this test (`target/<profile>/berth-shim` from
/// `target/<profile>/deps/<test>`), so a copy of both (the VM lane runs one) stays
/// together; else the path cargo compiled in.
fn shim_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("berth-shim")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_berth-shim")))
}

const APPLETS: &[&str] = &[
    "sh", "echo", "id", "cat", "sleep", "grep", "unshare", "true", "ls", "touch", "wc", "tail",
    "readlink", "hostname", "head", "env",
];

struct Fixture {
    dir: tempfile::TempDir,
    paths: ShimPaths,
    shim_pid: i32,
    cgroup: String,
    pins: Vec<PathBuf>,
}

impl Fixture {
    fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("bundle/rootfs");
        for d in ["bin", "etc", "proc", "dev", "sys", "tmp"] {
            fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for a in APPLETS {
            symlink("busybox", rootfs.join("bin").join(a)).unwrap();
        }
        fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
        )
        .unwrap();
        fs::write(rootfs.join("etc/group"), "root:x:0:\nuser:x:1000:\n").unwrap();
        let paths = ShimPaths::from_dir(dir.path().join("shim"));
        spawn(&shim_binary(), &paths).unwrap();
        let shim_pid: i32 = fs::read_to_string(paths.pid_file()).unwrap().trim().parse().unwrap();
        let cgroup = format!("/berth-test-{}-{name}", std::process::id());
        Fixture { dir, paths, shim_pid, cgroup, pins: Vec::new() }
    }

    fn client(&self) -> ShimClient {
        ShimClient::connect(&self.paths).unwrap()
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.path().join("bundle/rootfs")
    }

    fn spec(&self, args: &[&str]) -> Spec {
        default_spec(&self.rootfs(), args, &PodNamespaces::default(), Some(&self.cgroup))
    }

    /// The process of [`Self::spec`], as an exec request carries it.
    fn process(&self, args: &[&str]) -> serde_json::Value {
        serde_json::to_value(self.spec(args).process().as_ref().unwrap()).unwrap()
    }

    /// Writes the spec and creates the container `id`; returns the log path.
    fn create(&self, c: &mut ShimClient, id: &str, spec: &Spec) -> Result<PathBuf, String> {
        let bundle = self.dir.path().join(format!("bundle-{id}"));
        fs::create_dir_all(&bundle).unwrap();
        fs::write(bundle.join("config.json"), serde_json::to_vec(spec).unwrap()).unwrap();
        let log = self.dir.path().join(format!("{id}.log"));
        c.create(CreateRequest {
            container_id: id.into(),
            bundle,
            log_path: log.clone(),
            tty: false,
            stdin: false,
            stdin_once: false,
            runtime: None,
        })
        .map_err(|e| e.to_string())?;
        Ok(log)
    }

    /// Runs a container to its end; returns (exit code, stdout text of the log).
    fn run(&self, id: &str, spec: &Spec) -> (i32, String) {
        let mut c = self.client();
        let log = self.create(&mut c, id, spec).unwrap();
        c.start(id).unwrap();
        let st = c.wait(id).unwrap();
        let text = fs::read_to_string(&log).unwrap_or_default();
        c.delete(id).unwrap();
        (
            st.exit_code.unwrap(),
            text.lines()
                .map(|l| l.splitn(4, ' ').nth(3).unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n"),
        )
    }

    /// Pins a new namespace of `kind` (ipc, uts) the way berth pins pod namespaces.
    fn pin(&mut self, kind: &'static str) -> PathBuf {
        let path = self.dir.path().join(format!("ns-{kind}"));
        fs::write(&path, b"").unwrap();
        let p = path.clone();
        std::thread::spawn(move || {
            let flag = if kind == "ipc" {
                nix::sched::CloneFlags::CLONE_NEWIPC
            } else {
                nix::sched::CloneFlags::CLONE_NEWUTS
            };
            nix::sched::unshare(flag).unwrap();
            nix::mount::mount(
                Some(Path::new(&format!("/proc/thread-self/ns/{kind}"))),
                &p,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .unwrap();
        })
        .join()
        .unwrap();
        self.pins.push(path.clone());
        path
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Ok(mut c) = ShimClient::connect(&self.paths) {
            let _ = c.shutdown(true);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Path::new(&format!("/proc/{}", self.shim_pid)).exists() && Instant::now() < deadline {
            // The shim is not our child: it re-parented to init (or a subreaper) at start.
            std::thread::sleep(Duration::from_millis(10));
        }
        let alive = fs::read_to_string(format!("/proc/{}/stat", self.shim_pid))
            .map(|s| !s.contains(") Z"))
            .unwrap_or(false);
        let _ = berth_runtime::executor::cgroups::remove(Path::new(&self.cgroup));
        for p in &self.pins {
            let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
        }
        if std::thread::panicking() {
            return;
        }
        assert!(!alive, "shim {} still running", self.shim_pid);
        for h in berth_runtime::cgroupfs::hierarchies().unwrap() {
            let d = h.mount.join(self.cgroup.trim_start_matches('/'));
            assert!(!d.exists(), "leaked cgroup {}", d.display());
        }
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let tmp = self.dir.path().to_string_lossy().to_string();
        assert!(!mounts.contains(&tmp), "leaked mounts under {tmp}");
    }
}

fn with_caps(spec: &mut Spec, caps: Capabilities) {
    let c = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .inheritable(Capabilities::new())
        .ambient(Capabilities::new())
        .build()
        .unwrap();
    spec.process_mut().as_mut().unwrap().set_capabilities(Some(c));
}

#[test]
fn lifecycle_logs_exit_code_and_pod_namespaces() {
    require_root();
    let mut f = Fixture::new("life");
    let netns = f.dir.path().join("ns-net");
    berth_network::netns::create_at(&netns).unwrap();
    f.pins.push(netns.clone());
    let ipc = f.pin("ipc");
    let uts = f.pin("uts");
    let pod = PodNamespaces {
        net: Some(&netns),
        ipc: Some(&ipc),
        uts: Some(&uts),
        pid: None,
        user: None,
    };
    let spec = default_spec(
        &f.rootfs(),
        &["sh", "-c", "echo hi; echo err >&2; for n in net ipc uts; do readlink /proc/self/ns/$n; done; echo pid=$$; exit 3"],
        &pod,
        Some(&f.cgroup),
    );
    let mut c = f.client();
    let log = f.create(&mut c, "c1", &spec).unwrap();
    let st = c.state("c1").unwrap();
    assert_eq!(st.status, Status::Created);
    assert!(st.pid > 0);
    c.start("c1").unwrap();
    let st = c.wait("c1").unwrap();
    assert_eq!(st.status, Status::Stopped);
    assert_eq!(st.exit_code, Some(3));
    assert!(st.finished_at_ns >= st.started_at_ns && st.started_at_ns >= st.created_at_ns);
    let text = fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for l in &lines {
        let parts: Vec<&str> = l.splitn(4, ' ').collect();
        assert_eq!(parts[0].len(), 30, "timestamp in {l:?}");
        assert!(parts[0].ends_with('Z') && parts[0].as_bytes()[10] == b'T');
        assert_eq!(parts[2], "F");
    }
    assert!(lines.iter().any(|l| l.ends_with(" stdout F hi")), "{text}");
    assert!(lines.iter().any(|l| l.ends_with(" stderr F err")), "{text}");
    for (kind, pin) in [("net", &netns), ("ipc", &ipc), ("uts", &uts)] {
        let want = format!("{kind}:[{}]", fs::metadata(pin).unwrap().ino());
        assert!(text.contains(&want), "{kind}: want {want} in {text}");
    }
    assert!(text.contains("stdout F pid=1"), "own pid namespace: {text}");
    let rec = read_exit(&f.paths, "c1").unwrap().unwrap();
    assert_eq!((rec.exit_code, rec.oom_killed), (3, false));
    c.delete("c1").unwrap();
    assert!(read_exit(&f.paths, "c1").unwrap().is_none());
    assert!(c.state("c1").is_err());
}

#[test]
fn create_reports_the_child_error() {
    require_root();
    let f = Fixture::new("err");
    let mut c = f.client();
    let err = f.create(&mut c, "bad", &f.spec(&["/bin/nonexistent"])).unwrap_err();
    assert!(err.contains("exec: no such file: /bin/nonexistent"), "{err}");
    let mut spec = f.spec(&["true"]);
    let mut mounts = spec.mounts().clone().unwrap();
    mounts.push(
        oci_spec::runtime::MountBuilder::default()
            .destination("/x")
            .typ("nosuchfs")
            .source("none")
            .build()
            .unwrap(),
    );
    spec.set_mounts(Some(mounts));
    let err = f.create(&mut c, "bad2", &spec).unwrap_err();
    assert!(err.contains("mount nosuchfs on /x"), "{err}");
    assert!(c.list().unwrap().is_empty());
}

#[test]
fn start_fails_with_the_exec_error_of_a_binary_the_kernel_cannot_run() {
    require_root();
    let f = Fixture::new("noexec");
    // Executable, so create finds nothing wrong, but no binary the kernel can run.
    let bad = f.rootfs().join("bin/foreign");
    fs::write(&bad, b"\x7fELF not for this machine").unwrap();
    fs::set_permissions(&bad, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut c = f.client();
    f.create(&mut c, "foreign", &f.spec(&["/bin/foreign"])).unwrap();
    let err = c.start("foreign").unwrap_err();
    assert!(err.to_string().contains("exec /bin/foreign: ENOEXEC"), "{err}");
    c.kill("foreign", 9, true).unwrap();
    c.wait("foreign").unwrap();
    c.delete("foreign").unwrap();
}

#[test]
fn user_capabilities_masks_readonly_and_seccomp() {
    require_root();
    let f = Fixture::new("sec");
    // User and groups.
    let mut spec = f.spec(&["id"]);
    let user = oci_spec::runtime::UserBuilder::default()
        .uid(1000u32)
        .gid(1000u32)
        .additional_gids(vec![5u32])
        .build()
        .unwrap();
    spec.process_mut().as_mut().unwrap().set_user(user);
    let (code, out) = f.run("id", &spec);
    assert_eq!(code, 0);
    assert!(
        out.contains("uid=1000(user) gid=1000(user) groups=5,1000")
            || out.contains("uid=1000(user) gid=1000(user)"),
        "{out}"
    );
    assert!(out.contains('5'), "{out}");

    // Default capabilities (containerd's set) and a dropped set.
    let (_, out) = f.run("caps", &f.spec(&["grep", "^Cap", "/proc/self/status"]));
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");
    assert!(out.contains("CapBnd:\t00000000a80425fb"), "{out}");
    let mut spec = f.spec(&["grep", "^Cap", "/proc/self/status"]);
    with_caps(
        &mut spec,
        [oci_spec::runtime::Capability::Chown, oci_spec::runtime::Capability::Kill]
            .into_iter()
            .collect(),
    );
    let (_, out) = f.run("caps2", &spec);
    assert!(out.contains("CapEff:\t0000000000000021"), "{out}");
    assert!(out.contains("CapBnd:\t0000000000000021"), "{out}");

    // Masked paths read empty; /proc/sys is read-only; a read-only rootfs refuses writes.
    let (code, out) = f.run("mask", &f.spec(&["sh", "-c", "wc -c < /proc/keys; ls -A /proc/acpi | wc -l; (echo 1 > /proc/sys/kernel/domainname) 2>/dev/null || echo ro-ok"]));
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().collect::<Vec<_>>(), ["0", "0", "ro-ok"], "{out}");
    let mut spec =
        f.spec(&["sh", "-c", "touch /x || echo refused; touch /tmp/y || echo refused-tmp"]);
    spec.root_mut().as_mut().unwrap().set_readonly(Some(true));
    let (_, out) = f.run("ro", &spec);
    assert!(out.contains("refused"), "{out}");

    // seccomp: with every capability, RuntimeDefault still refuses unshare(2);
    // Unconfined allows it.
    let mut spec =
        f.spec(&["sh", "-c", "unshare -m true 2>/dev/null && echo allowed || echo denied"]);
    with_caps(&mut spec, berth_runtime::oci_defaults::all_capabilities());
    let (_, out) = f.run("sc1", &spec);
    assert_eq!(out.trim(), "denied", "{out}");
    spec.linux_mut().as_mut().unwrap().set_seccomp(None);
    let (_, out) = f.run("sc2", &spec);
    assert_eq!(out.trim(), "allowed", "{out}");
}

#[test]
fn memory_limit_ends_in_oom_kill() {
    require_root();
    let f = Fixture::new("oom");
    let mut spec = f.spec(&["tail", "/dev/zero"]);
    let res = LinuxResourcesBuilder::default()
        .memory(LinuxMemoryBuilder::default().limit(16i64 << 20).swap(16i64 << 20).build().unwrap())
        .cpu(
            LinuxCpuBuilder::default()
                .shares(512u64)
                .quota(50_000i64)
                .period(100_000u64)
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(64i64).build().unwrap())
        .build()
        .unwrap();
    spec.linux_mut().as_mut().unwrap().set_resources(Some(res));
    // A cgroup v2 host has one tree; a v1 or hybrid host one per controller.
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let read = |ctrl: &str, v1_file: &str, v2_file: &str| {
        let path = if v2 {
            format!("/sys/fs/cgroup{}/{v2_file}", f.cgroup)
        } else {
            format!("/sys/fs/cgroup/{ctrl}{}/{v1_file}", f.cgroup)
        };
        fs::read_to_string(&path).map(|s| s.trim().to_string())
    };
    assert!(read("memory", "memory.limit_in_bytes", "memory.max").is_err(), "cgroup exists");
    let mut c = f.client();
    f.create(&mut c, "oom", &spec).unwrap();
    let memory = read("memory", "memory.limit_in_bytes", "memory.max").unwrap();
    assert_eq!(memory, (16u64 << 20).to_string());
    let pids = read("pids", "pids.max", "pids.max").unwrap();
    assert_eq!(pids, "64");
    if v2 {
        // shares 512 is weight 20 (the OCI runtimes' conversion).
        assert_eq!(read("cpu", "", "cpu.weight").unwrap(), "20");
        assert_eq!(read("cpu", "", "cpu.max").unwrap(), "50000 100000");
    } else {
        assert_eq!(read("cpu", "cpu.shares", "").unwrap(), "512");
        assert_eq!(read("cpu", "cpu.cfs_quota_us", "").unwrap(), "50000");
    }
    c.start("oom").unwrap();
    let st = c.wait("oom").unwrap();
    assert_eq!(st.exit_code, Some(137));
    assert!(st.oom_killed);
    assert!(read_exit(&f.paths, "oom").unwrap().unwrap().oom_killed);
    c.delete("oom").unwrap();
}

#[test]
fn exits_are_kept_across_reconnects_and_the_shim_outlives_its_parent() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let f = Fixture::new("restart");
    // A "berthd" that starts a second shim and is then killed -9.
    let paths2 = ShimPaths::from_dir(dir.path().join("shim2"));
    let mut berthd = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("{} --dir {} && sleep 60", shim_binary().display(), paths2.dir().display()))
        .spawn()
        .unwrap();
    let mut c2 = ShimClient::connect_timeout(&paths2, Duration::from_secs(5)).unwrap();
    berthd.kill().unwrap();
    berthd.wait().unwrap();
    let (_, pid2) = c2.hello().unwrap();
    c2.shutdown(false).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{pid2}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!paths2.socket().exists());

    // The client goes away while a container runs; a new client learns its exit.
    let mut c = f.client();
    f.create(&mut c, "bg", &f.spec(&["sh", "-c", "sleep 0.3; exit 7"])).unwrap();
    c.start("bg").unwrap();
    drop(c);
    std::thread::sleep(Duration::from_millis(600));
    let rec = read_exit(&f.paths, "bg").unwrap().expect("exit recorded while disconnected");
    assert_eq!(rec.exit_code, 7);
    let mut c = f.client();
    let st = c.state("bg").unwrap();
    assert_eq!((st.status, st.exit_code), (Status::Stopped, Some(7)));
    c.delete("bg").unwrap();
    // Refuses to exit while a container runs, unless forced.
    f.create(&mut c, "long", &f.spec(&["sleep", "100"])).unwrap();
    c.start("long").unwrap();
    assert!(c.shutdown(false).is_err());
    c.kill("long", 9, false).unwrap();
    assert_eq!(c.wait("long").unwrap().exit_code, Some(137));
    c.delete("long").unwrap();
}

#[test]
fn exec_returns_output_and_times_out() {
    require_root();
    let f = Fixture::new("exec");
    let mut c = f.client();
    f.create(&mut c, "svc", &f.spec(&["sleep", "100"])).unwrap();
    c.start("svc").unwrap();
    let r = c
        .exec(
            "svc",
            f.process(&["sh", "-c", "echo out; echo err >&2; cat /proc/1/cmdline; exit 5"]),
            None,
        )
        .unwrap();
    assert_eq!(r.exit_code, 5);
    assert_eq!(String::from_utf8_lossy(&r.stdout), "out\nsleep\u{0}100\u{0}");
    assert_eq!(r.stderr, b"err\n");
    assert!(!r.timed_out);
    let t = Instant::now();
    let r = c.exec("svc", f.process(&["sleep", "30"]), Some(Duration::from_millis(300))).unwrap();
    assert!(r.timed_out);
    assert_eq!(r.exit_code, 137);
    assert!(t.elapsed() < Duration::from_secs(5));

    // RSS of the shim with one running container.
    let status = fs::read_to_string(format!("/proc/{}/status", f.shim_pid)).unwrap();
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let (rss, anon) = (field("VmRSS:"), field("RssAnon:"));
    eprintln!("berth-shim with one running container: VmRSS {rss} kB, of which private (RssAnon) {anon} kB");
    // File-backed pages (the binary, libc, libseccomp) are shared by every pod's shim;
    // the private part is the per-pod cost.
    assert!(anon < 1024, "RssAnon {anon} kB");

    c.kill("svc", 9, true).unwrap();
    c.wait("svc").unwrap();
    c.delete("svc").unwrap();
}

/// The container's process and an exec's are in the container's cgroup in every mounted
/// hierarchy: the executor's child joins the v1 ones itself (through `tasks`) and is
/// forked into the v2 one, instead of being moved in by the shim.
#[test]
fn the_container_and_its_execs_are_in_its_cgroup_in_every_hierarchy() {
    require_root();
    let f = Fixture::new("placed");
    let mut c = f.client();
    f.create(&mut c, "svc", &f.spec(&["sleep", "100"])).unwrap();
    c.start("svc").unwrap();
    let pid = c.state("svc").unwrap().pid;
    let host_view = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let mounted = berth_runtime::cgroupfs::hierarchies().unwrap();
    assert!(!mounted.is_empty());
    let mut checked = 0;
    for line in host_view.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        // Lines of hierarchies this host lists but does not mount say nothing here.
        let is_mounted = mounted.iter().any(|h| {
            if controllers.is_empty() {
                h.v2
            } else {
                let named = controllers.strip_prefix("name=").unwrap_or(controllers);
                h.controllers.iter().any(|c| controllers.split(',').any(|w| w == c))
                    || h.mount.file_name().is_some_and(|n| n == named)
            }
        });
        if is_mounted {
            assert_eq!(path, f.cgroup, "container process {pid}: {host_view}");
            checked += 1;
        }
    }
    assert!(checked >= mounted.len(), "only {checked} hierarchies checked: {host_view}");
    // An exec sees the same cgroups as the container's first process, in every hierarchy.
    let process = f.process(&["sh", "-c", "cat /proc/self/cgroup; echo ---; cat /proc/1/cgroup"]);
    let r = c.exec("svc", process, None).unwrap();
    assert_eq!(r.exit_code, 0, "{}", String::from_utf8_lossy(&r.stderr));
    let out = String::from_utf8_lossy(&r.stdout).to_string();
    let (exec_view, init_view) = out.split_once("---\n").unwrap();
    assert_eq!(exec_view, init_view);
    assert_eq!(exec_view.lines().count(), host_view.lines().count(), "{out}");
    // Its /sys/fs/cgroup and every hierarchy in it: read-only, nosuid, nodev, noexec.
    let r = c.exec("svc", f.process(&["cat", "/proc/self/mountinfo"]), None).unwrap();
    let mountinfo = String::from_utf8_lossy(&r.stdout).to_string();
    let cgroup_mounts: Vec<&str> = mountinfo
        .lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with("/sys/fs/cgroup")))
        .collect();
    // A hybrid or v1 host: a tmpfs and a bind per hierarchy; a v2 host: one cgroup2 mount.
    assert!(!cgroup_mounts.is_empty(), "{mountinfo}");
    for line in &cgroup_mounts {
        let opts: Vec<&str> = line.split(' ').nth(5).unwrap().split(',').collect();
        for want in ["ro", "nosuid", "nodev", "noexec"] {
            assert!(opts.contains(&want), "{want} missing: {line}");
        }
    }
    c.kill("svc", 9, true).unwrap();
    c.wait("svc").unwrap();
    c.delete("svc").unwrap();
}

#[test]
fn processes_are_born_in_their_pid_namespace_and_the_shims_own_stay_in_its() {
    require_root();
    let f = Fixture::new("pidns");
    let ns = |pid: i32, kind: &str| fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap();
    let own = ns(f.shim_pid, "pid");
    let mut c = f.client();
    // A container in a new pid namespace (the spec's default): its process is pid 1 there.
    f.create(&mut c, "first", &f.spec(&["sleep", "100"])).unwrap();
    c.start("first").unwrap();
    let first = c.state("first").unwrap().pid;
    assert_ne!(ns(first, "pid"), own);
    let r = c.exec("first", f.process(&["sh", "-c", "echo $$; cat /proc/1/cmdline"]), None);
    let r = r.unwrap();
    let out = String::from_utf8_lossy(&r.stdout).to_string();
    let mut lines = out.lines();
    let exec_pid: i32 = lines.next().unwrap().parse().unwrap();
    assert!(exec_pid > 1, "an exec is not the namespace's init: {out}");
    assert_eq!(lines.next(), Some("sleep\x00100\x00"), "pid 1 seen from the exec: {out:?}");
    // A second container joining the first one's pid namespace by path, as a pod's do.
    let mut spec = f.spec(&["sh", "-c", "echo $$"]);
    let mut linux = spec.linux().clone().unwrap();
    let mut namespaces = linux.namespaces().clone().unwrap();
    for n in namespaces.iter_mut().filter(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Pid)
    {
        n.set_path(Some(PathBuf::from(format!("/proc/{first}/ns/pid"))));
    }
    linux.set_namespaces(Some(namespaces));
    spec.set_linux(Some(linux));
    let log = f.create(&mut c, "second", &spec).unwrap();
    let second = c.state("second").unwrap().pid;
    assert_eq!(ns(second, "pid"), ns(first, "pid"));
    c.start("second").unwrap();
    c.wait("second").unwrap();
    let text = fs::read_to_string(&log).unwrap();
    let joiner: i32 =
        text.lines().find_map(|l| l.split(" stdout F ").nth(1)).unwrap().parse().unwrap();
    assert!(joiner > 1, "the joiner is not the namespace's init: {text}");
    // After all that, the shim's own children are still born in its pid namespace.
    assert_eq!(ns(f.shim_pid, "pid_for_children"), own);
    c.kill("first", 9, true).unwrap();
    c.wait("first").unwrap();
    for id in ["first", "second"] {
        c.delete(id).unwrap();
    }
}

#[test]
fn reopen_log_after_rotation_and_long_lines() {
    require_root();
    let f = Fixture::new("reopen");
    let mut c = f.client();
    let script =
        "echo one; head -c 40000 /dev/zero | tr '\\0' x; echo; sleep 0.6; printf 'two\\nlast'";
    let log = f.create(&mut c, "r", &f.spec(&["sh", "-c", script])).unwrap();
    c.start("r").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let rotated = log.with_extension("log.1");
    fs::rename(&log, &rotated).unwrap();
    c.reopen_log("r").unwrap();
    assert_eq!(c.wait("r").unwrap().exit_code, Some(0));
    let old = fs::read_to_string(&rotated).unwrap();
    let tags: Vec<(&str, usize)> = old
        .lines()
        .map(|l| {
            let p: Vec<&str> = l.splitn(4, ' ').collect();
            (p[2], p[3].len())
        })
        .collect();
    assert_eq!(tags, [("F", 3), ("P", 16384), ("P", 16384), ("F", 40000 - 32768)], "{tags:?}");
    let new = fs::read_to_string(&log).unwrap();
    let texts: Vec<&str> = new.lines().map(|l| l.splitn(4, ' ').nth(3).unwrap()).collect();
    assert_eq!(texts, ["two", "last"], "{new}");
    c.delete("r").unwrap();
}

#[test]
fn tty_output_goes_to_the_log_as_stdout() {
    tty_output(None);
}

#[test]
fn tty_output_with_runc_comes_through_its_console_socket() {
    let runc =
        ["/usr/sbin/runc", "/usr/bin/runc"].into_iter().map(PathBuf::from).find(|p| p.is_file());
    tty_output(Some(runc.expect("runc is not installed (apt-get install runc)")));
}

fn tty_output(runtime: Option<PathBuf>) {
    require_root();
    // Its own name: the two tty tests run at once, and a fixture's name is its cgroup's.
    let f = Fixture::new(if runtime.is_some() { "tty-runc" } else { "tty" });
    let mut c = f.client();
    let bundle = f.dir.path().join("bundle-tty");
    fs::create_dir_all(&bundle).unwrap();
    let mut spec = f.spec(&["sh", "-c", "test -t 0 && test -t 1 && echo hi-from-tty"]);
    let mut process = spec.process().clone().unwrap();
    process.set_terminal(Some(true));
    spec.set_process(Some(process));
    fs::write(bundle.join("config.json"), serde_json::to_vec(&spec).unwrap()).unwrap();
    let log = f.dir.path().join("tty.log");
    c.create(CreateRequest {
        container_id: "t".into(),
        bundle,
        log_path: log.clone(),
        tty: true,
        stdin: true,
        stdin_once: false,
        runtime,
    })
    .unwrap();
    c.start("t").unwrap();
    assert_eq!(c.wait("t").unwrap().exit_code, Some(0));
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.contains(" stdout F hi-from-tty"), "{text:?}");
    c.delete("t").unwrap();
}

/// Reads `f` until `want` appears or 10 s pass.
fn read_until(f: &mut fs::File, want: &str) -> String {
    use std::io::Read;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(want) && Instant::now() < deadline {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("read: {e}"),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn streaming_exec_runs_on_passed_stdio_and_dies_with_its_connection() {
    use std::io::Write;
    use std::os::fd::OwnedFd;
    require_root();
    let f = Fixture::new("xstream");
    let mut c = f.client();
    f.create(&mut c, "svc", &f.spec(&["sleep", "100"])).unwrap();
    c.start("svc").unwrap();
    let pipe = || nix::unistd::pipe().unwrap();
    let (in_r, in_w) = pipe();
    let (out_r, out_w) = pipe();
    let (err_r, err_w) = pipe();
    let mut stdin = fs::File::from(in_w);
    stdin.write_all(b"round trip\n").unwrap();
    drop(stdin);
    let mut streaming = f.client();
    let code = streaming
        .exec_stream(
            "svc",
            f.process(&["sh", "-c", "cat; echo err >&2; exit 3"]),
            false,
            [in_r, out_w, err_w],
        )
        .unwrap();
    assert_eq!(code, 3);
    assert_eq!(read_until(&mut fs::File::from(out_r), "\n"), "round trip\n");
    assert_eq!(read_until(&mut fs::File::from(err_r), "\n"), "err\n");

    // A session that goes away takes its process with it.
    let (out_r, out_w) = pipe();
    let null = || OwnedFd::from(fs::File::open("/dev/null").unwrap());
    let mut streaming = f.client();
    let cancel = streaming.canceller().unwrap();
    let waiter = std::thread::spawn(move || {
        streaming.exec_stream(
            "svc",
            process_json(&["sh", "-c", "echo started; exec sleep 100"]),
            false,
            [null(), out_w, null()],
        )
    });
    fn process_json(args: &[&str]) -> serde_json::Value {
        let spec = default_spec(Path::new("/"), args, &PodNamespaces::default(), None);
        serde_json::to_value(spec.process().as_ref().unwrap()).unwrap()
    }
    let mut out = fs::File::from(out_r);
    assert_eq!(read_until(&mut out, "\n"), "started\n");
    let t = Instant::now();
    cancel.cancel();
    assert!(waiter.join().unwrap().is_err());
    // The output pipe reaches EOF once the killed process is gone.
    assert_eq!(read_until(&mut out, "never"), "");
    assert!(t.elapsed() < Duration::from_secs(5));
    let procs = fs::read_to_string(format!("/sys/fs/cgroup{}/svc/cgroup.procs", f.cgroup))
        .or_else(|_| {
            fs::read_to_string(format!("/sys/fs/cgroup/pids{}/svc/cgroup.procs", f.cgroup))
        })
        .unwrap_or_default();
    assert!(procs.lines().count() <= 1, "left in the container: {procs}");

    c.kill("svc", 9, true).unwrap();
    c.wait("svc").unwrap();
    c.delete("svc").unwrap();
}

#[test]
fn attach_tees_output_and_feeds_stdin() {
    use std::io::Write;
    use std::os::fd::AsFd;
    require_root();
    let f = Fixture::new("attach");
    let mut c = f.client();
    let bundle = f.dir.path().join("bundle-cat");
    fs::create_dir_all(&bundle).unwrap();
    let spec = f.spec(&[
        "sh",
        "-c",
        "echo ready; while read l; do echo got:$l; echo e:$l >&2; done; echo bye",
    ]);
    fs::write(bundle.join("config.json"), serde_json::to_vec(&spec).unwrap()).unwrap();
    let log = f.dir.path().join("cat.log");
    c.create(CreateRequest {
        container_id: "cat".into(),
        bundle,
        log_path: log.clone(),
        tty: false,
        stdin: true,
        stdin_once: true,
        runtime: None,
    })
    .unwrap();
    c.start("cat").unwrap();
    let (in_r, in_w) = nix::unistd::pipe().unwrap();
    let (out_r, out_w) = nix::unistd::pipe().unwrap();
    let (err_r, err_w) = nix::unistd::pipe().unwrap();
    c.attach("cat", Some(in_r.as_fd()), out_w.as_fd(), Some(err_w.as_fd())).unwrap();
    drop((in_r, out_w, err_w));
    let mut input = fs::File::from(in_w);
    input.write_all(b"one\n").unwrap();
    let mut out = fs::File::from(out_r);
    // "ready" is seen too when the attach won the race with the container's first echo.
    let got = read_until(&mut out, "got:one\n");
    assert!(got == "got:one\n" || got == "ready\ngot:one\n", "{got:?}");
    assert_eq!(read_until(&mut fs::File::from(err_r), "e:one\n"), "e:one\n");
    // stdin_once: closing the session's stdin closes the container's.
    drop(input);
    assert_eq!(read_until(&mut out, "never"), "bye\n");
    assert_eq!(c.wait("cat").unwrap().exit_code, Some(0));
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.contains(" stdout F got:one") && text.contains(" stderr F e:one"), "{text}");
    c.delete("cat").unwrap();
}

#[test]
fn an_exit_wait_answers_at_the_exit_and_a_shutdown_ends_the_connection() {
    require_root();
    let f = Fixture::new("exitwait");
    let mut c = f.client();
    f.create(&mut c, "w", &f.spec(&["sleep", "100"])).unwrap();
    c.start("w").unwrap();
    let mut exit = ExitWait::send(&f.paths, "w").unwrap();
    assert!(!exit.stopped_within(Duration::from_millis(200)), "woken while it runs");
    c.kill("w", libc::SIGKILL, false).unwrap();
    assert!(exit.stopped_within(Duration::from_secs(10)), "not woken by the exit");
    let st = c.state("w").unwrap();
    assert_eq!((st.status, st.exit_code), (Status::Stopped, Some(137)));
    // Sent after the exit: answered at once.
    assert!(ExitWait::send(&f.paths, "w").unwrap().stopped_within(Duration::from_secs(10)));
    c.delete("w").unwrap();
    // A wait on what the shim does not hold is answered (with an error) too.
    assert!(ExitWait::send(&f.paths, "w").unwrap().stopped_within(Duration::from_secs(10)));
    c.shutdown(false).unwrap();
    c.wait_closed(Duration::from_secs(10));
    assert!(!f.paths.socket().exists(), "the connection ended before the shim removed its socket");
}
