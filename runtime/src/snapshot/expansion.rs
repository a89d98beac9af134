//! Bounds on how far a layer may grow while it is unpacked, checked as it streams: a few
//! MiB of gzip can inflate to gigabytes of zeros, and `max_bytes` alone (sized for the
//! largest real layer) would let one pull fill the disk before it is refused.
//!
//! Two bounds, both off at 0:
//! - the expansion ratio: past a floor, unpacked bytes may not exceed `max_ratio` times
//!   the compressed bytes read so far. Real layers inflate 2-20x; a bomb inflates
//!   hundreds or a thousand times, so the ratio tells them apart long before the disk
//!   fills, and the floor keeps small layers with a big zero-filled file pullable;
//! - free space: the filesystem the layer is written to must keep `min_free_bytes`
//!   available, measured every [`FREE_SPACE_INTERVAL`] unpacked bytes rather than per
//!   entry, so a layer of many tiny files does not pay a syscall each.

use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// How often (in unpacked bytes) free space is measured; also how far below
/// `min_free_bytes` a layer can get before it is refused.
pub const FREE_SPACE_INTERVAL: u64 = 4 << 20;

/// How far one layer may expand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpansionLimits {
    /// Unpacked bytes per compressed byte, once past `floor_bytes`; 0: no limit.
    pub max_ratio: u64,
    /// Unpacked bytes any layer may reach whatever its ratio.
    pub floor_bytes: u64,
    /// Bytes the layer's filesystem must keep available; 0: no limit.
    pub min_free_bytes: u64,
}

impl ExpansionLimits {
    pub const OFF: Self = Self { max_ratio: 0, floor_bytes: 0, min_free_bytes: 0 };
}

impl Default for ExpansionLimits {
    /// 100x is five times the most compressible real layers (text, ~10-20x); a 512 MiB
    /// floor keeps small layers holding a preallocated zero-filled file pullable while
    /// capping what a bomb writes before it is caught; 1 GiB free leaves the metadata
    /// database, container logs and writable layers (on the same filesystem) room, and
    /// is below the kubelet's own image-filesystem eviction threshold (15%) on any disk
    /// over 7 GiB, so on a normal node the kubelet's image GC acts first.
    fn default() -> Self {
        Self { max_ratio: 100, floor_bytes: 512 << 20, min_free_bytes: 1 << 30 }
    }
}

/// Compressed bytes the decompressor has read so far, shared with the unpacker that
/// checks the ratio on another reader of the same pipeline.
#[derive(Debug, Clone, Default)]
pub struct CompressedCount(Arc<AtomicU64>);

impl CompressedCount {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// `inner` (the compressed blob), counting what is read from it here.
    pub fn reader<R: Read>(&self, inner: R) -> CountingReader<R> {
        CountingReader { inner, count: self.clone() }
    }
}

pub struct CountingReader<R> {
    inner: R,
    count: CompressedCount,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        self.count.0.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpansionError {
    #[error(
        "unpacks to more than {ratio}x its compressed size ({unpacked} bytes from the first \
         {compressed} compressed bytes); refusing it as a decompression bomb \
         (image.max_expansion_ratio, image.expansion_floor_bytes)"
    )]
    Ratio { ratio: u64, unpacked: u64, compressed: u64 },
    #[error(
        "unpacking it would leave less than {min_free} bytes free on the image filesystem \
         ({available} bytes available after {unpacked} unpacked bytes; image.min_free_bytes)"
    )]
    FreeSpace { min_free: u64, available: u64, unpacked: u64 },
    #[error("measuring free space on the image filesystem at {}: {errno}", path.display())]
    Statvfs { path: PathBuf, errno: rustix::io::Errno },
}

/// Checks [`ExpansionLimits`] for one layer as its unpacked size grows.
#[derive(Debug)]
pub struct ExpansionGuard {
    limits: ExpansionLimits,
    compressed: CompressedCount,
    /// Where the layer is written, for statvfs.
    dir: PathBuf,
    unpacked: u64,
    next_free_check: u64,
}

