//! Forking a process straight into its pid namespace.
//!
//! A process cannot move into another pid namespace; joining one (`setns`) or making one
//! (`unshare`) changes only where the caller's next children are born. Done by the child
//! itself, that takes a second fork (the executor's *intermediate*), which copies the
//! address space again, exits and is reaped: a few hundred microseconds on every create
//! and exec. Done by the shim instead, just around its fork, the child is born in its
//! pid namespace and is the container's (or the exec's) process itself; the shim then
//! points its own children back at its own pid namespace, which the kernel always allows.
//!
//! Not for a new pid namespace of a container in a pod's user namespace: a pid namespace
//! is owned by the user namespace of the process that makes it, and the container's must
//! be owned by the pod's (its /proc mount needs that), so the intermediate, once in the
//! pod's user namespace, makes it (`super::intermediate`).

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use nix::sched::{setns, unshare, CloneFlags};
use nix::unistd::ForkResult;

use super::clone_into;
use super::error::{Ctx, Error, Result};

/// The pid namespace a child is to be born in.
#[derive(Debug)]
pub enum PidNs {
    /// The caller's own (a host-pid container, or an exec into one).
    Ours,
    /// An existing one, opened (a pod's shared pid namespace, a running container's).
    Join(File),
    /// A new one, the child its pid 1.
    New,
}

/// Set when pointing the caller's children back at its own pid namespace failed (the
/// kernel allows it to a root process; this is only for the impossible): every later
/// fork then tries again first, and fails rather than be born in a container's.
static STRAYED: AtomicBool = AtomicBool::new(false);

pub(super) fn own() -> Result<&'static OwnedFd> {
    static OWN: OnceLock<OwnedFd> = OnceLock::new();
    if let Some(fd) = OWN.get() {
        return Ok(fd);
    }
    // /proc/self/ns/pid is the active pid namespace, which setns and unshare never change.
    let fd =
        OwnedFd::from(File::open("/proc/self/ns/pid").ctx(|| "open own pid namespace".into())?);
    Ok(OWN.get_or_init(|| fd))
}

fn back_home() -> Result<()> {
    let home = own()?;
    match setns(home.as_fd(), CloneFlags::CLONE_NEWPID) {
        Ok(()) => {
            STRAYED.store(false, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => {
            STRAYED.store(true, Ordering::Relaxed);
            Err(Error(format!("setns back to own pid namespace: {e}")))
        }
    }
}

/// Forks a child born in `ns` and, where `cgroup` is given and the kernel can, in that
/// v2 cgroup directory; the flag says whether it was born in the cgroup.
///
/// # Safety
/// As `fork`: the caller must be single-threaded.
pub unsafe fn fork(ns: &PidNs, cgroup: Option<&OwnedFd>) -> Result<(ForkResult, bool)> {
    if STRAYED.load(Ordering::Relaxed) {
        back_home()?;
    }
    // Opened before it is needed to go back: opening it can fail, going back cannot.
    own()?;
    match ns {
        PidNs::Ours => {}
        PidNs::Join(f) => setns(f.as_fd(), CloneFlags::CLONE_NEWPID).ctx(|| "setns pid".into())?,
        PidNs::New => unshare(CloneFlags::CLONE_NEWPID).ctx(|| "unshare pid namespace".into())?,
    }
    // SAFETY: the caller is single-threaded.
    let forked = unsafe { fork_maybe_into(cgroup) };
    if !matches!(ns, PidNs::Ours) && !matches!(forked, Ok((ForkResult::Child, _))) {
        // The child, if forked, is where it belongs; a failure here is the next fork's.
        let _ = back_home();
    }
    forked
}

/// Forks, into the cgroup `dir` where one is given and the kernel can.
///
/// # Safety
/// As `fork`: the caller must be single-threaded.
unsafe fn fork_maybe_into(dir: Option<&OwnedFd>) -> Result<(ForkResult, bool)> {
    // SAFETY: the caller is single-threaded.
    if let Some(forked) = dir.and_then(|d| unsafe { clone_into::fork_into(d.as_fd()) }) {
        return Ok((forked, true));
    }
    // SAFETY: as above.
    Ok((unsafe { nix::unistd::fork() }.ctx(|| "fork".into())?, false))
}
