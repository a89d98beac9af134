//! Extracting one OCI image layer (an untrusted tar stream) into a fresh directory that
//! becomes an overlayfs lower dir.
//!
//! Safety model:
//! - Entry names are normalised: leading `/` and `.` components are dropped (tar names are
//!   relative to the layer root whatever they look like); a `..` component, a NUL byte, a
//!   component over 255 bytes or a name over 4096 bytes rejects the layer. Real layers
//!   never contain these, and refusing is clearer than guessing.
//! - Every path is resolved component by component below a directory fd for the layer
//!   root, never following a symlink (see `beneath`). An entry whose parent is a symlink
//!   — whether the archive made it or not — is refused rather than followed, so a layer
//!   cannot write, link, whiteout or chmod through a symlink it planted. Symlink *targets*
//!   are stored verbatim: they are only dangerous when followed, and this code never
//!   follows one.
//! - Hard-link targets are resolved the same way and must already exist in the layer; the
//!   link is made with `linkat` without `AT_SYMLINK_FOLLOW`, so linking to a symlink links
//!   the symlink itself.
//! - Fifos and device nodes are never opened; their metadata is set by name relative to
//!   their parent fd.
//! - Device nodes are created, as containerd does when running as root: base images carry
//!   a few (`/dev/null` and friends), and whether a container may *use* a device is
//!   decided by the device cgroup and the mount options of its rootfs, not by the layer.
//! - xattrs from the archive are applied, except overlayfs's own (`trusted.overlay.*`,
//!   `user.overlay.*`): a layer must not forge redirects, metacopy or opaque markers; it
//!   says "opaque" with an OCI `.wh..wh..opq` entry instead. xattrs the filesystem does not
//!   support, and `user.*` xattrs on non-regular files (which Linux forbids), are skipped.
//! - Bombs: `max_entries` bounds how many entries (inodes) a layer may create;
//!   `max_bytes` bounds the bytes of file content written, counted as they are produced —
//!   so a sparse file counts its holes and a file that lies about its size still stops at
//!   the limit — and refused up front when an entry's declared size alone exceeds what
//!   is left. Tar metadata (headers, PAX records, GNU long names, skipped data of non-file
//!   entries) between two entries may not exceed [`METADATA_WINDOW`] bytes, so a huge PAX
//!   record cannot make the tar parser buffer gigabytes. [`unpack_layer_bounded`] also
//!   checks an [`ExpansionGuard`] (expansion ratio, free space) as bytes are read and
//!   written; unpacked bytes are the larger of tar bytes read and content written, so
//!   sparse holes count too.

use std::cell::{Cell, RefCell};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

use rustix::fs::{self as rfs, AtFlags, FileType, Gid, Mode, OFlags, Timestamps, Uid};
use rustix::io::Errno;

use super::beneath::{self, WalkError};
use super::expansion::{ExpansionError, ExpansionGuard};

mod entry_meta;
mod error;
use entry_meta::{apply_meta, apply_owner_mode_xattrs, kind_of, meta_of, Kind, Meta, Target};
pub use error::UnpackError;
use error::{io_err, rejected};

/// Bytes of tar metadata allowed between the end of one entry's content and the start of
/// the next: generous for PAX records full of xattrs, far too small to hurt.
pub const METADATA_WINDOW: u64 = 1 << 20;

const PATH_MAX_BYTES: usize = 4096;
const NAME_MAX_BYTES: usize = 255;
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// AUFS metadata entries (`.wh..wh.plnk`, `.wh..wh.aufs`, …) share this prefix.
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const OPAQUE_WHITEOUT: &[u8] = b".wh..wh..opq";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// What one layer may create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Bytes of regular-file content (holes of sparse files included).
    pub max_bytes: u64,
    /// Archive entries, of any kind.
    pub max_entries: u64,
}

impl Default for UnpackLimits {
    /// Far above any real layer (64 GiB, 10 million entries), well below a full disk.
    fn default() -> Self {
        Self { max_bytes: 64 << 30, max_entries: 10_000_000 }
    }
}

/// What an unpack wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Bytes of regular-file content written.
    pub bytes: u64,
    /// Archive entries processed (whiteouts and directories included).
    pub entries: u64,
}

