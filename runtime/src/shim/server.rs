//! The shim process: start-up (detach, subreaper, socket) and its single-threaded
//! poll(2) loop over the socket, a signalfd for SIGCHLD/SIGTERM, container output pipes
//! and exec pipes.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::{Process, Spec};

use super::log::{LineSplitter, LogFile, Stream};
use super::oci_runtime::OciRuntime;
use super::protocol::*;
use super::{valid_id, ExitRecord, ShimPaths};
use crate::clock::now_ns;
use crate::executor::{self, cgroups, Stdio};

type Reply = std::result::Result<Response, (ErrorKind, String)>;

fn fail<T>(kind: ErrorKind, msg: impl Into<String>) -> std::result::Result<T, (ErrorKind, String)> {
    Err((kind, msg.into()))
}

/// One output pipe being copied somewhere.
struct Pipe {
    file: File,
    split: LineSplitter,
    /// Reached EOF (its last line is written); dropped at the end of the loop iteration.
    eof: bool,
}

struct Container {
    spec: Spec,
    status: Status,
    pid: i32,
    exit_code: Option<i32>,
    created_at_ns: i64,
    started_at_ns: i64,
    finished_at_ns: i64,
    oom_killed: bool,
    pending: Option<executor::Pending>,
    log: LogFile,
    pipes: Vec<Pipe>,
    stdin: Option<File>,
    /// Bytes from attached clients the container has not read yet (its stdin is
    /// non-blocking: a container that does not read must not stall the shim).
    stdin_pending: Vec<u8>,
    /// Close stdin once `stdin_pending` is written (stdin_once and the client closed).
    stdin_closing: bool,
    stdin_once: bool,
    /// The terminal's master, for resizing, when created with a tty.
    master: Option<File>,
    attachers: Vec<Attacher>,
    waiters: Vec<u64>,
    /// Set when an external OCI runtime runs this container.
    runtime: Option<OciRuntime>,
    bundle: PathBuf,
}

impl Container {
    fn state(&self, id: &str) -> ContainerState {
        ContainerState {
            id: id.to_string(),
            status: self.status,
            pid: self.pid,
            exit_code: self.exit_code,
            created_at_ns: self.created_at_ns,
            started_at_ns: self.started_at_ns,
            finished_at_ns: self.finished_at_ns,
            oom_killed: self.oom_killed,
        }
    }
    fn cgroup(&self) -> Option<PathBuf> {
        self.spec.linux().as_ref().and_then(|l| l.cgroups_path().clone())
    }
}

/// A client attached to a container's stdio (through berthd's pipes).
struct Attacher {
    id: u64,
    stdin: Option<File>,
    stdout: Option<File>,
    stderr: Option<File>,
    /// Its reader went away: dropped at the end of the loop iteration.
    gone: bool,
}

impl Attacher {
    /// Copies container output to the client without blocking: a client that does not
    /// keep up loses what does not fit in its pipe rather than stall the container.
    fn send(&mut self, stream: Stream, bytes: &[u8]) {
        let target = match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        let Some(f) = target else { return };
        let mut rest = bytes;
        while !rest.is_empty() {
            match f.write(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.gone = true;
                    return;
                }
            }
        }
    }
}

struct ExecJob {
    conn: u64,
    /// Its stdio belongs to a streaming session: no output is collected, and the
    /// process is killed if the session's connection goes away.
    streaming: bool,
    pid: i32,
    out: Option<File>,
    err: Option<File>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    deadline: Option<Instant>,
    timed_out: bool,
}

struct Conn {
    stream: UnixStream,
    rbuf: Vec<u8>,
    /// Descriptors received and not yet taken by a request, in arrival order.
    fds: VecDeque<OwnedFd>,
    busy: bool,
}

struct Shim {
    paths: ShimPaths,
    containers: HashMap<String, Container>,
    execs: Vec<ExecJob>,
    conns: HashMap<u64, Conn>,
    next_conn: u64,
    next_attacher: u64,
    buf: Vec<u8>,
    quit: bool,
    /// Host pid of the pod's init, when the pod shares one PID namespace.
    pod_init: Option<i32>,
}

/// Cap on collected exec output per stream.
const EXEC_OUTPUT_MAX: usize = 16 << 20;

/// `berth-shim --dir <shim dir>`: starts the shim. Returns the exit code of the process
/// that berthd started (0 once the detached shim is serving).
pub fn main_with_args(args: &[String]) -> i32 {
    let mut dir = None;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--dir" => dir = it.next().map(PathBuf::from),
            "--version" => {
                println!("berth-shim protocol {PROTOCOL_VERSION}");
                return 0;
            }
            _ => {}
        }
    }
    let Some(dir) = dir else {
        eprintln!("usage: berth-shim --dir <shim directory>");
        return 2;
    };
    match start(ShimPaths::from_dir(dir)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("berth-shim: {e}");
            1
        }
    }
}

