//! The native executor: turns an OCI runtime spec into a container process.
//!
//! Used by the shim (`berth-shim`), which is single-threaded: every function here forks,
//! and refuses to run in a process with more than one thread (forking a multi-threaded
//! process leaves locks held by threads that no longer exist in the child).
//!
//! # Create
//! The caller (the shim) forks the container's process straight into its pid namespace
//! (joined by path, or new, the child its pid 1; see `pid_ns`) and, on a cgroup v2 host,
//! into its cgroup (made first, with its limits; see `clone_into`). The child joins its
//! v1 cgroups itself, joins the namespaces the spec names by path (net, ipc, uts,
//! cgroup, mnt; a pod's user namespace first) and says so. Only a new pid namespace in a
//! pod's user namespace is made by an *intermediate* child, from inside that user
//! namespace, which forks the container's process, reports its pid and exits (the shim,
//! the subreaper, inherits the process). The shim then starts a systemd scope with the
//! process in it where the cgroup is one, sets oom_score_adj, and lets the child go on:
//! it unshares its mount namespace (and uts/ipc/cgroup/net when new), mounts the spec's
//! mounts under the rootfs, pivot_roots, masks and read-only-binds paths, sets the
//! hostname (only in a uts namespace of its own), sysctls, rlimits, stdio, user, groups,
//! capabilities, the AppArmor profile for the exec, no_new_privs and seccomp, checks the
//! executable exists, reports `ready` and blocks on the control pipe. [`Pending::start`]
//! writes the start byte; the child execs. Any failure is sent back as text through the
//! report pipe, so Create and Start fail with the child's own error ("mount proc on
//! /proc: EPERM: …").
//!
//! # Rootfs
//! The executor does not mount the image: `root.path` (relative paths against the bundle)
//! must already be the container's root filesystem, e.g. the overlay the snapshotter
//! mounted on the host before Create.
//!
//! # Exec
//! [`exec`] runs a process in a running container: the shim forks it into the
//! container's pid namespace and cgroup as in Create; it joins the container's other
//! namespaces (`/proc/<pid>/ns/*`), applies the process spec (user, caps, AppArmor
//! profile, no_new_privs, the container's seccomp) and execs.

pub mod caps;
pub mod cgroups;
pub mod clone_into;
pub mod device_filter;
pub mod mounts;
mod pid_ns;
mod process;
pub mod seccomp;
pub mod syscalls;

use pid_ns::PidNs;
use process::prepare_process;
use syscalls::{Linux, Syscalls};

mod error;
pub(crate) use error::Ctx;
pub use error::{Error, Result};

use std::convert::Infallible;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sched::{setns, unshare, CloneFlags};
use nix::unistd::{fork, pipe2, ForkResult, Gid, Pid, Uid};
use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};

/// The child's standard streams (for a tty, the same terminal three times).
#[derive(Debug)]
pub struct Stdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// Make stdin the controlling terminal.
    pub tty: bool,
}

impl Stdio {
    /// All three on /dev/null.
    pub fn null() -> std::io::Result<Self> {
        let null = || {
            std::fs::OpenOptions::new().read(true).write(true).open("/dev/null").map(OwnedFd::from)
        };
        Ok(Stdio { stdin: null()?, stdout: null()?, stderr: null()?, tty: false })
    }
}

/// A created container process, blocked until [`Pending::start`].
#[derive(Debug)]
pub struct Pending {
    pub pid: Pid,
    control: File,
    report: File,
}

/// How long a child may take to report.
const REPORT_TIMEOUT: Duration = Duration::from_secs(30);

fn single_threaded() -> Result<()> {
    let n = std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(1);
    if n != 1 {
        return Err(Error(format!("executor: refusing to fork a process with {n} threads")));
    }
    Ok(())
}

fn pipe() -> Result<(File, File)> {
    let (r, w) = pipe2(OFlag::O_CLOEXEC).ctx(|| "pipe".into())?;
    Ok((File::from(r), File::from(w)))
}