/// Extracts the (already decompressed, see [`super::decompress()`]) layer tar `reader`
/// into `dest`, an existing, empty directory private to this call, converting OCI
/// whiteouts into overlayfs whiteouts (`.wh.NAME` → a 0/0 character device `NAME`) and
/// opaque directories (`.wh..wh..opq` → `trusted.overlay.opaque=y` on its directory).
///
/// Owners (numeric), modes including setuid/setgid/sticky, modification times, xattrs,
/// hard links, symlinks, fifos and device nodes are kept; a later entry replaces an
/// earlier one of the same name (a directory over a directory only updates its metadata).
/// Must run as root (it sets owners, makes device nodes and sets `trusted.*` xattrs).
///
/// After the tar end-of-archive marker, `reader` is drained (at most `max_bytes` more)
/// so that a caller hashing it sees the whole stream.
///
/// On error `dest` is left partly written and the caller must delete it; the error names
/// the offending entry and why. See the module docs for the safety rules.
pub fn unpack_layer(
    reader: impl Read,
    dest: &Path,
    limits: &UnpackLimits,
) -> Result<UnpackStats, UnpackError> {
    unpack_layer_bounded(reader, dest, limits, None)
}

/// [`unpack_layer`], also refusing the layer as soon as `guard` does.
pub fn unpack_layer_bounded(
    reader: impl Read,
    dest: &Path,
    limits: &UnpackLimits,
    guard: Option<ExpansionGuard>,
) -> Result<UnpackStats, UnpackError> {
    let meter = Rc::new(Meter { guard: RefCell::new(guard), ..Meter::default() });
    let result = unpack_metered(reader, dest, limits, &meter);
    // The guard trips inside a read, so the tar parser may have reported it as anything
    // (a bad header, a short entry); what it refused is the true cause.
    match meter.exceeded.take() {
        Some(e) => Err(UnpackError::Expansion(e)),
        None => result,
    }
}

fn unpack_metered(
    reader: impl Read,
    dest: &Path,
    limits: &UnpackLimits,
    meter: &Rc<Meter>,
) -> Result<UnpackStats, UnpackError> {
    let root = rfs::open(dest, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| UnpackError::Dest { path: dest.to_owned(), source: e.into() })?;

    let mut archive = tar::Archive::new(Metered { inner: reader, meter: Rc::clone(meter) });
    let start = "<start of archive>".to_owned();
    let mut entries =
        archive.entries().map_err(|source| UnpackError::Read { after: start.clone(), source })?;

    let mut unpacker = Unpacker {
        root,
        limits: *limits,
        stats: UnpackStats::default(),
        dir_times: Vec::new(),
        buf: vec![0; 128 << 10],
        meter: Rc::clone(meter),
    };
    let mut last = start;
    loop {
        meter.open_window(METADATA_WINDOW);
        let next = entries.next();
        meter.close_window();
        let entry = match next {
            None => break,
            Some(Ok(entry)) => entry,
            Some(Err(_)) if meter.tripped.get() => {
                return Err(UnpackError::MetadataTooLarge { after: last, limit: METADATA_WINDOW })
            }
            Some(Err(source)) => return Err(UnpackError::Read { after: last, source }),
        };
        let shown = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if unpacker.stats.entries >= limits.max_entries {
            return Err(UnpackError::TooManyEntries { path: shown, limit: limits.max_entries });
        }
        unpacker.stats.entries += 1;
        unpacker.entry(entry, &shown)?;
        last = shown;
    }
    unpacker.apply_dir_times()?;
    // Trailing padding still passes through the meter, so a bomb hidden after the
    // end-of-archive marker meets the same bounds as one inside it.
    let rest = &mut archive.into_inner().take(limits.max_bytes);
    io::copy(rest, &mut io::sink())
        .map_err(|source| UnpackError::Read { after: "<end of archive>".into(), source })?;
    Ok(unpacker.stats)
}

/// Counts bytes read from the tar stream and refuses to read past a limit, which the
/// unpacker moves so that only bounded metadata can be read between entries; and feeds
/// the expansion guard, if any.
#[derive(Default)]
struct Meter {
    consumed: Cell<u64>,
    limit: Cell<Option<u64>>,
    tripped: Cell<bool>,
    guard: RefCell<Option<ExpansionGuard>>,
    /// Why the guard refused the layer, once it has.
    exceeded: RefCell<Option<ExpansionError>>,
}

impl Meter {
    /// Tells the guard the layer has produced `unpacked` bytes.
    fn grow_to(&self, unpacked: u64) -> Result<(), ExpansionError> {
        let mut guard = self.guard.borrow_mut();
        let Some(guard) = guard.as_mut() else { return Ok(()) };
        guard.grow_to(unpacked).inspect_err(|e| {
            self.exceeded.replace(Some(e.clone()));
        })
    }

