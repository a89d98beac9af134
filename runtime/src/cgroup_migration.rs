//! The kernel's cost of moving a process into a cgroup, paid before a container needs it.
//!
//! A write to `cgroup.procs` takes the kernel's one global threadgroup lock for writing,
//! and the first such write after a quiet spell first waits for an RCU grace period: about
//! 6–7 ms on the project's 2-core machine (kernel 6.18, cgroup v1 and v2 alike), while
//! writes that follow within a grace period take about 0.1 ms. Every container's first
//! process is moved into its cgroup, so every CreateContainer paid that wait on its
//! critical path. A no-op write of berthd into its own cgroup, started in the background
//! when a create begins, pays the wait while the create mounts the root filesystem and
//! writes the spec; the container's move then finds the lock ready.
//!
//! The native executor no longer needs this: its processes get into their cgroups
//! without the lock (`executor::cgroups::Placement`). It stays for what still takes it:
//! an OCI runtime handler's (runc's) move, and systemd moving a process into its scope.
//!
//! A kernel whose cgroup hierarchy is mounted with `favordynmods` (6.0 and later) keeps
//! the lock ready at all times, at some cost to every fork and exit on the node; then
//! this write costs ~0.2 ms and saves nothing. That choice is the operator's, not berth's.

use crate::cgroupfs::Hierarchy;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// Starts the grace period early by moving berthd into the cgroup it is already in.
#[derive(Clone, Default)]
pub struct MigrationWarmer {
    /// berthd's own `cgroup.procs`; `None` where it cannot be found (nothing is done).
    procs: Option<Arc<PathBuf>>,
    /// One warm-up at a time: creates that begin together share the one grace period.
    in_flight: Arc<AtomicBool>,
}

impl MigrationWarmer {
    /// The one warmer of this process: the kernel's lock is global, so concurrent
    /// creates share one warm-up in flight.
    pub fn shared() -> &'static MigrationWarmer {
        static SHARED: OnceLock<MigrationWarmer> = OnceLock::new();
        SHARED.get_or_init(Self::for_this_process)
    }

    /// The warmer for this process, from `/proc/self/cgroup` and the mounted hierarchies.
    pub fn for_this_process() -> Self {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let hierarchies = crate::cgroupfs::hierarchies().unwrap_or_default();
        Self { procs: own_procs_file(&own, &hierarchies).map(Arc::new), ..Self::default() }
    }

    /// [`Self::warm`] for a container whose process is to be put in its cgroup: only
    /// where something takes the lock — an OCI runtime (`!native`), or systemd moving the
    /// process into its scope. The native executor puts a cgroupfs container's process in
    /// without the lock (`executor::cgroups::Placement`), and a warm-up would only slow
    /// every fork on the node while the lock is held ready.
    pub fn warm_for(&self, systemd_scope: bool, native: bool) {
        if !placed_without_the_lock(native, systemd_scope) {
            self.warm();
        }
    }

    /// Starts a no-op move in the background and returns at once.
    pub fn warm(&self) {
        let Some(procs) = self.procs.clone() else { return };
        if self.in_flight.swap(true, Ordering::AcqRel) {
            return;
        }
        let in_flight = self.in_flight.clone();
        let spawned = std::thread::Builder::new().name("cgroup-warm".into()).spawn(move || {
            // "0" is the writer itself; it is already in this cgroup, so nothing moves.
            // A failure only means the container's own move pays the wait, as before.
            if let Err(e) = std::fs::write(procs.as_path(), "0") {
                tracing::debug!(path = %procs.display(), error = %e, "cgroup warm-up write failed");
            }
            in_flight.store(false, Ordering::Release);
        });
        if spawned.is_err() {
            self.in_flight.store(false, Ordering::Release);
        }
    }

    /// The file a warm-up writes to, if any.
    pub fn procs_file(&self) -> Option<&Path> {
        self.procs.as_deref().map(PathBuf::as_path)
    }
}

