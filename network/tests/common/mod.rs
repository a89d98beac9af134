//! Shared fixture for the root integration tests: unique names per test, and a guard that
//! removes everything the test may have created even when it fails.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_network::{netns, Ipam, Network, NetworkConfig};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A number unique within this process and unlikely to repeat across processes.
pub fn unique() -> u32 {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let mut h: u32 = 0x811c_9dc5;
    for b in std::process::id()
        .to_le_bytes()
        .iter()
        .chain(nanos.to_le_bytes().iter())
        .chain(n.to_le_bytes().iter())
    {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Skips (returns early from) a test that needs root when not root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !common::is_root() {
            eprintln!("skipped: needs root");
            return;
        }
    };
}

/// Everything one test owns. Dropping it removes all of it.
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub dir: netns::NetnsDir,
    pub config: NetworkConfig,
    /// The third octet of the test's 10.250.X.0/24 subnet, also used to pick host ports.
    pub x: u8,
    pub pods: Mutex<Vec<String>>,
}

impl Env {
    pub fn new() -> Env {
        let u = unique();
        let seq = COUNTER.fetch_add(1, Ordering::SeqCst);
        let x = ((std::process::id().wrapping_mul(7) + seq * 13) % 250 + 1) as u8;
        let tmp = tempfile::Builder::new().prefix("berth-net-test-").tempdir().unwrap();
        let dir = netns::NetnsDir::new(tmp.path().join("netns")).unwrap();
        Env {
            dir,
            config: NetworkConfig {
                bridge: format!("bt-{u:08x}"),
                subnet: format!("10.250.{x}.0/24").parse().unwrap(),
                nft_table: format!("bt_{u:08x}"),
                mtu: None,
                warm: true,
            },
            x,
            tmp,
            pods: Mutex::new(Vec::new()),
        }
    }

    pub fn network(&self) -> Network {
        let ipam = Ipam::new(self.config.subnet).unwrap();
        Network::new(self.config.clone(), Arc::new(Mutex::new(ipam))).unwrap()
    }

    /// A fresh pod id, remembered for cleanup.
    pub fn pod_id(&self) -> String {
        let id = format!("pod{:08x}{:08x}", unique(), unique());
        self.pods.lock().unwrap().push(id.clone());
        id
    }

    /// A pinned netns for `pod_id`.
    pub fn pin(&self, pod_id: &str) -> PathBuf {
        self.dir.create(pod_id).unwrap()
    }

    /// A host port for this test, distinct from other tests'.
    pub fn host_port(&self, n: u16) -> u16 {
        30000 + u16::from(self.x) * 10 + n
    }

    pub fn gateway(&self) -> Ipv4Addr {
        let n = self.config.subnet.network();
        Ipv4Addr::from(u32::from(n) + 1)
    }

    /// Asserts nothing of this test is left on the machine.
    pub fn assert_no_leaks(&self) {
        let links = link_names();
        assert!(!links.contains(&self.config.bridge), "bridge {} leaked", self.config.bridge);
        for pod in self.pods.lock().unwrap().iter() {
            let veth = berth_network::bridge::veth_name(pod);
            assert!(!links.contains(&veth), "veth {veth} of {pod} leaked");
        }
        let mounts = mounts_under(self.tmp.path());
        assert!(mounts.is_empty(), "mounts leaked: {mounts:?}");
        assert!(!nft_table_exists(&self.config.nft_table), "nft table leaked");
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Best effort, synchronous, on a thread of its own (we may be inside a runtime).
        let bridge = self.config.bridge.clone();
        let table = self.config.nft_table.clone();
        let pods = self.pods.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let root = self.tmp.path().to_path_buf();
        let dir = self.dir.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Ok(h) = berth_network::bridge::connect() {
                    for pod in &pods {
                        let _ = berth_network::bridge::delete_link(
                            &h,
                            &berth_network::bridge::veth_name(pod),
                        )
                        .await;
                    }
                    let _ = berth_network::bridge::delete_link(&h, &bridge).await;
                }
            });
            let _ = std::process::Command::new("nft")
                .args(["delete", "table", "ip", &table])
                .stderr(std::process::Stdio::null())
                .status();
            for pod in &pods {
                let _ = dir.remove(pod);
            }
            let _ = dir.unmount();
            let mut mounts = mounts_under(&root);
            mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in mounts {
                let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
            }
        })
        .join()
        .unwrap();
    }
}

/// Names of the links in the calling thread's network namespace, read from
/// /proc/thread-self/net/dev (independent of the code under test; /sys/class/net would
/// show the namespace sysfs was mounted in instead).
pub fn link_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_to_string("/proc/thread-self/net/dev")
        .unwrap()
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_string())
        .collect();
    names.sort();
    names
}

/// Mount points at or under `root`, from /proc/self/mountinfo.
pub fn mounts_under(root: &Path) -> Vec<String> {
    let root = root.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|m| m == &root || m.starts_with(&format!("{root}/")))
        .collect()
}

fn unescape_mountinfo(s: &str) -> String {
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = u8::from_str_radix(&s[i + 1..i + 4], 8).unwrap_or(b'?');
            out.push(v as char);
            i += 4;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

pub fn nft_table_exists(table: &str) -> bool {
    std::process::Command::new("nft")
        .args(["list", "table", "ip", table])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Listens on `port` on every address inside the netns at `ns`.
pub fn listen_in(ns: &Path, port: u16) -> TcpListener {
    netns::run_in(ns, move || TcpListener::bind(("0.0.0.0", port))).unwrap().unwrap()
}

/// Connects to `to` (from inside `ns` if given), sends `msg`, and returns the peer
/// address the listener saw plus what it read.
pub fn round_trip(
    listener: &TcpListener,
    from: Option<&Path>,
    to: SocketAddr,
    msg: &str,
) -> (SocketAddr, String) {
    let connect = move || -> std::io::Result<TcpStream> {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
        s.write_all(msg.as_bytes())?;
        Ok(s)
    };
    let _client = match from {
        Some(ns) => netns::run_in(ns, connect).unwrap(),
        None => connect(),
    }
    .unwrap_or_else(|e| panic!("connect to {to}: {e}"));
    listener.set_nonblocking(false).unwrap();
    let (mut conn, peer) = listener.accept().unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = vec![0; msg.len()];
    conn.read_exact(&mut buf).unwrap();
    (peer, String::from_utf8(buf).unwrap())
}