fn start(paths: ShimPaths) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(paths.exits())?;
    let sock = paths.socket();
    if UnixStream::connect(&sock).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "a shim is already serving this directory",
        ));
    }
    let _ = fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock)?;
    fs::set_permissions(&sock, fs::Permissions::from_mode(0o600))?;
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // SAFETY: the shim binary is single-threaded here (nothing has spawned a thread).
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { .. } => {
            drop(ready_w);
            let mut msg = String::new();
            File::from(ready_r).read_to_string(&mut msg)?;
            if msg == "ok" {
                Ok(())
            } else {
                Err(io::Error::other(format!("shim failed to start: {msg}")))
            }
        }
        nix::unistd::ForkResult::Child => {
            drop(ready_r);
            let mut ready = File::from(ready_w);
            match detach(&paths) {
                Ok(sfd) => {
                    let _ = ready.write_all(b"ok");
                    drop(ready);
                    let mut shim = Shim {
                        paths,
                        containers: HashMap::new(),
                        execs: Vec::new(),
                        conns: HashMap::new(),
                        next_conn: 0,
                        next_attacher: 0,
                        buf: vec![0; 32 * 1024],
                        quit: false,
                        pod_init: None,
                    };
                    let code = match shim.run(&listener, &sfd) {
                        Ok(()) => 0,
                        Err(e) => {
                            eprintln!("berth-shim: {e}");
                            1
                        }
                    };
                    let _ = fs::remove_file(shim.paths.socket());
                    let _ = fs::remove_file(shim.paths.pid_file());
                    std::process::exit(code)
                }
                Err(e) => {
                    let _ = ready.write_all(e.to_string().as_bytes());
                    std::process::exit(1)
                }
            }
        }
    }
}

fn detach(paths: &ShimPaths) -> io::Result<SignalFd> {
    nix::unistd::setsid()?;
    std::env::set_current_dir(paths.dir())?;
    let log = OpenOptions::new().create(true).append(true).mode(0o600).open(paths.log())?;
    let null = File::open("/dev/null")?;
    // SAFETY: dup2 onto the standard descriptors.
    unsafe {
        libc::dup2(null.as_raw_fd(), 0);
        libc::dup2(log.as_raw_fd(), 1);
        libc::dup2(log.as_raw_fd(), 2);
        if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    fs::write(paths.pid_file(), std::process::id().to_string())?;
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGINT);
    mask.thread_block()?;
    Ok(SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?)
}

use std::os::unix::fs::OpenOptionsExt;

#[derive(Clone, Copy)]
enum Source {
    Listener,
    Signals,
    Conn(u64),
    CtrPipe(usize, usize), // container index in `order`, pipe index
    ExecPipe(i32, bool),   // exec pid
    CtrStdin(usize),       // container index: its stdin can take pending bytes
    AttachIn(usize, u64),  // container index, attacher id: client input
    AttachOut(usize, u64), // container index, attacher id: hang-up of its reader
}

