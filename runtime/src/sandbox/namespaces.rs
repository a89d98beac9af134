//! The pod's namespace modes ([`NsMode`]), and its IPC and UTS namespaces pinned by bind
//! mounts, like berth-network's netns pins.
//!
//! A short-lived OS thread unshares the namespaces (namespaces are per thread, so no other
//! thread of berthd moves), sets the pod's host name and IPC sysctls from inside them, and
//! bind-mounts its `/proc/thread-self/ns/{ipc,uts}` onto empty files. Then it exits: the
//! mounts keep the namespaces alive with no process in them.

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use serde::{Deserialize, Serialize};

use super::sysctl::Sysctl;
use crate::error::RuntimeError;

/// A namespace option of the pod (CRI `NamespaceMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum NsMode {
    #[default]
    Pod,
    Container,
    Node,
    Target,
}

/// Why a pod's namespaces could not be set up: whose fault it is decides the answer's
/// code, so it travels as a kind and not as a message to be read back.
#[derive(Debug, thiserror::Error)]
pub enum NsError {
    /// A sysctl the request asked for was refused: the request's fault.
    #[error("{0}")]
    Sysctl(String),
    /// A step of the set-up failed: the node's.
    #[error("{0}")]
    Setup(String),
}

/// The set-up steps report plain messages.
impl From<String> for NsError {
    fn from(m: String) -> Self {
        NsError::Setup(m)
    }
}

impl From<NsError> for RuntimeError {
    fn from(e: NsError) -> Self {
        match e {
            NsError::Sysctl(m) => {
                RuntimeError::InvalidArgument(format!("config.linux.sysctls: {m}"))
            }
            NsError::Setup(m) => RuntimeError::Internal(m),
        }
    }
}

/// What to create.
#[derive(Debug, Clone, Default)]
pub struct NsRequest {
    /// Pin a new IPC namespace here.
    pub ipc: Option<PathBuf>,
    /// Pin a new UTS namespace here, with this host name (empty: keep the copied one).
    pub uts: Option<(PathBuf, String)>,
    /// IPC sysctls to write inside the new IPC namespace.
    pub ipc_sysctls: Vec<Sysctl>,
    /// The namespaces are already pinned at those paths (made inside the pod's user
    /// namespace): only join them to set the host name and sysctls.
    pub existing: bool,
}

/// Creates the namespaces. On failure whatever was pinned is removed again and the error
/// names the step (and the sysctl when one failed).
pub fn create(req: NsRequest) -> Result<(), NsError> {
    if req.ipc.is_none() && req.uts.is_none() {
        return Ok(());
    }
    if req.existing {
        return on_own_thread("berth-ns-join", req);
    }
    let pins: Vec<PathBuf> =
        req.ipc.iter().cloned().chain(req.uts.iter().map(|(p, _)| p.clone())).collect();
    for pin in &pins {
        berth_network::netns::create_pin_file(pin)
            .map_err(|e| format!("create {}: {e}", pin.display()))?;
    }
    let result = on_own_thread("berth-ns-new", req);
    if result.is_err() {
        for pin in &pins {
            let _ = remove_pin(pin);
        }
    }
    result
}

fn on_own_thread(name: &str, req: NsRequest) -> Result<(), NsError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || in_thread(&req))
        .map_err(|e| format!("spawn namespace thread: {e}"))?
        .join()
        .unwrap_or_else(|_| Err("namespace thread panicked".to_string().into()))
}

fn in_thread(req: &NsRequest) -> Result<(), NsError> {
    let mut flags = CloneFlags::empty();
    if req.ipc.is_some() {
        flags |= CloneFlags::CLONE_NEWIPC;
    }
    if req.uts.is_some() {
        flags |= CloneFlags::CLONE_NEWUTS;
    }
    // Namespaces of this thread only; it exits when done and is never reused.
    if req.existing {
        let join = req.ipc.iter().map(|p| (p, CloneFlags::CLONE_NEWIPC));
        for (pin, flag) in join.chain(req.uts.iter().map(|(p, _)| (p, CloneFlags::CLONE_NEWUTS))) {
            let f = std::fs::File::open(pin).map_err(|e| format!("open {}: {e}", pin.display()))?;
            setns(&f, flag).map_err(|e| format!("join {}: {e}", pin.display()))?;
        }
    } else {
        unshare(flags).map_err(|e| format!("unshare({flags:?}): {e}"))?;
    }
    if let Some((_, hostname)) = &req.uts {
        if !hostname.is_empty() {
            nix::unistd::sethostname(hostname)
                .map_err(|e| format!("set host name {hostname:?}: {e}"))?;
        }
    }
    if req.ipc.is_some() {
        for s in &req.ipc_sysctls {
            write_sysctl(s)?;
        }
    }
    if req.existing {
        return Ok(());
    }
    if let Some(pin) = &req.ipc {
        bind("ipc", pin)?;
    }
    if let Some((pin, _)) = &req.uts {
        bind("uts", pin)?;
    }
    Ok(())
}

/// Writes a sysctl through `/proc/sys` from the calling thread (whose namespaces decide
/// which instance it sets). The error names the sysctl.
pub fn write_sysctl(s: &Sysctl) -> Result<(), NsError> {
    std::fs::write(s.proc_path(), s.value.as_bytes()).map_err(|e| {
        NsError::Sysctl(match e.kind() {
            io::ErrorKind::NotFound => {
                format!("sysctl {:?}: no such sysctl in the pod's namespace", s.name)
            }
            _ => format!("sysctl {:?} = {:?}: {e}", s.name, s.value),
        })
    })
}

fn bind(kind: &str, pin: &Path) -> Result<(), String> {
    let src = format!("/proc/thread-self/ns/{kind}");
    mount(Some(src.as_str()), pin, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| format!("pin {kind} namespace at {}: {e}", pin.display()))
}

/// Removes a namespace pin (lazy unmount, then the file); idempotent.
pub fn remove_pin(path: &Path) -> Result<(), String> {
    berth_network::netns::remove(path).map_err(|e| e.to_string())
}

/// Whether `path` is a live namespace pin.
pub fn is_pin(path: &Path) -> bool {
    berth_network::netns::is_netns(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::sysctl::SysctlNs;

    #[test]
    fn a_refused_sysctl_is_the_requests_fault_and_a_failed_step_the_nodes() {
        let missing = Sysctl {
            name: "net.berth_no_such.sysctl".into(),
            value: "1".into(),
            ns: SysctlNs::Net,
        };
        let e = write_sysctl(&missing).unwrap_err();
        assert!(matches!(e, NsError::Sysctl(_)), "{e:?}");
        match RuntimeError::from(e) {
            RuntimeError::InvalidArgument(m) => assert_eq!(
                m,
                "config.linux.sysctls: sysctl \"net.berth_no_such.sysctl\": no such sysctl in \
                 the pod's namespace"
            ),
            e => panic!("{e:?}"),
        }
        let step = NsError::from("unshare(CLONE_NEWIPC): EPERM".to_string());
        assert!(
            matches!(RuntimeError::from(step), RuntimeError::Internal(m) if m == "unshare(CLONE_NEWIPC): EPERM")
        );
    }
}
