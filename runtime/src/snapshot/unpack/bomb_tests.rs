//! Decompression bombs against the expansion guard, with real gzip streams built in the
//! test, read through the same pipeline a pull uses. Run as root.

use std::fs;
use std::io::{Cursor, Write};
use std::path::Path;

use tar::{EntryType, Header};

use super::*;
use crate::snapshot::decompress;
use crate::snapshot::expansion::{CompressedCount, ExpansionLimits, FREE_SPACE_INTERVAL};

const MIB: u64 = 1 << 20;
const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const TAR: &str = "application/vnd.oci.image.layer.v1.tar";

fn roomy() -> UnpackLimits {
    UnpackLimits { max_bytes: 64 << 30, max_entries: 1000 }
}

fn ratio(max_ratio: u64, floor_bytes: u64) -> ExpansionLimits {
    ExpansionLimits { max_ratio, floor_bytes, min_free_bytes: 0 }
}

/// A tar of one file `name` of `size` bytes made by `fill`, then `trailing` zero bytes
/// after the end-of-archive marker, gzip'd as it is written: a 1 GiB bomb never exists
/// uncompressed in memory.
fn gzip_layer(name: &str, size: u64, mut fill: impl FnMut(&mut [u8]), trailing: u64) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut h = Header::new_gnu();
    h.set_path(name).unwrap();
    h.set_entry_type(EntryType::Regular);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_600_000_000);
    h.set_cksum();
    gz.write_all(h.as_bytes()).unwrap();
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        fill(&mut chunk[..n]);
        gz.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    let padding = (512 - size % 512) % 512 + 1024;
    gz.write_all(&vec![0u8; padding as usize]).unwrap();
    chunk.fill(0);
    let mut left = trailing;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        gz.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    gz.finish().unwrap()
}

/// Unpacks `blob` as a pull does: counted, decompressed, guarded.
fn unpack_blob(
    blob: Vec<u8>,
    media_type: &str,
    dest: &Path,
    expansion: ExpansionLimits,
) -> Result<UnpackStats, UnpackError> {
    let count = CompressedCount::default();
    let tar = decompress(media_type, count.reader(Cursor::new(blob))).unwrap();
    let guard = ExpansionGuard::new(expansion, count, dest.to_owned());
    unpack_layer_bounded(tar, dest, &roomy(), Some(guard))
}

fn size_of(path: &Path) -> u64 {
    fs::symlink_metadata(path).map_or(0, |m| m.len())
}

/// Log-like text, about as compressible as real text layers get.
fn text(out: &mut [u8], line: &mut u64) {
    let mut filled = 0;
    while filled < out.len() {
        let l = format!(
            "{:08} GET /api/v1/items/{} HTTP/1.1 200 {}ms user={}\n",
            *line,
            line.wrapping_mul(7919) % 100_003,
            *line % 997,
            line.wrapping_mul(31) % 4099
        );
        let n = l.len().min(out.len() - filled);
        out[filled..filled + n].copy_from_slice(&l.as_bytes()[..n]);
        filled += n;
        *line += 1;
    }
}

#[test]
fn a_gzip_bomb_is_refused_at_the_floor() {
    // 1 GiB of zeros is about 1 MiB of gzip.
    let blob = gzip_layer("zeros", 1 << 30, |c| c.fill(0), 0);
    assert!(blob.len() < 2 << 20, "{}", blob.len());
    let tmp = tempfile::tempdir().unwrap();
    let floor = 8 * MIB;
    let err = unpack_blob(blob, GZIP, tmp.path(), ratio(100, floor)).unwrap_err();
    let UnpackError::Expansion(ExpansionError::Ratio { ratio, unpacked, compressed }) = err else {
        panic!("{err:?}");
    };
    assert_eq!(ratio, 100);
    assert!(unpacked > floor && unpacked < floor + MIB, "{unpacked}");
    assert!(unpacked > compressed * 100, "{unpacked} {compressed}");
    // Stopped as it crossed the floor, not after writing the gigabyte.
    assert!(size_of(&tmp.path().join("zeros")) <= floor + MIB);
    let text = UnpackError::Expansion(ExpansionError::Ratio { ratio, unpacked, compressed });
    assert!(text.to_string().contains("more than 100x its compressed size"), "{text}");
}

