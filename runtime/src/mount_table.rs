//! The mount table: what is mounted in berthd's mount namespace (from
//! `/proc/self/mountinfo`), and taking mounts and the trees under them away.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{umount2, MntFlags};

/// Lazily unmounts `path`; not mounted or missing is fine.
pub fn unmount(path: &Path) -> Result<(), String> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(format!("unmount {}: {e}", path.display())),
    }
}

/// Every mount point in our mount namespace, in mountinfo order.
fn mount_points() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines().filter_map(|l| l.split(' ').nth(4)).map(|m| PathBuf::from(unescape(m))).collect()
}

/// The mount point of the mount that holds `path` (the deepest one above it).
pub fn mount_point_of(path: &Path) -> Option<PathBuf> {
    mount_points()
        .into_iter()
        .filter(|m| path.starts_with(m))
        .max_by_key(|m| m.components().count())
}

/// Mount points at or below `root` in our mount namespace, deepest first.
pub fn mounts_under(root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> =
        mount_points().into_iter().filter(|m| m.starts_with(root)).collect();
    out.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    out.dedup();
    out
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts everything at or under `dir`, then removes the directory tree. Refuses to
/// delete files while something is still mounted there (it would reach into the mount).
pub fn remove_tree(dir: &Path) -> Result<(), String> {
    for m in mounts_under(dir) {
        unmount(&m)?;
    }
    let left = mounts_under(dir);
    if !left.is_empty() {
        return Err(format!("{} still has mounts: {left:?}", dir.display()));
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("remove {}: {e}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn unescapes_mountinfo() {
        assert_eq!(super::unescape("/a\\040b"), "/a b");
        assert_eq!(super::unescape("/plain"), "/plain");
        assert_eq!(super::unescape("/x\\134y"), "/x\\y");
    }
}
