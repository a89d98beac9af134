//! A container's writable layer: the bytes and inodes of its overlay upper directory.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerUsage {
    /// Where the writable layers live (the kubelet matches it against the image fs).
    pub mountpoint: PathBuf,
    pub bytes: u64,
    pub inodes: u64,
}

/// Walks `upper`, counting each inode once. The container writes while we walk, so an
/// entry that vanishes half-way is skipped rather than failing the whole answer.
pub fn usage(upper: &Path) -> io::Result<LayerUsage> {
    let dev = fs::symlink_metadata(upper)?.dev();
    let mut seen = HashSet::new();
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut stack = vec![upper.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&p) else { continue };
        if meta.dev() != dev || !seen.insert(meta.ino()) {
            continue;
        }
        inodes += 1;
        bytes += meta.blocks() * 512;
        if meta.is_dir() {
            if let Ok(entries) = fs::read_dir(&p) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        }
    }
    // `<root>/snapshots/containers/<id>/upper` → `<root>/snapshots/containers`.
    let mountpoint = upper.ancestors().nth(2).unwrap_or(upper).to_path_buf();
    Ok(LayerUsage { mountpoint, bytes, inodes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_files_once() {
        let tmp = tempfile::tempdir().unwrap();
        let upper = tmp.path().join("containers/c1/upper");
        fs::create_dir_all(upper.join("d")).unwrap();
        fs::write(upper.join("d/f"), vec![1u8; 64 * 1024]).unwrap();
        fs::hard_link(upper.join("d/f"), upper.join("link")).unwrap();
        let u = usage(&upper).unwrap();
        assert_eq!(u.inodes, 3);
        assert!(u.bytes >= 64 * 1024, "{u:?}");
        assert_eq!(u.mountpoint, tmp.path().join("containers"));
        assert!(usage(&tmp.path().join("nope")).is_err());
    }
}
