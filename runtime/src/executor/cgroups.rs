//! cgroupfs (v1 and v2) for containers, written directly (a few files per controller).
//!
//! Every mounted hierarchy is used: each cgroup v1 hierarchy (`/sys/fs/cgroup/<ctrl>`)
//! and the v2 one if mounted (on a hybrid host `/sys/fs/cgroup/unified`, usually with no
//! controllers: the process is still placed there so it can be tracked). The container's
//! `cgroups_path` (absolute, cgroupfs style) names the same relative directory in each.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

use super::error::{Ctx, Error, Result};
use crate::cgroupfs::{self, delegate_controllers, delegate_down, Hierarchy};

/// The hierarchies mounted, with the executor's error. Read once per process (the shim
/// lives as long as its pod), then kept: the host's cgroup mounts do not change while
/// pods run, while its mount table grows with every pod (namespace pins, rootfs
/// overlays), so reading it on every exec would make execs slower as pods are added.
pub(crate) fn hierarchies() -> Result<Vec<Hierarchy>> {
    static MOUNTED: std::sync::OnceLock<Vec<Hierarchy>> = std::sync::OnceLock::new();
    if let Some(hs) = MOUNTED.get() {
        return Ok(hs.clone());
    }
    let hs = cgroupfs::hierarchies().ctx(|| "read mountinfo".into())?;
    // A read that found no hierarchy is not kept: the next one looks again.
    if !hs.is_empty() {
        let _ = MOUNTED.set(hs.clone());
    }
    Ok(hs)
}

/// The cgroup directory (relative to each hierarchy's mount) of a cgroups path: a
/// cgroupfs path (absolute, no `..`), or a systemd scope (`slice:prefix:name`, see
/// [`crate::systemd`]).
pub fn check_path(path: &Path) -> Result<PathBuf> {
    if let Some(scope) = crate::systemd::resolve(path) {
        return scope.map(|s| s.rel).map_err(Error);
    }
    let s = path.to_string_lossy();
    if !path.is_absolute() || s.split('/').any(|c| c == "..") {
        return Err(Error(format!("cgroups path {s:?} must be absolute without \"..\"")));
    }
    Ok(path.strip_prefix("/").unwrap_or(path).to_path_buf())
}

fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    fs::write(dir.join(file), value)
        .ctx(|| format!("cgroup: write {value:?} to {}/{file}", dir.display()))
}

/// Creates `rel` under `h`, copying cpuset.cpus/mems into every new cpuset level
/// (a v1 cpuset cgroup with empty sets refuses tasks). On v2 the controllers each level
/// has are enabled for its children on the way down (`cgroup.subtree_control`): a
/// controller not enabled there gives the container's cgroup none of its files, and
/// its limits would not exist.
pub(crate) fn create_dir(h: &Hierarchy, rel: &Path) -> Result<PathBuf> {
    // Made already, as berthd makes a container's before the shim is asked to create it
    // (one look instead of a mkdir per level, ten hierarchies on a hybrid host).
    let made = h.mount.join(rel);
    if made.is_dir() {
        return Ok(made);
    }
    let mut dir = h.mount.clone();
    for comp in rel.components() {
        let parent = dir.clone();
        if h.v2 {
            delegate_controllers(&parent).map_err(Error)?;
        }
        dir.push(comp);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error(format!("cgroup: mkdir {}: {e}", dir.display()))),
        }
        if h.has("cpuset") {
            for f in ["cpuset.cpus", "cpuset.mems"] {
                let v = fs::read_to_string(parent.join(f)).unwrap_or_default();
                if !v.trim().is_empty() {
                    write(&dir, f, v.trim())?;
                }
            }
        }
    }
    Ok(dir)
}

/// The v1 controllers mounted: on a hybrid host they carry the limits and device rules,
/// and the v2 tree only tracks the process.
fn v1_controllers(hs: &[Hierarchy]) -> Vec<String> {
    hs.iter().filter(|h| !h.v2).flat_map(|h| h.controllers.iter().cloned()).collect()
}