/// Reads one `\n`-terminated report line (without it). `Ok(None)`: EOF.
fn read_line(f: &mut File, timeout: Duration) -> Result<Option<String>> {
    let deadline = Instant::now() + timeout;
    let mut line = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = [nix::poll::PollFd::new(f.as_fd(), nix::poll::PollFlags::POLLIN)];
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        match nix::poll::poll(
            &mut pfd,
            nix::poll::PollTimeout::try_from(ms).unwrap_or(nix::poll::PollTimeout::MAX),
        ) {
            Ok(0) => return Err(Error("container process did not report in time".into())),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error(format!("poll report pipe: {e}"))),
        }
        let mut b = [0u8; 1];
        match f.read(&mut b) {
            Ok(0) => {
                return Ok(if line.is_empty() {
                    None
                } else {
                    Some(String::from_utf8_lossy(&line).into())
                })
            }
            Ok(_) if b[0] == b'\n' => return Ok(Some(String::from_utf8_lossy(&line).into())),
            Ok(_) => line.push(b[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error(format!("read report pipe: {e}"))),
        }
    }
}

/// In a child: send an error line and exit.
fn child_fail(report: &mut File, e: &Error) -> ! {
    let msg = e.0.replace('\n', " ");
    let _ = report.write_all(format!("E{msg}\n").as_bytes());
    // SAFETY: _exit in a forked child, no destructors.
    unsafe { libc::_exit(1) }
}

fn reset_signals() {
    // SAFETY: plain libc signal calls in a single-threaded child.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
    }
}

fn ns_flag(t: LinuxNamespaceType) -> CloneFlags {
    CloneFlags::from_bits_truncate(t as libc::c_int)
}

/// The rootfs named by the spec, against `bundle` when relative.
pub fn rootfs_path(spec: &Spec, bundle: &Path) -> Result<PathBuf> {
    let root = spec.root().as_ref().ok_or_else(|| Error("spec has no root".into()))?;
    let p = if root.path().is_absolute() { root.path().clone() } else { bundle.join(root.path()) };
    std::fs::canonicalize(&p).ctx(|| format!("rootfs {}", p.display()))
}

/// Creates the container process. Blocking, a few milliseconds; must be called from a
/// single-threaded process (the shim). `oom_score_adj` is clamped to the caller's own.
pub fn create(spec: &Spec, bundle: &Path, stdio: Stdio) -> Result<Pending> {
    single_threaded()?;
    let rootfs = rootfs_path(spec, bundle)?;
    let process = spec.process().as_ref().ok_or_else(|| Error("spec has no process".into()))?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(Error("process.args is empty".into()));
    }
    let (report_r, report_w) = pipe()?;
    let (control_r, control_w) = pipe()?;
    let cgroup = spec.linux().as_ref().and_then(|l| l.cgroups_path().as_ref());
    let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
    // The child goes into the container's cgroup itself, before anything else: forked
    // into the v2 cgroup where the kernel can, joining the v1 ones through `tasks` (see
    // `cgroups::Placement`). A systemd scope is started with the process in it, below.
    let placement = match cgroup {
        Some(cg) => cgroups::prepare(cg, resources)?,
        None => None,
    };
    // Born in its pid namespace, the child is the container's process; else it is the
    // intermediate, which forks it (see `pid_ns`).
    let (pid_ns, direct) = container_pid_ns(spec)?;
    // SAFETY: the process is single-threaded (checked above).
    let (forked, born) =
        unsafe { pid_ns::fork(&pid_ns, placement.as_ref().and_then(|p| p.v2_dir())) }?;
    match forked {
        ForkResult::Child => {
            drop(report_r);
            drop(control_w);
            let mut report = report_w;
            let joined = placement.as_ref().map_or(Ok(()), |p| p.join_self(born));
            drop(placement);
            let e = match joined
                .and_then(|()| intermediate(spec, &rootfs, stdio, control_r, &mut report, direct))
            {
                Ok(never) => match never {},
                Err(e) => e,
            };
            child_fail(&mut report, &e);
        }
        ForkResult::Parent { child } => {
            drop(report_w);
            drop(control_r);
            drop(stdio);
            // The limits are written while the child joins its namespaces and cgroups
            // (on the other core, where there is one); it waits for the release below
            // before it sets anything up.
            let limited = match (&placement, resources) {
                (Some(p), Some(r)) => p.apply_limits(r),
                _ => Ok(()),
            };
            if !direct {
                let _ = nix::sys::wait::waitpid(child, None);
            }
            if let Err(e) = limited {
                // The child (the container's process, or the intermediate's) waits for a
                // release that never comes; it is killed with the shim's child.
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                if direct {
                    let _ = nix::sys::wait::waitpid(child, None);
                }
                return Err(e);
            }
            let mut pending =
                Pending { pid: Pid::from_raw(0), control: control_w, report: report_r };
            let first = read_line(&mut pending.report, REPORT_TIMEOUT);
            if direct && !matches!(first.as_ref().map(|l| l.as_deref()), Ok(Some("J"))) {
                // It failed, and exits (or is stopped here): the shim's child, reaped here.
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(child, None);
            }
            let pid = match first?.as_deref() {
                Some("J") if direct => child.as_raw(),
                Some(l) if l.starts_with('P') && !direct => {
                    l[1..].parse::<i32>().map_err(|_| Error(format!("bad report {l:?}")))?
                }
                Some(l) if l.starts_with('E') => return Err(Error(l[1..].to_string())),
                other => {
                    return Err(Error(format!("container process died during create ({other:?})")))
                }
            };
            pending.pid = Pid::from_raw(pid);
            let fail = |p: &Pending, e: Error| {
                let _ = nix::sys::signal::kill(p.pid, nix::sys::signal::Signal::SIGKILL);
                e
            };
            if let Some(cg) = cgroup.filter(|_| placement.is_none()) {
                if let Err(e) = cgroups::start_scope(cg, pid, resources) {
                    return Err(fail(&pending, e));
                }
            }
            if let Some(adj) = process.oom_score_adj() {
                if let Err(e) = set_oom_score_adj(pid, adj) {
                    return Err(fail(&pending, e));
                }
            }
            if let Err(e) = pending.control.write_all(b"c") {
                return Err(fail(&pending, Error(format!("release container process: {e}"))));
            }
            match read_line(&mut pending.report, REPORT_TIMEOUT) {
                Ok(Some(l)) if l == "R" => Ok(pending),
                Ok(Some(l)) if l.starts_with('E') => Err(fail(&pending, Error(l[1..].to_string()))),
                Ok(other) => Err(fail(
                    &pending,
                    Error(format!("container process died during create ({other:?})")),
                )),
                Err(e) => Err(fail(&pending, e)),
            }
        }
    }
}