impl Shim {
    fn run(&mut self, listener: &UnixListener, sfd: &SignalFd) -> io::Result<()> {
        while !self.quit {
            let order: Vec<String> = self.containers.keys().cloned().collect();
            let mut fds: Vec<(BorrowedFd<'_>, PollFlags, Source)> = Vec::new();
            // SAFETY: every fd below outlives this iteration's poll (nothing is closed
            // before the events are handled, and handling re-reads by Source).
            let borrow = |fd: i32| unsafe { BorrowedFd::borrow_raw(fd) };
            fds.push((borrow(listener.as_raw_fd()), PollFlags::POLLIN, Source::Listener));
            fds.push((borrow(sfd.as_fd().as_raw_fd()), PollFlags::POLLIN, Source::Signals));
            for (id, c) in &self.conns {
                let ev = if c.busy { PollFlags::empty() } else { PollFlags::POLLIN };
                fds.push((borrow(c.stream.as_raw_fd()), ev, Source::Conn(*id)));
            }
            for (ci, id) in order.iter().enumerate() {
                for (pi, p) in self.containers[id].pipes.iter().enumerate().filter(|(_, p)| !p.eof)
                {
                    fds.push((
                        borrow(p.file.as_raw_fd()),
                        PollFlags::POLLIN,
                        Source::CtrPipe(ci, pi),
                    ));
                }
            }
            for (ci, id) in order.iter().enumerate() {
                let c = &self.containers[id];
                if let Some(f) = c.stdin.as_ref().filter(|_| !c.stdin_pending.is_empty()) {
                    fds.push((borrow(f.as_raw_fd()), PollFlags::POLLOUT, Source::CtrStdin(ci)));
                }
                for a in &c.attachers {
                    if let Some(f) = a.stdin.as_ref().filter(|_| c.stdin_pending.is_empty()) {
                        fds.push((
                            borrow(f.as_raw_fd()),
                            PollFlags::POLLIN,
                            Source::AttachIn(ci, a.id),
                        ));
                    }
                    // A pipe's write end reports POLLERR once its reader is gone.
                    if let Some(f) = a.stdout.as_ref() {
                        fds.push((
                            borrow(f.as_raw_fd()),
                            PollFlags::empty(),
                            Source::AttachOut(ci, a.id),
                        ));
                    }
                }
            }
            for e in &self.execs {
                let ei = e.pid;
                if let Some(f) = &e.out {
                    fds.push((
                        borrow(f.as_raw_fd()),
                        PollFlags::POLLIN,
                        Source::ExecPipe(ei, false),
                    ));
                }
                if let Some(f) = &e.err {
                    fds.push((
                        borrow(f.as_raw_fd()),
                        PollFlags::POLLIN,
                        Source::ExecPipe(ei, true),
                    ));
                }
            }
            let now = Instant::now();
            let timeout = self
                .execs
                .iter()
                .filter_map(|e| e.deadline)
                .map(|d| d.saturating_duration_since(now).as_millis().min(60_000) as i32 + 1)
                .min()
                .map(|ms| PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX))
                .unwrap_or(PollTimeout::NONE);
            let mut pfds: Vec<PollFd<'_>> =
                fds.iter().map(|(fd, ev, _)| PollFd::new(*fd, *ev)).collect();
            match poll(&mut pfds, timeout) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let ready: Vec<(Source, PollFlags)> = pfds
                .iter()
                .zip(&fds)
                .filter_map(|(p, (_, _, s))| p.revents().filter(|r| !r.is_empty()).map(|r| (*s, r)))
                .collect();
            drop(pfds);
            drop(fds);
            let mut closed_exec: Vec<(i32, bool)> = Vec::new();
            for (src, rev) in ready {
                match src {
                    Source::Listener => {
                        if let Ok((stream, _)) = listener.accept() {
                            let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
                            self.next_conn += 1;
                            self.conns.insert(
                                self.next_conn,
                                Conn {
                                    stream,
                                    rbuf: Vec::new(),
                                    fds: VecDeque::new(),
                                    busy: false,
                                },
                            );
                        }
                    }
                    Source::Signals => {
                        while let Ok(Some(info)) = sfd.read_signal() {
                            if info.ssi_signo == libc::SIGTERM as u32
                                || info.ssi_signo == libc::SIGINT as u32
                            {
                                let _ = self.shutdown(false);
                            }
                        }
                        self.reap();
                    }
                    Source::Conn(id) => self.on_conn(id, rev),
                    Source::CtrPipe(ci, pi) => {
                        self.pump_container(&order[ci], pi);
                    }
                    Source::ExecPipe(ei, is_err) => {
                        if self.pump_exec(ei, is_err) {
                            closed_exec.push((ei, is_err));
                        }
                    }
                    Source::CtrStdin(ci) => self.flush_stdin(&order[ci]),
                    Source::AttachIn(ci, aid) => self.pump_attach_input(&order[ci], aid),
                    Source::AttachOut(ci, aid) => {
                        if rev.intersects(PollFlags::POLLERR | PollFlags::POLLHUP) {
                            self.detach_client(&order[ci], aid);
                        }
                    }
                }
            }
            for c in self.containers.values_mut() {
                c.pipes.retain(|p| !p.eof);
                c.attachers.retain(|a| !a.gone);
            }
            for (ei, is_err) in closed_exec {
                if let Some(e) = self.execs.iter_mut().find(|e| e.pid == ei) {
                    if is_err {
                        e.err = None;
                    } else {
                        e.out = None;
                    }
                }
            }
            self.check_timeouts();
            self.reap();
        }
        Ok(())
    }

    /// Reads what a container pipe has; at EOF writes the last partial line and marks
    /// the pipe done. True at EOF.
    fn pump_container(&mut self, id: &str, pi: usize) -> bool {
        let Some(c) = self.containers.get_mut(id) else { return false };
        let Some(p) = c.pipes.get_mut(pi).filter(|p| !p.eof) else { return true };
        let eof = match p.file.read(&mut self.buf) {
            Ok(0) => true,
            Ok(n) => {
                let stream = p.split.stream();
                for a in &mut c.attachers {
                    a.send(stream, &self.buf[..n]);
                }
                let mut out = Vec::new();
                p.split.push(&self.buf[..n], now_ns(), &mut out);
                if let Some(e) = c.log.write_or_drop(&out) {
                    eprintln!("berth-shim: write log of {id}: {e}; dropping its output until writes work again");
                }
                false
            }
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted =>
            {
                false
            }
            Err(_) => true, // EIO from a pty master whose slave is gone
        };
        if eof {
            let mut out = Vec::new();
            p.split.finish(now_ns(), &mut out);
            let _ = c.log.write(&out);
            p.eof = true;
        }
        eof
    }

    /// Drains container pipes without blocking (after the process exited).
    fn drain_container(&mut self, id: &str) {
        for pi in 0..self.containers.get(id).map_or(0, |c| c.pipes.len()) {
            for _ in 0..1024 {
                let has = {
                    let Some(p) = self.containers.get(id).and_then(|c| c.pipes.get(pi)) else {
                        break;
                    };
                    let mut pfd = [PollFd::new(p.file.as_fd(), PollFlags::POLLIN)];
                    // A pipe whose writers are all gone reports POLLHUP without POLLIN
                    // once empty; reading it then gives EOF, which flushes the last
                    // partial line before Wait is answered.
                    let ready = PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR;
                    matches!(poll(&mut pfd, PollTimeout::ZERO), Ok(n) if n > 0)
                        && pfd[0].revents().is_some_and(|r| r.intersects(ready))
                };
                if !has || self.pump_container(id, pi) {
                    break;
                }
            }
        }
    }