/// Where a new process — a container's first, or an exec's — goes into its cgroup
/// without the kernel's global threadgroup lock. A write to `cgroup.procs` takes that lock
/// for writing, and the first such write after a quiet spell waits for an RCU grace
/// period (5–21 ms measured on the project's machine, kernel 6.18, nine v1 hierarchies);
/// a thread that moves itself (`"0"`) through a v1 hierarchy's `tasks` file skips the
/// lock (0.6–1.1 ms for all nine), and a fork into a v2 cgroup
/// ([`super::clone_into`]) never moves at all. The child that uses a placement is
/// single-threaded, so moving its one thread moves the whole process, and everything it
/// forks afterwards is born there.
pub struct Placement {
    /// The cgroup's directory in the v2 hierarchy, if one is mounted (on a hybrid host
    /// the `unified` one), and that directory opened for the fork to be born in.
    v2: Option<(PathBuf, Option<OwnedFd>)>,
    /// Its directories in the v1 hierarchies.
    v1: Vec<PathBuf>,
}

impl Placement {
    fn of(hs: &[Hierarchy], rel: &Path, only_existing: bool) -> Self {
        let mut placement = Placement { v2: None, v1: Vec::new() };
        for h in hs {
            let dir = h.mount.join(rel);
            if only_existing && !dir.is_dir() {
                continue;
            }
            if h.v2 {
                let opened = open_dir(&dir).ok();
                placement.v2 = Some((dir, opened));
            } else {
                placement.v1.push(dir);
            }
        }
        placement
    }

    /// Writes `resources` but the device rules ([`prepare`] wrote those) into the
    /// container's cgroup, in every hierarchy.
    pub fn apply_limits(&self, r: &LinuxResources) -> Result<()> {
        let hs = hierarchies()?;
        let v1 = v1_controllers(&hs);
        for h in &hs {
            let dir = match h.v2 {
                true => self.v2.as_ref().map(|(d, _)| d),
                false => self.v1.iter().find(|d| d.starts_with(&h.mount)),
            };
            if let Some(dir) = dir {
                apply_limits(h, dir, r, &v1)?;
            }
        }
        Ok(())
    }

    /// The v2 cgroup, opened, for the child to be forked into.
    pub fn v2_dir(&self) -> Option<&OwnedFd> {
        self.v2.as_ref().and_then(|(_, fd)| fd.as_ref())
    }

    /// Run by the child itself, single-threaded: joins each v1 cgroup through `tasks`, and
    /// the v2 one through `cgroup.procs` unless it was born there (`born_in_v2`).
    pub fn join_self(&self, born_in_v2: bool) -> Result<()> {
        for dir in &self.v1 {
            write(dir, "tasks", "0")?;
        }
        match &self.v2 {
            Some((dir, _)) if !born_in_v2 => write(dir, "cgroup.procs", "0"),
            _ => Ok(()),
        }
    }
}

/// For a new container with a cgroupfs path: creates the cgroup `path` in every hierarchy,
/// applies `resources`, and says where its process goes ([`Placement`]). `None` for a
/// systemd scope: systemd starts the scope with the process in it ([`start_scope`]).
///
/// Only the device rules are written here, before the process exists; the other limits
/// are the caller's to write with [`Placement::apply_limits`] while the child joins its
/// namespaces, before it is released to set the container up.
pub fn prepare(path: &Path, resources: Option<&LinuxResources>) -> Result<Option<Placement>> {
    if crate::systemd::resolve(path).is_some() {
        return Ok(None);
    }
    let rel = check_path(path)?;
    let hs = hierarchies()?;
    let v1 = v1_controllers(&hs);
    for h in &hs {
        let dir = create_dir(h, &rel)?;
        if let Some(r) = resources {
            apply_devices(h, &dir, r, &v1)?;
        }
    }
    Ok(Some(Placement::of(&hs, &rel, false)))
}

/// Makes the cgroup directories of a cgroupfs `path` in every hierarchy, without limits (a
/// systemd scope: nothing): [`prepare`] of the shim then finds them made.
pub fn make_dirs(path: &Path) -> Result<()> {
    prepare(path, None).map(drop)
}

/// For an exec: the container's cgroup `path` (cgroupfs or a systemd scope), in every
/// hierarchy where it exists.
pub fn existing(path: &Path) -> Result<Placement> {
    let rel = check_path(path)?;
    Ok(Placement::of(&hierarchies()?, &rel, true))
}

