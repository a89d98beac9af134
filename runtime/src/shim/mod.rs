//! The per-pod shim: protocol, client, CRI log writer and the shim's event loop.
//!
//! berthd fork+execs `berth-shim` (see [`client::spawn`]); the shim detaches, becomes the
//! subreaper of the pod's container processes, and serves [`protocol`] on a unix socket
//! under its directory ([`ShimPaths`]). It never links tokio.

pub mod client;
mod fdpass;
pub mod log;
mod oci_runtime;
mod pod_init;
pub mod protocol;
pub mod server;

use std::path::{Path, PathBuf};

/// Where one pod's shim keeps its things: `<state>/shims/<pod-id>/`.
#[derive(Debug, Clone)]
pub struct ShimPaths {
    dir: PathBuf,
}

impl ShimPaths {
    /// The shim directory of `pod_id` under berth's volatile state root.
    pub fn new(state_root: &Path, pod_id: &str) -> Self {
        Self { dir: state_root.join("shims").join(pod_id) }
    }

    /// A shim directory given directly.
    pub fn from_dir(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The protocol socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("shim.sock")
    }
    /// The shim's own log (its stderr).
    pub fn log(&self) -> PathBuf {
        self.dir.join("shim.log")
    }
    /// The shim's pid.
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("shim.pid")
    }
    /// Directory of exit records, one file per container that exited.
    pub fn exits(&self) -> PathBuf {
        self.dir.join("exits")
    }
    pub fn exit_file(&self, container_id: &str) -> PathBuf {
        self.exits().join(container_id)
    }
}

/// What the shim records when a container exits, `exits/<id>` (JSON).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExitRecord {
    pub exit_code: i32,
    pub started_at_ns: i64,
    pub finished_at_ns: i64,
    pub oom_killed: bool,
    pub pid: i32,
}

/// Reads the exit record of a container, if it exited.
pub fn read_exit(paths: &ShimPaths, container_id: &str) -> std::io::Result<Option<ExitRecord>> {
    match std::fs::read(paths.exit_file(container_id)) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Container ids become file names: refuse anything but `[A-Za-z0-9_.-]`, 1..=128.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}
