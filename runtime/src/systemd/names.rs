//! Unit names and where systemd puts their cgroups.

use std::path::{Path, PathBuf};

/// The scope prefix of berth's containers (`berth-<id>.scope`).
pub const SCOPE_PREFIX: &str = "berth";

/// A slice's cgroup directory, relative to the v2 mount: systemd nests a slice in the
/// slices its dashes name (`a-b-c.slice` → `a.slice/a-b.slice/a-b-c.slice`); the root
/// slice `-.slice` is the hierarchy's root (empty).
pub fn expand_slice(slice: &str) -> Result<String, String> {
    let bad = || format!("{slice:?} is not a systemd slice name");
    let stem = slice.strip_suffix(".slice").ok_or_else(bad)?;
    if stem == "-" {
        return Ok(String::new());
    }
    let valid_char =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '\\');
    if stem.is_empty()
        || !stem.chars().all(valid_char)
        || stem.starts_with('-')
        || stem.ends_with('-')
        || stem.contains("--")
        || slice.len() > 255
    {
        return Err(bad());
    }
    let mut out = Vec::new();
    let mut prefix = String::new();
    for part in stem.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        out.push(format!("{prefix}.slice"));
    }
    Ok(out.join("/"))
}

/// The pod slice for the kubelet's `cgroup_parent`, or `berth-<pod id>.slice` when it
/// gave none. The kubelet sends a slice name (`kubepods-burstable-pod<uid>.slice`);
/// cri-tools sends a path (`/test.slice`): its last part is the slice. Returns the unit
/// and its directory relative to the v2 mount.
pub fn pod_slice(cgroup_parent: &str, pod_id: &str) -> Result<(String, String), String> {
    let trimmed = cgroup_parent.trim_matches('/');
    let unit = if trimmed.is_empty() {
        format!("{SCOPE_PREFIX}-{pod_id}.slice")
    } else {
        trimmed.rsplit('/').next().unwrap_or(trimmed).to_string()
    };
    let rel = expand_slice(&unit)?;
    Ok((unit, rel))
}

/// A container's cgroup in runc's systemd form: `<slice>:berth:<id>`.
pub fn scope_path(slice: &str, container_id: &str) -> String {
    format!("{slice}:{SCOPE_PREFIX}:{container_id}")
}

/// A scope and where its cgroup is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeName {
    pub slice: String,
    pub unit: String,
    /// Relative to the v2 mount.
    pub rel: PathBuf,
}

/// `Some` for a cgroups path in systemd form (`slice:prefix:name`), with the scope's unit
/// (`prefix-name.scope`) and cgroup directory; `None` for a cgroupfs path.
pub fn resolve(path: &Path) -> Option<Result<ScopeName, String>> {
    let s = path.to_str()?;
    if s.starts_with('/') || !s.contains(':') {
        return None;
    }
    let parts: Vec<&str> = s.split(':').collect();
    Some((|| {
        let [slice, prefix, name] = parts[..] else {
            return Err(format!("cgroups path {s:?}: want <slice>:<prefix>:<name>"));
        };
        let slice = if slice.is_empty() { "system.slice" } else { slice };
        let ok = |p: &str| {
            !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        };
        if !ok(prefix) || !ok(name) {
            return Err(format!("cgroups path {s:?}: bad scope name"));
        }
        let unit = format!("{prefix}-{name}.scope");
        let rel = Path::new(&expand_slice(slice)?).join(&unit);
        Ok(ScopeName { slice: slice.to_string(), unit, rel })
    })())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_expand_by_their_dashes() {
        assert_eq!(
            expand_slice("kubepods-burstable-pod1.slice").unwrap(),
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice"
        );
        assert_eq!(expand_slice("test.slice").unwrap(), "test.slice");
        assert_eq!(expand_slice("-.slice").unwrap(), "");
        for bad in ["test", "a--b.slice", "-a.slice", "a-.slice", "a/b.slice", ".slice"] {
            assert!(expand_slice(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pod_slices_from_the_kubelet_and_from_cri_tools() {
        let (unit, rel) = pod_slice("kubepods-besteffort-podab.slice", "x").unwrap();
        assert_eq!(unit, "kubepods-besteffort-podab.slice");
        assert_eq!(rel, "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podab.slice");
        assert_eq!(
            pod_slice("/test.slice", "x").unwrap(),
            ("test.slice".into(), "test.slice".into())
        );
        assert_eq!(
            pod_slice("", "ab").unwrap(),
            ("berth-ab.slice".into(), "berth.slice/berth-ab.slice".into())
        );
        assert!(pod_slice("/kubepods/pod1", "x").is_err());
    }

    #[test]
    fn scope_paths_resolve_to_their_cgroup() {
        let s = resolve(Path::new(&scope_path("test.slice", "abc"))).unwrap().unwrap();
        assert_eq!(s.unit, "berth-abc.scope");
        assert_eq!(s.rel, Path::new("test.slice/berth-abc.scope"));
        assert!(resolve(Path::new("/kubepods/pod1/abc")).is_none());
        assert!(resolve(Path::new("a.slice:b")).unwrap().is_err());
        assert!(resolve(Path::new("a.slice:berth:../x")).unwrap().is_err());
    }
}