    fn open_window(&self, bytes: u64) {
        self.limit.set(Some(self.consumed.get().saturating_add(bytes)));
    }

    fn close_window(&self) {
        self.limit.set(None);
    }
}

struct Metered<R> {
    inner: R,
    meter: Rc<Meter>,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let consumed = self.meter.consumed.get();
        let allowed = match self.meter.limit.get() {
            None => buf.len(),
            Some(limit) => {
                let left = limit.saturating_sub(consumed);
                if left == 0 && !buf.is_empty() {
                    self.meter.tripped.set(true);
                    return Err(io::Error::other("tar metadata limit exceeded"));
                }
                buf.len().min(usize::try_from(left).unwrap_or(usize::MAX))
            }
        };
        let n = self.inner.read(&mut buf[..allowed])?;
        let consumed = consumed.saturating_add(n as u64);
        self.meter.consumed.set(consumed);
        self.meter.grow_to(consumed).map_err(io::Error::other)?;
        Ok(n)
    }
}

struct Unpacker {
    root: OwnedFd,
    limits: UnpackLimits,
    stats: UnpackStats,
    /// Directory mtimes are set last: creating entries inside a directory changes it.
    dir_times: Vec<(Vec<OsString>, Timestamps)>,
    buf: Vec<u8>,
    meter: Rc<Meter>,
}

/// Splits an archive name into safe components; empty means the layer root.
fn normalise(raw: &[u8]) -> Result<Vec<OsString>, String> {
    if raw.contains(&0) {
        return Err("name contains a NUL byte".into());
    }
    if raw.len() > PATH_MAX_BYTES {
        return Err(format!(
            "name is {} bytes long; at most {PATH_MAX_BYTES} are allowed",
            raw.len()
        ));
    }
    let mut components = Vec::new();
    for component in raw.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                return Err(
                    "name has a \"..\" component; entries may not climb out of the layer".into()
                )
            }
            c if c.len() > NAME_MAX_BYTES => {
                return Err(format!(
                    "a name component is {} bytes long; at most {NAME_MAX_BYTES} are allowed",
                    c.len()
                ))
            }
            c => components.push(OsStr::from_bytes(c).to_owned()),
        }
    }
    Ok(components)
}

fn show(components: &[OsString]) -> String {
    let joined: Vec<u8> = components.iter().map(|c| c.as_bytes()).collect::<Vec<_>>().join(&b'/');
    String::from_utf8_lossy(&joined).into_owned()
}

fn describe_walk(components: &[OsString], err: &WalkError) -> (String, Option<Errno>) {
    let prefix = |depth: usize| show(&components[..depth.min(components.len())]);
    match *err {
        WalkError::Symlink { depth } => (
            format!("{:?} is a symlink; refusing to resolve a path through it", prefix(depth)),
            None,
        ),
        WalkError::NotDir { depth } => (format!("{:?} is not a directory", prefix(depth)), None),
        WalkError::Missing { depth } => (format!("{:?} does not exist", prefix(depth)), None),
        WalkError::Io { depth, errno } => {
            (format!("opening directory {:?}", prefix(depth)), Some(errno))
        }
    }
}

