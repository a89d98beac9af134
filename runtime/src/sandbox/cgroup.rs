//! Pod cgroups with the cgroupfs driver, written directly to cgroupfs.
//!
//! cgroups-rs is not used here: a pod cgroup is only directories plus a few files, and
//! cgroups-rs (0.3/0.4) decides v1 vs v2 for the whole host from `/sys/fs/cgroup` and
//! does not handle a hybrid host (v1 controllers plus the v2 tree at
//! `/sys/fs/cgroup/unified`) as one set of hierarchies, nor report which directories it
//! created, which berth needs to remove exactly what it made.
//!
//! The pod cgroup (`cgroup_parent`, e.g. `/kubepods/burstable/pod<uid>`) is created on
//! every mounted hierarchy: each v1 hierarchy (controllers and named ones) and the v2
//! one. Which directories berth created is recorded so removal takes away exactly those.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use super::cgroup_driver::Driver;
use super::pod_spec::Resources;

use super::slice::slice_unit;
use crate::cgroupfs::{delegate_controllers, shares_to_weight, Hierarchy};

/// The pod cgroup path (relative, no leading `/`) for `cgroup_parent`, or
/// `berth/<pod id>` when the kubelet gave none.
pub fn pod_cgroup(cgroup_parent: &str, pod_id: &str) -> String {
    let trimmed = cgroup_parent.trim_matches('/');
    if trimmed.is_empty() {
        format!("berth/{pod_id}")
    } else {
        trimmed.to_string()
    }
}

/// The directories [`create`] would make for `rel` now (parents first): those missing.
pub fn missing(hs: &[Hierarchy], rel: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for h in hs {
        let mut dir = h.mount.clone();
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            dir.push(part);
            if !dir.exists() {
                out.push(dir.clone());
            }
        }
    }
    out
}

/// Creates `rel` on every hierarchy and returns the directories created (parents first).
/// On failure, what was created is removed again.
pub fn create(hs: &[Hierarchy], rel: &str) -> Result<Vec<PathBuf>, String> {
    let mut created = Vec::new();
    let result = (|| {
        for h in hs {
            let mut dir = h.mount.clone();
            for part in rel.split('/').filter(|p| !p.is_empty()) {
                let parent = dir.clone();
                if h.v2 {
                    // Levels the kubelet made too: what is not delegated down to the pod
                    // cgroup is missing in its containers' cgroups.
                    delegate_controllers(&parent)?;
                }
                dir.push(part);
                match fs::create_dir(&dir) {
                    Ok(()) => {
                        created.push(dir.clone());
                        if h.has("cpuset") {
                            // v1 cpuset cgroups start empty and refuse tasks until filled.
                            for f in ["cpuset.cpus", "cpuset.mems"] {
                                let v = fs::read_to_string(parent.join(f)).unwrap_or_default();
                                let _ = fs::write(dir.join(f), v.trim());
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(format!("create cgroup {}: {e}", dir.display())),
                }
            }
            if h.v2 {
                // The pod's containers are its children: they get the controllers ready.
                delegate_controllers(&dir)?;
            }
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(created),
        Err(e) => {
            let _ = remove(&created, rel);
            Err(e)
        }
    }
}

/// Applies pod-level resources to the pod cgroup on each hierarchy that has the
/// controller. On v2, a limit that no v1 hierarchy carries and whose controller the pod
/// cgroup lacks is an error, not a limit dropped. Errors name the file.
pub fn apply(hs: &[Hierarchy], rel: &str, r: &Resources) -> Result<(), String> {
    let write = |path: PathBuf, value: String| {
        fs::write(&path, &value).map_err(|e| format!("write {value:?} to {}: {e}", path.display()))
    };
    let carried = |ctrl: &str| hs.iter().any(|h| !h.v2 && h.has(ctrl));
    for h in hs {
        let dir = h.mount.join(rel);
        if h.v2 {
            let controllers =
                fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
            let has = |c: &str| -> Result<bool, String> {
                if controllers.split_whitespace().any(|x| x == c) {
                    Ok(true)
                } else if carried(c) {
                    Ok(false)
                } else {
                    Err(format!(
                        "the {c} controller is not enabled in pod cgroup {}: its {c} limit \
                         cannot be applied",
                        dir.display()
                    ))
                }
            };
            if (r.cpu_quota != 0 || r.cpu_period != 0) && has("cpu")? {
                let period = if r.cpu_period > 0 { r.cpu_period } else { 100_000 };
                let quota =
                    if r.cpu_quota > 0 { r.cpu_quota.to_string() } else { "max".to_string() };
                write(dir.join("cpu.max"), format!("{quota} {period}"))?;
            }
            if r.cpu_shares > 0 && has("cpu")? {
                write(dir.join("cpu.weight"), shares_to_weight(r.cpu_shares).to_string())?;
            }
            if r.memory_limit > 0 && has("memory")? {
                write(dir.join("memory.max"), r.memory_limit.to_string())?;
            }
        } else {
            if h.has("cpu") {
                if r.cpu_period > 0 {
                    write(dir.join("cpu.cfs_period_us"), r.cpu_period.to_string())?;
                }
                if r.cpu_quota != 0 {
                    write(dir.join("cpu.cfs_quota_us"), r.cpu_quota.to_string())?;
                }
                if r.cpu_shares > 0 {
                    write(dir.join("cpu.shares"), r.cpu_shares.max(2).to_string())?;
                }
            }
            if h.has("memory") && r.memory_limit > 0 {
                write(dir.join("memory.limit_in_bytes"), r.memory_limit.to_string())?;
            }
        }
    }
    Ok(())
}

/// A container's cgroups path as its OCI spec carries it: `/<pod cgroup>/<id>`
/// (cgroupfs), or runc's systemd form `<pod slice>:berth:<id>`.
pub fn container_cgroups_path(pod_cgroup: &str, id: &str) -> String {
    match slice_unit(pod_cgroup) {
        Some(slice) => crate::systemd::scope_path(slice, id),
        None => format!("/{}/{id}", pod_cgroup.trim_matches('/')),
    }
}

/// A container's cgroup directory relative to the hierarchies' mount.
pub fn container_cgroup_dir(pod_cgroup: &str, id: &str) -> String {
    let pod = pod_cgroup.trim_matches('/');
    match slice_unit(pod) {
        Some(_) => format!("{pod}/{}-{id}.scope", crate::systemd::SCOPE_PREFIX),
        None => format!("{pod}/{id}"),
    }
}

/// Ends every process left in the container cgroups of the pod's cgroup (`rel`) on each
/// hierarchy and removes them. Normally the shim has ended and removed its containers by
/// now; when the shim died (the OOM killer picked it), its containers are orphans nothing
/// monitors, and a removed pod must run nothing. The kubelet usually made the pod cgroup
/// itself, so this goes by the path, not by what berth created.
pub fn kill_leftovers(hs: &[Hierarchy], rel: &str) -> Result<(), String> {
    let pod = rel.trim_matches('/');
    if pod.is_empty() {
        return Ok(()); // never the hierarchy's root
    }
    // Only the container cgroups berth makes (`<pod cgroup>/<container id>`, or the
    // scope `berth-<container id>.scope` with the systemd driver): a cgroup_parent naming
    // a shared cgroup must never get its other processes killed.
    let roots: Vec<PathBuf> = hs
        .iter()
        .flat_map(|h| fs::read_dir(h.mount.join(pod)).into_iter().flatten().flatten())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let id =
                name.strip_prefix("berth-").and_then(|n| n.strip_suffix(".scope")).unwrap_or(&name);
            id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
        })
        .map(|e| e.path())
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let mut alive = 0;
        for dir in roots.iter().flat_map(|r| subtree(r)) {
            let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                alive += 1;
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if alive == 0 {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("{alive} processes of pod cgroup {pod} survive SIGKILL"));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    for root in &roots {
        let mut dirs = subtree(root);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            let _ = fs::remove_dir(d);
        }
    }
    Ok(())
}

/// `dir` and every directory under it.
fn subtree(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(subtree(&e.path()));
        }
    }
    out
}

/// Removes the given directories, deepest first. Missing ones are fine. The pod cgroup
/// itself (`pod`, relative) still having members is an error; a parent still holding
/// other pods' cgroups is kept silently (it was shared).
pub fn remove(created: &[PathBuf], pod: &str) -> Result<(), String> {
    let mut first = None;
    let mut dirs: Vec<&PathBuf> = created.iter().collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    let pod = pod.trim_matches('/');
    for d in dirs {
        match fs::remove_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e)
                if !d.ends_with(pod)
                    && matches!(e.raw_os_error(), Some(libc::EBUSY | libc::ENOTEMPTY)) => {}
            Err(e) => {
                first.get_or_insert(format!("remove cgroup {}: {e}", d.display()));
            }
        }
    }
    first.map_or(Ok(()), Err)
}

