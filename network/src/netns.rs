//! Network namespaces pinned by bind mounts, so they live with no process in them.
//!
//! A pod's network namespace is created on a dedicated, short-lived OS thread that calls
//! `unshare(CLONE_NEWNET)` (namespaces are per thread on Linux, so the rest of the process
//! — tokio's workers included — is never moved) and bind-mounts its own
//! `/proc/thread-self/ns/net` onto an empty file `<dir>/<name>`. The thread then exits;
//! the mount keeps the namespace alive until [`NetnsDir::remove`] / [`remove`] detaches
//! it. Code is run inside a namespace the same way: a fresh thread `setns`es into it, runs
//! the closure and exits, so no thread is ever returned to a pool in a foreign namespace.
//!
//! # Mount propagation of the pin directory
//!
//! Like `ip netns` does for `/run/netns`, [`NetnsDir::new`] makes the pin directory a
//! mount point of its own (a bind mount of the directory onto itself, unless it already is
//! one) and then makes that mount **shared, in a peer group of its own**: it is first made
//! private (leaving whatever peer group `/run` belongs to) and then shared (which creates a
//! fresh group). The consequences, which are why this choice:
//!
//! * pins do not propagate outward: mounting a pin is not replicated into the peers of the
//!   parent mount (`/run`, `/`), so other mount namespaces on the host (other container
//!   runtimes, systemd services with their own namespaces) never see or hold our pins;
//! * pins do propagate to mount namespaces copied from ours *after* the directory was set
//!   up (the shim, a container before it pivots): their copies are peers (or slaves) of
//!   the directory mount, so the `umount` in [`remove`] reaches them too. With a private
//!   directory, such a copy would keep a reference to the namespace after the pod is gone
//!   and the namespace (and its veth) would leak until that process dies.
//!
//! Removal is `umount2(MNT_DETACH)` then `unlink`, and tolerates either step finding
//! nothing, so it is idempotent.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::error::{NetworkError, Result};

const NONE: Option<&str> = None;

/// A directory holding network namespace pins, set up as a shared mount of its own.
#[derive(Debug, Clone)]
pub struct NetnsDir {
    dir: PathBuf,
}

impl NetnsDir {
    /// Creates `dir` if needed and makes it a shared bind mount in its own peer group (see
    /// the module documentation). Idempotent: a directory that is already a mount point is
    /// only made shared, so peers set up by an earlier call are kept.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)
            .map_err(|e| NetworkError::io(format!("create {}", dir.display()), e))?;
        // Try to make it shared; EINVAL means it is not a mount point yet.
        match mount(NONE, &dir, NONE, MsFlags::MS_SHARED, NONE) {
            Ok(()) => {}
            Err(Errno::EINVAL) => {
                mount(Some(&dir), &dir, NONE, MsFlags::MS_BIND, NONE).map_err(|e| {
                    NetworkError::errno(format!("bind-mount {} onto itself", dir.display()), e)
                })?;
                let propagate = mount(NONE, &dir, NONE, MsFlags::MS_PRIVATE, NONE)
                    .and_then(|()| mount(NONE, &dir, NONE, MsFlags::MS_SHARED, NONE));
                if let Err(e) = propagate {
                    let _ = umount2(&dir, MntFlags::MNT_DETACH);
                    return Err(NetworkError::errno(
                        format!("make {} a shared mount", dir.display()),
                        e,
                    ));
                }
            }
            Err(e) => {
                return Err(NetworkError::errno(
                    format!("make {} a shared mount", dir.display()),
                    e,
                ))
            }
        }
        Ok(NetnsDir { dir })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Where the pin named `name` lives (whether or not it exists).
    pub fn path_of(&self, name: &str) -> Result<PathBuf> {
        validate_name(name)?;
        Ok(self.dir.join(name))
    }

    /// Creates a new network namespace pinned at `<dir>/<name>` and returns that path.
    /// Fails with `AlreadyExists` if the pin file exists.
    pub fn create(&self, name: &str) -> Result<PathBuf> {
        let path = self.path_of(name)?;
        create_at(&path)?;
        Ok(path)
    }

    /// Names of the pins in the directory (for start-up reconciliation).
    pub fn list(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| NetworkError::io(format!("read {}", self.dir.display()), e))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| NetworkError::io(format!("read {}", self.dir.display()), e))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    /// Removes the pin `<dir>/<name>`; succeeds if it is already gone.
    pub fn remove(&self, name: &str) -> Result<()> {
        remove(&self.path_of(name)?)
    }

    /// Detaches the directory's own bind mount (pins still mounted in it are detached with
    /// it). For tests and uninstall; the runtime keeps the directory for its lifetime.
    pub fn unmount(&self) -> Result<()> {
        match umount2(&self.dir, MntFlags::MNT_DETACH) {
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(NetworkError::errno(format!("unmount {}", self.dir.display()), e)),
        }
    }
}

fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(NetworkError::InvalidArgument(format!(
            "netns name {name:?} must be a plain file name"
        )));
    }
    Ok(())
}