impl Unpacker {
    fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    fn entry<R: Read>(
        &mut self,
        mut entry: tar::Entry<'_, R>,
        shown: &str,
    ) -> Result<(), UnpackError> {
        let raw_path = entry.path_bytes().into_owned();
        let kind = kind_of(&entry, raw_path.ends_with(b"/")).map_err(|r| rejected(shown, r))?;
        if let Kind::Ignored = kind {
            return Ok(());
        }
        let components = normalise(&raw_path).map_err(|reason| rejected(shown, reason))?;
        let meta = meta_of(&mut entry).map_err(|r| rejected(shown, r))?;

        let Some((name, parent)) = components.split_last() else {
            return match kind {
                Kind::Dir => self.dir(&[], &meta, shown),
                _ => Err(rejected(shown, "the layer root can only be a directory")),
            };
        };
        if name.as_bytes().starts_with(WHITEOUT_PREFIX) {
            return self.whiteout(parent, name, shown);
        }
        match kind {
            Kind::Dir => self.dir(&components, &meta, shown),
            Kind::File => {
                let parent_fd = self.parent(parent, shown)?;
                self.file(&mut entry, parent_fd.as_fd(), name, &meta, shown)
            }
            Kind::Symlink(target) => {
                let parent_fd = self.parent(parent, shown)?;
                let dir = parent_fd.as_fd();
                replace(dir, name, shown)?;
                rfs::symlinkat(target.as_slice(), dir, name.as_os_str())
                    .map_err(|e| io_err(shown, "creating symlink", e))?;
                apply_meta(Target::Name(dir, name), &meta, false, shown)
            }
            Kind::HardLink(target) => self.hard_link(parent, name, &components, &target, shown),
            Kind::Fifo | Kind::CharDevice(_) | Kind::BlockDevice(_) => {
                let (file_type, dev) = match kind {
                    Kind::CharDevice(dev) => (FileType::CharacterDevice, dev),
                    Kind::BlockDevice(dev) => (FileType::BlockDevice, dev),
                    _ => (FileType::Fifo, 0),
                };
                let parent_fd = self.parent(parent, shown)?;
                let dir = parent_fd.as_fd();
                replace(dir, name, shown)?;
                rfs::mknodat(dir, name.as_os_str(), file_type, Mode::empty(), dev)
                    .map_err(|e| io_err(shown, "creating special file", e))?;
                apply_meta(Target::Name(dir, name), &meta, true, shown)
            }
            Kind::Ignored => Ok(()),
        }
    }

    /// Opens (creating as needed) the parent directory of an entry.
    fn parent(&self, components: &[OsString], shown: &str) -> Result<OwnedFd, UnpackError> {
        beneath::walk(self.root(), components, true).map_err(|e| {
            match describe_walk(components, &e) {
                (reason, None) => rejected(shown, format!("parent {reason}")),
                (op, Some(errno)) => io_err(shown, op, errno),
            }
        })
    }