/// Reads now what every create reads once per process and keeps (the host's cgroup
/// mounts, the shim's own pid namespace), so that the pod's first container does not:
/// the shim calls it when it has started, before the pod's first create comes.
pub fn warm_caches() {
    let _ = cgroups::hierarchies();
    let _ = pid_ns::own();
}

/// The pid namespace the shim forks a new container's process into, and whether it can
/// (`true`: the child is the container's process). A new pid namespace for a container
/// in a pod's user namespace is made by the intermediate, inside it (see `pid_ns`).
fn container_pid_ns(spec: &Spec) -> Result<(PidNs, bool)> {
    let namespaces = spec.linux().as_ref().and_then(|l| l.namespaces().as_ref());
    let of = |t| namespaces.and_then(|ns| ns.iter().find(|n| n.typ() == t));
    let in_userns = of(LinuxNamespaceType::User).is_some();
    Ok(match of(LinuxNamespaceType::Pid) {
        None => (PidNs::Ours, true),
        Some(ns) => match ns.path() {
            Some(p) => {
                let f = File::open(p).ctx(|| format!("open namespace {}", p.display()))?;
                (PidNs::Join(f), true)
            }
            None if in_userns => (PidNs::Ours, false),
            None => (PidNs::New, true),
        },
    })
}

/// Writes `/proc/<pid>/oom_score_adj`, never below the caller's own value (without
/// CAP_SYS_RESOURCE the kernel refuses that, as on nested nodes).
pub fn set_oom_score_adj(pid: i32, wanted: i32) -> Result<()> {
    let value = clamp_oom_score_adj(wanted, own_oom_score_adj());
    std::fs::write(format!("/proc/{pid}/oom_score_adj"), value.to_string())
        .ctx(|| format!("set oom_score_adj {value}"))
}

/// This process's own `oom_score_adj`.
pub fn own_oom_score_adj() -> i32 {
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(-1000)
}

/// The clamping rule, on its own for tests.
pub fn clamp_oom_score_adj(wanted: i32, own: i32) -> i32 {
    wanted.clamp(-1000, 1000).max(own)
}