/// Whether a container's process gets into its cgroup without the global lock.
fn placed_without_the_lock(native: bool, systemd_scope: bool) -> bool {
    native && !systemd_scope
}

/// The `cgroup.procs` of the cgroup a process is in, given its `/proc/PID/cgroup` text:
/// in the v2 hierarchy where one is mounted (the lock is the same for every hierarchy),
/// else in the first v1 hierarchy that is.
pub fn own_procs_file(proc_cgroup: &str, hierarchies: &[Hierarchy]) -> Option<PathBuf> {
    let mut v1 = None;
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        if controllers.is_empty() {
            if let Some(h) = hierarchies.iter().find(|h| h.v2) {
                return Some(h.mount.join(rel).join("cgroup.procs"));
            }
            continue;
        }
        let wanted: Vec<&str> = controllers.split(',').collect();
        let found = hierarchies.iter().find(|h| {
            !h.v2
                && h.controllers.len() == wanted.len()
                && wanted.iter().all(|c| h.controllers.iter().any(|hc| hc == c))
        });
        if let (None, Some(h)) = (&v1, found) {
            v1 = Some(h.mount.join(rel).join("cgroup.procs"));
        }
    }
    v1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1(mount: &str, controllers: &[&str]) -> Hierarchy {
        Hierarchy {
            mount: mount.into(),
            controllers: controllers.iter().map(|c| c.to_string()).collect(),
            v2: false,
        }
    }

    #[test]
    fn only_the_native_executor_with_cgroupfs_skips_the_lock() {
        assert!(placed_without_the_lock(true, false));
        assert!(!placed_without_the_lock(false, false), "runc moves its process");
        assert!(!placed_without_the_lock(true, true), "systemd moves it into the scope");
    }

    #[test]
    fn a_v2_host_uses_the_unified_cgroup() {
        let h = [Hierarchy { mount: "/sys/fs/cgroup".into(), controllers: vec![], v2: true }];
        let own = "0::/system.slice/berth.service\n";
        assert_eq!(
            own_procs_file(own, &h).unwrap(),
            Path::new("/sys/fs/cgroup/system.slice/berth.service/cgroup.procs")
        );
    }

    #[test]
    fn a_hybrid_host_prefers_the_unified_mount() {
        let h = [
            v1("/sys/fs/cgroup/cpu,cpuacct", &["cpu", "cpuacct"]),
            Hierarchy { mount: "/sys/fs/cgroup/unified".into(), controllers: vec![], v2: true },
        ];
        let own = "4:cpu,cpuacct:/user.slice\n0::/\n";
        assert_eq!(
            own_procs_file(own, &h).unwrap(),
            Path::new("/sys/fs/cgroup/unified/cgroup.procs")
        );
    }

    #[test]
    fn a_v1_host_uses_the_first_mounted_hierarchy_it_is_in() {
        let h = [v1("/sys/fs/cgroup/pids", &["pids"]), v1("/sys/fs/cgroup/cpu", &["cpu"])];
        // The unified line has no mount and the name=systemd one no hierarchy here.
        let own = "0::/\n9:name=systemd:/\n3:cpu:/berth\n2:pids:/x\n";
        assert_eq!(
            own_procs_file(own, &h).unwrap(),
            Path::new("/sys/fs/cgroup/cpu/berth/cgroup.procs")
        );
    }

    #[test]
    fn this_process_has_a_cgroup_to_warm_with() {
        let warmer = MigrationWarmer::for_this_process();
        let procs = warmer.procs_file().expect("no cgroup.procs found for this process");
        assert!(procs.is_file(), "{}", procs.display());
    }

    #[test]
    fn nothing_is_found_without_a_mounted_hierarchy() {
        assert_eq!(own_procs_file("0::/\n", &[]), None);
        assert_eq!(own_procs_file("", &[v1("/sys/fs/cgroup/cpu", &["cpu"])]), None);
        assert_eq!(MigrationWarmer::default().procs_file(), None);
        MigrationWarmer::default().warm();
    }
}
