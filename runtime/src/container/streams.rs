//! Streaming sessions on a container: exec with live stdio, attach, terminal resize.
//!
//! berthd makes the pipes (or the terminal) and hands the far ends to the pod's shim,
//! which starts the process on them (exec) or tees the container's stdio to them
//! (attach). berthd keeps the near ends and streams them to the client, so the shim
//! never carries a session's bytes and a session never outlives its client: dropping an
//! [`ExecSession`] ends its connection to the shim, which kills the process.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use super::service::operations::running_pid;
use super::service::{ContainerError, Containers};
use crate::error::internal;
use crate::shim::client::Canceller;

type Result<T> = std::result::Result<T, ContainerError>;

/// Which streams a session wants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamOptions {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// berthd's ends of a session's stdio. All are non-blocking. With a tty, `stdout` is the
/// terminal's master (output and input alike) and `stderr` is none.
#[derive(Debug)]
pub struct SessionIo {
    /// Write end of the process's stdin (none when stdin was not asked for).
    pub stdin: Option<OwnedFd>,
    /// Read end of its stdout (the terminal with a tty).
    pub stdout: Option<OwnedFd>,
    /// Read end of its stderr.
    pub stderr: Option<OwnedFd>,
    /// The terminal's master, for resizing.
    pub terminal: Option<OwnedFd>,
}

/// A running exec: its stdio, and its exit code once it ends.
pub struct ExecSession {
    pub io: SessionIo,
    /// Resolves to the exit code (or why the process could not run).
    pub exit: tokio::task::JoinHandle<Result<i32>>,
    /// Ends the session (kills the process) when dropped.
    pub cancel: Canceller,
}

/// A terminal's new size.
pub fn resize_terminal(terminal: &OwnedFd, width: u16, height: u16) -> std::io::Result<()> {
    crate::shim::server::set_window_size(terminal.as_fd(), width, height)
}

impl Containers {
    /// Starts `cmd` in a running container with live stdio.
    pub async fn exec_stream(
        self: &Arc<Self>,
        wanted: &str,
        cmd: Vec<String>,
        opts: StreamOptions,
    ) -> Result<ExecSession> {
        if cmd.is_empty() {
            return Err(ContainerError::InvalidArgument("cmd: required".into()));
        }
        let rec = self.get(wanted)?;
        let (io, child, mut shim, process) = self
            .blocking(move |this| {
                let process = this.exec_process(&rec, cmd, opts.tty)?;
                let mut shim = this.shim(&rec.pod_id, false)?;
                let pid = running_pid(&mut shim, &rec)?;
                let (io, child) = session_stdio(opts, pid).map_err(internal)?;
                Ok::<_, ContainerError>((io, child, shim, (rec.id, process)))
            })
            .await??;
        let cancel = shim.canceller().map_err(internal)?;
        let (id, process) = process;
        let exit = crate::traced::spawn_blocking(move || {
            shim.exec_stream(&id, process, opts.tty, child)
                .map_err(|e| ContainerError::FailedPrecondition(format!("exec: {e}")))
        });
        Ok(ExecSession { io, exit, cancel })
    }

    /// Attaches to a created or running container's stdio. Output ends at end of file
    /// when the container exits; the shim notices a session that went away when it next
    /// writes to it, or at once when its pipes are closed.
    pub async fn attach(self: &Arc<Self>, wanted: &str, opts: StreamOptions) -> Result<SessionIo> {
        let rec = self.get(wanted)?;
        if opts.stdin && !rec.stdin {
            return Err(ContainerError::InvalidArgument(format!(
                "stdin: container {} was not created with stdin open",
                rec.id
            )));
        }
        let tty = rec.tty;
        self.blocking(move |this| {
            let mut shim = this.shim(&rec.pod_id, false)?;
            let (stdin_r, stdin_w) = if opts.stdin {
                let (r, w) = pipe().map_err(internal)?;
                (Some(r), Some(w))
            } else {
                (None, None)
            };
            let (out_r, out_w) = pipe().map_err(internal)?;
            let (err_r, err_w) = if tty {
                (None, None)
            } else {
                let (r, w) = pipe().map_err(internal)?;
                (Some(r), Some(w))
            };
            shim.attach(
                &rec.id,
                stdin_r.as_ref().map(|f| f.as_fd()),
                out_w.as_fd(),
                err_w.as_ref().map(|f| f.as_fd()),
            )
            .map_err(|e| match e.kind() {
                crate::shim::protocol::ErrorKind::NotFound => {
                    ContainerError::NotFound(format!("container {} not found", rec.id))
                }
                _ => ContainerError::FailedPrecondition(format!("attach: {e}")),
            })?;
            for f in stdin_w.iter().chain([&out_r]).chain(err_r.iter()) {
                set_nonblocking(f).map_err(internal)?;
            }
            Ok(SessionIo { stdin: stdin_w, stdout: Some(out_r), stderr: err_r, terminal: None })
        })
        .await?
    }