/// Starts the systemd scope `path` over D-Bus with `pid` in it (from a forked child: the
/// caller, the shim, stays single-threaded), then gives it what systemd has no property
/// for. `path` must name a scope.
pub fn start_scope(path: &Path, pid: i32, resources: Option<&LinuxResources>) -> Result<()> {
    let rel = check_path(path)?;
    let hs = hierarchies()?;
    let scope = crate::systemd::resolve(path)
        .transpose()
        .map_err(Error)?
        .ok_or_else(|| Error(format!("cgroup: {} is not a systemd scope", path.display())))?;
    let props = crate::systemd::scope_properties(&scope.unit, &scope.slice, pid as u32, resources)
        .map_err(|e| Error(format!("cgroup: {e}")))?;
    crate::systemd::in_child(|| crate::systemd::Bus::system()?.start_transient(&scope.unit, props))
        .map_err(|e| Error(format!("cgroup: systemd scope {}: {e}", scope.unit)))?;
    let h = hs
        .iter()
        .find(|h| h.v2)
        .ok_or_else(|| Error("cgroup: a systemd scope needs cgroup v2".into()))?;
    // systemd enables the controllers it knows down to a delegated scope; hugetlb
    // (and what else berth limits that systemd does not manage) berth enables itself.
    delegate_down(&h.mount, rel.parent().unwrap_or(Path::new(""))).map_err(Error)?;
    if let Some(r) = resources {
        apply(h, &h.mount.join(&rel), r, &[])?;
    }
    Ok(())
}

fn open_dir(dir: &Path) -> Result<OwnedFd> {
    fs::File::open(dir).map(OwnedFd::from).ctx(|| format!("cgroup: open {}", dir.display()))
}

/// Writes `resources` into the files of `h`'s controllers. `v1` are the controllers a
/// v1 hierarchy carries: on v2, what none of them carries must take effect or fail.
pub fn apply(h: &Hierarchy, dir: &Path, r: &LinuxResources, v1: &[String]) -> Result<()> {
    apply_devices(h, dir, r, v1)?;
    apply_limits(h, dir, r, v1)
}

/// The device rules of `resources` (a v1 `devices` hierarchy's files, or v2's filter).
fn apply_devices(h: &Hierarchy, dir: &Path, r: &LinuxResources, v1: &[String]) -> Result<()> {
    if h.v2 {
        if let Some(rules) = r.devices().as_deref().filter(|d| !d.is_empty()) {
            if !v1.iter().any(|c| c == "devices") {
                super::device_filter::apply(dir, rules)
                    .ctx(|| format!("cgroup: device rules for {}", dir.display()))?;
            }
        }
    } else if h.has("devices") {
        // Rules apply in order: a leading deny-all, then what is allowed.
        for d in r.devices().iter().flatten() {
            let file = if d.allow() { "devices.allow" } else { "devices.deny" };
            write(dir, file, &d.to_string())?;
        }
    }
    Ok(())
}

/// Everything of `resources` but the device rules.
fn apply_limits(h: &Hierarchy, dir: &Path, r: &LinuxResources, v1: &[String]) -> Result<()> {
    if h.v2 {
        apply_v2(dir, r, v1)?;
        if let Some(unified) = r.unified() {
            for (k, v) in unified {
                if k.contains('/') || k.starts_with('.') {
                    return Err(Error(format!("cgroup: bad unified key {k:?}")));
                }
                write(dir, k, v)?;
            }
        }
        return Ok(());
    }
    if h.has("memory") {
        if let Some(m) = r.memory() {
            if let Some(limit) = m.limit() {
                write(dir, "memory.limit_in_bytes", &limit.to_string())?;
            }
            if let Some(swap) = m.swap() {
                if dir.join("memory.memsw.limit_in_bytes").exists() {
                    write(dir, "memory.memsw.limit_in_bytes", &swap.to_string())?;
                }
            }
            if let Some(res) = m.reservation() {
                write(dir, "memory.soft_limit_in_bytes", &res.to_string())?;
            }
            if let Some(s) = m.swappiness() {
                if s <= 100 {
                    write(dir, "memory.swappiness", &s.to_string())?;
                }
            }
        }
    }
    if let Some(c) = r.cpu() {
        if h.has("cpu") {
            if let Some(shares) = c.shares() {
                write(dir, "cpu.shares", &shares.to_string())?;
            }
            if let Some(period) = c.period() {
                write(dir, "cpu.cfs_period_us", &period.to_string())?;
            }
            if let Some(quota) = c.quota() {
                write(dir, "cpu.cfs_quota_us", &quota.to_string())?;
            }
        }
        if h.has("cpuset") {
            if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
                write(dir, "cpuset.cpus", cpus)?;
            }
            if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
                write(dir, "cpuset.mems", mems)?;
            }
        }
    }
    if h.has("pids") {
        if let Some(p) = r.pids() {
            let v = if p.limit() > 0 { p.limit().to_string() } else { "max".into() };
            write(dir, "pids.max", &v)?;
        }
    }
    if h.has("hugetlb") {
        for l in r.hugepage_limits().iter().flatten() {
            if l.page_size().contains('/') {
                return Err(Error(format!("cgroup: bad hugepage size {:?}", l.page_size())));
            }
            write(
                dir,
                &format!("hugetlb.{}.limit_in_bytes", l.page_size()),
                &l.limit().to_string(),
            )?;
        }
    }
    Ok(())
}

