//! Hostile and well-formed layer tars, built in memory. Run as root.

use super::entry_meta::parse_pax_time;
use std::collections::BTreeMap;
use std::fs;
use std::io::{Cursor, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tar::{Builder, EntryType, Header};

use super::*;

/// A temp dir holding the layer dir `layer/` and a sentinel tree `outside/` that no
/// archive may touch.
struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    dest: PathBuf,
    outside: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_owned();
    let dest = root.join("layer");
    let outside = root.join("outside");
    fs::create_dir(&dest).unwrap();
    fs::create_dir_all(outside.join("sub")).unwrap();
    fs::write(outside.join("passwd"), b"root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::write(outside.join("sub/file"), b"sentinel").unwrap();
    Fixture { _tmp: tmp, root, dest, outside }
}

/// Everything observable about a tree: per path, type, mode, owner, link count, size,
/// mtime, content or link target, and xattr names.
type Snapshot = BTreeMap<PathBuf, String>;

fn snapshot(root: &Path) -> Snapshot {
    fn walk(root: &Path, dir: &Path, out: &mut Snapshot) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let md = fs::symlink_metadata(&path).unwrap();
            let content = if md.file_type().is_symlink() {
                format!("-> {:?}", fs::read_link(&path).unwrap())
            } else if md.is_file() {
                format!("{:?}", fs::read(&path).unwrap())
            } else {
                String::new()
            };
            let xattrs = xattr_names(&path);
            out.insert(
                path.strip_prefix(root).unwrap().to_owned(),
                format!(
                    "{:o} {}:{} n{} s{} m{} {content} {xattrs:?}",
                    md.mode(),
                    md.uid(),
                    md.gid(),
                    md.nlink(),
                    md.size(),
                    md.mtime()
                ),
            );
            if md.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Snapshot::new();
    walk(root, root, &mut out);
    out
}

fn xattr_names(path: &Path) -> Vec<String> {
    let mut buf = vec![0u8; 64 << 10];
    let n = rfs::llistxattr(path, &mut buf[..]).unwrap_or(0);
    buf[..n]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 64 << 10];
    let n = rfs::lgetxattr(path, name, &mut buf[..]).ok()?;
    Some(buf[..n].to_vec())
}

/// Everything in the temp dir except the layer itself.
fn outside_state(f: &Fixture) -> Snapshot {
    snapshot(&f.root).into_iter().filter(|(p, _)| !p.starts_with("layer")).collect()
}

fn limits() -> UnpackLimits {
    UnpackLimits { max_bytes: 1 << 20, max_entries: 1000 }
}

/// A header with any name and link name, bypassing the Builder's path checks.
fn raw_header(kind: EntryType, name: &[u8], link: &[u8], size: u64) -> Header {
    let mut h = Header::new_gnu();
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name);
        old.linkname[..link.len()].copy_from_slice(link);
    }
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(if kind == EntryType::Directory { 0o755 } else { 0o644 });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_600_000_000);
    h.set_cksum();
    h
}

enum E<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Link(&'a str, &'a str),
}

fn tar_of(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = Builder::new(Vec::new());
    for e in entries {
        let h = match *e {
            // Long (benign) names need the Builder's GNU long-name records.
            E::File(name, data) if name.len() > 100 => {
                let mut h = raw_header(EntryType::Regular, b"", b"", data.len() as u64);
                b.append_data(&mut h, name, data).unwrap();
                continue;
            }
            E::File(name, data) => {
                let h = raw_header(EntryType::Regular, name.as_bytes(), b"", data.len() as u64);
                b.append(&h, data).unwrap();
                continue;
            }
            E::Dir(name) => raw_header(EntryType::Directory, name.as_bytes(), b"", 0),
            E::Symlink(name, target) => {
                raw_header(EntryType::Symlink, name.as_bytes(), target.as_bytes(), 0)
            }
            E::Link(name, target) => {
                raw_header(EntryType::Link, name.as_bytes(), target.as_bytes(), 0)
            }
        };
        b.append(&h, &[][..]).unwrap();
    }
    b.into_inner().unwrap()
}