    /// Resizes the terminal of a container created with a tty (attach sessions).
    pub async fn resize(self: &Arc<Self>, wanted: &str, width: u16, height: u16) -> Result<()> {
        let rec = self.get(wanted)?;
        self.blocking(move |this| {
            let mut shim = this.shim(&rec.pod_id, false)?;
            shim.resize(&rec.id, width, height)
                .map_err(|e| ContainerError::FailedPrecondition(format!("resize: {e}")))
        })
        .await?
    }
}

/// A pipe with close-on-exec ends and a large buffer, so a burst of output waits in the
/// kernel rather than being dropped by the shim while the client catches up.
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let _ = nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20));
    Ok((r, w))
}

fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK))?;
    Ok(())
}

/// A terminal in the container's own devpts (through `/proc/<pid>/root`), so that inside
/// it the terminal has a name (`tty`, `ttyname()`) as it would under runc: the master for
/// the session, the slave for the process.
fn container_pty(pid: i32) -> std::io::Result<(OwnedFd, OwnedFd)> {
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::fs::OpenOptionsExt;
    let master: OwnedFd = File::options()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(format!("/proc/{pid}/root/dev/pts/ptmx"))?
        .into();
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int; TIOCGPTPEER returns a new fd that we own.
    unsafe {
        if libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
        let slave = libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags);
        if slave < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let slave = OwnedFd::from_raw_fd(slave);
        // The terminal is the container's user's, as runc's would be (made by berthd it is
        // host root's: `nobody` inside a pod user namespace).
        if let Ok(owner) = std::fs::metadata(format!("/proc/{pid}")) {
            use std::os::unix::fs::MetadataExt;
            let _ = nix::unistd::fchown(&slave, Some(owner.uid().into()), None);
        }
        Ok((master, slave))
    }
}

/// The session's ends and the process's ends (stdin, stdout, stderr) of its stdio.
/// `pid`: the container's process, whose devpts a terminal is made in when it can be.
fn session_stdio(opts: StreamOptions, pid: i32) -> std::io::Result<(SessionIo, [OwnedFd; 3])> {
    let null = || -> std::io::Result<OwnedFd> {
        Ok(File::options().read(true).write(true).open("/dev/null")?.into())
    };
    if opts.tty {
        let (master, slave) = match container_pty(pid) {
            Ok(pair) => pair,
            Err(e) => {
                // A container without its own devpts: a host terminal still works, it
                // just has no name inside.
                tracing::debug!(error = %e, "no terminal in the container's devpts");
                let pty = nix::pty::openpty(None, None)?;
                nix::fcntl::fcntl(
                    &pty.master,
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
                )?;
                (pty.master, pty.slave)
            }
        };
        set_nonblocking(&master)?;
        let child = [slave.try_clone()?, slave.try_clone()?, slave];
        let io = SessionIo {
            stdin: if opts.stdin { Some(master.try_clone()?) } else { None },
            stdout: Some(master.try_clone()?),
            stderr: None,
            terminal: Some(master),
        };
        return Ok((io, child));
    }
    let (stdin_ours, stdin_child) = if opts.stdin {
        let (r, w) = pipe()?;
        set_nonblocking(&w)?;
        (Some(w), r)
    } else {
        (None, null()?)
    };
    let output = |wanted: bool| -> std::io::Result<(Option<OwnedFd>, OwnedFd)> {
        if !wanted {
            return Ok((None, null()?));
        }
        let (r, w) = pipe()?;
        set_nonblocking(&r)?;
        Ok((Some(r), w))
    };
    let (stdout_ours, stdout_child) = output(opts.stdout)?;
    let (stderr_ours, stderr_child) = output(opts.stderr)?;
    let io =
        SessionIo { stdin: stdin_ours, stdout: stdout_ours, stderr: stderr_ours, terminal: None };
    Ok((io, [stdin_child, stdout_child, stderr_child]))
}
