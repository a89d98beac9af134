//! The berthd ↔ shim wire protocol.
//!
//! One unix stream socket per pod. Every message is a frame: a 4-byte big-endian length
//! followed by that many bytes of JSON. berthd sends a [`RequestFrame`], the shim answers
//! with exactly one [`ResponseFrame`], in order; a connection carries any number of
//! request/response pairs. [`Request::Wait`] and [`Request::Exec`] are answered only when
//! the container exits or the exec finishes, so callers that need other requests
//! meanwhile open a second connection.
//!
//! Every frame carries the protocol version `v`; the shim refuses a request whose
//! version it does not speak, so a newer berthd talking to an older live shim (after an
//! upgrade) gets a clear error instead of a misread request.

use std::io::{self, Read, Write};
use std::path::PathBuf;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// The version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest frame either side accepts (exec output can be large).
pub const MAX_FRAME: usize = 64 << 20;

/// What berthd asks of the shim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Liveness and identity: answered with [`Response::Hello`].
    Hello,
    /// Creates a container: the process is set up and waits for [`Request::Start`].
    Create(CreateRequest),
    /// Lets a created container exec its process.
    Start { id: String },
    /// Sends a signal to the container's process (`all`: to every process in its cgroup).
    Kill { id: String, signal: i32, all: bool },
    /// The state of one container.
    State { id: String },
    /// The states of all containers this shim holds.
    List,
    /// Answered when the container has stopped (at once if it already has).
    Wait { id: String },
    /// Forgets a stopped (or never started) container: kills what is left, removes its
    /// cgroup and exit file.
    Delete { id: String },
    /// Re-opens the container's log file (after the kubelet renamed it away).
    ReopenLog { id: String },
    /// Runs a process in a running container and collects its output.
    Exec(ExecRequest),
    /// Exits the shim. Refused while containers are running unless `force`, which kills
    /// them first.
    Shutdown { force: bool },
    /// Starts the pod's init (PID 1 of a pod-wide PID namespace) unless it is running;
    /// answered with [`Response::PodInit`].
    PodInit,
    /// [`Request::PodInit`] for a pod with a user namespace: the PID namespace is made
    /// inside the one pinned at `userns`, so that it is owned by it (a container root
    /// may then mount its `/proc`).
    PodInitInUserns { userns: PathBuf },
    /// Kills the pod's init, and with it every process left in its PID namespace.
    StopPodInit,
    /// Runs a process in a running container on the stdio berthd passes with the request
    /// (three descriptors: stdin, stdout, stderr; for a tty, the terminal three times).
    /// Answered with [`Response::Exec`] (no output: it went to the descriptors) when the
    /// process ends. Closing the connection before that kills the process: the session
    /// it served is gone.
    ExecStream(ExecStreamRequest),
    /// Tees a container's output to berthd's pipes and feeds its stdin from one. The
    /// descriptors come with the request, in order: stdin's read end (when `stdin`),
    /// stdout's write end, stderr's write end (when `stderr`). The output ends are closed
    /// when the container exits.
    Attach { id: String, stdin: bool, stderr: bool },
    /// Sets the window size of the terminal of a container created with a tty.
    Resize { id: String, width: u16, height: u16 },
}

