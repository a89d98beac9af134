//! Pod-network fixtures: a unique bridge, subnet, nftables table and cgroup parent per
//! test (so tests run in parallel), helpers to act inside a pod's namespaces, and what
//! the host holds of a test's pods; `leak_checks` holds the checks against a berthd.

use std::fs;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const SUBNET_LOCKS: &str = "/tmp/berth-it-subnets";

/// Whether the tests run berthd with the systemd cgroup driver
/// (`BERTH_TEST_CGROUP_DRIVER=systemd`; the VM lane runs them so as well as with cgroupfs).
/// Pods then get slices as cgroup parents and containers scopes, named by
/// [`NetEnv::cgroup_parent`] and [`container_cgroup`].
pub fn systemd_driver() -> bool {
    std::env::var("BERTH_TEST_CGROUP_DRIVER").is_ok_and(|d| d == "systemd")
}

/// The name of a container's cgroup directory inside its pod's.
pub fn container_cgroup(id: &str) -> String {
    if systemd_driver() {
        format!("berth-{id}.scope")
    } else {
        id.to_string()
    }
}

/// The cgroup root name of a test: a directory under each hierarchy (cgroupfs), or the
/// prefix of its pods' top-level slices (systemd: no dash, which would nest the slice).
fn cgroup_root(name: &str) -> String {
    if systemd_driver() {
        format!("berthit_{}", name.replace('-', "_"))
    } else {
        format!("berth-it-{name}")
    }
}

/// One test's network and cgroup names. Dropping it deletes the bridge, the table and
/// any cgroup directory left under its cgroup root.
pub struct NetEnv {
    pub bridge: String,
    pub nft_table: String,
    /// The third octet of the test's `10.252.X.0/24`.
    pub x: u8,
    pub subnet: String,
    /// A cgroup directory name (on every hierarchy) that only this test uses.
    pub cgroup_root: String,
    lock: PathBuf,
}

impl NetEnv {
    /// A fresh environment with a /24 subnet.
    pub fn new() -> Self {
        Self::with_prefix(24)
    }

    /// The environment named `name` on `10.252.X.0/24`, the same in every process that
    /// asks: for a test whose berthd outlives it (the VM lane's power cuts). No lock is
    /// taken, so only a host that runs nothing else may use it.
    pub fn fixed(x: u8, name: &str) -> Self {
        NetEnv {
            bridge: format!("bi-{name}"),
            nft_table: format!("bi_{name}"),
            x,
            subnet: format!("10.252.{x}.0/24"),
            cgroup_root: cgroup_root(name),
            lock: PathBuf::new(),
        }
    }

    /// A fresh environment whose subnet is `10.252.X.0/<prefix>` (prefix >= 24).
    pub fn with_prefix(prefix: u8) -> Self {
        fs::create_dir_all(SUBNET_LOCKS).expect("subnet lock dir");
        let u = unique();
        // Claim an X nobody else (in any test process) holds.
        for i in 0..250u32 {
            let x = ((u + i) % 250 + 1) as u8;
            let lock = Path::new(SUBNET_LOCKS).join(x.to_string());
            if fs::OpenOptions::new().write(true).create_new(true).open(&lock).is_ok() {
                let _ = fs::write(&lock, std::process::id().to_string());
                return NetEnv {
                    bridge: format!("bi-{u:08x}"),
                    nft_table: format!("bi_{u:08x}"),
                    x,
                    subnet: format!("10.252.{x}.0/{prefix}"),
                    cgroup_root: cgroup_root(&format!("{u:08x}")),
                    lock,
                };
            }
        }
        panic!("no free test subnet under {SUBNET_LOCKS} (stale locks?)");
    }

    /// The `[network]` section for berthd's config.
    pub fn config_toml(&self) -> String {
        format!(
            "[network]\nbridge = \"{}\"\nsubnet = \"{}\"\nnft_table = \"{}\"\n",
            self.bridge, self.subnet, self.nft_table
        )
    }

