//! The shim process: start-up (detach, subreaper, socket) and its single-threaded
//! poll(2) loop over the socket, a signalfd for SIGCHLD/SIGTERM, container output pipes
//! and exec pipes.
//!
//! Here: the shim's state and start-up. [`event_loop`]: the loop, reaping and
//! connections; [`stdio`]: container output, attach and terminals; [`handlers`]: the
//! requests.

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
use super::protocol::*;
use super::{valid_id, ExitRecord, ShimPaths};
use crate::clock::now_ns;
use crate::executor::{cgroups, Stdio};

mod code_pages;
mod event_loop;
mod handlers;
mod runner;
mod stdio;

use stdio::pipe_nb;
pub(crate) use stdio::set_window_size;

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
    /// systemd driver: the pod slice's OOM kill count when the container was created
    /// (see `container_exited`).
    slice_oom_base: Option<u64>,
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
    /// What runs its processes: the native executor or the pod's OCI runtime.
    runner: Box<dyn runner::Runner>,
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
    /// Whether a request ran since the shim last released its code pages
    /// ([`code_pages`]), and whether it releases them before it next sleeps.
    code_in_use: bool,
    release_code: bool,
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
                        code_in_use: true,
                        release_code: false,
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
