//! The parts of Linux's new mount API that nix and rustix leave out: `mount_setattr`
//! (recursive read-only, idmapped mounts), and idmapped clones of a tree built on it.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::mount::{open_tree, OpenTreeFlags};

/// `struct mount_attr` of `<linux/mount.h>`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `mount_setattr(dirfd, path, flags, {attr_set, userns_fd})`; `dirfd` None is
/// `AT_FDCWD`.
pub fn mount_setattr(
    dirfd: Option<BorrowedFd<'_>>,
    path: &Path,
    flags: libc::c_uint,
    attr_set: u64,
    userns: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "nul in path"))?;
    let attr = MountAttr {
        attr_set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.map_or(0, |fd| fd.as_raw_fd() as u64),
    };
    // SAFETY: a valid C string and a mount_attr of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd.map_or(libc::AT_FDCWD, |fd| fd.as_raw_fd()),
            c.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A detached clone of the mount tree at `path` whose ids are shifted through the
/// mappings of the user namespace `userns`: a file owned by id N on disk appears as
/// owned by the host id that N maps to (the kernel's idmapped mounts, 5.12+; overlayfs
/// layers 5.19+). Attach it with `rustix::mount::move_mount`.
pub fn idmapped_clone(path: &Path, userns: impl AsFd) -> io::Result<OwnedFd> {
    let tree = open_tree(
        rustix::fs::CWD,
        path,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )?;
    mount_setattr(
        Some(tree.as_fd()),
        Path::new(""),
        libc::AT_EMPTY_PATH as libc::c_uint,
        MOUNT_ATTR_IDMAP,
        Some(userns.as_fd()),
    )?;
    Ok(tree)
}

/// Attaches a detached tree (from [`idmapped_clone`]) at `target`.
pub fn attach(tree: impl AsFd, target: &Path) -> io::Result<()> {
    use rustix::mount::{move_mount, MoveMountFlags};
    move_mount(tree.as_fd(), "", rustix::fs::CWD, target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)?;
    Ok(())
}