impl ExpansionGuard {
    pub fn new(limits: ExpansionLimits, compressed: CompressedCount, dir: PathBuf) -> Self {
        Self { limits, compressed, dir, unpacked: 0, next_free_check: 0 }
    }

    /// Unpacked bytes so far: the most any counter reported.
    pub fn unpacked(&self) -> u64 {
        self.unpacked
    }

    /// Records that the layer has produced `unpacked` bytes (counters may report out of
    /// order; the largest wins) and checks the bounds.
    pub fn grow_to(&mut self, unpacked: u64) -> Result<(), ExpansionError> {
        self.unpacked = self.unpacked.max(unpacked);
        let unpacked = self.unpacked;
        let ratio = self.limits.max_ratio;
        if ratio > 0 && unpacked > self.limits.floor_bytes {
            let compressed = self.compressed.get();
            if unpacked > compressed.saturating_mul(ratio) {
                return Err(ExpansionError::Ratio { ratio, unpacked, compressed });
            }
        }
        let min_free = self.limits.min_free_bytes;
        if min_free > 0 && unpacked >= self.next_free_check {
            self.next_free_check = unpacked.saturating_add(FREE_SPACE_INTERVAL);
            let st = rustix::fs::statvfs(&self.dir)
                .map_err(|errno| ExpansionError::Statvfs { path: self.dir.clone(), errno })?;
            let available = st.f_bavail.saturating_mul(st.f_frsize);
            if available < min_free {
                return Err(ExpansionError::FreeSpace { min_free, available, unpacked });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(limits: ExpansionLimits, compressed: u64) -> ExpansionGuard {
        let count = CompressedCount::default();
        count.0.store(compressed, Ordering::Relaxed);
        ExpansionGuard::new(limits, count, std::env::temp_dir())
    }

    #[test]
    fn ratio_applies_past_the_floor() {
        let limits = ExpansionLimits { max_ratio: 10, floor_bytes: 1000, min_free_bytes: 0 };
        let mut g = guard(limits, 1);
        g.grow_to(1000).unwrap();
        let err = g.grow_to(1001).unwrap_err();
        assert_eq!(err, ExpansionError::Ratio { ratio: 10, unpacked: 1001, compressed: 1 });
        assert!(err.to_string().contains("more than 10x its compressed size"), "{err}");

        let mut g = guard(limits, 200);
        g.grow_to(2000).unwrap();
        assert!(g.grow_to(2001).is_err());
        // A smaller report later does not undo a larger one.
        assert!(g.grow_to(5).is_err());
        assert_eq!(g.unpacked(), 2001);

        let mut off = guard(ExpansionLimits { max_ratio: 0, ..limits }, 0);
        off.grow_to(u64::MAX).unwrap();
    }

    #[test]
    fn free_space_is_measured_every_interval() {
        let everything = ExpansionLimits { min_free_bytes: u64::MAX, ..ExpansionLimits::OFF };
        let mut g = guard(everything, 0);
        let err = g.grow_to(0).unwrap_err();
        assert!(matches!(err, ExpansionError::FreeSpace { min_free: u64::MAX, .. }), "{err}");
        assert!(err.to_string().contains("image.min_free_bytes"), "{err}");
        // Not measured again until another interval has been unpacked.
        g.grow_to(FREE_SPACE_INTERVAL - 1).unwrap();
        assert!(g.grow_to(FREE_SPACE_INTERVAL).is_err());

        let mut g = guard(ExpansionLimits { min_free_bytes: 1, ..ExpansionLimits::OFF }, 0);
        g.grow_to(0).unwrap();

        let mut gone = ExpansionGuard::new(everything, Default::default(), "/nonexistent".into());
        let err = gone.grow_to(0).unwrap_err();
        assert!(matches!(err, ExpansionError::Statvfs { .. }), "{err}");
    }

    #[test]
    fn counting_reader_counts() {
        let count = CompressedCount::default();
        let mut out = Vec::new();
        count.reader(&b"twelve bytes"[..]).read_to_end(&mut out).unwrap();
        assert_eq!(count.get(), 12);
    }
}
