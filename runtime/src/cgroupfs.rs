//! cgroupfs as mounted on this host: its hierarchies (each cgroup v1 one and the v2
//! one, found in `/proc/self/mountinfo`), v2 controller delegation, and the v1 to v2
//! conversions. Shared by the pod cgroups (`sandbox`), the executor's container cgroups,
//! stats and the systemd driver's properties.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub mount: PathBuf,
    /// v1 controllers (`memory`, `cpu`, `cpuacct`, `name=systemd`, …); empty for v2.
    pub controllers: Vec<String>,
    pub v2: bool,
}

impl Hierarchy {
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "blkio",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// Parses `/proc/self/mountinfo` text into the hierarchies mounted at their root.
pub fn parse_mountinfo(text: &str) -> Vec<Hierarchy> {
    let mut out: Vec<Hierarchy> = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 5 || r.len() < 3 || l[3] != "/" {
            continue;
        }
        let mount = PathBuf::from(crate::mount_table::unescape(l[4]));
        let h = match r[0] {
            "cgroup2" => Hierarchy { mount, controllers: Vec::new(), v2: true },
            "cgroup" => {
                let controllers: Vec<String> = r[2]
                    .split(',')
                    .filter(|o| V1_CONTROLLERS.contains(o) || o.starts_with("name="))
                    .map(str::to_string)
                    .collect();
                if controllers.is_empty() {
                    continue;
                }
                Hierarchy { mount, controllers, v2: false }
            }
            _ => continue,
        };
        if !out.iter().any(|o| o.v2 == h.v2 && o.controllers == h.controllers) {
            out.push(h);
        }
    }
    out
}

/// The hierarchies mounted in this process's mount namespace, at their root (`/`).
pub fn hierarchies() -> io::Result<Vec<Hierarchy>> {
    Ok(parse_mountinfo(&fs::read_to_string("/proc/self/mountinfo")?))
}

/// The one hierarchy of a cgroup v2-only host; `None` on a v1 or hybrid host.
pub fn unified_only(hierarchies: &[Hierarchy]) -> Option<&Hierarchy> {
    match hierarchies {
        [h] if h.v2 => Some(h),
        _ => None,
    }
}

/// The v2 controllers berth sets limits with or reads stats from.
const V2_CONTROLLERS: &[&str] = &["cpu", "cpuset", "memory", "pids", "io", "hugetlb"];

/// Enables for `dir`'s children every controller of [`V2_CONTROLLERS`] that `dir` has and
/// has not enabled yet. A hybrid host's v2 tree has none, and nothing is written.
pub fn delegate_controllers(dir: &Path) -> Result<(), String> {
    let available = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let enabled = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    let wanted: Vec<String> = available
        .split_whitespace()
        .filter(|c| V2_CONTROLLERS.contains(c) && !enabled.split_whitespace().any(|e| e == *c))
        .map(|c| format!("+{c}"))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    // A cgroup with processes of its own cannot delegate (v2's no-internal-processes
    // rule): that is a host set-up berth must not paper over.
    let (file, value) = (dir.join("cgroup.subtree_control"), wanted.join(" "));
    fs::write(&file, &value)
        .map_err(|e| format!("cgroup: write {value:?} to {}: {e}", file.display()))
}

/// [`delegate_controllers`] on `mount` and every level of `rel` below it, top down.
pub fn delegate_down(mount: &Path, rel: &Path) -> Result<(), String> {
    let mut dir = mount.to_path_buf();
    delegate_controllers(&dir)?;
    for comp in rel.components() {
        dir.push(comp);
        delegate_controllers(&dir)?;
    }
    Ok(())
}

/// cgroup v1 `cpu.shares` (2..262144) to v2 `cpu.weight` (1..10000), as the OCI
/// runtimes convert it.
pub fn shares_to_weight(shares: i64) -> u64 {
    let shares = shares.clamp(2, 262_144) as u64;
    1 + ((shares - 2) * 9999) / 262_142
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
24 1 0:22 / /sys rw,nosuid - sysfs sysfs rw
30 24 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
34 30 0:30 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
35 30 0:31 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd
36 30 0:30 /sub /mnt/memory rw,nosuid - cgroup cgroup rw,memory
37 30 0:30 / /other/memory rw,nosuid - cgroup cgroup rw,memory
";

    #[test]
    fn parses_hybrid_mountinfo() {
        let hs = parse_mountinfo(HYBRID);
        assert_eq!(hs.len(), 4, "{hs:?}");
        assert!(hs[0].v2);
        assert_eq!(hs[0].mount, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(hs[1].controllers, ["cpu", "cpuacct"]);
        assert!(hs[2].has("memory"));
        assert_eq!(hs[3].controllers, ["name=systemd"]);
    }

    #[test]
    fn only_a_lone_v2_hierarchy_is_unified_only() {
        let h = |mount: &str, v2: bool| Hierarchy { mount: mount.into(), controllers: vec![], v2 };
        let v2 = [h("/sys/fs/cgroup", true)];
        assert_eq!(unified_only(&v2), Some(&v2[0]));
        assert_eq!(unified_only(&[h("/sys/fs/cgroup/pids", false)]), None);
        assert_eq!(unified_only(&[h("/a", false), h("/sys/fs/cgroup/unified", true)]), None);
        assert_eq!(unified_only(&[]), None);
    }

    #[test]
    fn weights() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }
}