/// The name of a pod's spare container cgroup: made with the pod, renamed to its first
/// container's id by that container's create (never a container id: not 64 hex digits).
pub const SPARE: &str = "berth-spare";

/// Makes the spare container cgroup of pod cgroup `pod` (cgroupfs) in every hierarchy, as
/// the shim would make a container's (cpuset filled in): a v1 cgroup directory takes a
/// fraction of a millisecond to make, ten of them on a hybrid host, and a rename of one
/// almost nothing, so the pod's first container finds its directories made.
/// Only in v1 hierarchies: only those rename (none on a cgroup v2 host).
pub fn make_spare(hs: &[Hierarchy], pod: &str) -> Result<(), String> {
    let rel = Path::new(pod.trim_matches('/')).join(SPARE);
    for h in hs.iter().filter(|h| !h.v2) {
        crate::executor::cgroups::create_dir(h, &rel).map_err(|e| e.0)?;
    }
    Ok(())
}

/// Renames pod `pod`'s spare container cgroup to container `id`'s in each v1 hierarchy
/// (the kernel renames cgroups on v1 only, within their parent). Returns whether every
/// hierarchy has the container's directory now: where not (a v2 hierarchy, no spare left,
/// a create beside this one took it), the caller makes the rest.
pub fn take_spare(hs: &[Hierarchy], pod: &str, id: &str) -> bool {
    let pod = pod.trim_matches('/');
    let mut all = true;
    for h in hs {
        let dir = h.mount.join(pod);
        if h.v2 || fs::rename(dir.join(SPARE), dir.join(id)).is_err() {
            all = false;
        }
    }
    all
}

/// Removes pod `pod`'s spare container cgroup wherever it is left (the pod had no
/// container), before the pod cgroup itself goes.
pub fn remove_spare(hs: &[Hierarchy], pod: &str) {
    let pod = pod.trim_matches('/');
    for h in hs {
        let _ = fs::remove_dir(h.mount.join(pod).join(SPARE));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_cgroup_paths() {
        assert_eq!(pod_cgroup("/kubepods/burstable/pod1", "x"), "kubepods/burstable/pod1");
        assert_eq!(pod_cgroup("", "abc"), "berth/abc");
        assert_eq!(pod_cgroup("/", "abc"), "berth/abc");
    }
}