impl Pending {
    /// Lets the process exec. Fails with the child's error if exec fails.
    pub fn start(mut self) -> Result<()> {
        self.control.write_all(b"s").ctx(|| "start container process".into())?;
        drop(self.control);
        match read_line(&mut self.report, REPORT_TIMEOUT)? {
            None => Ok(()),
            Some(l) => Err(Error(l.strip_prefix('E').unwrap_or(&l).to_string())),
        }
    }
}

/// The container's process (`direct`: born in its pid namespace), or the intermediate
/// that forks it: joins the namespaces the spec names by path, then, as the container's
/// process, waits for the shim to have placed it and sets the container up.
fn intermediate(
    spec: &Spec,
    rootfs: &Path,
    stdio: Stdio,
    control: File,
    report: &mut File,
    direct: bool,
) -> Result<Infallible> {
    reset_signals();
    let linux = spec.linux().as_ref();
    let namespaces = linux.and_then(|l| l.namespaces().clone()).unwrap_or_default();
    let userns = namespaces
        .iter()
        .find(|ns| ns.typ() == LinuxNamespaceType::User)
        .and_then(|ns| ns.path().clone());
    let idmapped = mounts::idmapped_sources(spec, userns.as_deref())?;
    let mut new = CloneFlags::empty();
    // Every namespace is opened before any is joined: once in a pod's user namespace,
    // /proc/<pid>/ns of a process outside it may no longer be ours to open.
    let mut joins = Vec::new();
    for ns in &namespaces {
        match (ns.typ(), ns.path()) {
            // Born in it.
            (LinuxNamespaceType::Pid, _) if direct => {}
            (LinuxNamespaceType::User, None) => {
                return Err(Error(
                    "a new user namespace is not supported (join the pod's by path)".into(),
                ))
            }
            (t, Some(path)) => {
                let f = File::open(path).ctx(|| format!("open namespace {}", path.display()))?;
                joins.push((t, f, path));
            }
            (t, None) => new |= ns_flag(t),
        }
    }
    // The user namespace first: the pod's others are owned by it, and joining it gives
    // the capabilities there that joining them takes.
    joins.sort_by_key(|(t, _, _)| *t != LinuxNamespaceType::User);
    for (t, f, path) in joins {
        setns(f.as_fd(), ns_flag(t)).ctx(|| format!("setns {t} {}", path.display()))?;
        if t == LinuxNamespaceType::User {
            become_userns_root()?;
        }
    }
    if direct {
        report.write_all(b"J\n").ctx(|| "report joined".into())?;
        return container_init(spec, rootfs, stdio, new, idmapped, control, report);
    }
    if new.contains(CloneFlags::CLONE_NEWPID) {
        unshare(CloneFlags::CLONE_NEWPID).ctx(|| "unshare pid namespace".into())?;
    }
    // SAFETY: this child is single-threaded.
    match unsafe { fork() }.ctx(|| "fork container process".into())? {
        ForkResult::Parent { child } => {
            report.write_all(format!("P{child}\n").as_bytes()).ctx(|| "report pid".into())?;
            // SAFETY: _exit in a forked child.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Child => {
            let new = new & !CloneFlags::CLONE_NEWPID;
            container_init(spec, rootfs, stdio, new, idmapped, control, report)
        }
    }
}

/// The container's process: once the shim has placed it (the control pipe's first
/// byte), sets the container up, reports ready and waits for the start.
fn container_init(
    spec: &Spec,
    rootfs: &Path,
    stdio: Stdio,
    new: CloneFlags,
    idmapped: Vec<Option<OwnedFd>>,
    mut control: File,
    report: &mut File,
) -> Result<Infallible> {
    let mut b = [0u8; 1];
    if control.read(&mut b).unwrap_or(0) != 1 {
        // SAFETY: _exit in a forked child; the shim went away.
        unsafe { libc::_exit(1) }
    }
    let process = spec.process().as_ref().ok_or_else(|| Error("spec has no process".into()))?;
    set_up_namespaces(&Linux, spec, rootfs, new, idmapped)?;
    setup_stdio(&stdio)?;
    drop(stdio);
    let prepared = prepare_process(process, spec)?;
    report.write_all(b"R\n").ctx(|| "report ready".into())?;
    if control.read(&mut b).unwrap_or(0) != 1 {
        // SAFETY: _exit in a forked child; never started.
        unsafe { libc::_exit(0) }
    }
    drop(control);
    Err(prepared.exec())
}