    fn pump_exec(&mut self, pid: i32, is_err: bool) -> bool {
        let Some(e) = self.execs.iter_mut().find(|e| e.pid == pid) else { return false };
        let (f, acc) =
            if is_err { (&mut e.err, &mut e.stderr) } else { (&mut e.out, &mut e.stdout) };
        let Some(f) = f else { return false };
        match f.read(&mut self.buf) {
            Ok(0) => true,
            Ok(n) => {
                let room = EXEC_OUTPUT_MAX.saturating_sub(acc.len());
                acc.extend_from_slice(&self.buf[..n.min(room)]);
                false
            }
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted =>
            {
                false
            }
            Err(_) => true,
        }
    }

    fn check_timeouts(&mut self) {
        let now = Instant::now();
        for e in &mut self.execs {
            if e.deadline.is_some_and(|d| d <= now) && !e.timed_out {
                e.timed_out = true;
                let _ = nix::sys::signal::kill(Pid::from_raw(e.pid), Signal::SIGKILL);
            }
        }
    }

    fn reap(&mut self) {
        loop {
            let (pid, code) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid.as_raw(), code),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid.as_raw(), 128 + sig as i32),
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            };
            if let Some(id) = self
                .containers
                .iter()
                .find(|(_, c)| c.pid == pid && c.status != Status::Stopped)
                .map(|(k, _)| k.clone())
            {
                self.container_exited(&id, code);
            } else if self.pod_init == Some(pid) {
                // Killed from outside: the pod's PID namespace is gone with it.
                self.pod_init = None;
            } else if let Some(ei) = self.execs.iter().position(|e| e.pid == pid) {
                let mut e = self.execs.remove(ei);
                if !e.streaming {
                    drain_exec(&mut e, &mut self.buf);
                }
                let result = ExecResult {
                    exit_code: code,
                    stdout: e.stdout,
                    stderr: e.stderr,
                    timed_out: e.timed_out,
                };
                self.respond(e.conn, Ok(Response::Exec(result)));
            }
        }
    }

    fn container_exited(&mut self, id: &str, code: i32) {
        self.drain_container(id);
        let paths = self.paths.clone();
        let Some(c) = self.containers.get_mut(id) else { return };
        c.status = Status::Stopped;
        c.exit_code = Some(code);
        c.finished_at_ns = now_ns();
        c.pending = None;
        c.stdin = None;
        c.stdin_pending.clear();
        // Closing the output ends tells each attached session the container is gone.
        c.attachers.clear();
        if let Some(cg) = c.cgroup() {
            c.oom_killed = cgroups::oom_kills(&cg) > 0;
        }
        let rec = ExitRecord {
            exit_code: code,
            started_at_ns: c.started_at_ns,
            finished_at_ns: c.finished_at_ns,
            oom_killed: c.oom_killed,
            pid: c.pid,
        };
        let tmp = paths.exits().join(format!(".{id}.tmp"));
        let written = serde_json::to_vec(&rec)
            .map_err(io::Error::other)
            .and_then(|b| fs::write(&tmp, b))
            .and_then(|()| fs::rename(&tmp, paths.exit_file(id)));
        if let Err(e) = written {
            eprintln!("berth-shim: record exit of {id}: {e}");
        }
        let state = c.state(id);
        for w in std::mem::take(&mut c.waiters) {
            self.respond(w, Ok(Response::State(state.clone())));
        }
    }

    fn on_conn(&mut self, id: u64, rev: PollFlags) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        if conn.busy {
            if rev.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                // The client went away while waiting for Wait/Exec: forget it (the answer
                // is dropped; an ExecSync still runs to its end or timeout, while a
                // streaming exec has lost its session and is killed).
                self.conns.remove(&id);
                for e in self.execs.iter().filter(|e| e.streaming && e.conn == id) {
                    let _ = nix::sys::signal::kill(Pid::from_raw(e.pid), Signal::SIGKILL);
                }
            }
            return;
        }
        let n = match super::fdpass::recv_with_fds(&conn.stream, &mut self.buf, &mut conn.fds) {
            Ok(0) | Err(_) => {
                self.conns.remove(&id);
                return;
            }
            Ok(n) => n,
        };
        conn.rbuf.extend_from_slice(&self.buf[..n]);
        loop {
            let Some(conn) = self.conns.get_mut(&id) else { return };
            if conn.busy {
                return;
            }
            let frame: RequestFrame = match take_frame(&mut conn.rbuf) {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err(e) => {
                    let resp = ResponseFrame {
                        v: PROTOCOL_VERSION,
                        result: WireResult::Err {
                            kind: ErrorKind::InvalidArgument,
                            message: e.to_string(),
                        },
                    };
                    let _ = write_frame(&mut conn.stream, &resp);
                    self.conns.remove(&id);
                    return;
                }
            };
            conn.busy = true;
            // Descriptors came with the frame's first byte, so they are queued by now.
            let wanted = frame.req.fd_count();
            if conn.fds.len() < wanted {
                conn.fds.clear();
                let msg = format!("the request needs {wanted} descriptors");
                self.respond(id, fail(ErrorKind::InvalidArgument, msg));
                continue;
            }
            let fds: Vec<OwnedFd> = conn.fds.drain(..wanted).collect();
            if frame.v != PROTOCOL_VERSION {
                let msg = format!(
                    "protocol version {} not supported (shim speaks {PROTOCOL_VERSION})",
                    frame.v
                );
                self.respond(id, fail(ErrorKind::InvalidArgument, msg));
                continue;
            }
            if let Some(reply) = self.handle(id, frame.req, fds) {
                self.respond(id, reply);
            }
        }
    }

    fn respond(&mut self, conn: u64, reply: Reply) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        c.busy = false;
        let result = match reply {
            Ok(r) => WireResult::Ok(r),
            Err((kind, message)) => WireResult::Err { kind, message },
        };
        if write_frame(&mut c.stream, &ResponseFrame { v: PROTOCOL_VERSION, result }).is_err() {
            self.conns.remove(&conn);
        }
    }

    /// Handles one request; `None` when the answer comes later (Wait, Exec).
    fn handle(&mut self, conn: u64, req: Request, fds: Vec<OwnedFd>) -> Option<Reply> {
        Some(match req {
            Request::Hello => {
                Ok(Response::Hello { version: PROTOCOL_VERSION, pid: std::process::id() as i32 })
            }
            Request::Create(c) => self.create(c),
            Request::Start { id } => self.start(&id),
            Request::Kill { id, signal, all } => self.kill(&id, signal, all),
            Request::State { id } => self.get(&id).map(|c| Response::State(c.state(&id))),
            Request::List => {
                let mut v: Vec<ContainerState> =
                    self.containers.iter().map(|(k, c)| c.state(k)).collect();
                v.sort_by(|a, b| a.id.cmp(&b.id));
                Ok(Response::List(v))
            }
            Request::Wait { id } => match self.containers.get_mut(&id) {
                None => fail(ErrorKind::NotFound, format!("container {id} not found")),
                Some(c) if c.status == Status::Stopped => Ok(Response::State(c.state(&id))),
                Some(c) => {
                    c.waiters.push(conn);
                    return None;
                }
            },
            Request::Delete { id } => self.delete(&id),
            Request::ReopenLog { id } => match self.containers.get_mut(&id) {
                None => fail(ErrorKind::NotFound, format!("container {id} not found")),
                Some(c) => c
                    .log
                    .reopen()
                    .map(|()| Response::Ok)
                    .or_else(|e| fail(ErrorKind::Internal, format!("reopen log: {e}"))),
            },
            Request::Exec(e) => match self.exec(conn, e) {
                Ok(()) => return None,
                Err(e) => Err(e),
            },
            Request::Shutdown { force } => self.shutdown(force),
            Request::ExecStream(e) => match self.exec_stream(conn, e, fds) {
                Ok(()) => return None,
                Err(e) => Err(e),
            },
            Request::Attach { id, stdin, stderr } => self.attach(&id, stdin, stderr, fds),
            Request::Resize { id, width, height } => self.resize(&id, width, height),
            Request::PodInit => self.start_pod_init(None),
            Request::PodInitInUserns { userns } => self.start_pod_init(Some(&userns)),
            Request::StopPodInit => {
                self.stop_pod_init();
                Ok(Response::Ok)
            }
        })
    }

    fn get(&self, id: &str) -> std::result::Result<&Container, (ErrorKind, String)> {
        self.containers.get(id).ok_or((ErrorKind::NotFound, format!("container {id} not found")))
    }

    fn create(&mut self, req: CreateRequest) -> Reply {
        let id = req.container_id.clone();
        if !valid_id(&id) {
            return fail(ErrorKind::InvalidArgument, format!("invalid container id {id:?}"));
        }
        if self.containers.contains_key(&id) {
            return fail(ErrorKind::AlreadyExists, format!("container {id} already exists"));
        }
        let config = req.bundle.join("config.json");
        let spec: Spec = match fs::read(&config)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(s) => s,
            Err(e) => {
                return fail(ErrorKind::InvalidArgument, format!("read {}: {e}", config.display()))
            }
        };
        let log = LogFile::open(&req.log_path).or_else(|e| {
            fail(ErrorKind::InvalidArgument, format!("open log {}: {e}", req.log_path.display()))
        })?;
        let created_at_ns = now_ns();
        let cgroup = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone());
        let undo_cgroup = |shim: &mut Self| {
            if let Some(cg) = &cgroup {
                shim.reap();
                let _ = cgroups::remove(cg);
            }
        };
        let (pid, pending, runtime, pipes, stdin) = match &req.runtime {
            None => {
                let (stdio, pipes, stdin) = make_stdio(req.tty, req.stdin)
                    .or_else(|e| fail(ErrorKind::Internal, format!("stdio: {e}")))?;
                match executor::create(&spec, &req.bundle, stdio) {
                    Ok(p) => (p.pid.as_raw(), Some(p), None, pipes, stdin),
                    Err(e) => {
                        undo_cgroup(self);
                        return fail(ErrorKind::Internal, e.0);
                    }
                }
            }
            Some(binary) => {
                let rt = OciRuntime::new(binary.clone(), self.paths.dir());
                // With a terminal, the runtime makes the pty and hands over its master.
                let (stdio, mut pipes, mut stdin) = if req.tty {
                    (
                        Stdio::null().or_else(|e| fail(ErrorKind::Internal, e.to_string()))?,
                        vec![],
                        None,
                    )
                } else {
                    make_stdio(false, req.stdin)
                        .or_else(|e| fail(ErrorKind::Internal, format!("stdio: {e}")))?
                };
                match rt.create(&id, &req.bundle, stdio, req.tty) {
                    Ok(created) => {
                        if let Some(master) = created.console {
                            let mut setup = || -> io::Result<()> {
                                nix::fcntl::fcntl(
                                    &master,
                                    nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                                )?;
                                if req.stdin {
                                    stdin = Some(master.try_clone()?);
                                }
                                pipes.push(Pipe {
                                    file: master.try_clone()?,
                                    split: LineSplitter::new(Stream::Stdout),
                                    eof: false,
                                });
                                Ok(())
                            };
                            setup()
                                .or_else(|e| fail(ErrorKind::Internal, format!("console: {e}")))?;
                        }
                        (created.pid, None, Some(rt), pipes, stdin)
                    }
                    Err(e) => {
                        let _ = rt.delete(&id);
                        undo_cgroup(self);
                        return fail(ErrorKind::Internal, e);
                    }
                }
            }
        };
        let master =
            if req.tty { pipes.first().and_then(|p| p.file.try_clone().ok()) } else { None };
        if let Some(f) = &stdin {
            // Attached input is written without blocking; see `stdin_pending`.
            let _ =
                nix::fcntl::fcntl(f, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK));
        }
        self.containers.insert(
            id,
            Container {
                spec,
                status: Status::Created,
                pid,
                exit_code: None,
                created_at_ns,
                started_at_ns: 0,
                finished_at_ns: 0,
                oom_killed: false,
                pending,
                log,
                pipes,
                stdin,
                stdin_pending: Vec::new(),
                stdin_closing: false,
                stdin_once: req.stdin_once,
                master,
                attachers: Vec::new(),
                waiters: Vec::new(),
                runtime,
                bundle: req.bundle.clone(),
            },
        );
        Ok(Response::Created { pid })
    }

    fn start(&mut self, id: &str) -> Reply {
        let c = self
            .containers
            .get_mut(id)
            .ok_or((ErrorKind::NotFound, format!("container {id} not found")))?;
        if c.status != Status::Created {
            return fail(
                ErrorKind::FailedPrecondition,
                format!("container {id} is {:?}, not created", c.status),
            );
        }
        let started = match (c.pending.take(), &c.runtime) {
            (Some(pending), _) => pending.start().map_err(|e| e.0),
            (None, Some(rt)) => rt.start(id),
            (None, None) => Err("the container lost its pending process".to_string()),
        };
        started.or_else(|e| fail(ErrorKind::Internal, e))?;
        c.started_at_ns = now_ns();
        c.status = Status::Running;
        Ok(Response::Ok)
    }

    fn kill(&mut self, id: &str, signal: i32, all: bool) -> Reply {
        let c = self.get(id)?;
        let sig = Signal::try_from(signal)
            .or_else(|_| fail(ErrorKind::InvalidArgument, format!("bad signal {signal}")))?;
        if c.status == Status::Stopped {
            return Ok(Response::Ok);
        }
        let mut pids = vec![c.pid];
        if all {
            if let Some(cg) = c.cgroup() {
                pids.extend(cgroups::pids(&cg));
            }
        }
        for p in pids {
            let _ = nix::sys::signal::kill(Pid::from_raw(p), sig);
        }
        Ok(Response::Ok)
    }

    fn delete(&mut self, id: &str) -> Reply {
        let c = self.get(id)?;
        if c.status == Status::Running {
            return fail(ErrorKind::FailedPrecondition, format!("container {id} is running"));
        }
        if c.status == Status::Created {
            let pid = Pid::from_raw(c.pid);
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
        let c = self.containers.remove(id).expect("checked above");
        if let Some(rt) = &c.runtime {
            let _ = rt.delete(id);
        }
        for w in &c.waiters {
            self.respond(*w, fail(ErrorKind::NotFound, format!("container {id} was deleted")));
        }
        let _ = fs::remove_file(self.paths.exit_file(id));
        if let Some(cg) = c.cgroup() {
            for p in cgroups::pids(&cg) {
                let _ = nix::sys::signal::kill(Pid::from_raw(p), Signal::SIGKILL);
            }
            self.reap();
            cgroups::remove(&cg).or_else(|e| fail(ErrorKind::Internal, e.0))?;
        }
        Ok(Response::Ok)
    }

    fn exec(
        &mut self,
        conn: u64,
        req: ExecRequest,
    ) -> std::result::Result<(), (ErrorKind, String)> {
        let c = self.get(&req.container_id)?;
        if c.status != Status::Running {
            return fail(
                ErrorKind::FailedPrecondition,
                format!("container {} is not running", req.container_id),
            );
        }
        let process: Process = serde_json::from_value(req.process)
            .or_else(|e| fail(ErrorKind::InvalidArgument, format!("process: {e}")))?;
        let (out_r, out_w) = pipe_nb().or_else(|e| fail(ErrorKind::Internal, e.to_string()))?;
        let (err_r, err_w) = pipe_nb().or_else(|e| fail(ErrorKind::Internal, e.to_string()))?;
        let null = OwnedFd::from(
            File::open("/dev/null").or_else(|e| fail(ErrorKind::Internal, e.to_string()))?,
        );
        let stdio = Stdio { stdin: null, stdout: out_w, stderr: err_w, tty: false };
        let pid = match &c.runtime {
            None => executor::exec(c.pid, &c.spec, &process, stdio)
                .map(|p| p.as_raw())
                .or_else(|e| fail(ErrorKind::Internal, e.0))?,
            Some(rt) => rt
                .exec(&req.container_id, &c.bundle, &process, stdio)
                .or_else(|e| fail(ErrorKind::Internal, e))?,
        };
        let deadline =
            (req.timeout_ms > 0).then(|| Instant::now() + Duration::from_millis(req.timeout_ms));
        self.execs.push(ExecJob {
            conn,
            streaming: false,
            pid,
            out: Some(File::from(out_r)),
            err: Some(File::from(err_r)),
            stdout: Vec::new(),
            stderr: Vec::new(),
            deadline,
            timed_out: false,
        });
        Ok(())
    }

    fn exec_stream(
        &mut self,
        conn: u64,
        req: ExecStreamRequest,
        fds: Vec<OwnedFd>,
    ) -> std::result::Result<(), (ErrorKind, String)> {
        let c = self.get(&req.container_id)?;
        if c.status != Status::Running {
            return fail(
                ErrorKind::FailedPrecondition,
                format!("container {} is not running", req.container_id),
            );
        }
        let mut process: Process = serde_json::from_value(req.process)
            .or_else(|e| fail(ErrorKind::InvalidArgument, format!("process: {e}")))?;
        let [stdin, stdout, stderr]: [OwnedFd; 3] =
            fds.try_into().or_else(|_| fail(ErrorKind::InvalidArgument, "three descriptors"))?;
        let pid = match &c.runtime {
            None => {
                let stdio = Stdio { stdin, stdout, stderr, tty: req.tty };
                executor::exec(c.pid, &c.spec, &process, stdio)
                    .map(|p| p.as_raw())
                    .or_else(|e| fail(ErrorKind::Internal, e.0))?
            }
            Some(rt) => {
                // The runtime would make its own terminal and hand it over a console
                // socket; the session's terminal is already made, so the process gets
                // it as plain stdio.
                process.set_terminal(Some(false));
                let stdio = Stdio { stdin, stdout, stderr, tty: false };
                rt.exec(&req.container_id, &c.bundle, &process, stdio)
                    .or_else(|e| fail(ErrorKind::Internal, e))?
            }
        };
        self.execs.push(ExecJob {
            conn,
            streaming: true,
            pid,
            out: None,
            err: None,
            stdout: Vec::new(),
            stderr: Vec::new(),
            deadline: None,
            timed_out: false,
        });
        Ok(())
    }

    fn attach(&mut self, id: &str, stdin: bool, stderr: bool, fds: Vec<OwnedFd>) -> Reply {
        let next = self.next_attacher + 1;
        let c = self
            .containers
            .get_mut(id)
            .ok_or((ErrorKind::NotFound, format!("container {id} not found")))?;
        if c.status == Status::Stopped {
            return fail(ErrorKind::FailedPrecondition, format!("container {id} has exited"));
        }
        let mut fds = fds.into_iter().map(File::from);
        let nonblocking = |f: File| -> std::result::Result<File, (ErrorKind, String)> {
            nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK))
                .or_else(|e| fail(ErrorKind::Internal, format!("attach: {e}")))?;
            Ok(f)
        };
        let input = if stdin { fds.next().map(nonblocking).transpose()? } else { None };
        let stdout = fds.next().map(nonblocking).transpose()?;
        let stderr = if stderr { fds.next().map(nonblocking).transpose()? } else { None };
        self.next_attacher = next;
        c.attachers.push(Attacher { id: next, stdin: input, stdout, stderr, gone: false });
        Ok(Response::Ok)
    }

    fn resize(&mut self, id: &str, width: u16, height: u16) -> Reply {
        let c = self.get(id)?;
        let Some(master) = &c.master else {
            return fail(ErrorKind::FailedPrecondition, format!("container {id} has no tty"));
        };
        set_window_size(master.as_fd(), width, height)
            .or_else(|e| fail(ErrorKind::Internal, format!("resize: {e}")))?;
        Ok(Response::Ok)
    }

    /// Moves client input to the container's stdin (what does not fit waits in
    /// `stdin_pending`, and the client is not read again until it is written).
    fn pump_attach_input(&mut self, id: &str, aid: u64) {
        let Some(c) = self.containers.get_mut(id) else { return };
        let Some(a) = c.attachers.iter_mut().find(|a| a.id == aid) else { return };
        let Some(input) = a.stdin.as_mut() else { return };
        let n = match input.read(&mut self.buf) {
            Ok(n) => n,
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted =>
            {
                return
            }
            Err(_) => 0,
        };
        if n > 0 {
            if c.stdin.is_some() {
                c.stdin_pending.extend_from_slice(&self.buf[..n]);
            }
        } else {
            a.stdin = None;
            if c.stdin_once && c.stdin.is_some() {
                if c.master.is_some() {
                    // A terminal cannot be half-closed: end-of-file is the EOF character.
                    c.stdin_pending.push(0x04);
                } else {
                    c.stdin_closing = true;
                }
            }
        }
        self.flush_stdin(id);
    }

    /// Writes pending input to the container's stdin; closes it when asked and done.
    fn flush_stdin(&mut self, id: &str) {
        let Some(c) = self.containers.get_mut(id) else { return };
        let mut broken = false;
        if let Some(f) = c.stdin.as_mut() {
            while !c.stdin_pending.is_empty() {
                match f.write(&c.stdin_pending) {
                    Ok(n) => {
                        c.stdin_pending.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(_) => {
                        // The container closed its stdin: what it did not read is lost.
                        broken = true;
                        break;
                    }
                }
            }
        }
        if broken || c.stdin.is_none() {
            c.stdin_pending.clear();
            c.stdin = None;
        }
        if c.stdin_closing && c.stdin_pending.is_empty() {
            c.stdin = None;
            c.stdin_closing = false;
        }
    }

    fn detach_client(&mut self, id: &str, aid: u64) {
        if let Some(c) = self.containers.get_mut(id) {
            if let Some(a) = c.attachers.iter_mut().find(|a| a.id == aid) {
                a.gone = true;
            }
        }
    }

    fn start_pod_init(&mut self, userns: Option<&Path>) -> Reply {
        if let Some(pid) = self.pod_init {
            return Ok(Response::PodInit { pid });
        }
        match super::pod_init::spawn(userns) {
            Ok(pid) => {
                self.pod_init = Some(pid);
                Ok(Response::PodInit { pid })
            }
            Err(e) => fail(ErrorKind::Internal, format!("starting the pod's init: {e}")),
        }
    }

    fn stop_pod_init(&mut self) {
        if let Some(pid) = self.pod_init.take() {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
        }
    }

    fn shutdown(&mut self, force: bool) -> Reply {
        let live: Vec<String> = self
            .containers
            .iter()
            .filter(|(_, c)| c.status != Status::Stopped)
            .map(|(k, _)| k.clone())
            .collect();
        if !live.is_empty() && !force {
            return fail(
                ErrorKind::FailedPrecondition,
                format!("containers still running: {}", live.join(", ")),
            );
        }
        for id in &live {
            let pid = Pid::from_raw(self.containers[id].pid);
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            self.container_exited(id, 137);
        }
        for e in &self.execs {
            let _ = nix::sys::signal::kill(Pid::from_raw(e.pid), Signal::SIGKILL);
        }
        self.stop_pod_init();
        self.quit = true;
        Ok(Response::Ok)
    }
}