/// The v1-style values translated to cgroup v2 files (the device filter aside), as runc
/// does. On a hybrid host the
/// v2 tree has no controllers and the v1 hierarchies (`v1`) carry the limits; a limit no
/// v1 hierarchy carries must be written here, and a missing file (the controller not
/// enabled for this cgroup) is an error naming it rather than a limit dropped.
fn apply_v2(dir: &Path, r: &LinuxResources, v1: &[String]) -> Result<()> {
    let carried = |ctrl: &str| v1.iter().any(|c| c == ctrl);
    let has = |ctrl: &str, file: &str| -> Result<bool> {
        if dir.join(file).exists() {
            Ok(true)
        } else if carried(ctrl) {
            Ok(false)
        } else {
            Err(Error(format!(
                "cgroup: {file} is missing in {} (the {ctrl} controller is not enabled there); \
                 the container's {ctrl} limit cannot be applied",
                dir.display()
            )))
        }
    };
    if let Some(m) = r.memory() {
        if let Some(limit) = m.limit() {
            if has("memory", "memory.max")? {
                write(dir, "memory.max", &v2_limit(limit))?;
                // v1's memsw limit is memory + swap; v2 limits swap alone. A kernel
                // without swap accounting has no memory.swap.max, and no swap to limit.
                if let Some(swap) = m.swap().filter(|_| dir.join("memory.swap.max").exists()) {
                    let v = if swap < 0 {
                        "max".to_string()
                    } else {
                        (swap - limit).max(0).to_string()
                    };
                    write(dir, "memory.swap.max", &v)?;
                }
            }
        }
        if let Some(res) = m.reservation() {
            if has("memory", "memory.low")? {
                write(dir, "memory.low", &v2_limit(res))?;
            }
        }
    }
    if let Some(c) = r.cpu() {
        if let Some(shares) = c.shares() {
            if has("cpu", "cpu.weight")? {
                let weight = cgroupfs::shares_to_weight(shares as i64);
                write(dir, "cpu.weight", &weight.to_string())?;
            }
        }
        if (c.quota().is_some() || c.period().is_some()) && has("cpu", "cpu.max")? {
            let quota = c.quota().filter(|q| *q > 0).map_or("max".to_string(), |q| q.to_string());
            let period = c.period().unwrap_or(100_000);
            write(dir, "cpu.max", &format!("{quota} {period}"))?;
        }
        if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
            if has("cpuset", "cpuset.cpus")? {
                write(dir, "cpuset.cpus", cpus)?;
            }
        }
        if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
            if has("cpuset", "cpuset.mems")? {
                write(dir, "cpuset.mems", mems)?;
            }
        }
    }
    if let Some(p) = r.pids() {
        if has("pids", "pids.max")? {
            let v = if p.limit() > 0 { p.limit().to_string() } else { "max".into() };
            write(dir, "pids.max", &v)?;
        }
    }
    for l in r.hugepage_limits().iter().flatten() {
        if l.page_size().contains('/') {
            return Err(Error(format!("cgroup: bad hugepage size {:?}", l.page_size())));
        }
        let file = format!("hugetlb.{}.max", l.page_size());
        if has("hugetlb", &file)? {
            write(dir, &file, &l.limit().to_string())?;
        }
    }
    Ok(())
}

fn v2_limit(v: i64) -> String {
    if v <= 0 {
        "max".into()
    } else {
        v.to_string()
    }
}

/// Applies `resources` to an existing cgroup (live update); a systemd scope gets them as
/// properties too, so that systemd keeps them. For berthd (multi-threaded: it uses its
/// shared bus connection), not the shim.
pub fn update(path: &Path, resources: &LinuxResources) -> Result<()> {
    let rel = check_path(path)?;
    if let Some(scope) = crate::systemd::resolve(path).transpose().map_err(Error)? {
        let props = crate::systemd::resource_properties(resources).map_err(Error)?;
        crate::systemd::with_shared(|bus| bus.set_properties(&scope.unit, props))
            .map_err(|e| Error(format!("cgroup: {e}")))?;
    }
    let hs = hierarchies()?;
    let v1 = v1_controllers(&hs);
    for h in &hs {
        let dir = h.mount.join(&rel);
        if dir.is_dir() {
            apply(h, &dir, resources, &v1)?;
        }
    }
    Ok(())
}