/// The container's own namespaces and filesystem: unshares them, mounts the spec's mounts
/// under the rootfs, pivots into it, writes the sysctls, masks and read-only-binds paths,
/// and names the host in a UTS namespace of its own.
fn set_up_namespaces(
    sys: &dyn Syscalls,
    spec: &Spec,
    rootfs: &Path,
    new: CloneFlags,
    idmapped: Vec<Option<OwnedFd>>,
) -> Result<()> {
    sys.unshare(new | CloneFlags::CLONE_NEWNS).ctx(|| "unshare namespaces".into())?;
    mounts::prepare_rootfs(sys, spec, rootfs, idmapped)?;
    mounts::pivot(sys, rootfs)?;
    for (k, v) in spec.linux().as_ref().and_then(|l| l.sysctl().clone()).unwrap_or_default() {
        if k.contains("..") || k.contains('/') {
            return Err(Error(format!("bad sysctl {k:?}")));
        }
        sys.write_sysctl(&k, &v).ctx(|| format!("sysctl {k}={v}"))?;
    }
    mounts::finish(sys, spec, &sys.root_after_pivot(rootfs))?;
    if new.contains(CloneFlags::CLONE_NEWUTS) {
        if let Some(h) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
            sys.sethostname(h).ctx(|| "sethostname".into())?;
        }
    }
    Ok(())
}

fn setup_stdio(stdio: &Stdio) -> Result<()> {
    // Every process leads a session of its own, as runc's do: the shim's session is
    // outside the container, and CRIU (CheckpointContainer) dumps only a process tree
    // whose session leader it holds.
    nix::unistd::setsid().ctx(|| "setsid".into())?;
    if stdio.tty {
        // SAFETY: ioctl on our terminal fd.
        if unsafe { libc::ioctl(stdio.stdin.as_raw_fd(), libc::TIOCSCTTY, 0) } != 0 {
            return Err(Error(format!("set controlling terminal: {}", nix::errno::Errno::last())));
        }
    }
    for (fd, target) in [(&stdio.stdin, 0), (&stdio.stdout, 1), (&stdio.stderr, 2)] {
        // SAFETY: dup2 onto the standard descriptors.
        if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
            return Err(Error(format!("dup2 stdio: {}", nix::errno::Errno::last())));
        }
    }
    reopen_dev_null()
}

/// Standard descriptors on /dev/null (the shim's, for a process without stdin) are opened
/// again on the container's own /dev/null, as runc does: a descriptor on a mount outside
/// the container's mount namespace is one CRIU cannot dump (CheckpointContainer). Runs in
/// the container's mount namespace, after pivot_root or setns.
fn reopen_dev_null() -> Result<()> {
    let is_null = |fd: i32| {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fstat writes the stat buffer, or fails (EBADF) on a closed descriptor.
        if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
            return false;
        }
        // SAFETY: fstat succeeded, so the buffer is filled.
        let st = unsafe { st.assume_init() };
        st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == libc::makedev(1, 3)
    };
    let mut ours: Option<OwnedFd> = None;
    for fd in 0..3 {
        if !is_null(fd) {
            continue;
        }
        if ours.is_none() {
            // A rootfs without /dev/null keeps the shim's.
            let Ok(f) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") else {
                return Ok(());
            };
            ours = Some(OwnedFd::from(f));
        }
        let null = ours.as_ref().map_or(-1, |f| f.as_raw_fd());
        // SAFETY: dup2 onto a standard descriptor of this single-threaded child.
        if unsafe { libc::dup2(null, fd) } < 0 {
            return Err(Error(format!("reopen /dev/null: {}", nix::errno::Errno::last())));
        }
    }
    Ok(())
}

