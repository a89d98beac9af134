//! An entry's kind and metadata read from its tar header, and its owner, mode, xattrs
//! and times applied to what the unpacker made.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use rustix::fs::{self as rfs, AtFlags, Gid, Mode, Timespec, Timestamps, Uid};
use rustix::io::Errno;

use super::error::{io_err, UnpackError};

const PAX_XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";

/// What an entry is, with what its kind needs.
pub(super) enum Kind {
    File,
    Dir,
    Symlink(Vec<u8>),
    HardLink(Vec<u8>),
    Fifo,
    CharDevice(rfs::Dev),
    BlockDevice(rfs::Dev),
    /// PAX global headers: nothing to create.
    Ignored,
}

/// Ownership, mode, times and xattrs an entry carries.
pub(super) struct Meta {
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) mode: u32,
    pub(super) times: Timestamps,
    pub(super) xattrs: Vec<(OsString, Vec<u8>)>,
}

/// Where to apply metadata to something that was just created.
pub(super) enum Target<'a> {
    /// An open regular file or directory.
    Fd(BorrowedFd<'a>),
    /// A symlink, fifo or device node: never opened, addressed by name in its parent.
    Name(BorrowedFd<'a>, &'a OsStr),
}

/// Parses a PAX time (`seconds[.fraction]`, possibly negative).
pub(super) fn parse_pax_time(value: &[u8]) -> Option<Timespec> {
    let text = std::str::from_utf8(value).ok()?;
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut secs: i64 = secs.parse().ok()?;
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let mut nanos: i64 = digits.parse().ok()?;
    if negative {
        secs = -secs;
        if nanos > 0 {
            secs -= 1;
            nanos = 1_000_000_000 - nanos;
        }
    }
    Some(Timespec { tv_sec: secs, tv_nsec: nanos as _ })
}

pub(super) fn kind_of<R: Read>(
    entry: &tar::Entry<'_, R>,
    trailing_slash: bool,
) -> Result<Kind, String> {
    use tar::EntryType as T;
    let header = entry.header();
    let link_target = || -> Result<Vec<u8>, String> {
        match entry.link_name_bytes() {
            Some(target) if !target.is_empty() => {
                if target.contains(&0) {
                    Err("link target contains a NUL byte".into())
                } else {
                    Ok(target.into_owned())
                }
            }
            _ => Err("link entry without a target".into()),
        }
    };
    let device = || -> Result<rfs::Dev, String> {
        let major = header.device_major().map_err(|e| format!("bad device major: {e}"))?;
        let minor = header.device_minor().map_err(|e| format!("bad device minor: {e}"))?;
        match (major, minor) {
            (Some(major), Some(minor)) => Ok(rfs::makedev(major, minor)),
            _ => Err("device entry without device numbers".into()),
        }
    };
    Ok(match header.entry_type() {
        T::Regular if trailing_slash => Kind::Dir,
        T::Regular | T::Continuous | T::GNUSparse => Kind::File,
        T::Directory => Kind::Dir,
        T::Symlink => Kind::Symlink(link_target()?),
        T::Link => Kind::HardLink(link_target()?),
        T::Fifo => Kind::Fifo,
        T::Char => Kind::CharDevice(device()?),
        T::Block => Kind::BlockDevice(device()?),
        T::XGlobalHeader => Kind::Ignored,
        other => {
            return Err(format!("unsupported tar entry type {:?}", char::from(other.as_byte())))
        }
    })
}

pub(super) fn meta_of<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Meta, String> {
    let header = entry.header();
    let id = |value: io::Result<u64>, what: &str| -> Result<u32, String> {
        let value = value.map_err(|e| format!("bad {what}: {e}"))?;
        u32::try_from(value).map_err(|_| format!("{what} {value} is out of range"))
    };
    let uid = id(header.uid(), "uid")?;
    let gid = id(header.gid(), "gid")?;
    let mode = header.mode().map_err(|e| format!("bad mode: {e}"))? & 0o7777;
    let mtime = header.mtime().map_err(|e| format!("bad mtime: {e}"))?;
    let mut mtime = Timespec {
        tv_sec: i64::try_from(mtime).map_err(|_| format!("mtime {mtime} is out of range"))?,
        tv_nsec: 0,
    };
    let mut atime = None;
    let mut xattrs = Vec::new();
    if let Some(extensions) =
        entry.pax_extensions().map_err(|e| format!("reading PAX extensions: {e}"))?
    {
        for extension in extensions {
            let extension = extension.map_err(|e| format!("malformed PAX record: {e}"))?;
            let key = extension.key_bytes();
            let value = extension.value_bytes();
            if let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX) {
                if name.is_empty() || name.contains(&0) {
                    return Err("PAX xattr record with an invalid name".into());
                }
                xattrs.push((OsStr::from_bytes(name).to_owned(), value.to_vec()));
            } else if key == b"mtime" {
                mtime = parse_pax_time(value).ok_or("malformed PAX mtime")?;
            } else if key == b"atime" {
                atime = Some(parse_pax_time(value).ok_or("malformed PAX atime")?);
            }
        }
    }
    Ok(Meta {
        uid,
        gid,
        mode,
        times: Timestamps { last_access: atime.unwrap_or(mtime), last_modification: mtime },
        xattrs,
    })
}