fn unpack(f: &Fixture, tar: &[u8]) -> Result<UnpackStats, UnpackError> {
    unpack_layer(Cursor::new(tar), &f.dest, &limits())
}

/// Unpacks `tar`, expects an error mentioning each of `want`, and checks that nothing
/// outside the layer changed.
fn assert_refused(tar: &[u8], want: &[&str]) -> (Fixture, UnpackError) {
    let f = fixture();
    let before = outside_state(&f);
    let err = unpack(&f, tar).expect_err("hostile archive was accepted");
    let msg = err.to_string();
    for w in want {
        assert!(msg.contains(w), "error {msg:?} does not mention {w:?}");
    }
    assert_eq!(outside_state(&f), before, "something outside the layer changed");
    (f, err)
}

fn abs(f: &Fixture, rel: &str) -> String {
    f.outside.join(rel).to_str().unwrap().to_owned()
}

#[test]
fn refuses_dotdot_names() {
    for name in ["../x", "../outside/passwd", "a/../../outside/pwned", "./../x"] {
        let tar = tar_of(&[E::File(name, b"pwned")]);
        let (_, err) = assert_refused(&tar, &[name, "\"..\""]);
        assert!(matches!(err, UnpackError::Rejected { .. }), "{err:?}");
    }
}

#[test]
fn absolute_names_stay_in_the_layer() {
    let f = fixture();
    let before = outside_state(&f);
    let target = abs(&f, "pwned");
    unpack(&f, &tar_of(&[E::File(&target, b"x"), E::File("/top", b"y")])).unwrap();
    assert_eq!(outside_state(&f), before);
    let inside = f.dest.join(target.trim_start_matches('/'));
    assert_eq!(fs::read(inside).unwrap(), b"x");
    assert_eq!(fs::read(f.dest.join("top")).unwrap(), b"y");
}

#[test]
fn refuses_writing_through_a_planted_symlink() {
    let probe = fixture();
    let outside = probe.outside.to_str().unwrap().to_owned();
    for (link_target, entry) in [
        (outside.as_str(), "a/pwned"),
        ("../outside", "a/pwned"),
        (outside.as_str(), "a/sub/deeper/pwned"),
    ] {
        let tar = tar_of(&[E::Symlink("a", link_target), E::File(entry, b"pwned")]);
        let (f, err) = assert_refused(&tar, &[entry, "\"a\" is a symlink"]);
        assert!(matches!(err, UnpackError::Rejected { .. }), "{err:?}");
        assert!(!f.outside.join("pwned").exists());
    }
}

#[test]
fn refuses_a_symlinked_parent_deeper_down() {
    let probe = fixture();
    let tar = tar_of(&[E::Dir("d"), E::Symlink("d/l", &abs(&probe, "sub")), E::Dir("d/l/x")]);
    assert_refused(&tar, &["d/l/x", "\"d/l\" is a symlink"]);
    let tar = tar_of(&[
        E::Dir("d"),
        E::Symlink("d/l", "../../outside/sub"),
        E::File("d/l/file", b"overwritten"),
    ]);
    assert_refused(&tar, &["d/l/file", "symlink"]);
}

#[test]
fn replaces_a_symlink_rather_than_writing_through_it() {
    let f = fixture();
    let before = outside_state(&f);
    let tar = tar_of(&[
        E::Symlink("f", &abs(&f, "passwd")),
        E::File("f", b"mine"),
        E::Symlink("d", &abs(&f, "sub")),
        E::Dir("d"),
    ]);
    unpack(&f, &tar).unwrap();
    assert_eq!(outside_state(&f), before);
    assert!(fs::symlink_metadata(f.dest.join("f")).unwrap().is_file());
    assert_eq!(fs::read(f.dest.join("f")).unwrap(), b"mine");
    assert!(fs::symlink_metadata(f.dest.join("d")).unwrap().is_dir());
}