/// Starts `process` inside the running container `container_pid` (its namespaces and
/// cgroup, the container spec's seccomp). Returns the host pid once it has exec'd.
/// Must be called from a single-threaded process; the caller reaps the returned pid (its
/// child).
pub fn exec(container_pid: i32, spec: &Spec, process: &Process, stdio: Stdio) -> Result<Pid> {
    single_threaded()?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(Error("process.args is empty".into()));
    }
    let (mut report_r, report_w) = pipe()?;
    let cgroup = spec.linux().as_ref().and_then(|l| l.cgroups_path().as_ref());
    // The child goes into the container's cgroup as in `create`, and is born in its pid
    // namespace.
    let placement = cgroup.map(|cg| cgroups::existing(cg)).transpose()?;
    let pid_ns = if same_namespace(container_pid, "pid") {
        PidNs::Ours
    } else {
        let p = format!("/proc/{container_pid}/ns/pid");
        PidNs::Join(File::open(&p).ctx(|| format!("open {p}"))?)
    };
    // SAFETY: single-threaded (checked).
    let (forked, born) =
        unsafe { pid_ns::fork(&pid_ns, placement.as_ref().and_then(|p| p.v2_dir())) }?;
    match forked {
        ForkResult::Child => {
            drop(report_r);
            let mut report = report_w;
            let joined = placement.as_ref().map_or(Ok(()), |p| p.join_self(born));
            drop(placement);
            let e = match joined.and_then(|()| exec_child(container_pid, spec, process, stdio)) {
                Ok(never) => match never {},
                Err(e) => e,
            };
            child_fail(&mut report, &e);
        }
        ForkResult::Parent { child } => {
            drop(report_w);
            drop(stdio);
            let failed = match read_line(&mut report_r, REPORT_TIMEOUT) {
                Ok(None) => return Ok(child),
                Ok(Some(l)) => Error(l.strip_prefix('E').unwrap_or(&l).to_string()),
                Err(e) => e,
            };
            let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(child, None);
            Err(failed)
        }
    }
}

/// The exec's process, born in the container's pid namespace and cgroup: joins the
/// container's other namespaces, then applies the process spec and execs.
fn exec_child(pid: i32, spec: &Spec, process: &Process, stdio: Stdio) -> Result<Infallible> {
    reset_signals();
    // Open all first: after joining the mount namespace /proc/<pid> may not be visible.
    let mut fds = Vec::new();
    // The container's user namespace first (it owns the others), unless it is ours.
    if !same_namespace(pid, "user") {
        let p = format!("/proc/{pid}/ns/user");
        fds.push((File::open(&p).ctx(|| format!("open {p}"))?, CloneFlags::CLONE_NEWUSER, "user"));
    }
    for (name, flag) in [
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        // Ours already (the host's, for what the container shares with it): from inside
        // a pod's user namespace, joining a host namespace again would be refused.
        if same_namespace(pid, name) {
            continue;
        }
        let p = format!("/proc/{pid}/ns/{name}");
        let f = File::open(&p).ctx(|| format!("open {p}"))?;
        fds.push((f, flag, name));
    }
    for (f, flag, name) in &fds {
        setns(f.as_fd(), *flag).ctx(|| format!("setns {name}"))?;
        if *flag == CloneFlags::CLONE_NEWUSER {
            become_userns_root()?;
        }
    }
    drop(fds);
    setup_stdio(&stdio)?;
    drop(stdio);
    let prepared = prepare_process(process, spec)?;
    // The report pipe closes on exec: the shim reads EOF.
    Err(prepared.exec())
}

/// After joining a user namespace: become its root. Host root is not mapped in a pod's
/// namespace, and files an unmapped id would create get EOVERFLOW; uid 0 there keeps the
/// capabilities that joining gave.
fn become_userns_root() -> Result<()> {
    nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
        .ctx(|| "setresgid 0 in the user namespace".into())?;
    nix::unistd::setgroups(&[]).ctx(|| "setgroups in the user namespace".into())?;
    nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
        .ctx(|| "setresuid 0 in the user namespace".into())
}

/// Whether process `pid` is in the caller's namespace of kind `name`.
fn same_namespace(pid: i32, name: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let id = |p: String| std::fs::metadata(p).map(|m| (m.dev(), m.ino()));
    match (id(format!("/proc/{pid}/ns/{name}")), id(format!("/proc/self/ns/{name}"))) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Closes a raw fd the caller owns (helper for tests).
pub fn close_raw(fd: RawFd) {
    // SAFETY: the caller owns fd.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
}

#[cfg(test)]
mod tests;