/// Owner, mode, xattrs, then times — in that order because chown clears setuid/setgid
/// and the file-capability xattr, and every change bumps ctime but setting times last
/// keeps the recorded mtime.
pub(super) fn apply_meta(
    target: Target<'_>,
    meta: &Meta,
    chmod: bool,
    shown: &str,
) -> Result<(), UnpackError> {
    let regular = matches!(target, Target::Fd(_));
    apply_owner_mode_xattrs(target.reborrow(), meta, chmod, regular, shown)?;
    match target {
        Target::Fd(fd) => rfs::futimens(fd, &meta.times),
        Target::Name(dir, name) => {
            rfs::utimensat(dir, name, &meta.times, AtFlags::SYMLINK_NOFOLLOW)
        }
    }
    .map_err(|e| io_err(shown, "setting times", e))
}

impl Target<'_> {
    fn reborrow(&self) -> Target<'_> {
        match *self {
            Target::Fd(fd) => Target::Fd(fd),
            Target::Name(dir, name) => Target::Name(dir, name),
        }
    }
}

pub(super) fn apply_owner_mode_xattrs(
    target: Target<'_>,
    meta: &Meta,
    chmod: bool,
    user_xattrs_allowed: bool,
    shown: &str,
) -> Result<(), UnpackError> {
    let uid = Some(Uid::from_raw(meta.uid));
    let gid = Some(Gid::from_raw(meta.gid));
    let mode = Mode::from_raw_mode(meta.mode);
    match target {
        Target::Fd(fd) => {
            rfs::fchown(fd, uid, gid).map_err(|e| io_err(shown, "chown", e))?;
            if chmod {
                rfs::fchmod(fd, mode).map_err(|e| io_err(shown, "chmod", e))?;
            }
        }
        Target::Name(dir, name) => {
            rfs::chownat(dir, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| io_err(shown, "chown", e))?;
            if chmod {
                // Only ever called on a fifo or device node this unpack just created in a
                // directory nobody else writes to, so following (which fchmodat cannot
                // avoid here) finds that very node.
                rfs::chmodat(dir, name, mode, AtFlags::empty())
                    .map_err(|e| io_err(shown, "chmod", e))?;
            }
        }
    }
    for (name, value) in &meta.xattrs {
        let bytes = name.as_bytes();
        if bytes.starts_with(b"trusted.overlay.") || bytes.starts_with(b"user.overlay.") {
            continue;
        }
        let result = match target {
            Target::Fd(fd) => rfs::fsetxattr(fd, name.as_os_str(), value, rfs::XattrFlags::empty()),
            Target::Name(dir, entry) => {
                // No fd to set xattrs through for a symlink or device: address it through
                // the parent's fd; `l` keeps the last component from being followed.
                let mut path = OsString::from(format!("/proc/self/fd/{}/", dir.as_raw_fd()));
                path.push(entry);
                rfs::lsetxattr(
                    PathBuf::from(path).as_path(),
                    name.as_os_str(),
                    value,
                    rfs::XattrFlags::empty(),
                )
            }
        };
        match result {
            Ok(()) | Err(Errno::OPNOTSUPP) => {}
            Err(Errno::PERM) if bytes.starts_with(b"user.") && !user_xattrs_allowed => {}
            Err(e) => {
                return Err(io_err(
                    shown,
                    format!("setting xattr {}", String::from_utf8_lossy(bytes)),
                    e,
                ))
            }
        }
    }
    Ok(())
}
