//! The content store: registry blobs (manifests, configs, compressed layers) by digest,
//! shared by every image that references them.
//!
//! A blob is written to a private file under `ingest/`, hashed as it is written, and
//! renamed into `blobs/sha256/<hex>` only once its size and digest are what the manifest
//! promised. A corrupt or truncated download therefore never becomes visible, and a
//! crash leaves only `ingest/` files, which start-up deletes.

use crate::digest::{Digest, Hasher};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("blob {expected}: got {actual_size} bytes, expected {expected_size}")]
    SizeMismatch { expected: Digest, expected_size: u64, actual_size: u64 },
    #[error("blob {expected}: content has digest {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob {digest}: more than the {expected_size} bytes the manifest declares")]
    TooLarge { digest: Digest, expected_size: u64 },
    #[error("content store {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

pub type Result<T> = std::result::Result<T, ContentError>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ContentError + '_ {
    move |source| ContentError::Io { path: path.to_path_buf(), source }
}

#[derive(Debug)]
pub struct ContentStore {
    root: PathBuf,
    next_ingest: AtomicU64,
}

impl ContentStore {
    /// Opens the store under `root` (e.g. `/var/lib/berth/content`), creating it, and
    /// deletes partial writes left by a crash.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let store = Self { root, next_ingest: AtomicU64::new(0) };
        for dir in [store.blobs_dir(), store.ingest_dir()] {
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        let ingest = store.ingest_dir();
        for entry in fs::read_dir(&ingest).map_err(io_err(&ingest))? {
            let path = entry.map_err(io_err(&ingest))?.path();
            let _ = fs::remove_file(&path);
        }
        Ok(store)
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    fn ingest_dir(&self) -> PathBuf {
        self.root.join("ingest")
    }

    /// Where a committed blob lives (whether or not it exists).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.path(digest);
        fs::read(&path).map_err(io_err(&path))
    }

    /// Size on disk of a committed blob.
    pub fn size(&self, digest: &Digest) -> Result<u64> {
        let path = self.path(digest);
        Ok(fs::metadata(&path).map_err(io_err(&path))?.len())
    }

    /// Writes a blob that is entirely in memory (a manifest, a config) after verifying it.
    pub fn put(&self, expected: &Digest, bytes: &[u8]) -> Result<()> {
        if self.contains(expected) {
            return Ok(());
        }
        let mut w = self.writer(expected.clone(), bytes.len() as u64)?;
        w.write_all(bytes).map_err(|e| ContentError::Io { path: w.path.clone(), source: e })?;
        w.commit()
    }

    /// Starts writing a blob that must end up `size` bytes long with digest `expected`.
    pub fn writer(&self, expected: Digest, size: u64) -> Result<BlobWriter> {
        let n = self.next_ingest.fetch_add(1, Ordering::Relaxed);
        let path = self.ingest_dir().join(format!("{}-{}-{n}", expected.hex(), std::process::id()));
        let file =
            File::options().write(true).create_new(true).open(&path).map_err(io_err(&path))?;
        Ok(BlobWriter {
            file: Some(file),
            path,
            target: self.path(&expected),
            expected,
            size,
            hasher: Hasher::default(),
        })
    }

    /// Deletes a blob; absent is fine.
    pub fn delete(&self, digest: &Digest) -> Result<()> {
        let path = self.path(digest);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&path)(e)),
            _ => Ok(()),
        }
    }

    /// Every committed blob (for garbage collection).
    pub fn list(&self) -> Result<Vec<Digest>> {
        let dir = self.blobs_dir();
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            // Anything that is not a well-formed digest name is not ours to report.
            if let Some(d) =
                entry.file_name().to_str().and_then(|n| format!("sha256:{n}").parse().ok())
            {
                out.push(d);
            }
        }
        Ok(out)
    }
}

/// A blob being written. Dropping it without [`commit`](Self::commit) deletes the partial
/// file, so an aborted pull leaves nothing.
pub struct BlobWriter {
    file: Option<File>,
    path: PathBuf,
    target: PathBuf,
    expected: Digest,
    size: u64,
    hasher: Hasher,
}

impl BlobWriter {
    pub fn written(&self) -> u64 {
        self.hasher.len()
    }

    /// Verifies size and digest, then makes the blob visible atomically.
    pub fn commit(mut self) -> Result<()> {
        let file = self.file.take().expect("commit is called once");
        let actual_size = self.hasher.len();
        if actual_size != self.size {
            return Err(ContentError::SizeMismatch {
                expected: self.expected.clone(),
                expected_size: self.size,
                actual_size,
            });
        }
        let actual = std::mem::take(&mut self.hasher).finish();
        if actual != self.expected {
            return Err(ContentError::DigestMismatch { expected: self.expected.clone(), actual });
        }
        file.sync_all().map_err(io_err(&self.path))?;
        drop(file);
        fs::rename(&self.path, &self.target).map_err(io_err(&self.target))?;
        Ok(())
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.hasher.len() + buf.len() as u64 > self.size {
            // Stop a registry that sends more than it declared before it fills the disk.
            let e =
                ContentError::TooLarge { digest: self.expected.clone(), expected_size: self.size };
            return Err(io::Error::other(e.to_string()));
        }
        let file = self.file.as_mut().ok_or_else(|| io::Error::other("blob already committed"))?;
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), File::flush)
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() || self.path.exists() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, ContentStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path().join("content")).unwrap();
        (dir, store)
    }

    fn ingest_is_empty(store: &ContentStore) -> bool {
        fs::read_dir(store.ingest_dir()).unwrap().next().is_none()
    }

    #[test]
    fn verified_blob_is_committed() {
        let (_d, store) = store();
        let d = Digest::of(b"layer bytes");
        let mut w = store.writer(d.clone(), 11).unwrap();
        w.write_all(b"layer ").unwrap();
        assert!(!store.contains(&d), "visible before commit");
        w.write_all(b"bytes").unwrap();
        w.commit().unwrap();
        assert_eq!(store.read(&d).unwrap(), b"layer bytes");
        assert_eq!(store.list().unwrap(), vec![d.clone()]);
        assert!(ingest_is_empty(&store));
        store.delete(&d).unwrap();
        store.delete(&d).unwrap();
        assert!(!store.contains(&d));
    }

    #[test]
    fn corrupt_truncated_and_oversized_blobs_leave_nothing() {
        let (_d, store) = store();
        let d = Digest::of(b"good");
        let mut w = store.writer(d.clone(), 4).unwrap();
        w.write_all(b"evil").unwrap();
        assert!(matches!(w.commit(), Err(ContentError::DigestMismatch { .. })));

        let mut w = store.writer(d.clone(), 4).unwrap();
        w.write_all(b"goo").unwrap();
        assert!(matches!(w.commit(), Err(ContentError::SizeMismatch { .. })));

        let mut w = store.writer(d.clone(), 4).unwrap();
        assert!(w.write_all(b"good and more").is_err());
        drop(w);

        assert!(!store.contains(&d));
        assert!(ingest_is_empty(&store));
    }

    #[test]
    fn reopening_removes_partial_writes() {
        let (dir, store) = store();
        let w = store.writer(Digest::of(b"x"), 1).unwrap();
        std::mem::forget(w); // as if the process died mid-write
        assert!(!ingest_is_empty(&store));
        let store = ContentStore::open(dir.path().join("content")).unwrap();
        assert!(ingest_is_empty(&store));
    }
}
