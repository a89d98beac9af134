//! The pod's init: PID 1 of a pod that shares one PID namespace between its containers.
//!
//! A PID namespace dies with its first process, so a pod-wide one needs a process that
//! lives as long as the pod and reaps what its containers orphan. berth needs no pause
//! image for that: the shim forks a child that unshares the PID namespace and forks
//! again; the grandchild is PID 1 there and only reaps. The middle child exits at once,
//! so init's parent becomes the shim (the subreaper), which kills it when the pod stops.

use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;

use std::path::Path;

use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

/// Starts the pod's init (its PID namespace owned by the user namespace pinned at
/// `userns`, when given); returns its host pid. Only call from the single-threaded shim.
pub fn spawn(userns: Option<&Path>) -> io::Result<i32> {
    let (r, w) = nix::unistd::pipe().map_err(io::Error::from)?;
    // SAFETY: the shim is single-threaded, so the child may run arbitrary code.
    match unsafe { fork() }.map_err(io::Error::from)? {
        ForkResult::Child => {
            drop(r);
            let code = match middle(w, userns) {
                Ok(()) => 0,
                Err(_) => 1,
            };
            // SAFETY: leave without running the shim's destructors or atexit handlers.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(w);
            let mut f = std::fs::File::from(r);
            let mut buf = [0u8; 4];
            let read = f.read_exact(&mut buf);
            let _ = waitpid(child, None);
            read.map_err(|e| io::Error::other(format!("pod init did not start: {e}")))?;
            Ok(i32::from_be_bytes(buf))
        }
    }
}

/// The middle child: a new PID namespace for its children, one child (init), then exit.
fn middle(w: OwnedFd, userns: Option<&Path>) -> io::Result<()> {
    if let Some(path) = userns {
        let f = std::fs::File::open(path)?;
        setns(&f, CloneFlags::CLONE_NEWUSER).map_err(io::Error::from)?;
        // Its root, not the unmapped host root (`nobody` to the pod's processes).
        let root = (nix::unistd::Uid::from_raw(0), nix::unistd::Gid::from_raw(0));
        nix::unistd::setresgid(root.1, root.1, root.1).map_err(io::Error::from)?;
        nix::unistd::setresuid(root.0, root.0, root.0).map_err(io::Error::from)?;
    }
    unshare(CloneFlags::CLONE_NEWPID).map_err(io::Error::from)?;
    // SAFETY: still single-threaded (a fork of the shim).
    match unsafe { fork() }.map_err(io::Error::from)? {
        ForkResult::Child => {
            drop(w);
            init()
        }
        ForkResult::Parent { child } => {
            std::fs::File::from(w).write_all(&child.as_raw().to_be_bytes())?;
            Ok(())
        }
    }
}

extern "C" fn on_sigchld(_: libc::c_int) {}

/// PID 1 of the pod: holds nothing of the shim's, reaps orphans until killed.
fn init() -> ! {
    // The shim's sockets and pipes must not stay open here: berthd would never see a
    // connection close, and containers' output pipes would never reach EOF.
    // SAFETY: closing fds this process owns; nothing below uses them.
    unsafe {
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
            if null > 2 {
                libc::close(null);
            }
        }
        libc::prctl(libc::PR_SET_NAME, c"berth-pod-init".as_ptr() as libc::c_ulong, 0, 0, 0);
    }
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    // SIGCHLD stays blocked (as the shim left it) except inside sigsuspend, so a child
    // that exits between the reaping pass and the wait is never missed.
    let _ = chld.thread_block();
    let handler =
        SigAction::new(SigHandler::Handler(on_sigchld), SaFlags::empty(), SigSet::empty());
    // SAFETY: the handler does nothing.
    let _ = unsafe { sigaction(Signal::SIGCHLD, &handler) };
    loop {
        while let Ok(s) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            if s == WaitStatus::StillAlive {
                break;
            }
        }
        let mut open = SigSet::all();
        open.remove(Signal::SIGCHLD);
        let _ = open.suspend();
    }
}
