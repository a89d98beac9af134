//! The kernel calls a container's set-up makes, behind one trait: [`Linux`] makes them;
//! the unit tests hand the set-up a recorder instead (`syscalls/recorder.rs`), so that the
//! order and arguments of every mount, node and namespace call can be checked without
//! root. What only the kernel can show (that a mount really is read-only, that a masked
//! path really reads empty) stays with the root tests.
//!
//! The set-up still creates mount points and symlinks with plain file calls: they work
//! unprivileged in a test's temporary root.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::statvfs::FsFlags;

use crate::cgroupfs::Hierarchy;

#[cfg(test)]
pub mod recorder;

pub trait Syscalls {
    fn mount(
        &self,
        src: Option<&Path>,
        dst: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()>;
    fn umount(&self, target: &Path, flags: MntFlags) -> nix::Result<()>;
    /// The flags of the mount that holds `path` (statvfs); `None` if it cannot be read.
    fn mount_flags(&self, path: &Path) -> Option<FsFlags>;
    /// Makes the mount at `path` and every mount below it read-only.
    fn read_only_recursively(&self, path: &Path) -> io::Result<()>;
    /// Makes the mount at `path` and every mount under it nosuid, nodev and noexec, and
    /// read-only with `read_only` (ENOSYS before Linux 5.12).
    fn restrict_recursively(&self, path: &Path, read_only: bool) -> io::Result<()>;
    /// Attaches a detached mount tree (an idmapped clone) at `target`.
    fn attach(&self, tree: OwnedFd, target: &Path) -> io::Result<()>;
    /// Makes a device node with exactly `mode` (whatever the umask).
    fn mknod(
        &self,
        path: &Path,
        kind: libc::mode_t,
        major: u64,
        minor: u64,
        mode: u32,
    ) -> io::Result<()>;
    fn chown(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) -> io::Result<()>;
    fn unshare(&self, flags: CloneFlags) -> nix::Result<()>;
    /// pivot_root into `rootfs` (the caller's working directory), stacking the old root.
    fn pivot_root(&self, rootfs: &Path) -> nix::Result<()>;
    /// Where the container's `/` is seen once [`Syscalls::pivot_root`] made `rootfs` the
    /// root: `/` itself, unless the pivot only pretended.
    fn root_after_pivot(&self, rootfs: &Path) -> PathBuf;
    fn chdir(&self, path: &Path) -> nix::Result<()>;
    fn fchdir(&self, dir: &std::fs::File) -> nix::Result<()>;
    fn sethostname(&self, name: &str) -> nix::Result<()>;
    /// Writes `/proc/sys/<key with dots as slashes>`.
    fn write_sysctl(&self, key: &str, value: &str) -> io::Result<()>;
    /// The cgroup hierarchies mounted in this mount namespace.
    fn cgroup_hierarchies(&self) -> io::Result<Vec<Hierarchy>>;
}

/// The real calls.
pub struct Linux;

impl Syscalls for Linux {
    fn mount(
        &self,
        src: Option<&Path>,
        dst: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()> {
        nix::mount::mount(src, dst, fstype, flags, data)
    }

    fn umount(&self, target: &Path, flags: MntFlags) -> nix::Result<()> {
        nix::mount::umount2(target, flags)
    }

    fn mount_flags(&self, path: &Path) -> Option<FsFlags> {
        nix::sys::statvfs::statvfs(path).ok().map(|s| s.flags())
    }

    fn read_only_recursively(&self, path: &Path) -> io::Result<()> {
        use crate::mount_api::{mount_setattr, MOUNT_ATTR_RDONLY};
        mount_setattr(None, path, libc::AT_RECURSIVE as libc::c_uint, MOUNT_ATTR_RDONLY, None)
    }

    fn restrict_recursively(&self, path: &Path, read_only: bool) -> io::Result<()> {
        use crate::mount_api::*;
        let ro = if read_only { MOUNT_ATTR_RDONLY } else { 0 };
        let attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC | ro;
        mount_setattr(None, path, libc::AT_RECURSIVE as libc::c_uint, attrs, None)
    }

    fn attach(&self, tree: OwnedFd, target: &Path) -> io::Result<()> {
        crate::mount_api::attach(tree, target)
    }

    fn mknod(
        &self,
        path: &Path,
        kind: libc::mode_t,
        major: u64,
        minor: u64,
        mode: u32,
    ) -> io::Result<()> {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: mknod on a valid C string.
        let r = unsafe {
            libc::mknod(
                c.as_ptr(),
                kind | (mode & 0o7777),
                libc::makedev(major as u32, minor as u32),
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777))
    }

    fn chown(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        nix::unistd::chown(path, uid.map(Into::into), gid.map(Into::into)).map_err(Into::into)
    }

    fn unshare(&self, flags: CloneFlags) -> nix::Result<()> {
        nix::sched::unshare(flags)
    }

    fn pivot_root(&self, _rootfs: &Path) -> nix::Result<()> {
        nix::unistd::pivot_root(".", ".")
    }

    fn root_after_pivot(&self, _rootfs: &Path) -> PathBuf {
        PathBuf::from("/")
    }

    fn chdir(&self, path: &Path) -> nix::Result<()> {
        nix::unistd::chdir(path)
    }

    fn fchdir(&self, dir: &std::fs::File) -> nix::Result<()> {
        nix::unistd::fchdir(dir)
    }

    fn sethostname(&self, name: &str) -> nix::Result<()> {
        nix::unistd::sethostname(name)
    }

    fn write_sysctl(&self, key: &str, value: &str) -> io::Result<()> {
        std::fs::write(format!("/proc/sys/{}", key.replace('.', "/")), value)
    }

    fn cgroup_hierarchies(&self) -> io::Result<Vec<Hierarchy>> {
        // The shim's reading, kept (the container's process is its fork): the mount table
        // grows with every pod, and the host's cgroup mounts do not change.
        super::cgroups::hierarchies().map_err(|e| io::Error::other(e.0))
    }
}