/// Creates a new network namespace pinned at `path` (an empty file is created there and the
/// namespace bind-mounted onto it). Fails with `AlreadyExists` if `path` exists. On failure
/// nothing is left behind.
///
/// The pin should live in a directory prepared by [`NetnsDir::new`].
#[tracing::instrument(name = "netns.create", skip_all, fields(path = %path.display()))]
pub fn create_at(path: &Path) -> Result<()> {
    create_pin_file(path).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => {
            NetworkError::AlreadyExists(format!("netns pin {}", path.display()))
        }
        _ => NetworkError::io(format!("create {}", path.display()), e),
    })?;
    let target = path.to_path_buf();
    let result = std::thread::Builder::new()
        .name("berth-netns-new".into())
        .spawn(move || -> Result<()> {
            // This thread exits right after, so it never needs to go back.
            unshare(CloneFlags::CLONE_NEWNET)
                .map_err(|e| NetworkError::errno("unshare(CLONE_NEWNET)", e))?;
            mount(Some("/proc/thread-self/ns/net"), &target, NONE, MsFlags::MS_BIND, NONE)
                .map_err(|e| NetworkError::errno(format!("pin netns at {}", target.display()), e))
        })
        .map_err(|e| NetworkError::io("spawn netns thread", e))
        .and_then(|t| t.join().unwrap_or_else(|_| Err(panicked())));
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// The empty, read-only file a namespace is bind-mounted onto; fails if `path` exists.
pub fn create_pin_file(path: &Path) -> io::Result<()> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map(drop)
}

/// Removes a pin made by [`create_at`]: lazily unmounts it and deletes the file. A path
/// that is not mounted or does not exist is fine, so this is idempotent. The namespace
/// itself goes away once no process, mount or open file refers to it any more.
pub fn remove(path: &Path) -> Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (already unmounted); ENOENT: no such file.
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => {
            return Err(NetworkError::errno(format!("unmount netns pin {}", path.display()), e))
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetworkError::io(format!("remove netns pin {}", path.display()), e)),
    }
}

/// Whether `path` is a pinned network namespace (a bind mount of an nsfs net inode).
pub fn is_netns(path: &Path) -> bool {
    // The ns type itself is checked by setns when the pin is used.
    matches!(nix::sys::statfs::statfs(path), Ok(st) if st.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

fn open_netns(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => NetworkError::NotFound(format!("netns {}", path.display())),
        _ => NetworkError::io(format!("open netns {}", path.display()), e),
    })
}

fn panicked() -> NetworkError {
    NetworkError::io(
        "netns thread",
        io::Error::other("thread panicked while in a network namespace"),
    )
}

/// Runs `f` inside the network namespace pinned at `path`, on a dedicated thread that is
/// discarded afterwards, and returns its result. Blocks the calling thread until `f`
/// returns; from async code prefer [`run_in_async`] for anything slow.
///
/// Sockets opened by `f` stay in that namespace after it returns, which is how a netlink
/// connection or a listener is set up "inside" a pod.
pub fn run_in<F, R>(path: &Path, f: F) -> Result<R>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    let ns = open_netns(path)?;
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("berth-netns".into())
            .spawn_scoped(s, move || -> Result<R> {
                setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| {
                    NetworkError::errno(format!("setns into {}", path.display()), e)
                })?;
                drop(ns);
                Ok(f())
            })
            .map_err(|e| NetworkError::io("spawn netns thread", e))?;
        handle.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Like [`run_in`], but waits without blocking the async runtime.
pub async fn run_in_async<F, R>(path: &Path, f: F) -> Result<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let ns = open_netns(path)?;
    let shown = path.display().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("berth-netns".into())
        .spawn(move || {
            let result = setns(&ns, CloneFlags::CLONE_NEWNET)
                .map_err(|e| NetworkError::errno(format!("setns into {shown}"), e))
                .map(|()| {
                    drop(ns);
                    f()
                });
            let _ = tx.send(result);
        })
        .map_err(|e| NetworkError::io("spawn netns thread", e))?;
    rx.await.unwrap_or_else(|_| Err(panicked()))
}

/// Opens an rtnetlink connection whose socket lives in the network namespace at `path`.
/// The connection task is spawned on the current tokio runtime and ends when the returned
/// handle (and its clones) are dropped. Must be called from within a tokio runtime.
pub fn netlink_in(path: &Path) -> Result<rtnetlink::Handle> {
    let rt = tokio::runtime::Handle::current();
    let (conn, handle) = run_in(path, move || {
        // Registering the socket with the reactor needs a runtime context on this thread.
        let _guard = rt.enter();
        rtnetlink::new_connection().map(|(conn, handle, _)| (conn, handle))
    })?
    .map_err(|e| NetworkError::io(format!("netlink socket in {}", path.display()), e))?;
    let mut conn = conn;
    crate::netlink::enlarge_receive_buffer(conn.socket_mut());
    tokio::spawn(conn);
    Ok(handle)
}
