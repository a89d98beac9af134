//! Finding, starting and stopping a pod's shim.
//!
//! Starting a shim (a fork+exec, and the shim's own start-up) is the largest cost of a
//! pod's first container, so RunPodSandbox starts it early, in the background, through
//! [`PodShims`]; the pod's first CreateContainer then finds it running. One start per pod
//! at a time: whoever needs the shim while a start is under way waits for that start
//! rather than racing it with a second shim.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{internal, RuntimeError};
use crate::shim::client::{self as shim_client, ShimClient};
use crate::shim::ShimPaths;

/// A lock per pod whose shim is being started or stopped; an entry lives only while
/// someone holds or waits for its lock.
#[derive(Default)]
struct StartLocks(Mutex<HashMap<String, Arc<Mutex<()>>>>);

impl StartLocks {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Mutex<()>>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` holding the lock of `pod_id`.
    fn with<R>(&self, pod_id: &str, f: impl FnOnce() -> R) -> R {
        let lock = self.map().entry(pod_id.to_string()).or_default().clone();
        let r = {
            let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
            f()
        };
        let mut map = self.map();
        drop(lock);
        if map.get(pod_id).is_some_and(|l| Arc::strong_count(l) == 1) {
            map.remove(pod_id);
        }
        r
    }
}

/// The pods' shims: where each lives under berth's volatile state, the binary started
/// for it, and the one start or stop per pod at a time.
pub(super) struct Shims {
    state: PathBuf,
    binary: PathBuf,
    starts: StartLocks,
}

impl Shims {
    pub(super) fn new(state: PathBuf, binary: PathBuf) -> Self {
        Self { state, binary, starts: StartLocks::default() }
    }

    pub(super) fn paths(&self, pod_id: &str) -> ShimPaths {
        ShimPaths::new(&self.state, pod_id)
    }

    /// A connection to the pod's shim, starting the shim if it is not running (`start`).
    /// A start under way (RunPodSandbox's) is waited for.
    pub(super) fn connect(&self, pod_id: &str, start: bool) -> Result<ShimClient, RuntimeError> {
        let paths = self.paths(pod_id);
        if let Ok(c) = ShimClient::connect(&paths) {
            return Ok(c);
        }
        self.starts.with(pod_id, || {
            if let Ok(c) = ShimClient::connect(&paths) {
                return Ok(c);
            }
            if !start {
                return Err(RuntimeError::FailedPrecondition(format!(
                    "the shim of pod {pod_id} is not running"
                )));
            }
            std::fs::create_dir_all(paths.dir()).map_err(internal)?;
            shim_client::spawn(&self.binary, &paths)
                .map_err(|e| internal(format!("starting berth-shim: {e}")))?;
            ShimClient::connect(&paths)
                .map_err(|e| internal(format!("connecting to berth-shim: {e}")))
        })
    }

    /// Stops the pod's shim, killing what still runs in it (after a start under way), and
    /// removes its directory.
    pub(super) fn stop(&self, pod_id: &str) {
        let paths = self.paths(pod_id);
        self.starts.with(pod_id, || {
            if let Ok(mut shim) = ShimClient::connect(&paths) {
                let _ = shim.shutdown(true);
            }
            // The shim removes its socket as it exits; wait for that, then its directory.
            let deadline = Instant::now() + Duration::from_secs(5);
            while paths.socket().exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = std::fs::remove_dir_all(paths.dir());
        })
    }

    /// Start-up: shims of pods not in `pods` are stopped. Only an early start whose
    /// RunPodSandbox was cut off by a crash leaves one (the pod's removal stops its shim).
    pub(super) fn stop_orphans(&self, pods: &HashSet<String>) {
        let Ok(dirs) = std::fs::read_dir(self.state.join("shims")) else { return };
        for pod_id in dirs.flatten().filter_map(|d| d.file_name().into_string().ok()) {
            if !pods.contains(&pod_id) {
                tracing::warn!(pod_id = %pod_id, "stopping the shim of a pod that does not exist");
                self.stop(&pod_id);
            }
        }
    }
}
