//! Containers run by an external OCI runtime (runc, crun, …) instead of the native
//! executor: the same bundle and spec, driven through the runtime's command line.
//!
//! The shim stays the container's parent: `create` and `exec -d` return once the process
//! exists, the runtime's own process exits, and the container process is re-parented to
//! the shim (the subreaper), which reaps it and records its exit like a native one.

use std::fs::{self, File};
use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio as ProcStdio};
use std::time::{Duration, Instant};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use oci_spec::runtime::Process;

use crate::executor::Stdio;

/// How long the runtime may take to create a container or start an exec.
const RUNTIME_TIMEOUT: Duration = Duration::from_secs(60);

pub struct OciRuntime {
    binary: PathBuf,
    /// The runtime's state directory (`--root`), one per pod shim.
    root: PathBuf,
    /// The container's cgroup is a systemd scope (`slice:prefix:name`): the runtime must
    /// make it over D-Bus (`--systemd-cgroup`).
    systemd_cgroup: bool,
}

/// What `create` made: the container's pid and, with a terminal, the pty master.
pub struct Created {
    pub pid: i32,
    pub console: Option<File>,
}

impl OciRuntime {
    pub fn new(binary: PathBuf, shim_dir: &Path) -> Self {
        Self { binary, root: shim_dir.join("oci-runtime"), systemd_cgroup: false }
    }

    /// For a container whose cgroups path is in systemd form.
    pub fn with_systemd_cgroup(mut self, on: bool) -> Self {
        self.systemd_cgroup = on;
        self
    }

