//! The shim's state: its containers with their stdio, attached clients and runner, the
//! execs it runs, the connections it serves.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Instant;

use oci_spec::runtime::Spec;

use crate::shim::log::{LogFile, Stream};
use crate::shim::protocol::*;
use crate::shim::ShimPaths;

use super::pipes::Pipe;

pub(super) type Reply = std::result::Result<Response, (ErrorKind, String)>;

pub(super) fn fail<T>(
    kind: ErrorKind,
    msg: impl Into<String>,
) -> std::result::Result<T, (ErrorKind, String)> {
    Err((kind, msg.into()))
}

pub(super) struct Container {
    pub(super) spec: Spec,
    pub(super) status: Status,
    pub(super) pid: i32,
    pub(super) exit_code: Option<i32>,
    pub(super) created_at_ns: i64,
    pub(super) started_at_ns: i64,
    pub(super) finished_at_ns: i64,
    pub(super) oom_killed: bool,
    /// systemd driver: the pod slice's OOM kill count when the container was created
    /// (see `container_exited`).
    pub(super) slice_oom_base: Option<u64>,
    pub(super) log: LogFile,
    pub(super) pipes: Vec<Pipe>,
    pub(super) stdin: Option<File>,
    /// Bytes from attached clients the container has not read yet (its stdin is
    /// non-blocking: a container that does not read must not stall the shim).
    pub(super) stdin_pending: Vec<u8>,
    /// Close stdin once `stdin_pending` is written (stdin_once and the client closed).
    pub(super) stdin_closing: bool,
    pub(super) stdin_once: bool,
    /// The terminal's master, for resizing, when created with a tty.
    pub(super) master: Option<File>,
    pub(super) attachers: Vec<Attacher>,
    pub(super) waiters: Vec<u64>,
    /// What runs its processes: the native executor or the pod's OCI runtime.
    pub(super) runner: Box<dyn super::runner::Runner>,
    pub(super) bundle: PathBuf,
}

impl Container {
    pub(super) fn state(&self, id: &str) -> ContainerState {
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
    pub(super) fn cgroup(&self) -> Option<PathBuf> {
        self.spec.linux().as_ref().and_then(|l| l.cgroups_path().clone())
    }
}

/// A client attached to a container's stdio (through berthd's pipes).
pub(super) struct Attacher {
    pub(super) id: u64,
    pub(super) stdin: Option<File>,
    pub(super) stdout: Option<File>,
    pub(super) stderr: Option<File>,
    /// Its reader went away: dropped at the end of the loop iteration.
    pub(super) gone: bool,
}

impl Attacher {
    /// Copies container output to the client without blocking: a client that does not
    /// keep up loses what does not fit in its pipe rather than stall the container.
    pub(super) fn send(&mut self, stream: Stream, bytes: &[u8]) {
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

pub(super) struct ExecJob {
    pub(super) conn: u64,
    /// Its stdio belongs to a streaming session: no output is collected, and the
    /// process is killed if the session's connection goes away.
    pub(super) streaming: bool,
    pub(super) pid: i32,
    pub(super) out: Option<File>,
    pub(super) err: Option<File>,
    pub(super) stdout: Vec<u8>,
    pub(super) stderr: Vec<u8>,
    pub(super) deadline: Option<Instant>,
    pub(super) timed_out: bool,
}

pub(super) struct Conn {
    pub(super) stream: UnixStream,
    pub(super) rbuf: Vec<u8>,
    /// Descriptors received and not yet taken by a request, in arrival order.
    pub(super) fds: VecDeque<OwnedFd>,
    pub(super) busy: bool,
}

pub(super) struct Shim {
    pub(super) paths: ShimPaths,
    pub(super) containers: HashMap<String, Container>,
    pub(super) execs: Vec<ExecJob>,
    pub(super) conns: HashMap<u64, Conn>,
    pub(super) next_conn: u64,
    pub(super) next_attacher: u64,
    pub(super) buf: Vec<u8>,
    pub(super) quit: bool,
    /// Host pid of the pod's init, when the pod shares one PID namespace.
    pub(super) pod_init: Option<i32>,
    /// Whether a request ran since the shim last released its code pages
    /// ([`super::code_pages`]) and its free heap and stack ([`super::anon_pages`]), and
    /// whether it releases them before it next sleeps.
    pub(super) code_in_use: bool,
    pub(super) release_code: bool,
}

/// Cap on collected exec output per stream.
pub(super) const EXEC_OUTPUT_MAX: usize = 16 << 20;

#[derive(Clone, Copy)]
pub(super) enum Source {
    Listener,
    Signals,
    Conn(u64),
    CtrPipe(usize, usize), // container index in `order`, pipe index
    ExecPipe(i32, bool),   // exec pid
    CtrStdin(usize),       // container index: its stdin can take pending bytes
    AttachIn(usize, u64),  // container index, attacher id: client input
    AttachOut(usize, u64), // container index, attacher id: hang-up of its reader
}
