//! A blocking client for the shim protocol, and the fork+exec that starts a shim.
//!
//! From tokio, call these inside `tokio::task::spawn_blocking`. One [`ShimClient`] is one
//! connection, answering requests in order; [`ShimClient::wait`] and
//! [`ShimClient::exec`] block until the container exits or the exec ends, so use a
//! separate connection for them.

use std::io::{self, Read};
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::protocol::*;
use super::ShimPaths;

/// A failed call: the shim's own error, or the transport's.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("shim: {message}")]
    Shim { kind: ErrorKind, message: String },
    #[error("shim connection: {0}")]
    Io(#[from] io::Error),
    #[error("shim: unexpected answer {0:?}")]
    Unexpected(Box<Response>),
}

impl ShimError {
    /// The error kind, Internal for transport errors.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ShimError::Shim { kind, .. } => *kind,
            _ => ErrorKind::Internal,
        }
    }
}

pub type Result<T> = std::result::Result<T, ShimError>;

/// Starts the shim for `paths` by fork+exec of `binary` and returns once it serves its
/// socket (the started process exits then; the shim itself runs detached). Safe to call
/// from a multi-threaded process: std's Command forks and execs at once.
#[tracing::instrument(name = "shim.spawn", skip_all, fields(dir = %paths.dir().display()))]
pub fn spawn(binary: &Path, paths: &ShimPaths) -> io::Result<()> {
    let out = Command::new(binary)
        .arg("--dir")
        .arg(paths.dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "berth-shim failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Ends a [`ShimClient`]'s connection when cancelled or dropped.
#[derive(Debug)]
pub struct Canceller(UnixStream);

impl Canceller {
    pub fn cancel(&self) {
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
}

impl Drop for Canceller {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// A [`Request::Wait`] sent on a connection of its own: the shim answers it the moment
/// the container stops, so a caller that must also act meanwhile (signal it again, give
/// up after a grace period) is woken by the exit itself instead of polling the state.
#[derive(Debug)]
pub struct ExitWait {
    client: ShimClient,
}

impl ExitWait {
    /// Connects to the shim and asks it to answer when container `id` has stopped.
    pub fn send(paths: &ShimPaths, id: &str) -> Result<Self> {
        let mut client = ShimClient::connect(paths)?;
        client.send(Request::Wait { id: id.into() }, &[])?;
        Ok(Self { client })
    }

    /// Whether the container stopped within `timeout`. An error from the shim (the
    /// container was deleted) or a lost connection (the shim is gone, and its containers
    /// with it) counts as stopped: nothing of it runs any more.
    pub fn stopped_within(&mut self, timeout: Duration) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32)
                .unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(self.client.stream.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, ms) {
                Ok(0) => return false,
                Ok(_) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return true,
            }
        }
        // Readable: the answer (written in one piece), or the end of the connection.
        let _ = self.client.recv();
        true
    }
}

/// One connection to a shim.
#[derive(Debug)]
pub struct ShimClient {
    stream: UnixStream,
}

impl ShimClient {
    /// Connects to the socket of a live shim.
    pub fn connect(paths: &ShimPaths) -> io::Result<Self> {
        Self::connect_socket(&paths.socket())
    }

    pub fn connect_socket(socket: &Path) -> io::Result<Self> {
        Ok(Self { stream: UnixStream::connect(socket)? })
    }

    /// Retries connecting for up to `timeout`.
    pub fn connect_timeout(paths: &ShimPaths, timeout: Duration) -> io::Result<Self> {
        let deadline = Instant::now() + timeout;
        loop {
            match Self::connect(paths) {
                Ok(c) => return Ok(c),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    /// Limits how long one answer may take (`None`: forever).
    pub fn set_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(t)?;
        self.stream.set_write_timeout(t)
    }

    /// Sends a request and reads its answer.
    pub fn call(&mut self, req: Request) -> Result<Response> {
        self.call_fds(req, &[])
    }

    /// Sends a request with the descriptors it carries ([`Request::fd_count`]) and reads
    /// its answer.
    pub fn call_fds(&mut self, req: Request, fds: &[BorrowedFd<'_>]) -> Result<Response> {
        self.send(req, fds)?;
        self.recv()
    }

    fn send(&mut self, req: Request, fds: &[BorrowedFd<'_>]) -> Result<()> {
        if fds.len() != req.fd_count() {
            return Err(ShimError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} descriptors for a request that carries {}", fds.len(), req.fd_count()),
            )));
        }
        let frame = encode(&RequestFrame { v: PROTOCOL_VERSION, req })?;
        Ok(super::fdpass::send_with_fds(&self.stream, &frame, fds)?)
    }

    fn recv(&mut self) -> Result<Response> {
        let frame: ResponseFrame = read_frame(&mut self.stream)?.ok_or_else(|| {
            io::Error::new(io::ErrorKind::UnexpectedEof, "shim closed the connection")
        })?;
        match frame.result {
            WireResult::Ok(r) => Ok(r),
            WireResult::Err { kind, message } => Err(ShimError::Shim { kind, message }),
        }
    }

    fn ok(&mut self, req: Request) -> Result<()> {
        match self.call(req)? {
            Response::Ok => Ok(()),
            other => Err(ShimError::Unexpected(Box::new(other))),
        }
    }

    fn state_of(&mut self, req: Request) -> Result<ContainerState> {
        match self.call(req)? {
            Response::State(s) => Ok(s),
            other => Err(ShimError::Unexpected(Box::new(other))),
        }
    }

    /// The shim's protocol version and pid.
    pub fn hello(&mut self) -> Result<(u32, i32)> {
        match self.call(Request::Hello)? {
            Response::Hello { version, pid } => Ok((version, pid)),
            other => Err(ShimError::Unexpected(Box::new(other))),
        }
    }

    /// Creates a container; returns its host pid.
    pub fn create(&mut self, req: CreateRequest) -> Result<i32> {
        self.create_while(req, || ()).0
    }

    /// [`Self::create`], running `meanwhile` once the request is sent and before its
    /// answer is read: berthd's own work beside the container's set-up in the shim. A
    /// request that could not be sent runs nothing.
    #[tracing::instrument(name = "shim.create", skip_all, fields(container_id = %req.container_id))]
    pub fn create_while<T>(
        &mut self,
        req: CreateRequest,
        meanwhile: impl FnOnce() -> T,
    ) -> (Result<i32>, Option<T>) {
        if let Err(e) = self.send(Request::Create(req), &[]) {
            return (Err(e), None);
        }
        let done = meanwhile();
        let created = match self.recv() {
            Ok(Response::Created { pid }) => Ok(pid),
            Ok(other) => Err(ShimError::Unexpected(Box::new(other))),
            Err(e) => Err(e),
        };
        (created, Some(done))
    }

    #[tracing::instrument(name = "shim.start", skip(self))]
    pub fn start(&mut self, id: &str) -> Result<()> {
        self.ok(Request::Start { id: id.into() })
    }

    pub fn kill(&mut self, id: &str, signal: i32, all: bool) -> Result<()> {
        self.ok(Request::Kill { id: id.into(), signal, all })
    }

    pub fn state(&mut self, id: &str) -> Result<ContainerState> {
        self.state_of(Request::State { id: id.into() })
    }

    pub fn list(&mut self) -> Result<Vec<ContainerState>> {
        match self.call(Request::List)? {
            Response::List(v) => Ok(v),
            other => Err(ShimError::Unexpected(Box::new(other))),
        }
    }

    /// Blocks until the container has stopped; returns its final state.
    pub fn wait(&mut self, id: &str) -> Result<ContainerState> {
        self.state_of(Request::Wait { id: id.into() })
    }

    pub fn delete(&mut self, id: &str) -> Result<()> {
        self.ok(Request::Delete { id: id.into() })
    }

    pub fn reopen_log(&mut self, id: &str) -> Result<()> {
        self.ok(Request::ReopenLog { id: id.into() })
    }

    /// Runs `process` (an OCI process object) in the container and collects its output.
    #[tracing::instrument(name = "shim.exec", skip(self, process))]
    pub fn exec(
        &mut self,
        id: &str,
        process: serde_json::Value,
        timeout: Option<Duration>,
    ) -> Result<ExecResult> {
        let timeout_ms = timeout.map_or(0, |t| t.as_millis().max(1) as u64);
        match self.call(Request::Exec(ExecRequest {
            container_id: id.into(),
            process,
            timeout_ms,
        }))? {
            Response::Exec(r) => Ok(r),
            other => Err(ShimError::Unexpected(Box::new(other))),
        }
    }

    /// Runs `process` in the container on the given stdio (stdin, stdout, stderr; the
    /// terminal three times with `tty`) and blocks until it exits; returns its exit code.
    /// Our copies of the descriptors are closed once sent, so the session sees end of
    /// file when the process and its children are done with them.
    /// [`ShimClient::canceller`] taken before ends it early.
    #[tracing::instrument(name = "shim.exec_stream", skip(self, process, stdio))]
    pub fn exec_stream(
        &mut self,
        id: &str,
        process: serde_json::Value,
        tty: bool,
        stdio: [std::os::fd::OwnedFd; 3],
    ) -> Result<i32> {
        use std::os::fd::AsFd;
        let req = Request::ExecStream(ExecStreamRequest { container_id: id.into(), process, tty });
        let fds: Vec<BorrowedFd<'_>> = stdio.iter().map(|f| f.as_fd()).collect();
        self.send(req, &fds)?;
        drop(fds);
        drop(stdio);
        match self.recv()? {
            Response::Exec(r) => Ok(r.exit_code),
            other => Err(ShimError::Unexpected(Box::new(other))),
        }
    }

    /// Attaches pipes to the container's stdio: `stdin` is a read end the shim feeds the
    /// container's stdin from, `stdout`/`stderr` write ends that get its output.
    pub fn attach(
        &mut self,
        id: &str,
        stdin: Option<BorrowedFd<'_>>,
        stdout: BorrowedFd<'_>,
        stderr: Option<BorrowedFd<'_>>,
    ) -> Result<()> {
        let fds: Vec<BorrowedFd<'_>> = stdin.into_iter().chain([stdout]).chain(stderr).collect();
        let req =
            Request::Attach { id: id.into(), stdin: stdin.is_some(), stderr: stderr.is_some() };
        match self.call_fds(req, &fds)? {
            Response::Ok => Ok(()),
            other => Err(ShimError::Unexpected(Box::new(other))),
        }
    }

    /// Sets the window size of a tty container's terminal.
    pub fn resize(&mut self, id: &str, width: u16, height: u16) -> Result<()> {
        self.ok(Request::Resize { id: id.into(), width, height })
    }

    /// A handle that ends this connection from another thread: a call blocked on it
    /// returns an error, and the shim treats the hang-up as the caller giving up.
    pub fn canceller(&self) -> io::Result<Canceller> {
        Ok(Canceller(self.stream.try_clone()?))
    }

    /// Starts (or finds) the pod's init; returns its host pid.
    pub fn pod_init(&mut self, userns: Option<&std::path::Path>) -> Result<i32> {
        let req = match userns {
            Some(p) => Request::PodInitInUserns { userns: p.to_path_buf() },
            None => Request::PodInit,
        };
        match self.call(req)? {
            Response::PodInit { pid } => Ok(pid),
            other => Err(ShimError::Unexpected(Box::new(other))),
        }
    }

    pub fn stop_pod_init(&mut self) -> Result<()> {
        self.ok(Request::StopPodInit)
    }

    /// Asks the shim to exit (`force`: killing what still runs).
    pub fn shutdown(&mut self, force: bool) -> Result<()> {
        self.ok(Request::Shutdown { force })
    }

    /// Blocks until the shim closes this connection (it has exited) or `timeout` passes.
    pub fn wait_closed(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 64];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stream.set_read_timeout(Some(left)).is_err() {
                return;
            }
            match self.stream.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }
}
