//! Layer tars: building them, compressing them, digesting them.
//!
//! Every entry gets a fixed mtime and numeric owners, so a layer built twice
//! from the same input has the same digest (tests can compare image IDs).

use std::io::Write;

use anyhow::Result;
use sha2::{Digest, Sha256};

/// Fixed mtime for every entry (2023-11-14), for reproducible digests.
pub const MTIME: u64 = 1_700_000_000;

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn compress(self, tar: &[u8]) -> Result<Vec<u8>> {
        Ok(match self {
            Compression::None => tar.to_vec(),
            Compression::Gzip => {
                // GzEncoder writes mtime 0 and no file name: reproducible. Level "fast":
                // the big random layers would spend most time here otherwise.
                let mut enc = flate2::write::GzEncoder::new(
                    Vec::with_capacity(tar.len() / 2),
                    flate2::Compression::fast(),
                );
                enc.write_all(tar)?;
                enc.finish()?
            }
            Compression::Zstd => zstd::encode_all(tar, 3)?,
        })
    }
}

/// Builds an uncompressed layer tar entry by entry. Paths are relative to the
/// image root (`bin/sh`, not `/bin/sh`; a leading `/` is stripped).
pub struct LayerBuilder {
    tar: tar::Builder<Vec<u8>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerBuilder {
    pub fn new() -> Self {
        let mut tar = tar::Builder::new(Vec::new());
        // Keep symlinks as symlinks if anyone appends from disk.
        tar.follow_symlinks(false);
        LayerBuilder { tar }
    }

    fn header(kind: tar::EntryType, mode: u32, uid: u64, gid: u64, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(MTIME);
        h.set_size(size);
        h
    }

    fn clean(path: &str) -> &str {
        path.trim_start_matches('/')
    }

    /// A directory owned by root.
    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        self.dir_owned(path, mode, 0, 0)
    }

    pub fn dir_owned(&mut self, path: &str, mode: u32, uid: u64, gid: u64) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Directory, mode, uid, gid, 0);
        let path = format!("{}/", Self::clean(path).trim_end_matches('/'));
        self.tar.append_data(&mut h, path, std::io::empty()).expect("append to in-memory tar");
        self
    }

    /// A regular file owned by root.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> &mut Self {
        self.file_owned(path, mode, 0, 0, data)
    }

    pub fn file_owned(
        &mut self,
        path: &str,
        mode: u32,
        uid: u64,
        gid: u64,
        data: &[u8],
    ) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, uid, gid, data.len() as u64);
        self.tar.append_data(&mut h, Self::clean(path), data).expect("append to in-memory tar");
        self
    }

    /// A symlink at `path` pointing at `target` (kept verbatim).
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0, 0, 0);
        self.tar.append_link(&mut h, Self::clean(path), target).expect("append to in-memory tar");
        self
    }

    /// A hard link at `path` to the earlier entry `target` (image-root relative).
    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Link, 0o755, 0, 0, 0);
        self.tar
            .append_link(&mut h, Self::clean(path), Self::clean(target))
            .expect("append to in-memory tar");
        self
    }

    /// OCI whiteout: deletes `path` (file or whole directory) of lower layers.
    pub fn whiteout(&mut self, path: &str) -> &mut Self {
        let path = Self::clean(path).trim_end_matches('/');
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (format!("{d}/"), n),
            None => (String::new(), path),
        };
        self.file(&format!("{dir}.wh.{name}"), 0o644, b"")
    }

    /// OCI opaque marker: hides everything lower layers have in `dir`.
    pub fn opaque(&mut self, dir: &str) -> &mut Self {
        let dir = Self::clean(dir).trim_end_matches('/');
        self.file(&format!("{dir}/.wh..wh..opq"), 0o644, b"")
    }

    /// The finished, uncompressed tar.
    pub fn finish(self) -> Vec<u8> {
        self.tar.into_inner().expect("finish in-memory tar")
    }
}

/// A layer ready to push: its blob, how it is compressed and its digests.
#[derive(Clone, Debug)]
pub struct Layer {
    /// The bytes stored in the registry.
    pub blob: Vec<u8>,
    /// `sha256:` of `blob`.
    pub digest: String,
    /// `sha256:` of the uncompressed tar (what `rootfs.diff_ids` lists).
    pub diff_id: String,
    pub compression: Compression,
    /// A media type to use verbatim instead of the one derived from
    /// `compression` and the manifest format.
    pub media_type: Option<String>,
    /// `created_by` of this layer's history entry.
    pub created_by: String,
}

impl Layer {
    /// Compresses an uncompressed tar into a layer.
    pub fn from_tar(tar: &[u8], compression: Compression, created_by: &str) -> Result<Layer> {
        let blob = compression.compress(tar)?;
        Ok(Layer {
            digest: sha256_digest(&blob),
            diff_id: sha256_digest(tar),
            blob,
            compression,
            media_type: None,
            created_by: created_by.to_string(),
        })
    }

    /// An arbitrary pre-built blob (hostile tars, garbage, mislabelled
    /// compression…). `diff_id` defaults to the blob's own digest, which is
    /// right for an uncompressed tar.
    pub fn raw(blob: Vec<u8>, media_type: &str, diff_id: Option<String>) -> Layer {
        let digest = sha256_digest(&blob);
        Layer {
            diff_id: diff_id.unwrap_or_else(|| digest.clone()),
            digest,
            blob,
            compression: Compression::None,
            media_type: Some(media_type.to_string()),
            created_by: "raw layer".to_string(),
        }
    }

    /// The same content with another compression.
    pub fn recompress(&self, compression: Compression) -> Result<Layer> {
        let tar = decompress(&self.blob, self.compression)?;
        Layer::from_tar(&tar, compression, &self.created_by)
    }
}

/// Undoes [`Compression::compress`].
pub fn decompress(blob: &[u8], compression: Compression) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    match compression {
        Compression::None => out.extend_from_slice(blob),
        Compression::Gzip => {
            flate2::read::GzDecoder::new(blob).read_to_end(&mut out)?;
        }
        Compression::Zstd => out = zstd::decode_all(blob)?,
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(tar: &[u8]) -> Vec<String> {
        let mut a = tar::Archive::new(tar);
        a.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect()
    }

    #[test]
    fn whiteouts_are_named_per_oci() {
        let mut b = LayerBuilder::new();
        b.whiteout("/a/b/gone").whiteout("top").opaque("/dir/");
        assert_eq!(names(&b.finish()), ["a/b/.wh.gone", ".wh.top", "dir/.wh..wh..opq"]);
    }

    #[test]
    fn layers_are_reproducible_and_roundtrip() {
        let build = || {
            let mut b = LayerBuilder::new();
            b.dir("etc", 0o755).file("etc/x", 0o644, b"hello");
            b.finish()
        };
        let tar = build();
        assert_eq!(tar, build());
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let l = Layer::from_tar(&tar, c, "t").unwrap();
            assert_eq!(l.diff_id, sha256_digest(&tar));
            assert_eq!(decompress(&l.blob, c).unwrap(), tar);
            assert_eq!(Layer::from_tar(&tar, c, "t").unwrap().digest, l.digest);
        }
    }
}