fn drain_exec(e: &mut ExecJob, buf: &mut [u8]) {
    for (f, acc) in [(&mut e.out, &mut e.stdout), (&mut e.err, &mut e.stderr)] {
        if let Some(file) = f {
            while let Ok(n) = file.read(buf) {
                if n == 0 {
                    break;
                }
                let room = EXEC_OUTPUT_MAX.saturating_sub(acc.len());
                acc.extend_from_slice(&buf[..n.min(room)]);
            }
        }
        *f = None;
    }
}

/// Sets a terminal's window size (the kernel sends SIGWINCH to its foreground group).
pub(crate) fn set_window_size(tty: BorrowedFd<'_>, width: u16, height: u16) -> io::Result<()> {
    let ws = libc::winsize { ws_row: height, ws_col: width, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads a winsize from the pointer, which outlives the call.
    if unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn pipe_nb() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    nix::fcntl::fcntl(&r, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK))?;
    Ok((r, w))
}

/// The child's stdio and what the shim keeps: output pipes (or the pty master) and stdin.
fn make_stdio(tty: bool, stdin: bool) -> io::Result<(Stdio, Vec<Pipe>, Option<File>)> {
    if tty {
        let pty = nix::pty::openpty(None, None)?;
        let master = File::from(pty.master);
        nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))?;
        nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK))?;
        let slave = pty.slave;
        let stdio = Stdio {
            stdin: slave.try_clone()?,
            stdout: slave.try_clone()?,
            stderr: slave,
            tty: true,
        };
        let input = if stdin { Some(master.try_clone()?) } else { None };
        return Ok((
            stdio,
            vec![Pipe { file: master, split: LineSplitter::new(Stream::Stdout), eof: false }],
            input,
        ));
    }
    let (out_r, out_w) = pipe_nb()?;
    let (err_r, err_w) = pipe_nb()?;
    let (stdin_fd, input) = if stdin {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        (r, Some(File::from(w)))
    } else {
        (OwnedFd::from(File::open("/dev/null")?), None)
    };
    let stdio = Stdio { stdin: stdin_fd, stdout: out_w, stderr: err_w, tty: false };
    let pipes = vec![
        Pipe { file: File::from(out_r), split: LineSplitter::new(Stream::Stdout), eof: false },
        Pipe { file: File::from(err_r), split: LineSplitter::new(Stream::Stderr), eof: false },
    ];
    Ok((stdio, pipes, input))
}
