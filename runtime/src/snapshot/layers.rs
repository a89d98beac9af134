//! Unpacked image layers on disk: one directory per layer, keyed by chain id and shared
//! by every image that has it, each usable as an overlayfs lower dir.
//!
//! A layer is unpacked into a private temporary directory and renamed into place only
//! once its content is verified and on disk, so a directory under `layers/` is always a
//! complete, verified layer, even after a power cut: before the rename the filesystem is
//! synced (`syncfs`, one call for all the layer's files instead of an fsync each), and
//! the rename itself is made durable (fsync of `layers/`) before the caller records the
//! layer in the metadata store. Start-up deletes what a crash left under `tmp/`.

use crate::digest::Digest;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct LayerStore {
    root: PathBuf,
    next_tmp: AtomicU64,
}

impl LayerStore {
    /// Opens the store under `root` (e.g. `/var/lib/berth/snapshots`), creating it, and
    /// removes unfinished unpacks.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let store = Self { root: root.into(), next_tmp: AtomicU64::new(0) };
        fs::create_dir_all(store.layers_dir())?;
        let tmp = store.tmp_dir();
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir_all(&tmp)?;
        Ok(store)
    }

    fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// The directory holding a layer's files (the overlay lower dir).
    pub fn fs_path(&self, chain_id: &Digest) -> PathBuf {
        self.layers_dir().join(chain_id.hex()).join("fs")
    }

    pub fn contains(&self, chain_id: &Digest) -> bool {
        self.fs_path(chain_id).is_dir()
    }

    /// A private, empty directory to unpack a layer into. Dropping the returned value
    /// without committing deletes it.
    pub fn begin(&self, chain_id: &Digest) -> io::Result<PendingLayer> {
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        let dir = self.tmp_dir().join(format!("{}-{n}", chain_id.hex()));
        fs::create_dir(&dir)?;
        fs::create_dir(dir.join("fs"))?;
        Ok(PendingLayer { dir: Some(dir), target: self.layers_dir().join(chain_id.hex()) })
    }

    /// Deletes a layer; absent is fine.
    pub fn remove(&self, chain_id: &Digest) -> io::Result<()> {
        let dir = self.layers_dir().join(chain_id.hex());
        // Rename first so a crash mid-delete never leaves a half layer that looks whole.
        let doomed = self.tmp_dir().join(format!(
            "{}-rm-{}",
            chain_id.hex(),
            self.next_tmp.fetch_add(1, Ordering::Relaxed)
        ));
        match fs::rename(&dir, &doomed) {
            Ok(()) => fs::remove_dir_all(&doomed),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every layer on disk (for garbage collection).
    pub fn list(&self) -> io::Result<Vec<Digest>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(self.layers_dir())? {
            if let Some(d) =
                entry?.file_name().to_str().and_then(|n| format!("sha256:{n}").parse().ok())
            {
                out.push(d);
            }
        }
        Ok(out)
    }
}

/// A layer being unpacked.
pub struct PendingLayer {
    dir: Option<PathBuf>,
    target: PathBuf,
}

impl PendingLayer {
    /// Where to unpack the layer's files.
    pub fn fs_path(&self) -> PathBuf {
        self.dir.as_ref().expect("not yet committed").join("fs")
    }

    /// Makes the layer visible. If another pull committed the same layer meanwhile, that
    /// one is kept and this copy is discarded: both hold the same verified content.
    pub fn commit(mut self) -> io::Result<()> {
        let dir = self.dir.take().expect("commit is called once");
        if let Err(e) = sync_filesystem(&dir) {
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
        match fs::rename(&dir, &self.target) {
            Ok(()) => fs::File::open(self.target.parent().unwrap_or(Path::new("/")))?.sync_all(),
            // rename(2) onto a non-empty directory: the layer is already there.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::AlreadyExists
                ) =>
            {
                fs::remove_dir_all(&dir)
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }
}

/// Writes every dirty page of the filesystem holding `path` to disk.
fn sync_filesystem(path: &Path) -> io::Result<()> {
    let dir = fs::File::open(path)?;
    // SAFETY: syncfs on a descriptor we own.
    if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Drop for PendingLayer {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// Bytes and inodes used under `path`, counting each inode once (hard links), without
/// following symlinks or leaving the filesystem.
pub fn disk_usage(path: &Path) -> io::Result<(u64, u64)> {
    let dev = fs::symlink_metadata(path)?.dev();
    let mut seen = std::collections::HashSet::new();
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = fs::symlink_metadata(&p)?;
        if meta.dev() != dev || !seen.insert(meta.ino()) {
            continue;
        }
        inodes += 1;
        bytes += meta.blocks() * 512;
        if meta.is_dir() {
            for entry in fs::read_dir(&p)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok((bytes, inodes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_publishes_and_drop_discards() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LayerStore::open(tmp.path()).unwrap();
        let id = Digest::of(b"layer");
        let pending = store.begin(&id).unwrap();
        fs::write(pending.fs_path().join("f"), b"x").unwrap();
        assert!(!store.contains(&id));
        pending.commit().unwrap();
        assert!(store.contains(&id));
        assert_eq!(fs::read(store.fs_path(&id).join("f")).unwrap(), b"x");

        // A second unpack of the same layer loses the race quietly.
        let again = store.begin(&id).unwrap();
        fs::write(again.fs_path().join("g"), b"y").unwrap();
        again.commit().unwrap();
        assert!(!store.fs_path(&id).join("g").exists());

        let other = Digest::of(b"other");
        drop(store.begin(&other).unwrap());
        assert!(!store.contains(&other));
        assert_eq!(fs::read_dir(tmp.path().join("tmp")).unwrap().count(), 0);

        assert_eq!(store.list().unwrap(), vec![id.clone()]);
        let (bytes, inodes) = disk_usage(&store.fs_path(&id)).unwrap();
        assert!(bytes > 0 && inodes == 2, "{bytes} {inodes}");
        store.remove(&id).unwrap();
        store.remove(&id).unwrap();
        assert!(!store.contains(&id));
    }

    #[test]
    fn reopen_clears_unfinished_unpacks() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LayerStore::open(tmp.path()).unwrap();
        std::mem::forget(store.begin(&Digest::of(b"l")).unwrap());
        LayerStore::open(tmp.path()).unwrap();
        assert_eq!(fs::read_dir(tmp.path().join("tmp")).unwrap().count(), 0);
    }
}