    fn dir(
        &mut self,
        components: &[OsString],
        meta: &Meta,
        shown: &str,
    ) -> Result<(), UnpackError> {
        let dir = match components.split_last() {
            None => beneath::walk(self.root(), &[], false)
                .map_err(|_| io_err(shown, "opening the layer root", Errno::IO))?,
            Some((name, parent)) => {
                let parent_fd = self.parent(parent, shown)?;
                let parent_fd = parent_fd.as_fd();
                let existing = beneath::file_type_at(parent_fd, name)
                    .map_err(|e| io_err(shown, "inspecting existing entry", e))?;
                match existing {
                    Some(FileType::Directory) => {}
                    Some(_) => {
                        replace(parent_fd, name, shown)?;
                        make_dir(parent_fd, name, shown)?;
                    }
                    None => make_dir(parent_fd, name, shown)?,
                }
                beneath::open_dir_at(parent_fd, name)
                    .map_err(|e| io_err(shown, "opening directory", e))?
            }
        };
        apply_owner_mode_xattrs(Target::Fd(dir.as_fd()), meta, true, true, shown)?;
        self.dir_times.push((components.to_vec(), meta.times.clone()));
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        meta: &Meta,
        shown: &str,
    ) -> Result<(), UnpackError> {
        let too_big =
            || UnpackError::TooManyBytes { path: shown.to_owned(), limit: self.limits.max_bytes };
        let mut left = self.limits.max_bytes.saturating_sub(self.stats.bytes);
        if entry.size() > left {
            return Err(too_big());
        }
        replace(dir, name, shown)?;
        let fd =
            beneath::create_file_at(dir, name).map_err(|e| io_err(shown, "creating file", e))?;
        let mut file = File::from(fd);
        let mut written = 0u64;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err(shown, "reading file content from the archive", e)),
            };
            if n > left {
                return Err(too_big());
            }
            left -= n;
            // Sparse holes come from the tar parser, not the stream: count what is written.
            self.meter.grow_to(self.stats.bytes + written + n).map_err(UnpackError::Expansion)?;
            file.write_all(&self.buf[..n as usize])
                .map_err(|e| io_err(shown, "writing file", e))?;
            written += n;
        }
        self.stats.bytes += written;
        apply_meta(Target::Fd(file.as_fd()), meta, true, shown)
    }

    fn hard_link(
        &mut self,
        parent: &[OsString],
        name: &OsStr,
        components: &[OsString],
        raw_target: &[u8],
        shown: &str,
    ) -> Result<(), UnpackError> {
        let target = normalise(raw_target)
            .map_err(|reason| rejected(shown, format!("hard link target: {reason}")))?;
        if target == components {
            return Ok(());
        }
        let Some((target_name, target_parent)) = target.split_last() else {
            return Err(rejected(shown, "hard link to the layer root"));
        };
        let not_in_layer = || {
            rejected(
                shown,
                format!(
                    "hard link target {:?} is not in the layer (links may only point at \
                     earlier entries)",
                    show(&target)
                ),
            )
        };
        let target_dir = beneath::walk(self.root(), target_parent, false).map_err(|e| {
            match describe_walk(target_parent, &e) {
                _ if matches!(e, WalkError::Missing { .. }) => not_in_layer(),
                (reason, None) => rejected(shown, format!("hard link target parent {reason}")),
                (op, Some(errno)) => io_err(shown, format!("hard link target: {op}"), errno),
            }
        })?;
        match beneath::file_type_at(target_dir.as_fd(), target_name)
            .map_err(|e| io_err(shown, "inspecting hard link target", e))?
        {
            None => return Err(not_in_layer()),
            Some(FileType::Directory) => {
                return Err(rejected(
                    shown,
                    format!("hard link target {:?} is a directory", show(&target)),
                ))
            }
            Some(_) => {}
        }
        let parent_fd = self.parent(parent, shown)?;
        replace(parent_fd.as_fd(), name, shown)?;
        rfs::linkat(
            target_dir.as_fd(),
            target_name.as_os_str(),
            parent_fd.as_fd(),
            name,
            AtFlags::empty(),
        )
        .map_err(|e| io_err(shown, format!("linking to {:?}", show(&target)), e))
    }

    fn whiteout(
        &mut self,
        parent: &[OsString],
        name: &OsStr,
        shown: &str,
    ) -> Result<(), UnpackError> {
        let bytes = name.as_bytes();
        let parent_fd = self.parent(parent, shown)?;
        let dir = parent_fd.as_fd();
        if bytes == OPAQUE_WHITEOUT {
            return rfs::fsetxattr(dir, OVERLAY_OPAQUE_XATTR, b"y", rfs::XattrFlags::empty())
                .map_err(|e| io_err(shown, "marking directory opaque", e));
        }
        if bytes.starts_with(WHITEOUT_META_PREFIX) {
            return Ok(());
        }
        let hidden = OsStr::from_bytes(&bytes[WHITEOUT_PREFIX.len()..]);
        if hidden.is_empty() || hidden == "." || hidden == ".." {
            return Err(rejected(shown, "whiteout does not name an entry"));
        }
        replace(dir, hidden, shown)?;
        rfs::mknodat(dir, hidden, FileType::CharacterDevice, Mode::empty(), rfs::makedev(0, 0))
            .map_err(|e| io_err(shown, "creating overlay whiteout", e))?;
        rfs::chownat(dir, hidden, Some(Uid::ROOT), Some(Gid::ROOT), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| io_err(shown, "chown of overlay whiteout", e))
    }

    fn apply_dir_times(&mut self) -> Result<(), UnpackError> {
        for (components, times) in std::mem::take(&mut self.dir_times) {
            let shown = show(&components);
            let dir = match beneath::walk(self.root(), &components, false) {
                Ok(dir) => dir,
                // Replaced by a later non-directory entry: nothing left to date.
                Err(
                    WalkError::Missing { .. }
                    | WalkError::NotDir { .. }
                    | WalkError::Symlink { .. },
                ) => continue,
                Err(WalkError::Io { errno, .. }) => {
                    return Err(io_err(&shown, "opening directory to set its times", errno))
                }
            };
            rfs::futimens(&dir, &times).map_err(|e| io_err(&shown, "setting times", e))?;
        }
        Ok(())
    }
}

fn make_dir(parent: BorrowedFd<'_>, name: &OsStr, shown: &str) -> Result<(), UnpackError> {
    rfs::mkdirat(parent, name, Mode::from_raw_mode(0o700))
        .map_err(|e| io_err(shown, "creating directory", e))
}

/// Clears the way for a new non-directory (or directory) entry `name`.
fn replace(dir: BorrowedFd<'_>, name: &OsStr, shown: &str) -> Result<(), UnpackError> {
    beneath::remove_at(dir, name)
        .map(|_| ())
        .map_err(|e| io_err(shown, "removing the existing entry it replaces", e))
}

#[cfg(test)]
mod bomb_tests;
#[cfg(test)]
mod tests;