#[test]
fn refuses_hard_links_out_of_the_layer() {
    let probe = fixture();
    let passwd = abs(&probe, "passwd");
    let outside = probe.outside.to_str().unwrap().to_owned();
    let cases: Vec<(Vec<u8>, Vec<&str>)> = vec![
        // Absolute targets name the layer's own tree, where nothing was extracted.
        (tar_of(&[E::Link("h", &passwd)]), vec!["\"h\"", "not in the layer"]),
        (tar_of(&[E::Link("h", "/etc/passwd")]), vec!["not in the layer"]),
        (tar_of(&[E::Link("h", "../outside/passwd")]), vec!["hard link target", "\"..\""]),
        (
            tar_of(&[E::Symlink("a", &outside), E::Link("h", "a/passwd")]),
            vec!["\"h\"", "\"a\" is a symlink"],
        ),
        (tar_of(&[E::Symlink("a", "../outside"), E::Link("h", "a/passwd")]), vec!["symlink"]),
        (tar_of(&[E::Dir("d"), E::Link("h", "d")]), vec!["is a directory"]),
    ];
    for (tar, want) in cases {
        assert_refused(&tar, &want);
    }
}

#[test]
fn hard_link_to_a_symlink_links_the_symlink() {
    let f = fixture();
    let before = outside_state(&f);
    unpack(&f, &tar_of(&[E::Symlink("s", &abs(&f, "passwd")), E::Link("h", "s")])).unwrap();
    assert_eq!(outside_state(&f), before);
    let h = fs::symlink_metadata(f.dest.join("h")).unwrap();
    assert!(h.file_type().is_symlink());
    assert_eq!(h.ino(), fs::symlink_metadata(f.dest.join("s")).unwrap().ino());
}

#[test]
fn refuses_whiteouts_through_a_symlink() {
    let probe = fixture();
    let outside = probe.outside.to_str().unwrap().to_owned();
    let tar = tar_of(&[E::Symlink("a", &outside), E::File("a/.wh.passwd", b"")]);
    let (f, _) = assert_refused(&tar, &["a/.wh.passwd", "symlink"]);
    assert!(f.outside.join("passwd").is_file());
    let tar = tar_of(&[E::Symlink("a", &outside), E::File("a/.wh..wh..opq", b"")]);
    let (f, _) = assert_refused(&tar, &["symlink"]);
    assert_eq!(xattr(&f.outside, "trusted.overlay.opaque"), None);
}

#[test]
fn refuses_a_bytes_bomb() {
    let big = vec![7u8; (1 << 20) + 1];
    let (f, err) = assert_refused(&tar_of(&[E::File("big", &big)]), &["\"big\"", "1048576 bytes"]);
    assert!(matches!(err, UnpackError::TooManyBytes { .. }), "{err:?}");
    drop(f);

    // Spread over many files, the total still counts.
    let chunk = vec![1u8; 300 << 10];
    let tar = tar_of(&[
        E::File("1", &chunk),
        E::File("2", &chunk),
        E::File("3", &chunk),
        E::File("4", &chunk),
    ]);
    assert_refused(&tar, &["\"4\"", "limit of 1048576 bytes"]);
}

#[test]
fn refuses_a_huge_declared_size_without_reading_it() {
    let mut tar = Vec::new();
    let h = raw_header(EntryType::Regular, b"liar", b"", 1 << 40);
    tar.extend_from_slice(h.as_bytes());
    tar.extend_from_slice(&[0u8; 4096]);
    let (f, err) = assert_refused(&tar, &["\"liar\""]);
    assert!(matches!(err, UnpackError::TooManyBytes { .. }), "{err:?}");
    assert!(!f.dest.join("liar").exists());
}

