//! Filesystem operations confined beneath a directory fd.
//!
//! Every lookup is one path component at a time through `openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV`, so
//! no symlink is ever followed, `..` cannot climb out, and nothing mounted inside the
//! tree is entered. Callers hand in already-validated components (no `/`, `.`, `..` or
//! NUL).

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{self, AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

/// Mode for directories an archive implies but never lists.
const IMPLIED_DIR_MODE: u32 = 0o755;

/// Why a directory path could not be opened; `depth` is how many leading components
/// name the offending directory.
#[derive(Debug)]
pub(crate) enum WalkError {
    Symlink { depth: usize },
    NotDir { depth: usize },
    Missing { depth: usize },
    Io { depth: usize, errno: Errno },
}

/// Opens a directory (read-only, close-on-exec) confined beneath `dir`, without following
/// any symlink.
pub(crate) fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd, Errno> {
    fs::openat2(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        RESOLVE,
    )
}

/// Creates a new regular file `name` in `dir`; fails if anything already has that name.
pub(crate) fn create_file_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd, Errno> {
    fs::openat2(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
        RESOLVE,
    )
}

/// The type of `name` in `dir` without following a symlink, or `None` if absent.
pub(crate) fn file_type_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<Option<FileType>, Errno> {
    match fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Opens the directory `components` below `root`. With `create`, missing directories are
/// made (root-owned, 0755, as tar does for directories an archive implies).
pub(crate) fn walk(
    root: BorrowedFd<'_>,
    components: &[OsString],
    create: bool,
) -> Result<OwnedFd, WalkError> {
    let mut current =
        open_dir_at(root, OsStr::new(".")).map_err(|errno| WalkError::Io { depth: 0, errno })?;
    for (i, name) in components.iter().enumerate() {
        let depth = i + 1;
        let opened = match open_dir_at(current.as_fd(), name) {
            Err(Errno::NOENT) if create => {
                make_implied_dir(current.as_fd(), name)
                    .map_err(|errno| WalkError::Io { depth, errno })?;
                open_dir_at(current.as_fd(), name)
            }
            other => other,
        };
        current = match opened {
            Ok(fd) => fd,
            Err(errno) => {
                return Err(match file_type_at(current.as_fd(), name) {
                    Ok(None) => WalkError::Missing { depth },
                    Ok(Some(FileType::Symlink)) => WalkError::Symlink { depth },
                    Ok(Some(FileType::Directory)) | Err(_) => WalkError::Io { depth, errno },
                    Ok(Some(_)) => WalkError::NotDir { depth },
                })
            }
        };
    }
    Ok(current)
}

fn make_implied_dir(parent: BorrowedFd<'_>, name: &OsStr) -> Result<(), Errno> {
    match fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
        Ok(()) => {}
        Err(Errno::EXIST) => return Ok(()),
        Err(e) => return Err(e),
    }
    // Explicit owner and mode: a setgid parent or the process umask must not leak in.
    let dir = open_dir_at(parent, name)?;
    fs::fchown(&dir, Some(rustix::fs::Uid::ROOT), Some(rustix::fs::Gid::ROOT))?;
    fs::fchmod(&dir, Mode::from_raw_mode(IMPLIED_DIR_MODE))
}

/// Removes `name` from `dir` whatever it is; a directory goes with everything in it.
/// Returns what was there.
pub(crate) fn remove_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<Option<FileType>, Errno> {
    let kind = file_type_at(dir, name)?;
    match kind {
        None => {}
        Some(FileType::Directory) => remove_tree(dir, name)?,
        Some(_) => fs::unlinkat(dir, name, AtFlags::empty())?,
    }
    Ok(kind)
}

/// Depth-first removal that holds one directory fd at a time (re-walking from `parent`
/// when it climbs back up), so a hostile, very deep tree can neither exhaust file
/// descriptors nor the stack.
fn remove_tree(parent: BorrowedFd<'_>, name: &OsStr) -> Result<(), Errno> {
    let reopen = |stack: &[OsString]| -> Result<OwnedFd, Errno> {
        walk(parent, stack, false).map_err(|e| match e {
            WalkError::Io { errno, .. } => errno,
            WalkError::Missing { .. } => Errno::NOENT,
            WalkError::Symlink { .. } | WalkError::NotDir { .. } => Errno::NOTDIR,
        })
    };
    let mut stack: Vec<OsString> = vec![name.to_owned()];
    while !stack.is_empty() {
        let dir = reopen(&stack)?;
        let mut subdir = None;
        let mut entries = fs::Dir::read_from(&dir)?;
        while let Some(entry) = entries.read() {
            let entry = entry?;
            let child = OsStr::from_bytes(entry.file_name().to_bytes());
            if child == "." || child == ".." {
                continue;
            }
            match file_type_at(dir.as_fd(), child)? {
                Some(FileType::Directory) => {
                    subdir = Some(child.to_owned());
                    break;
                }
                Some(_) => fs::unlinkat(&dir, child, AtFlags::empty())?,
                None => {}
            }
        }
        drop(entries);
        drop(dir);
        if let Some(subdir) = subdir {
            stack.push(subdir);
            continue;
        }
        let Some(empty) = stack.pop() else { break };
        let holder = reopen(&stack)?;
        match fs::unlinkat(&holder, &empty, AtFlags::REMOVEDIR) {
            // Entries can be missed when a directory shrinks while it is read; go again.
            Err(Errno::NOTEMPTY) => stack.push(empty),
            other => other?,
        }
    }
    Ok(())
}