/// Pids in the cgroup (from the first hierarchy that has it).
pub fn pids(path: &Path) -> Vec<i32> {
    let (Ok(rel), Ok(hs)) = (check_path(path), hierarchies()) else { return Vec::new() };
    for h in hs.iter().filter(|h| h.has("pids") || h.has("memory") || h.v2) {
        if let Ok(text) = fs::read_to_string(h.mount.join(&rel).join("cgroup.procs")) {
            return text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        }
    }
    Vec::new()
}

/// How many processes the kernel OOM killer killed in the cgroup.
pub fn oom_kills(path: &Path) -> u64 {
    let (Ok(rel), Ok(hs)) = (check_path(path), hierarchies()) else { return 0 };
    let mut total = 0;
    for h in hs {
        let (file, ok) =
            if h.v2 { ("memory.events", true) } else { ("memory.oom_control", h.has("memory")) };
        if !ok {
            continue;
        }
        if let Ok(text) = fs::read_to_string(h.mount.join(&rel).join(file)) {
            for line in text.lines() {
                if let Some(n) = line.strip_prefix("oom_kill ") {
                    total += n.trim().parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    total
}

/// For a systemd scope: the OOM kills its cgroup counts, `None` once systemd removed it
/// (it does as soon as the scope is empty); `None` for a cgroupfs path.
pub fn scope_oom_kills(path: &Path) -> Option<u64> {
    scope_events(path, false)
}

/// For a systemd scope: the OOM kills its pod slice counts, its children's included
/// (`memory.events` is hierarchical). What it gained while a container ran tells an OOM
/// kill of that container when its scope is gone before its exit is seen.
pub fn slice_oom_kills(path: &Path) -> Option<u64> {
    scope_events(path, true)
}

fn scope_events(path: &Path, of_slice: bool) -> Option<u64> {
    let scope = crate::systemd::resolve(path)?.ok()?;
    let v2 = hierarchies().ok()?.into_iter().find(|h| h.v2)?;
    let mut dir = v2.mount.join(&scope.rel);
    if of_slice {
        dir.pop();
    }
    let text = fs::read_to_string(dir.join("memory.events")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|n| n.trim().parse().ok())
}

/// Removes the cgroup (leaf only) from every hierarchy. Missing ones are fine.
pub fn remove(path: &Path) -> Result<()> {
    let rel = check_path(path)?;
    if rel.as_os_str().is_empty() {
        return Ok(());
    }
    let mut last = None;
    for h in hierarchies()? {
        let dir = h.mount.join(&rel);
        for attempt in 0..50 {
            match fs::remove_dir(&dir) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 49 => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => {
                    last = Some(Error(format!("cgroup: rmdir {}: {e}", dir.display())));
                    break;
                }
            }
        }
    }
    last.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_values_translate_to_v2_files_that_exist() {
        use oci_spec::runtime::{LinuxCpuBuilder, LinuxMemoryBuilder, LinuxResourcesBuilder};
        let dir = tempfile::tempdir().unwrap();
        for f in ["memory.max", "memory.swap.max", "cpu.weight", "cpu.max", "pids.max"] {
            fs::write(dir.path().join(f), "").unwrap();
        }
        let r = LinuxResourcesBuilder::default()
            .memory(LinuxMemoryBuilder::default().limit(64 << 20).swap(96 << 20).build().unwrap())
            .cpu(
                LinuxCpuBuilder::default()
                    .shares(1024u64)
                    .quota(50_000i64)
                    .period(100_000u64)
                    .cpus("0")
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        apply_v2(dir.path(), &r, &["cpuset".to_string()]).unwrap();
        let read = |f: &str| fs::read_to_string(dir.path().join(f)).unwrap();
        assert_eq!(read("memory.max"), (64u64 << 20).to_string());
        assert_eq!(read("memory.swap.max"), (32u64 << 20).to_string());
        assert_eq!(read("cpu.weight"), "39");
        assert_eq!(read("cpu.max"), "50000 100000");
        assert!(!dir.path().join("cpuset.cpus").exists(), "no cpuset controller: no file made");
    }

    #[test]
    fn paths_must_be_absolute_and_contained() {
        assert_eq!(check_path(Path::new("/a/b")).unwrap(), Path::new("a/b"));
        assert!(check_path(Path::new("a/b")).is_err());
        assert!(check_path(Path::new("/a/../../b")).is_err());
    }
}