    /// A pod config named `name` (uid `uid-NAME`, namespace `default`, hostname NAME)
    /// logging to `logs`, under this environment's cgroup parent.
    pub fn pod_config(&self, name: &str, logs: &Path) -> berth_proto::PodSandboxConfig {
        use berth_proto::{LinuxPodSandboxConfig, PodSandboxConfig, PodSandboxMetadata};
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: logs.display().to_string(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent(name),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The bridge's (gateway's) address.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 252, self.x, 1)
    }

    /// A cgroup parent under this test's cgroup root: a directory below it (cgroupfs), or
    /// a top-level slice named after it (systemd), so that in both cases
    /// `/sys/fs/cgroup/<parent>` is the pod cgroup on a v2 host.
    pub fn cgroup_parent(&self, pod: &str) -> String {
        if systemd_driver() {
            format!("{}_{}.slice", self.cgroup_root, pod.replace('-', "_"))
        } else {
            format!("/{}/{pod}", self.cgroup_root)
        }
    }

    /// A host port for this test.
    pub fn host_port(&self, n: u16) -> u16 {
        31000 + u16::from(self.x) * 8 + n
    }

    /// Interfaces attached to the bridge (pod veths).
    pub fn bridge_ports(&self) -> Vec<String> {
        let dir = format!("/sys/class/net/{}/brif", self.bridge);
        let mut v: Vec<String> = fs::read_dir(dir)
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Per-pod rules left in the nftables table.
    pub fn pod_rules(&self) -> Vec<String> {
        let out = Command::new("nft")
            .args(["list", "table", "ip", &self.nft_table])
            .stderr(Stdio::null())
            .output()
            .expect("run nft");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("berth:pod="))
            .map(|l| l.trim().to_string())
            .collect()
    }

    /// Directories of this test's cgroup root that exist on any hierarchy: under each v1
    /// hierarchy and the hybrid v2 tree (`/sys/fs/cgroup/<hierarchy>/<root>`), or in the
    /// one v2 tree (`/sys/fs/cgroup/<root>`).
    pub fn cgroups(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        if systemd_driver() {
            // The pod slices: `/sys/fs/cgroup/<root>_<pod>.slice`.
            let prefix = format!("{}_", self.cgroup_root);
            for entry in fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
                if entry.file_name().to_string_lossy().starts_with(&prefix) {
                    found.push(entry.path());
                }
            }
            return found;
        }
        let unified = Path::new("/sys/fs/cgroup").join(&self.cgroup_root);
        if unified.exists() {
            found.push(unified);
        }
        for entry in fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
            let p = entry.path().join(&self.cgroup_root);
            if p.exists() {
                found.push(p);
            }
        }
        found
    }
}

impl NetEnv {
    /// Container cgroups (directories named by a 64-hex-digit id) under this test's cgroup
    /// root, on every hierarchy: a pod's container cgroups, or ones a failed create left.
    pub fn container_cgroups(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
            for e in fs::read_dir(dir).into_iter().flatten().flatten() {
                if !e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let name = e.file_name().to_string_lossy().into_owned();
                if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                    found.push(e.path());
                }
                walk(&e.path(), found);
            }
        }
        let mut found = Vec::new();
        for root in self.cgroups() {
            walk(&root, &mut found);
        }
        found
    }
}

impl Default for NetEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NetEnv {
    fn drop(&mut self) {
        let _ =
            Command::new("ip").args(["link", "del", &self.bridge]).stderr(Stdio::null()).status();
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", &self.nft_table])
            .stderr(Stdio::null())
            .status();
        // A test that failed half-way leaves container processes in its cgroups.
        let procs: Vec<PathBuf> =
            self.cgroups().iter().flat_map(|d| walk(d)).map(|d| d.join("cgroup.procs")).collect();
        let deadline = std::time::Instant::now()
            + crate::time_scale::scaled(std::time::Duration::from_secs(2));
        loop {
            let pids: Vec<i32> = procs
                .iter()
                .filter_map(|p| fs::read_to_string(p).ok())
                .flat_map(|t| t.lines().filter_map(|l| l.parse().ok()).collect::<Vec<i32>>())
                .collect();
            if pids.is_empty() || std::time::Instant::now() > deadline {
                break;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        for dir in self.cgroups() {
            if systemd_driver() {
                // A slice left by a failed test: systemd removes it with the unit.
                let unit = dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
                let _ =
                    Command::new("systemctl").args(["stop", &unit]).stderr(Stdio::null()).status();
                continue;
            }
            // Children first (berth's pod cgroups, if a test failed before removing them).
            let mut dirs: Vec<PathBuf> = walk(&dir);
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            for d in dirs {
                let _ = fs::remove_dir(d);
            }
        }
        let _ = fs::remove_file(&self.lock);
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            out.extend(walk(&e.path()));
        }
    }
    out
}

fn unique() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let mut h: u32 = 0x811c_9dc5;
    for b in
        std::process::id().to_le_bytes().iter().chain(&nanos.to_le_bytes()).chain(&n.to_le_bytes())
    {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Mount points at or under `root` (from /proc/self/mountinfo).
pub fn mounts_under(root: &Path) -> Vec<String> {
    let root = root.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| *m == root || m.starts_with(&format!("{root}/")))
        .map(str::to_string)
        .collect()
}

/// Runs `f` on a fresh thread that has joined the namespace pinned at `ns` (`kind`: a
/// `CLONE_NEW*` flag), and returns its result. Sockets it opens stay in that namespace.
pub fn in_ns<R: Send>(ns: &Path, kind: nix::sched::CloneFlags, f: impl FnOnce() -> R + Send) -> R {
    let file = fs::File::open(ns).unwrap_or_else(|e| panic!("open {}: {e}", ns.display()));
    std::thread::scope(|s| {
        s.spawn(move || {
            nix::sched::setns(file.as_fd(), kind).expect("setns");
            f()
        })
        .join()
        .expect("namespace thread")
    })
}

/// Runs `f` in the network namespace pinned at `ns`.
pub fn in_netns<R: Send>(ns: &Path, f: impl FnOnce() -> R + Send) -> R {
    in_ns(ns, nix::sched::CloneFlags::CLONE_NEWNET, f)
}