    /// The runtime with its global flags. Its own errors go to a log file (read back on
    /// failure) so they never end up in the container's log.
    fn command(&self) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(self.log())
            .arg("--log-format")
            .arg("text");
        if self.systemd_cgroup {
            c.arg("--systemd-cgroup");
        }
        c
    }

    fn log(&self) -> PathBuf {
        self.root.join("runtime.log")
    }

    /// `create`: the process is set up and waits for [`OciRuntime::start`]. With `tty`,
    /// the runtime makes the terminal and hands its master over a console socket.
    pub fn create(
        &self,
        id: &str,
        bundle: &Path,
        stdio: Stdio,
        tty: bool,
    ) -> Result<Created, String> {
        fs::create_dir_all(&self.root).map_err(|e| format!("{}: {e}", self.root.display()))?;
        clamp_oom_score_adj(bundle)?;
        let pid_file = bundle.join("oci-runtime.pid");
        let _ = fs::remove_file(&pid_file);
        let mut cmd = self.command();
        cmd.arg("create").arg("--bundle").arg(bundle).arg("--pid-file").arg(&pid_file);
        let console = if tty {
            let path = bundle.join("console.sock");
            let _ = fs::remove_file(&path);
            let listener = UnixListener::bind(&path).map_err(|e| format!("console socket: {e}"))?;
            cmd.arg("--console-socket").arg(&path);
            Some((listener, path))
        } else {
            None
        };
        cmd.arg(id);
        let ran = self.run_with_stdio(cmd, stdio, console.as_ref().map(|c| &c.0));
        if let Some((_, path)) = &console {
            let _ = fs::remove_file(path);
        }
        let master = ran?;
        Ok(Created { pid: read_pid(&pid_file)?, console: master })
    }

    pub fn start(&self, id: &str) -> Result<(), String> {
        let mut cmd = self.command();
        cmd.arg("start").arg(id);
        self.run_with_stdio(cmd, Stdio::null().map_err(|e| format!("/dev/null: {e}"))?, None)
            .map(drop)
    }

    /// `exec --detach`: starts `process` in the container; returns its pid.
    pub fn exec(
        &self,
        id: &str,
        bundle: &Path,
        process: &Process,
        stdio: Stdio,
    ) -> Result<i32, String> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let process_file = bundle.join(format!("exec-{n}.json"));
        let pid_file = bundle.join(format!("exec-{n}.pid"));
        let json = serde_json::to_vec(process).map_err(|e| e.to_string())?;
        fs::write(&process_file, json).map_err(|e| format!("{}: {e}", process_file.display()))?;
        let mut cmd = self.command();
        cmd.arg("exec")
            .arg("--detach")
            .arg("--process")
            .arg(&process_file)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(id);
        let ran = self.run_with_stdio(cmd, stdio, None);
        let pid = ran.and_then(|_| read_pid(&pid_file));
        let _ = fs::remove_file(&process_file);
        let _ = fs::remove_file(&pid_file);
        pid
    }

    /// `delete --force`: the runtime forgets the container (and kills what is left).
    pub fn delete(&self, id: &str) -> Result<(), String> {
        let mut cmd = self.command();
        cmd.arg("delete").arg("--force").arg(id);
        self.run_with_stdio(cmd, Stdio::null().map_err(|e| format!("/dev/null: {e}"))?, None)
            .map(drop)
    }

    /// Runs the runtime with the container's stdio and waits for it; a console socket,
    /// when given, is served while it runs.
    fn run_with_stdio(
        &self,
        mut cmd: Command,
        stdio: Stdio,
        console: Option<&UnixListener>,
    ) -> Result<Option<File>, String> {
        let what = format!(
            "{} {}",
            self.binary.display(),
            cmd.get_args()
                .skip(6 + usize::from(self.systemd_cgroup))
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
        cmd.stdin(ProcStdio::from(stdio.stdin))
            .stdout(ProcStdio::from(stdio.stdout))
            .stderr(ProcStdio::from(stdio.stderr));
        let mut c = cmd;
        let mut child = c.spawn().map_err(|e| format!("{what}: {e}"))?;
        let mut master = None;
        // A runtime that fails hangs up without sending the terminal: its own error then
        // says why, so this one is reported only when the runtime claims success.
        let mut console_error = None;
        let deadline = Instant::now() + RUNTIME_TIMEOUT;
        if let Some(listener) = console {
            listener.set_nonblocking(true).map_err(|e| e.to_string())?;
            loop {
                match listener.accept() {
                    Ok((conn, _)) => {
                        match receive_fd(&conn) {
                            Ok(fd) => master = Some(fd),
                            Err(e) => console_error = Some(format!("{what}: console: {e}")),
                        }
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if child.try_wait().map_err(|e| e.to_string())?.is_some()
                            || Instant::now() > deadline
                        {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(e) => return Err(format!("console: {e}")),
                }
            }
        }
        let status = loop {
            if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{what}: timed out"));
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        if !status.success() {
            let text = fs::read_to_string(self.log()).unwrap_or_default();
            let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
            return Err(format!("{what}: {status}: {last}"));
        }
        if let Some(e) = console_error {
            return Err(e);
        }
        Ok(master.map(File::from))
    }
}

/// The runtime would fail to set an `oom_score_adj` below ours where we lack
/// CAP_SYS_RESOURCE (nested nodes): clamp it in the bundle, as the native executor does.
fn clamp_oom_score_adj(bundle: &Path) -> Result<(), String> {
    let config = bundle.join("config.json");
    let text = fs::read(&config).map_err(|e| format!("{}: {e}", config.display()))?;
    let mut spec: oci_spec::runtime::Spec =
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", config.display()))?;
    let Some(mut process) = spec.process().clone() else { return Ok(()) };
    let Some(wanted) = process.oom_score_adj() else { return Ok(()) };
    let value = crate::executor::clamp_oom_score_adj(wanted, crate::executor::own_oom_score_adj());
    if value != wanted {
        process.set_oom_score_adj(Some(value));
        spec.set_process(Some(process));
        let json = serde_json::to_vec_pretty(&spec).map_err(|e| e.to_string())?;
        fs::write(&config, json).map_err(|e| format!("{}: {e}", config.display()))?;
    }
    Ok(())
}

fn read_pid(file: &Path) -> Result<i32, String> {
    fs::read_to_string(file)
        .map_err(|e| format!("{}: {e}", file.display()))?
        .trim()
        .parse()
        .map_err(|e| format!("{}: {e}", file.display()))
}

/// Receives one fd sent with SCM_RIGHTS (the runtime's pty master).
fn receive_fd(conn: &std::os::unix::net::UnixStream) -> io::Result<OwnedFd> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(RUNTIME_TIMEOUT))?;
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg =
        recvmsg::<()>(conn.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
            .map_err(io::Error::from)?;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just gave us this fd; nothing else owns it.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(io::Error::other("no terminal fd received"))
}