#[test]
fn refuses_a_sparse_bomb() {
    fn octal(field: &mut [u8], value: u64) {
        let s = format!("{value:0width$o}\0", width = field.len() - 1);
        field.copy_from_slice(s.as_bytes());
    }
    let mut h = raw_header(EntryType::GNUSparse, b"holes", b"", 512);
    {
        let gnu = h.as_gnu_mut().unwrap();
        octal(&mut gnu.sparse[0].offset, 0);
        octal(&mut gnu.sparse[0].numbytes, 512);
        // GNU tar ends the map with an empty chunk at the real size.
        octal(&mut gnu.sparse[1].offset, 1 << 32);
        octal(&mut gnu.sparse[1].numbytes, 0);
        octal(&mut gnu.realsize, 1 << 32);
    }
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    tar.extend_from_slice(&[b'x'; 512]);
    tar.extend_from_slice(&[0u8; 1024]);
    let (_, err) = assert_refused(&tar, &["\"holes\""]);
    assert!(matches!(err, UnpackError::TooManyBytes { .. }), "{err:?}");

    // A small sparse file is fine and keeps its length.
    let f = fixture();
    let mut h = raw_header(EntryType::GNUSparse, b"small", b"", 512);
    {
        let gnu = h.as_gnu_mut().unwrap();
        octal(&mut gnu.sparse[0].offset, 4096);
        octal(&mut gnu.sparse[0].numbytes, 512);
        octal(&mut gnu.sparse[1].offset, 8192);
        octal(&mut gnu.sparse[1].numbytes, 0);
        octal(&mut gnu.realsize, 8192);
    }
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    tar.extend_from_slice(&[b'x'; 512]);
    tar.extend_from_slice(&[0u8; 1024]);
    let stats = unpack(&f, &tar).unwrap();
    assert_eq!(stats.bytes, 8192);
    let content = fs::read(f.dest.join("small")).unwrap();
    assert_eq!(content.len(), 8192);
    assert!(content[..4096].iter().all(|&b| b == 0));
    assert!(content[4096..4608].iter().all(|&b| b == b'x'));
}

#[test]
fn refuses_an_entries_bomb() {
    let names: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
    let entries: Vec<E<'_>> = names.iter().map(|n| E::File(n, b"")).collect();
    let tar = tar_of(&entries);
    let f = fixture();
    let before = outside_state(&f);
    let err = unpack_layer(
        Cursor::new(&tar),
        &f.dest,
        &UnpackLimits { max_bytes: 1 << 20, max_entries: 10 },
    )
    .unwrap_err();
    assert!(matches!(err, UnpackError::TooManyEntries { .. }), "{err:?}");
    assert!(err.to_string().contains("\"f10\""), "{err}");
    assert!(err.to_string().contains("limit of 10 entries"), "{err}");
    assert_eq!(outside_state(&f), before);
}

#[test]
fn refuses_metadata_bombs() {
    for kind in [EntryType::XHeader, EntryType::GNULongName] {
        let size = 2u64 << 20;
        let mut tar = raw_header(kind, b"././@LongLink", b"", size).as_bytes().to_vec();
        tar.resize(512 + size as usize, b'a');
        tar.extend_from_slice(raw_header(EntryType::Regular, b"f", b"", 0).as_bytes());
        tar.extend_from_slice(&[0u8; 1024]);
        let (_, err) = assert_refused(&tar, &["metadata"]);
        assert!(matches!(err, UnpackError::MetadataTooLarge { .. }), "{err:?}");
    }
    // Data attached to a non-file entry is metadata too.
    let size = 2u64 << 20;
    let mut tar = raw_header(EntryType::Symlink, b"s", b"t", size).as_bytes().to_vec();
    tar.resize(512 + size as usize, b'a');
    tar.extend_from_slice(raw_header(EntryType::Regular, b"f", b"", 0).as_bytes());
    tar.extend_from_slice(&[0u8; 1024]);
    let (_, err) = assert_refused(&tar, &["\"s\""]);
    assert!(matches!(err, UnpackError::MetadataTooLarge { .. }), "{err:?}");
}

