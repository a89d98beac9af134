//! Forking straight into a cgroup: `clone3` with `CLONE_INTO_CGROUP` (Linux 5.7, cgroup
//! v2). A process born in its cgroup is never moved into it, so it never waits for the
//! kernel's global threadgroup lock, whose first write after a quiet spell costs an RCU
//! grace period (milliseconds; see `crate::cgroup_migration`).
//!
//! The shim forks a container's (or an exec's) process this way; what it forks in turn
//! is born there too. Where the kernel cannot do it (no
//! `clone3`, no `CLONE_INTO_CGROUP`, a cgroup that takes no processes), the caller forks
//! as before and moves the process in.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::unistd::{ForkResult, Pid};

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` of `linux/sched.h` up to `cgroup` (version 2, 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Forks, the child born in the cgroup `dir` (a v2 cgroup directory, opened). `None`
/// where the kernel refused: nothing was forked, and the caller forks as before.
///
/// # Safety
/// As `fork`: the caller must be single-threaded. Like a fork without glibc's wrapper,
/// the child must not rely on glibc's cached thread id (it execs or exits soon, and
/// forks with glibc's `fork`, which sets it again for its own child).
pub unsafe fn fork_into(dir: BorrowedFd<'_>) -> Option<ForkResult> {
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: dir.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: a fork-like clone (no CLONE_VM, no stack): the child runs on a copy of the
    // caller's memory, as after fork; single-threaded per this function's contract.
    let ret = unsafe {
        libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, std::mem::size_of::<CloneArgs>())
    };
    match ret {
        r if r < 0 => None,
        0 => Some(ForkResult::Child),
        pid => Some(ForkResult::Parent { child: Pid::from_raw(pid as i32) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_args_are_the_kernels_version_two() {
        // CLONE_ARGS_SIZE_VER2 in linux/sched.h: the size that carries `cgroup`.
        assert_eq!(std::mem::size_of::<CloneArgs>(), 88);
    }
}
