//! Containers: created from an image on a pod, run by the pod's shim.
//!
//! berthd never forks a container itself: it prepares the bundle (an overlay rootfs and
//! the OCI spec) and asks the pod's `berth-shim`, started with the pod (`pod_shims`),
//! to create, start, signal and reap it. The shim outlives berthd, so state that matters
//! after a restart (exit codes, times) is read back from the shim or its exit files.

mod create;
mod lifecycle;
mod observe;
pub(super) mod operations;

use super::record::ContainerRecord;
use crate::events::Events;
use crate::ids;
use crate::metadata::MetadataStore;
use crate::sandbox::record::SandboxRecord;
use crate::shim::client::ShimClient;
use crate::shim::protocol::Status;
use crate::shim::ShimPaths;
use oci_spec::runtime::Process;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The container service's errors: the runtime's.
pub type ContainerError = crate::error::RuntimeError;

type Result<T> = std::result::Result<T, ContainerError>;

use crate::error::internal;

/// A container's state as the CRI reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub status: Status,
    pub pid: i32,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub oom_killed: bool,
    /// The shim and its exit record are gone: nothing is known about the end.
    pub unknown: bool,
}

pub struct Containers {
    pub(super) meta: Arc<MetadataStore>,
    pub(super) state: PathBuf,
    /// The pods' shims (one start or stop per pod at a time: concurrent creates in a new
    /// pod must find the one shim, not race to start two).
    shims: super::pod_shims::Shims,
    pids_limit: i64,
    locks: crate::locks::KeyedLocks,
    /// Runtime handler name → OCI runtime binary; the default handler "" is native.
    runtimes: std::collections::BTreeMap<String, PathBuf>,
    events: Arc<Events>,
    /// The host's AppArmor: which profile a container's processes run under.
    apparmor: crate::apparmor::AppArmor,
    /// What observing containers learnt that cannot change behind berthd's back, so
    /// that listing does not ask every shim (the kubelet relists every second).
    known: std::sync::Mutex<KnownStates>,
    /// Each container's process as its OCI spec gives it, read once for its execs:
    /// an exec (a kubelet probe, often every few seconds) then reads and parses no spec.
    exec_templates: std::sync::Mutex<std::collections::HashMap<String, Arc<Process>>>,
}

/// Container states that hold until berthd hears otherwise: an exit, once recorded, is
/// final; a running container stays running until its exit watch answers (which
/// forgets it here).
#[derive(Default)]
struct KnownStates {
    states: std::collections::HashMap<String, Observed>,
    /// Containers with a live exit watch.
    watched: std::collections::HashSet<String>,
}

impl Containers {
    pub fn new(
        meta: Arc<MetadataStore>,
        state: &Path,
        shim_binary: PathBuf,
        pids_limit: i64,
    ) -> Self {
        Self {
            meta,
            state: state.to_path_buf(),
            shims: super::pod_shims::Shims::new(state.to_path_buf(), shim_binary),
            pids_limit,
            locks: Default::default(),
            runtimes: Default::default(),
            events: Default::default(),
            apparmor: crate::apparmor::AppArmor::disabled(),
            known: Default::default(),
            exec_templates: Default::default(),
        }
    }

    /// The host's AppArmor, as detected at start (without: no profile is applied).
    pub fn with_apparmor(mut self, apparmor: crate::apparmor::AppArmor) -> Self {
        self.apparmor = apparmor;
        self
    }

    /// The lifecycle events (GetContainerEvents) this service publishes.
    pub fn events(&self) -> &Arc<Events> {
        &self.events
    }

    /// Adds runtime handlers backed by OCI runtime binaries.
    pub fn with_runtimes(mut self, runtimes: std::collections::BTreeMap<String, PathBuf>) -> Self {
        self.runtimes = runtimes;
        self
    }

    /// Whether the pod's runtime handler exists.
    pub fn has_runtime_handler(&self, name: &str) -> bool {
        name.is_empty() || self.runtimes.contains_key(name)
    }

    pub fn runtime_handlers(&self) -> Vec<String> {
        std::iter::once(String::new()).chain(self.runtimes.keys().cloned()).collect()
    }

    /// The OCI runtime binary of a handler; `None` for the native one.
    fn runtime_binary(&self, handler: &str) -> Result<Option<PathBuf>> {
        if handler.is_empty() {
            return Ok(None);
        }
        self.runtimes.get(handler).cloned().map(Some).ok_or_else(|| {
            ContainerError::FailedPrecondition(format!(
                "the pod's runtime handler {handler:?} is no longer configured"
            ))
        })
    }

    pub(crate) fn shim_paths(&self, pod_id: &str) -> ShimPaths {
        self.shims.paths(pod_id)
    }

    /// A connection to the pod's shim, starting the shim if it is not running (`start`).
    pub(super) fn shim(&self, pod_id: &str, start: bool) -> Result<ShimClient> {
        self.shims.connect(pod_id, start)
    }

    /// Start-up: shims whose pod is gone are stopped.
    fn stop_orphan_shims(&self) -> Result<()> {
        let pods = self.meta.list::<SandboxRecord>()?.into_iter().map(|(id, _)| id).collect();
        self.shims.stop_orphans(&pods);
        Ok(())
    }

    /// Runs `f` off the async runtime, as shim calls and file system work block, and in
    /// the caller's span, so that what it does shows under the RPC that asked for it.
    pub(super) async fn blocking<R: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Containers) -> R + Send + 'static,
    ) -> Result<R> {
        let this = self.clone();
        crate::traced::spawn_blocking(move || f(&this)).await.map_err(internal)
    }

    pub fn get(&self, wanted: &str) -> Result<ContainerRecord> {
        // The full id (what the kubelet sends) is one lookup; a prefix is resolved from the
        // table's keys first.
        let exact = match wanted.is_empty() {
            true => None,
            false => self.meta.get::<ContainerRecord>(wanted)?,
        };
        let rec = match exact {
            Some(rec) => Some(rec),
            None => match self.resolve(wanted)? {
                Some(id) => self.meta.get::<ContainerRecord>(&id)?,
                None => None,
            },
        };
        rec.filter(|r| !r.creating)
            .ok_or_else(|| ContainerError::NotFound(format!("container {wanted:?} not found")))
    }

    /// An exact id, or a unique prefix of one ([`ids::resolve`]). Two keys starting with
    /// `wanted` tell all three answers apart (the exact one sorts first).
    fn resolve(&self, wanted: &str) -> Result<Option<String>> {
        let keys = self.meta.keys_with_prefix::<ContainerRecord>(wanted, 2)?;
        ids::resolve("container_id", wanted, keys.iter().map(String::as_str))
    }

    /// Every container (not those being created); shared with other readers.
    pub fn list(&self) -> Result<Vec<Arc<ContainerRecord>>> {
        Ok(self
            .meta
            .list_shared::<ContainerRecord>()?
            .iter()
            .map(|(_, r)| r.clone())
            .filter(|r| !r.creating)
            .collect())
    }
}

impl crate::sandbox::PodShims for Containers {
    fn start_early(self: Arc<Self>, pod_id: &str) {
        let pod_id = pod_id.to_string();
        crate::traced::spawn_blocking(move || {
            // A failure is the first container's to report: it starts the shim again.
            if let Err(e) = self.shim(&pod_id, true) {
                tracing::debug!(pod_id = %pod_id, error = %e, "early shim start failed");
            }
        });
    }

    fn discard(&self, pod_id: &str) {
        self.shims.stop(pod_id);
    }
}