#[test]
fn refuses_malformed_entries() {
    let long = format!("{}/x", "a".repeat(256));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (tar_of(&[E::Symlink("s", "")]), "without a target"),
        (tar_of(&[E::File(".wh.", b"")]), "whiteout does not name"),
        (tar_of(&[E::Symlink("./", "/x")]), "root can only be a directory"),
        (tar_of(&[E::File("a", b"x"), E::File("a/b", b"y")]), "\"a\" is not a directory"),
        (tar_of(&[E::File(&long, b"")]), "255"),
    ];
    for (tar, want) in cases {
        assert_refused(&tar, &[want]);
    }
    let mut b = Builder::new(Vec::new());
    let h = raw_header(EntryType::new(b'V'), b"volume", b"", 0);
    b.append(&h, &[][..]).unwrap();
    assert_refused(&b.into_inner().unwrap(), &["\"volume\"", "unsupported tar entry type 'V'"]);
}

fn pax_tar(build: impl FnOnce(&mut Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = Builder::new(Vec::new());
    build(&mut b);
    b.into_inner().unwrap()
}

fn header(kind: EntryType, mode: u32, uid: u64, gid: u64, mtime: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_mtime(mtime);
    h.set_size(0);
    h
}

#[test]
fn keeps_metadata() {
    let f = fixture();
    let long_name = format!("d/{}/file", "long-directory-name".repeat(10));
    let tar = pax_tar(|b| {
        let mut h = header(EntryType::Directory, 0o2755, 1000, 1001, 1_000_000_000);
        b.append_data(&mut h, "d", &[][..]).unwrap();

        b.append_pax_extensions([
            ("SCHILY.xattr.user.test", &b"value"[..]),
            ("SCHILY.xattr.trusted.overlay.redirect", &b"/etc"[..]),
            ("SCHILY.xattr.security.capability", &b"\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"[..]),
            ("mtime", &b"1500000000.25"[..]),
        ])
        .unwrap();
        let mut h = header(EntryType::Regular, 0o4755, 1234, 5678, 1);
        h.set_size(5);
        b.append_data(&mut h, "d/f", &b"hello"[..]).unwrap();

        let mut h = header(EntryType::Link, 0o644, 0, 0, 1);
        b.append_link(&mut h, "d/h", "d/f").unwrap();

        let mut h = header(EntryType::Symlink, 0o777, 7, 8, 1_200_000_000);
        b.append_link(&mut h, "d/s", "/etc/nowhere").unwrap();

        let mut h = header(EntryType::Fifo, 0o600, 9, 10, 1_300_000_000);
        b.append_data(&mut h, "d/p", &[][..]).unwrap();

        let mut h = header(EntryType::Char, 0o666, 0, 0, 1_300_000_000);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        b.append_data(&mut h, "d/null", &[][..]).unwrap();

        let mut h = header(EntryType::Block, 0o660, 0, 6, 1_300_000_000);
        h.set_device_major(7).unwrap();
        h.set_device_minor(0).unwrap();
        b.append_data(&mut h, "d/loop0", &[][..]).unwrap();

        let mut h = header(EntryType::Directory, 0o1777, 0, 0, 1_100_000_000);
        b.append_data(&mut h, "tmp", &[][..]).unwrap();

        let mut h = header(EntryType::Regular, 0o640, 0, 0, 1_400_000_000);
        h.set_size(4);
        b.append_data(&mut h, &long_name, &b"long"[..]).unwrap();
    });
    let stats = unpack(&f, &tar).unwrap();
    assert_eq!(stats, UnpackStats { bytes: 9, entries: 9 });

    let md = |p: &str| fs::symlink_metadata(f.dest.join(p)).unwrap();
    let d = md("d");
    assert!(d.is_dir());
    assert_eq!((d.mode() & 0o7777, d.uid(), d.gid()), (0o2755, 1000, 1001));
    assert_eq!(d.mtime(), 1_000_000_000, "dir mtime survives later children");

    let file = md("d/f");
    assert_eq!((file.mode() & 0o7777, file.uid(), file.gid()), (0o4755, 1234, 5678));
    assert_eq!((file.mtime(), file.mtime_nsec()), (1_500_000_000, 250_000_000));
    assert_eq!(fs::read(f.dest.join("d/f")).unwrap(), b"hello");
    let fpath = f.dest.join("d/f");
    assert_eq!(xattr(&fpath, "user.test").as_deref(), Some(&b"value"[..]));
    assert!(xattr(&fpath, "security.capability").is_some(), "file capability kept");
    assert_eq!(xattr(&fpath, "trusted.overlay.redirect"), None, "overlay xattrs dropped");

    let h = md("d/h");
    assert_eq!(h.ino(), file.ino());
    assert_eq!(h.nlink(), 2);

    let s = md("d/s");
    assert!(s.file_type().is_symlink());
    assert_eq!(fs::read_link(f.dest.join("d/s")).unwrap(), Path::new("/etc/nowhere"));
    assert_eq!((s.uid(), s.gid(), s.mtime()), (7, 8, 1_200_000_000));

    let p = md("d/p");
    assert!(p.file_type().is_fifo());
    assert_eq!((p.mode() & 0o7777, p.uid(), p.gid(), p.mtime()), (0o600, 9, 10, 1_300_000_000));

    let null = md("d/null");
    assert!(null.file_type().is_char_device());
    assert_eq!((null.rdev(), null.mode() & 0o7777), (rfs::makedev(1, 3), 0o666));
    let loop0 = md("d/loop0");
    assert!(loop0.file_type().is_block_device());
    assert_eq!((loop0.rdev(), loop0.gid()), (rfs::makedev(7, 0), 6));

    assert_eq!(md("tmp").mode() & 0o7777, 0o1777);
    assert_eq!(fs::read(f.dest.join(&long_name)).unwrap(), b"long");
    // Directories the archive implied but never listed.
    let implied = md(long_name.rsplit_once('/').unwrap().0);
    assert_eq!((implied.mode() & 0o7777, implied.uid()), (0o755, 0));
}

#[test]
fn converts_whiteouts() {
    let f = fixture();
    let tar = tar_of(&[
        E::Dir("etc"),
        E::File("etc/.wh.motd", b""),
        E::File(".wh.gone-dir", b""),
        E::File("opaque/.wh..wh..opq", b""),
        E::File("opaque/kept", b"k"),
        E::File("etc/.wh..wh.plnk", b""),
        E::File("was-file", b"x"),
        E::File(".wh.was-file", b""),
    ]);
    unpack(&f, &tar).unwrap();
    for name in ["etc/motd", "gone-dir", "was-file"] {
        let md = fs::symlink_metadata(f.dest.join(name)).unwrap();
        assert!(md.file_type().is_char_device(), "{name}");
        assert_eq!((md.rdev(), md.uid(), md.gid()), (0, 0, 0), "{name}");
    }
    for name in ["etc/.wh.motd", ".wh.gone-dir", "etc/.wh..wh.plnk", "opaque/.wh..wh..opq"] {
        assert!(fs::symlink_metadata(f.dest.join(name)).is_err(), "{name} extracted");
    }
    assert_eq!(xattr(&f.dest.join("opaque"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
    assert_eq!(fs::read(f.dest.join("opaque/kept")).unwrap(), b"k");
    assert_eq!(xattr(&f.dest.join("etc"), "trusted.overlay.opaque"), None);
}

#[test]
fn later_entries_replace_earlier_ones() {
    let f = fixture();
    let mut tar = tar_of(&[
        E::File("a", b"one"),
        E::File("a", b"two"),
        E::Dir("b"),
        E::File("b/keep", b"k"),
        E::Dir("c"),
        E::File("c/x/y/z", b"deep"),
        E::File("c", b"now a file"),
        E::File("e", b"file"),
        E::Dir("e"),
    ]);
    // A second "b" directory entry with a different mode, appended by hand.
    let mut h = raw_header(EntryType::Directory, b"b", b"", 0);
    h.set_mode(0o700);
    h.set_cksum();
    let end = tar.len() - 1024;
    tar.truncate(end);
    tar.extend_from_slice(h.as_bytes());
    tar.extend_from_slice(&[0u8; 1024]);

    unpack(&f, &tar).unwrap();
    assert_eq!(fs::read(f.dest.join("a")).unwrap(), b"two");
    assert_eq!(fs::read(f.dest.join("b/keep")).unwrap(), b"k");
    assert_eq!(fs::symlink_metadata(f.dest.join("b")).unwrap().mode() & 0o7777, 0o700);
    assert_eq!(fs::read(f.dest.join("c")).unwrap(), b"now a file");
    assert!(fs::symlink_metadata(f.dest.join("e")).unwrap().is_dir());
}

#[test]
fn removes_a_deep_tree_without_following_symlinks() {
    let f = fixture();
    let before = outside_state(&f);
    let deep = (0..200).map(|i| format!("n{i}")).collect::<Vec<_>>().join("/");
    let outside = f.outside.to_str().unwrap().to_owned();
    let tar = tar_of(&[
        E::File(&format!("t/{deep}/leaf"), b"x"),
        E::Symlink("t/escape", &outside),
        E::File("t", b"replaced"),
    ]);
    unpack(&f, &tar).unwrap();
    assert_eq!(fs::read(f.dest.join("t")).unwrap(), b"replaced");
    assert_eq!(outside_state(&f), before);
}

#[test]
fn root_entry_sets_layer_root_metadata() {
    let f = fixture();
    let mut h = raw_header(EntryType::Directory, b"./", b"", 0);
    h.set_mode(0o751);
    h.set_mtime(1_234_567_890);
    h.set_cksum();
    let mut b = Builder::new(Vec::new());
    b.append(&h, &[][..]).unwrap();
    b.append(&raw_header(EntryType::Regular, b"./f", b"", 0), &[][..]).unwrap();
    unpack(&f, &b.into_inner().unwrap()).unwrap();
    let md = fs::metadata(&f.dest).unwrap();
    assert_eq!((md.mode() & 0o7777, md.mtime()), (0o751, 1_234_567_890));
}

#[test]
fn truncated_archive_is_an_error() {
    let mut tar = tar_of(&[E::File("f", &[1u8; 2000])]);
    tar.truncate(1000);
    let (_, err) = assert_refused(&tar, &["\"f\""]);
    assert!(matches!(err, UnpackError::Io { .. } | UnpackError::Read { .. }), "{err:?}");
}

#[test]
fn compressed_round_trips() {
    let tar = tar_of(&[E::Dir("bin"), E::File("bin/sh", b"#!busybox"), E::Symlink("sh", "bin/sh")]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    for (media_type, blob) in [
        ("application/vnd.oci.image.layer.v1.tar", tar.clone()),
        ("application/vnd.oci.image.layer.v1.tar+gzip", gz.clone()),
        ("application/vnd.docker.image.rootfs.diff.tar.gzip", gz),
        ("application/vnd.oci.image.layer.v1.tar+zstd", zst),
    ] {
        let f = fixture();
        let reader = super::super::decompress(media_type, Cursor::new(blob)).unwrap();
        let stats = unpack_layer(reader, &f.dest, &limits()).unwrap();
        assert_eq!(stats, UnpackStats { bytes: 9, entries: 3 }, "{media_type}");
        assert_eq!(fs::read(f.dest.join("bin/sh")).unwrap(), b"#!busybox");
        assert_eq!(fs::read_link(f.dest.join("sh")).unwrap(), Path::new("bin/sh"));
    }
}

#[test]
fn missing_dest_is_an_error() {
    let f = fixture();
    let err = unpack_layer(Cursor::new(tar_of(&[])), &f.root.join("nope"), &limits()).unwrap_err();
    assert!(matches!(err, UnpackError::Dest { .. }), "{err:?}");
}

#[test]
fn pax_times() {
    let t = |s: &str| parse_pax_time(s.as_bytes()).map(|t| (t.tv_sec, t.tv_nsec));
    assert_eq!(t("1500000000"), Some((1_500_000_000, 0)));
    assert_eq!(t("1500000000.5"), Some((1_500_000_000, 500_000_000)));
    assert_eq!(t("1.1234567899"), Some((1, 123_456_789)));
    assert_eq!(t("-1.5"), Some((-2, 500_000_000)));
    assert_eq!(t("-3"), Some((-3, 0)));
    for bad in ["", ".5", "1.x", "abc", "1e5", "99999999999999999999"] {
        assert_eq!(t(bad), None, "{bad}");
    }
}

#[test]
fn out_of_range_ids_are_refused() {
    let tar = pax_tar(|b| {
        b.append_pax_extensions([("uid", &b"99999999999"[..])]).unwrap();
        let mut h = header(EntryType::Regular, 0o644, 0, 0, 1);
        b.append_data(&mut h, "f", &[][..]).unwrap();
    });
    assert_refused(&tar, &["\"f\"", "uid 99999999999 is out of range"]);
}

#[test]
fn pax_global_headers_are_skipped() {
    let f = fixture();
    let mut b = Builder::new(Vec::new());
    let record = b"19 comment=ignore!\n";
    let h = raw_header(EntryType::XGlobalHeader, b"../pax_global_header", b"", 19);
    b.append(&h, &record[..]).unwrap();
    b.append(&raw_header(EntryType::Regular, b"f", b"", 1), &b"x"[..]).unwrap();
    let stats = unpack(&f, &b.into_inner().unwrap()).unwrap();
    assert_eq!(stats, UnpackStats { bytes: 1, entries: 2 });
}

/// Corrupted and truncated archives must fail cleanly, never panic or escape.
#[test]
fn mangled_archives_never_panic_or_escape() {
    let base = pax_tar(|b| {
        b.append_pax_extensions([("SCHILY.xattr.user.a", &b"b"[..])]).unwrap();
        let mut h = header(EntryType::Regular, 0o644, 0, 0, 1);
        h.set_size(600);
        b.append_data(&mut h, "dir/file", &[5u8; 600][..]).unwrap();
        let mut h = header(EntryType::Symlink, 0o777, 0, 0, 1);
        b.append_link(&mut h, "dir/link", "../../outside").unwrap();
        let mut h = header(EntryType::Link, 0o644, 0, 0, 1);
        let long = format!("dir/{}", "x".repeat(150));
        b.append_link(&mut h, &long, "dir/file").unwrap();
    });
    let f = fixture();
    let before = outside_state(&f);
    let mut variants: Vec<Vec<u8>> =
        (0..base.len()).step_by(97).map(|n| base[..n].to_vec()).collect();
    // Garbage in every header field, with a valid checksum so the parser looks further.
    for header_start in (0..base.len()).step_by(512).take(8) {
        for offset in (0..512).step_by(11) {
            for value in [0u8, b'7', b'/', 0xff] {
                let mut tar = base.clone();
                tar[header_start + offset] = value;
                let block = &mut tar[header_start..header_start + 512];
                let mut h = Header::new_old();
                h.as_mut_bytes().copy_from_slice(block);
                h.set_cksum();
                block.copy_from_slice(h.as_bytes());
                variants.push(tar);
            }
        }
    }
    for tar in &variants {
        let dest = f.root.join("layer");
        let _ = fs::remove_dir_all(&dest);
        fs::create_dir(&dest).unwrap();
        let _ = unpack_layer(Cursor::new(tar), &dest, &limits());
    }
    assert_eq!(outside_state(&f), before);
}
