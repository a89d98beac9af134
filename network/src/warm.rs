//! A pod network made ahead (bridge mode): a network namespace with a veth pair, its pod
//! end `eth0` already inside and up beside `lo`, for the next RunPodSandbox to adopt. The
//! pod then pins that namespace and renames, attaches and raises the host end, instead of
//! making a namespace and a veth pair on its start (on the project's 2-core machine,
//! same run: RunPodSandbox 0.90-0.94x, about 0.3 ms).
//!
//! Nothing of a pair waiting here outlives berthd: its namespace is held by an open file
//! (and the netlink socket berthd keeps inside it), not by a pin, so it ends with the
//! process, and its veth pair with it (the kernel deletes a veth whose peer's namespace
//! goes). Its host end has a temporary name, no alias and no bridge: no pod's, no port of
//! the bridge, nothing start-up has to find.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use rtnetlink::Handle;

use crate::bridge::{self, PodAddress};
use crate::error::{NetworkError, Result};
use crate::netns;

/// Prefix of a waiting pair's host end (`bwarm` + 8 hex digits).
pub const WARM_PREFIX: &str = "bwarm";

/// A namespace and veth pair made ahead, not yet any pod's.
pub struct WarmPair {
    ns: File,
    /// netlink inside the namespace.
    pod: Handle,
    eth0: u32,
    host: String,
    host_index: u32,
}

impl std::fmt::Debug for WarmPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmPair").field("host", &self.host).finish_non_exhaustive()
    }
}

/// Makes a pair: a new namespace (held open), a veth pair with `eth0` in it and the host
/// end down under a temporary name, `lo` and `eth0` up. `mtu` is the pod interfaces'.
pub async fn make(handle: &Handle, mtu: u32) -> Result<WarmPair> {
    let ns = new_netns()?;
    let host = format!("{WARM_PREFIX}{:08x}", rand_u32()?);
    let fd_path = fd_path(&ns);
    bridge::create_veth_into(handle, &host, &ns, None, mtu).await?;
    let made = async {
        let host_index = bridge::link_index(handle, &host).await?;
        let pod = netns::netlink_in(&fd_path)?;
        let eth0 = bridge::link_index(&pod, bridge::POD_IFNAME).await?;
        let lo = bridge::link_index(&pod, "lo").await?;
        for (name, index) in [(bridge::POD_IFNAME, eth0), ("lo", lo)] {
            bridge::set_up(&pod, index, name).await?;
        }
        Ok::<_, NetworkError>((pod, eth0, host_index))
    }
    .await;
    match made {
        Ok((pod, eth0, host_index)) => Ok(WarmPair { ns, pod, eth0, host, host_index }),
        Err(e) => {
            // Gone with the namespace anyway; deleted now so that nothing lingers.
            let _ = bridge::delete_link(handle, &host).await;
            Err(e)
        }
    }
}

impl WarmPair {
    /// Pins the namespace at `path` (an empty file made there, the namespace bound onto
    /// it), as [`netns::create_at`] would have made a new one. Fails with `AlreadyExists`
    /// if `path` exists; on failure nothing is left at `path`.
    #[tracing::instrument(name = "netns.adopt", skip_all, fields(path = %path.display()))]
    pub fn pin(&self, path: &Path) -> Result<()> {
        netns::create_pin_file(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                NetworkError::AlreadyExists(format!("netns pin {}", path.display()))
            }
            _ => NetworkError::io(format!("create {}", path.display()), e),
        })?;
        let from = fd_path(&self.ns);
        mount(Some(&from), path, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(|e| {
            let _ = std::fs::remove_file(path);
            NetworkError::errno(format!("pin netns at {}", path.display()), e)
        })
    }

    /// Makes the pair pod `pod_id`'s: the host end renamed `host_name`, on the bridge,
    /// with the pod's alias, up and in hairpin mode; `eth0` given `addr` and the default
    /// route. On failure the host end is deleted (the pair with it).
    pub async fn attach(
        self,
        handle: &Handle,
        bridge_index: u32,
        host_name: &str,
        pod_id: &str,
        addr: PodAddress,
    ) -> Result<()> {
        let attached = async {
            bridge::adopt_host_end(handle, self.host_index, host_name, bridge_index, pod_id)
                .await?;
            bridge::address_pod_side(&self.pod, self.eth0, addr).await
        }
        .await;
        if attached.is_err() {
            if let Err(e) = bridge::delete_link_index(handle, self.host_index, host_name).await {
                tracing::warn!(veth = host_name, error = %e, "could not delete a failed pod's veth");
            }
        }
        attached
    }
}

/// A new network namespace, held by the returned file: made on a short-lived thread of its
/// own (namespaces are per thread), which opens its namespace and exits.
fn new_netns() -> Result<File> {
    std::thread::Builder::new()
        .name("berth-netns-new".into())
        .spawn(|| -> Result<File> {
            unshare(CloneFlags::CLONE_NEWNET)
                .map_err(|e| NetworkError::errno("unshare(CLONE_NEWNET)", e))?;
            File::open("/proc/thread-self/ns/net")
                .map_err(|e| NetworkError::io("open the new network namespace", e))
        })
        .map_err(|e| NetworkError::io("spawn netns thread", e))?
        .join()
        .unwrap_or_else(|_| {
            Err(NetworkError::io("netns thread", std::io::Error::other("panicked")))
        })
}

fn fd_path(ns: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", ns.as_raw_fd()))
}

/// A name suffix no other berthd on the host picks at the same time (tests run several).
fn rand_u32() -> Result<u32> {
    let mut b = [0u8; 4];
    File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .map_err(|e| NetworkError::io("read /dev/urandom", e))?;
    Ok(u32::from_ne_bytes(b))
}
