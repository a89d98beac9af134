//! The cgroup driver, in a file of its own: pod validation (`spec`) and pod cgroups
//! (`cgroup`) both need it.

/// Who makes pod and container cgroups: berth in cgroupfs, or systemd (slices and scopes
/// over D-Bus, cgroup v2 only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Driver {
    #[default]
    Cgroupfs,
    Systemd,
}