#[test]
fn compressible_layers_and_zeros_under_the_floor_pass() {
    let mut line = 0;
    let blob = gzip_layer("access.log", 16 * MIB, |c| text(c, &mut line), 0);
    let achieved = 16 * MIB / blob.len() as u64;
    assert!((3..100).contains(&achieved), "text compressed {achieved}x");
    let tmp = tempfile::tempdir().unwrap();
    let stats = unpack_blob(blob, GZIP, tmp.path(), ratio(100, MIB)).unwrap();
    assert_eq!(stats.bytes, 16 * MIB);

    // A preallocated zero file below the floor is fine whatever its ratio.
    let blob = gzip_layer("prealloc", 4 * MIB, |c| c.fill(0), 0);
    let tmp = tempfile::tempdir().unwrap();
    unpack_blob(blob, GZIP, tmp.path(), ratio(100, 8 * MIB)).unwrap();
    assert_eq!(size_of(&tmp.path().join("prealloc")), 4 * MIB);

    // And uncompressed layers are never refused by the ratio.
    let tar = tar_of_zeros(32 * MIB);
    let tmp = tempfile::tempdir().unwrap();
    unpack_blob(tar, TAR, tmp.path(), ratio(1, MIB)).unwrap();
}

fn tar_of_zeros(size: u64) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = Header::new_gnu();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(EntryType::Regular);
    b.append_data(&mut h, "zeros", std::io::repeat(0).take(size)).unwrap();
    b.into_inner().unwrap()
}

#[test]
fn a_bomb_after_the_end_of_archive_is_refused() {
    let blob = gzip_layer("small", 10, |c| c.fill(b'x'), 256 * MIB);
    let tmp = tempfile::tempdir().unwrap();
    let err = unpack_blob(blob, GZIP, tmp.path(), ratio(100, 8 * MIB)).unwrap_err();
    assert!(matches!(err, UnpackError::Expansion(ExpansionError::Ratio { .. })), "{err:?}");
}

#[test]
fn sparse_holes_count_as_unpacked() {
    fn octal(field: &mut [u8], value: u64) {
        let s = format!("{value:0width$o}\0", width = field.len() - 1);
        field.copy_from_slice(s.as_bytes());
    }
    let mut h = Header::new_gnu();
    h.set_path("holes").unwrap();
    h.set_entry_type(EntryType::GNUSparse);
    h.set_size(512);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    {
        let gnu = h.as_gnu_mut().unwrap();
        octal(&mut gnu.sparse[0].offset, 0);
        octal(&mut gnu.sparse[0].numbytes, 512);
        octal(&mut gnu.sparse[1].offset, 1 << 30);
        octal(&mut gnu.sparse[1].numbytes, 0);
        octal(&mut gnu.realsize, 1 << 30);
    }
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    tar.extend_from_slice(&[b'x'; 512]);
    tar.extend_from_slice(&[0u8; 1024]);
    let tmp = tempfile::tempdir().unwrap();
    let err = unpack_blob(tar, TAR, tmp.path(), ratio(100, 8 * MIB)).unwrap_err();
    assert!(matches!(err, UnpackError::Expansion(ExpansionError::Ratio { .. })), "{err:?}");
    assert!(size_of(&tmp.path().join("holes")) <= 9 * MIB);
}

/// A tmpfs of `size`, unmounted on drop.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn new(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let opts = format!("size={size}");
        nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(opts.as_str()),
        )
        .unwrap();
        SmallDisk(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.0.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn free_space_is_kept() {
    let disk = SmallDisk::new("32m");
    let dest = disk.0.path().join("layer");
    fs::create_dir(&dest).unwrap();
    // Random bytes: no ratio to hide behind, only the disk.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let blob = gzip_layer(
        "random",
        24 * MIB,
        |c| {
            for b in c {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
        },
        0,
    );
    let limits = ExpansionLimits { max_ratio: 100, floor_bytes: 0, min_free_bytes: 16 * MIB };
    let err = unpack_blob(blob, GZIP, &dest, limits).unwrap_err();
    let UnpackError::Expansion(ExpansionError::FreeSpace { min_free, available, .. }) = err else {
        panic!("{err:?}");
    };
    assert_eq!(min_free, 16 * MIB);
    assert!(available < 16 * MIB, "{available}");
    // Caught within one measuring interval of the bound, well before ENOSPC.
    let written = size_of(&dest.join("random"));
    assert!(written <= 16 * MIB + FREE_SPACE_INTERVAL + MIB, "{written}");
}
