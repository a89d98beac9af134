//! The systemd cgroup driver: a pod's cgroup is a systemd slice, each container's a
//! transient scope in it (`berth-<id>.scope`, `Delegate=yes`), both made over D-Bus the
//! way a kubelet with `cgroupDriver: systemd` expects a runtime to make them.
//!
//! The OCI spec carries a container's cgroup in runc's systemd form,
//! `<slice>:berth:<id>`; [`resolve`] turns it into the cgroupfs directory the rest of
//! berth reads and writes (`/sys/fs/cgroup/<expanded slice>/berth-<id>.scope`).
//!
//! Limits systemd manages itself (CPU weight and quota, cpuset, memory, tasks) are given
//! to systemd as unit properties, because systemd rewrites a unit's own cgroup files from
//! its properties whenever it re-applies them (`systemctl daemon-reload`): a limit only
//! written to the file would be reset. The same values are written to the files too, with
//! what systemd has no property for (hugetlb, the device program, unified keys).
//!
//! cgroups-rs 0.5's systemd manager is not used (measured and read, see `bus.rs`).

mod bus;
mod names;
mod props;

pub use bus::{with_shared, Bus};
pub use names::{expand_slice, pod_slice, resolve, scope_path, ScopeName, SCOPE_PREFIX};
pub(crate) use props::{accounting, cpu_quota};
pub use props::{resource_properties, scope_properties, Property};

/// Runs `f` in a forked child and returns its result. The shim forks container processes
/// and must stay single-threaded; a D-Bus connection starts threads, so it lives and dies
/// in a child. Only for single-threaded callers.
pub fn in_child(f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    use std::io::{Read, Write};
    let (mut r, w) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: callers are single-threaded (the shim), so the child's copy of the process
    // is consistent; the child only runs `f` and exits without unwinding into the caller.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Child => {
            drop(r);
            let mut w = w;
            let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                Ok(Ok(())) => 0,
                Ok(Err(e)) => {
                    let _ = w.write_all(e.as_bytes());
                    1
                }
                Err(_) => {
                    let _ = w.write_all(b"panicked");
                    1
                }
            };
            drop(w);
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(w);
            let mut msg = String::new();
            let _ = r.read_to_string(&mut msg);
            match nix::sys::wait::waitpid(child, None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => Ok(()),
                Ok(_) if !msg.is_empty() => Err(msg),
                other => Err(format!("systemd helper process ended: {other:?}")),
            }
        }
    }
}
