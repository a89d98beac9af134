//! StopPodSandbox and RemovePodSandbox: the network and namespaces released on stop,
//! everything else on remove.

use berth_network::netns;

use super::run::pod_request;
use super::{Result, SandboxError, Sandboxes};
use crate::error::internal;
use crate::mount_table;
use crate::sandbox::cgroup;
use crate::sandbox::namespaces;
use crate::sandbox::record::{NameRecord, SandboxRecord, SandboxState};

impl Sandboxes {
    /// Stops a pod: its network is torn down (hostPort rules, veth, netns, IP lease) and
    /// it becomes NOTREADY. A pod that is gone or already stopped is fine.
    pub async fn stop(&self, wanted: &str) -> Result<()> {
        let Some(id) = self.resolve(wanted)? else { return Ok(()) };
        let _lock = self.inner.locks.lock(id.clone()).await;
        let Some(mut rec) = self.inner.meta.get::<SandboxRecord>(&id)? else { return Ok(()) };
        self.stop_locked(&mut rec).await
    }

    async fn stop_locked(&self, rec: &mut SandboxRecord) -> Result<()> {
        // NOTREADY is recorded before anything is torn down, and the teardown (idempotent)
        // runs on every stop and at start-up for NOTREADY pods: a crash half-way through
        // never leaves a pod READY without its network, nor a stopped one holding it.
        if rec.state != SandboxState::NotReady {
            rec.state = SandboxState::NotReady;
            rec.ip = None;
            rec.ips.clear();
            rec.veth = None;
            let mut tx = self.inner.meta.write()?;
            tx.put(&rec.id, &*rec)?;
            tx.commit()?;
            crate::failpoint::crash_point("sandbox.stopping");
        }
        self.teardown_network(rec).await?;
        tracing::info!(pod_id = %rec.id, "pod sandbox stopped");
        Ok(())
    }

    pub(super) async fn teardown_network(&self, rec: &SandboxRecord) -> Result<()> {
        if let Some(pin) = &rec.netns {
            match &self.inner.network {
                Ok(n) => n.teardown_pod(&pod_request(rec, pin)).await?,
                Err(e) => tracing::warn!(pod_id = %rec.id, error = %e, "no network to tear down"),
            }
            netns::remove(pin)?;
        }
        if let Some(ipam) = &self.inner.ipam {
            use berth_network::IpAllocator;
            ipam.release(&rec.id)?;
        }
        Ok(())
    }

    /// Removes a pod (stopping it first if needed): pins, shm, files, cgroup, record.
    /// A pod that is gone is fine.
    pub async fn remove(&self, wanted: &str) -> Result<()> {
        let Some(id) = self.resolve(wanted)? else { return Ok(()) };
        let _lock = self.inner.locks.lock(id.clone()).await;
        let Some(mut rec) = self.inner.meta.get::<SandboxRecord>(&id)? else { return Ok(()) };
        if rec.state != SandboxState::NotReady {
            // A pod still being created (or a crash leftover) is torn down the same way.
            self.teardown_network(&rec).await?;
            rec.state = SandboxState::NotReady;
        }
        if let (Some(_), Ok(network)) = (&rec.netns, &self.inner.network) {
            network.settle_pod(&rec.id).await?;
        }
        // Unmounts, cgroup removal and (systemd driver) stopping the slice over D-Bus block:
        // off the async workers.
        let (this, r) = (self.clone(), rec.clone());
        crate::traced::spawn_blocking(move || this.remove_host_state(&r))
            .await
            .map_err(internal)??;
        let mut tx = self.inner.meta.write()?;
        tx.delete::<SandboxRecord>(&id)?;
        let key = rec.metadata.key();
        if tx.get::<NameRecord>(&key)?.is_some_and(|n| n.sandbox_id == id) {
            tx.delete::<NameRecord>(&key)?;
        }
        tx.commit()?;
        tracing::info!(pod_id = %id, "pod sandbox removed");
        Ok(())
    }

    fn remove_host_state(&self, rec: &SandboxRecord) -> Result<()> {
        // The user namespace last: the others are its.
        let pins = rec.ipc_ns.iter().chain(&rec.uts_ns).chain(&rec.netns).chain(&rec.user_ns);
        for pin in pins {
            namespaces::remove_pin(pin).map_err(internal)?;
        }
        if let Some(shm) = rec.shm.as_ref().filter(|p| p.starts_with(&rec.dir)) {
            mount_table::unmount(shm).map_err(internal)?;
        }
        cgroup::kill_leftovers(&self.inner.hierarchies, &rec.cgroup)
            .map_err(|e| SandboxError::FailedPrecondition(format!("pod cgroup: {e}")))?;
        self.remove_pod_cgroup(rec)?;
        if rec.dir.starts_with(self.inner.pods_dir.path()) && rec.dir != self.inner.pods_dir.path()
        {
            mount_table::remove_tree(&rec.dir).map_err(internal)?;
        }
        Ok(())
    }
}