impl Request {
    /// How many descriptors travel with this request.
    pub fn fd_count(&self) -> usize {
        match self {
            Request::ExecStream(_) => 3,
            Request::Attach { stdin, stderr, .. } => 1 + *stdin as usize + *stderr as usize,
            _ => 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecStreamRequest {
    pub container_id: String,
    /// OCI `process` object (JSON), as for [`ExecRequest`].
    pub process: serde_json::Value,
    /// The descriptors are a terminal: make it the process's controlling terminal.
    pub tty: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRequest {
    pub container_id: String,
    /// Directory holding `config.json` (an OCI runtime spec). A relative `root.path` is
    /// resolved against it. The rootfs must already be mounted there.
    pub bundle: PathBuf,
    /// CRI log file; empty: output is discarded.
    pub log_path: PathBuf,
    /// Allocate a terminal for the process (stdout and stderr are then one stream).
    pub tty: bool,
    /// Keep a pipe to the process's stdin open (for attach); otherwise stdin is /dev/null.
    pub stdin: bool,
    /// Close the process's stdin when the first attached client closes its stdin.
    #[serde(default)]
    pub stdin_once: bool,
    /// An OCI runtime binary (runc, crun) to run the bundle with; none: the native
    /// executor.
    #[serde(default)]
    pub runtime: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    pub container_id: String,
    /// OCI `process` object (JSON) to run; capabilities, user, env, cwd and rlimits are
    /// taken from it, seccomp and namespaces from the container.
    pub process: serde_json::Value,
    /// Milliseconds; 0 means no timeout.
    pub timeout_ms: u64,
}

/// Container lifecycle status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Created,
    Running,
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerState {
    pub id: String,
    pub status: Status,
    /// Host pid of the container's process (0 once reaped).
    pub pid: i32,
    /// Exit code once stopped; 128+signal when killed by a signal.
    pub exit_code: Option<i32>,
    pub created_at_ns: i64,
    pub started_at_ns: i64,
    pub finished_at_ns: i64,
    pub oom_killed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecResult {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The timeout fired and the process was killed.
    pub timed_out: bool,
}

/// What the shim answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Ok,
    Hello {
        version: u32,
        pid: i32,
    },
    Created {
        pid: i32,
    },
    State(ContainerState),
    List(Vec<ContainerState>),
    Exec(ExecResult),
    /// Host pid of the pod's init.
    PodInit {
        pid: i32,
    },
}

/// Error kinds the caller maps to gRPC codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFrame {
    pub v: u32,
    pub req: Request,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseFrame {
    pub v: u32,
    #[serde(flatten)]
    pub result: WireResult,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireResult {
    Ok(Response),
    Err { kind: ErrorKind, message: String },
}

/// Serialises `msg` as one frame.
pub fn encode<T: Serialize>(msg: &T) -> io::Result<Vec<u8>> {
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    if body.len() > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too large"));
    }
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Writes one frame.
pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> io::Result<()> {
    w.write_all(&encode(msg)?)?;
    w.flush()
}

/// Reads one frame (blocking). `Ok(None)` on a clean EOF before the length.
pub fn read_frame<T: DeserializeOwned>(r: &mut impl Read) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too large"));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Splits a complete frame off the front of `buf` (non-blocking readers).
/// `Ok(None)`: more bytes are needed.
pub fn take_frame<T: DeserializeOwned>(buf: &mut Vec<u8>) -> io::Result<Option<T>> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too large"));
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    let msg = serde_json::from_slice(&buf[4..4 + len])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e));
    buf.drain(..4 + len);
    msg.map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let req = RequestFrame {
            v: PROTOCOL_VERSION,
            req: Request::Kill { id: "c1".into(), signal: 9, all: false },
        };
        let bytes = encode(&req).unwrap();
        let back: RequestFrame = read_frame(&mut &bytes[..]).unwrap().unwrap();
        assert_eq!(back, req);

        let resp = ResponseFrame {
            v: PROTOCOL_VERSION,
            result: WireResult::Err { kind: ErrorKind::NotFound, message: "no".into() },
        };
        let json = serde_json::to_string(&resp).unwrap();
        assert_eq!(json, r#"{"v":1,"err":{"kind":"not_found","message":"no"}}"#);
        let resp = ResponseFrame { v: 1, result: WireResult::Ok(Response::Created { pid: 7 }) };
        let json = serde_json::to_string(&resp).unwrap();
        assert_eq!(json, r#"{"v":1,"ok":{"created":{"pid":7}}}"#);
    }

    #[test]
    fn take_frame_waits_for_whole_frames() {
        let mut all = encode(&RequestFrame { v: 1, req: Request::List }).unwrap();
        all.extend(encode(&RequestFrame { v: 1, req: Request::Hello }).unwrap());
        let mut buf = all[..3].to_vec();
        assert!(take_frame::<RequestFrame>(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&all[3..]);
        assert_eq!(take_frame::<RequestFrame>(&mut buf).unwrap().unwrap().req, Request::List);
        assert_eq!(take_frame::<RequestFrame>(&mut buf).unwrap().unwrap().req, Request::Hello);
        assert!(buf.is_empty());
    }

    #[test]
    fn oversized_frames_are_refused() {
        let mut buf = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
        assert!(take_frame::<RequestFrame>(&mut buf).is_err());
        assert!(read_frame::<RequestFrame>(&mut &buf[..]).is_err());
    }
}
