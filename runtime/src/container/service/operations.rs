//! What is done to a container while it runs: exec, log reopening, checkpoint and
//! resource updates.

use crate::container::container_spec::ContainerResources;
use crate::container::record::ContainerRecord;
use crate::container::runtime_spec;
use crate::error::internal;
use crate::image::Images;
use crate::shim::client::ShimClient;
use crate::shim::protocol::{ErrorKind, Status};
use oci_spec::runtime::Process;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{ContainerError, Containers, Result};

impl Containers {
    /// Runs `cmd` in a running container, as its user, with its environment, working
    /// directory and confinement, and collects its output. `timeout` zero: none.
    pub async fn exec_sync(
        self: &Arc<Self>,
        wanted: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<crate::shim::protocol::ExecResult> {
        if cmd.is_empty() {
            return Err(ContainerError::InvalidArgument("cmd: required".into()));
        }
        let rec = self.get(wanted)?;
        self.blocking(move |this| {
            let process = this.exec_process(&rec, cmd, false)?;
            // Exec blocks its connection until the process ends: use a fresh one. The
            // shim refuses a container that is not running: no round trip to ask first.
            let mut shim = this.shim(&rec.pod_id, false)?;
            let timeout = (!timeout.is_zero()).then_some(timeout);
            shim.exec(&rec.id, process, timeout).map_err(|e| match e.kind() {
                ErrorKind::NotFound | ErrorKind::FailedPrecondition => not_running(&rec),
                _ => ContainerError::FailedPrecondition(format!("exec: {e}")),
            })
        })
        .await?
    }

    /// Makes the shim reopen a running container's log file (after the kubelet rotated it).
    pub async fn reopen_log(self: &Arc<Self>, wanted: &str) -> Result<()> {
        let rec = self.get(wanted)?;
        self.blocking(move |this| {
            let mut shim = this.shim(&rec.pod_id, false)?;
            if shim.state(&rec.id).map(|s| s.status != Status::Running).unwrap_or(true) {
                return Err(ContainerError::FailedPrecondition(format!(
                    "container {} is not running",
                    rec.id
                )));
            }
            shim.reopen_log(&rec.id).map_err(|e| internal(format!("reopening the log: {e}")))
        })
        .await?
    }

    /// CheckpointContainer ([`crate::container::checkpoint`]): the running container dumped into the
    /// archive at `location`, and left running. CRIU works beside the archive (on the
    /// disk the caller chose for it, not in berth's volatile state, which is memory).
    pub async fn checkpoint(
        self: &Arc<Self>,
        images: &Images,
        wanted: &str,
        location: &str,
        timeout: Duration,
    ) -> Result<()> {
        let archive = crate::container::checkpoint::Archive::parse(location)?;
        let rec = self.get(wanted)?;
        let _lock = self.locks.lock(rec.id.clone()).await;
        let upper = images.writable_layer(&rec.id);
        let timeout =
            if timeout.is_zero() { crate::container::checkpoint::DEFAULT_TIMEOUT } else { timeout };
        self.blocking(move |this| {
            let not_running = || {
                ContainerError::FailedPrecondition(format!(
                    "container {} is not running: only a running container can be checkpointed",
                    rec.id
                ))
            };
            let mut shim = this.shim(&rec.pod_id, false).map_err(|_| not_running())?;
            let state = shim.state(&rec.id).map_err(|_| not_running())?;
            if state.status != Status::Running {
                return Err(not_running());
            }
            let work = archive.path().parent().unwrap_or(Path::new("/")).to_path_buf();
            crate::container::checkpoint::checkpoint(
                &rec, state.pid, &upper, &work, &archive, timeout,
            )
        })
        .await?
    }

    /// Applies new resources to a created or running container's cgroup, live, and
    /// keeps them for its status (UpdateContainerResources).
    pub async fn update_resources(
        self: &Arc<Self>,
        wanted: &str,
        resources: &ContainerResources,
    ) -> Result<()> {
        let rec = self.get(wanted)?;
        let _lock = self.locks.lock(rec.id.clone()).await;
        let oci = runtime_spec::linux_resources(resources, self.pids_limit)
            .map_err(ContainerError::InvalidArgument)?;
        let id = rec.id.clone();
        let pod_id = rec.pod_id.clone();
        let bundle = rec.bundle.clone();
        self.blocking(move |this| {
            let mut shim = this.shim(&pod_id, false)?;
            let status = shim.state(&id).map(|s| s.status).unwrap_or(Status::Stopped);
            if status == Status::Stopped {
                return Err(ContainerError::FailedPrecondition(format!(
                    "container {id} has exited: its resources cannot change"
                )));
            }
            // The bundle's spec holds the cgroup path the shim placed the container in,
            // and is kept current so verbose status shows what is in force.
            let config = bundle.join("config.json");
            let mut oci_spec: oci_spec::runtime::Spec =
                serde_json::from_slice(&std::fs::read(&config).map_err(internal)?)
                    .map_err(internal)?;
            let mut linux = oci_spec.linux().clone().unwrap_or_default();
            let cgroup = linux
                .cgroups_path()
                .clone()
                .ok_or_else(|| internal(format!("container {id} has no cgroup")))?;
            crate::executor::cgroups::update(&cgroup, &oci).map_err(|e| {
                ContainerError::InvalidArgument(format!("linux: the cgroup refused it: {e}"))
            })?;
            linux.set_resources(Some(oci));
            oci_spec.set_linux(Some(linux));
            let json = serde_json::to_vec_pretty(&oci_spec).map_err(internal)?;
            std::fs::write(&config, json).map_err(internal)
        })
        .await??;
        let mut rec = rec;
        rec.resources = Some(resources.clone());
        let mut tx = self.meta.write()?;
        tx.put(&rec.id, &rec)?;
        tx.commit()?;
        Ok(())
    }
}

/// The OCI process an exec runs: the container's own (user, environment, working
/// directory, capabilities, rlimits) with `cmd` instead of its args.
impl Containers {
    /// The process an exec of `cmd` runs: the container's own (user, environment,
    /// working directory, capabilities, profiles) with `cmd` as its arguments.
    pub(in crate::container) fn exec_process(
        &self,
        rec: &ContainerRecord,
        cmd: Vec<String>,
        tty: bool,
    ) -> Result<serde_json::Value> {
        let mut process = (*self.exec_template(rec)?).clone();
        process.set_args(Some(cmd));
        process.set_terminal(Some(tty));
        if tty {
            // Programs look at TERM to decide how to draw; the kubelet's exec sets it too.
            let mut env = process.env().clone().unwrap_or_default();
            if !env.iter().any(|e| e.starts_with("TERM=")) {
                env.push("TERM=xterm".into());
            }
            process.set_env(Some(env));
        }
        serde_json::to_value(&process).map_err(internal)
    }

