//! Start-up: what a crash or a reboot left half-made or orphaned is cleaned up, and
//! what survived is taken back.

use std::collections::HashSet;
use std::path::PathBuf;

use super::{Result, Sandboxes};
use crate::mount_table;
use crate::sandbox::namespaces;
use crate::sandbox::record::{SandboxRecord, SandboxState};

impl Sandboxes {
    /// Start-up: pods whose set-up was interrupted are removed; pods whose namespaces are
    /// gone (the host rebooted, the state dir was wiped) become NOTREADY and their network,
    /// cgroups and leases are cleaned; rules, leases and directories that belong to no pod
    /// are removed.
    pub(super) async fn reconcile(&self) -> Result<()> {
        let records = self.inner.meta.list::<SandboxRecord>()?;
        for (id, mut rec) in records {
            match rec.state {
                SandboxState::Creating => {
                    tracing::warn!(pod_id = %id, "removing a pod whose set-up was interrupted");
                    if let Err(e) = self.remove(&id).await {
                        tracing::error!(pod_id = %id, error = %e, "cannot remove interrupted pod");
                    }
                }
                SandboxState::Ready => {
                    let pins: Vec<&PathBuf> = rec
                        .netns
                        .iter()
                        .chain(&rec.ipc_ns)
                        .chain(&rec.uts_ns)
                        .chain(&rec.user_ns)
                        .collect();
                    if pins.iter().all(|p| namespaces::is_pin(p)) {
                        continue;
                    }
                    tracing::warn!(pod_id = %id, "pod namespaces are gone (host reboot?); marking NOTREADY");
                    if let Err(e) = self.teardown_network(&rec).await {
                        tracing::error!(pod_id = %id, error = %e, "cannot tear down network");
                    }
                    for pin in rec.ipc_ns.iter().chain(&rec.uts_ns).chain(&rec.user_ns) {
                        let _ = namespaces::remove_pin(pin);
                    }
                    if let Err(e) = self.remove_pod_cgroup(&rec) {
                        tracing::warn!(pod_id = %id, error = %e, "cannot remove pod cgroup");
                    }
                    rec.state = SandboxState::NotReady;
                    rec.ip = None;
                    rec.ips.clear();
                    rec.veth = None;
                    let mut tx = self.inner.meta.write()?;
                    tx.put(&id, &rec)?;
                    tx.commit()?;
                }
                SandboxState::NotReady => {
                    // A stop may have been cut off between recording NOTREADY and the
                    // teardown; finishing it again is harmless.
                    if let Err(e) = self.teardown_network(&rec).await {
                        tracing::warn!(pod_id = %id, error = %e, "cannot finish tearing down a stopped pod's network");
                    }
                }
            }
        }
        let live: HashSet<String> = self
            .inner
            .meta
            .list::<SandboxRecord>()?
            .into_iter()
            .filter(|(_, r)| r.state == SandboxState::Ready)
            .map(|(k, _)| k)
            .collect();
        let known: HashSet<String> =
            self.inner.meta.list::<SandboxRecord>()?.into_iter().map(|(k, _)| k).collect();
        if let Ok(network) = &self.inner.network {
            network.remove_stale(&live).await;
        }
        if let Some(ipam) = &self.inner.ipam {
            use berth_network::IpAllocator;
            for holder in ipam.holders()?.into_iter().filter(|h| !live.contains(h)) {
                tracing::info!(pod_id = %holder, "releasing stale IP lease");
                ipam.release(&holder)?;
            }
        }
        if let Ok(entries) = std::fs::read_dir(self.inner.pods_dir.path()) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !known.contains(&name) {
                    tracing::info!(dir = %entry.path().display(), "removing stale pod directory");
                    if let Err(e) = mount_table::remove_tree(&entry.path()) {
                        tracing::warn!(error = %e, "cannot remove stale pod directory");
                    }
                }
            }
        }
        Ok(())
    }
}