    /// The container's process from its spec, read from the bundle at its first exec.
    /// The spec's process does not change while the container exists (a resource
    /// update rewrites only its resources); RemoveContainer forgets it.
    fn exec_template(&self, rec: &ContainerRecord) -> Result<Arc<Process>> {
        if let Some(p) = self.exec_templates().get(&rec.id) {
            return Ok(p.clone());
        }
        let spec: oci_spec::runtime::Spec = std::fs::read(rec.bundle.join("config.json"))
            .map_err(internal)
            .and_then(|b| serde_json::from_slice(&b).map_err(internal))?;
        let process = Arc::new(spec.process().clone().unwrap_or_default());
        self.exec_templates().insert(rec.id.clone(), process.clone());
        Ok(process)
    }

    pub(in crate::container) fn forget_exec_template(&self, id: &str) {
        self.exec_templates().remove(id);
    }

    fn exec_templates(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Process>>> {
        self.exec_templates.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The host pid of a running container; an error naming it when it is not running.
pub(in crate::container) fn running_pid(
    shim: &mut ShimClient,
    rec: &ContainerRecord,
) -> Result<i32> {
    match shim.state(&rec.id) {
        Ok(s) if s.status == Status::Running => Ok(s.pid),
        _ => Err(not_running(rec)),
    }
}

fn not_running(rec: &ContainerRecord) -> ContainerError {
    ContainerError::FailedPrecondition(format!("container {} is not running", rec.id))
}
