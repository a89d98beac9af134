//! The pod's cgroup: a directory under each hierarchy (cgroupfs driver) or a systemd
//! slice, made with the pod, resized in place, and removed with the parents berth made.

use super::{Result, SandboxError, Sandboxes};
use crate::cgroupfs::Hierarchy;
use crate::error::internal;
use crate::metadata::{MetadataError, MetadataStore, WriteTxn};
use crate::sandbox::cgroup;
use crate::sandbox::pod_spec::{self, Resources};
use crate::sandbox::record::{CgroupDirRecord, SandboxRecord, SandboxState};
use crate::sandbox::slice;
use crate::sandbox::undo::Undo;
use std::path::PathBuf;

impl Sandboxes {
    /// The pod cgroup with the cgroupfs driver: the directories missing are recorded
    /// before they are made — planned with the pod's reservation; a directory that went
    /// missing since (another pod's teardown removed a shared parent) is recorded here.
    pub(super) fn make_pod_cgroup(
        &self,
        rec: &mut SandboxRecord,
        resources: Option<&Resources>,
        undo: &mut Undo,
    ) -> Result<()> {
        let meta = self.inner.meta.clone();
        let hs = self.inner.hierarchies.clone();
        let rel = rec.cgroup.clone();
        let gone: Vec<PathBuf> = cgroup::missing(&hs, &rel)
            .into_iter()
            .filter(|d| !rec.cgroup_created.contains(d))
            .collect();
        if !gone.is_empty() {
            rec.cgroup_created.extend(gone.iter().cloned());
            let mut tx = meta.write()?;
            record_cgroup_parents(&mut tx, &gone, &rel)?;
            tx.put(&rec.id, &*rec)?;
            tx.commit()?;
        }
        let planned = rec.cgroup_created.clone();
        {
            let (meta, hs, rel, planned) = (meta.clone(), hs.clone(), rel.clone(), planned.clone());
            undo.push("cgroup", move || {
                cgroup::remove_spare(&hs, &rel);
                cgroup::remove(&planned, &rel)?;
                remove_berth_parents(&meta, &hs, &rel).map_err(|e| e.to_string())
            });
        }
        cgroup::create(&hs, &rel).map_err(internal)?;
        crate::failpoint::crash_point("sandbox.cgroup");
        if let Some(r) = resources {
            cgroup::apply(&hs, &rec.cgroup, r).map_err(SandboxError::InvalidArgument)?;
        }
        // Made here, beside the pod's network (under CNI its plugins take far longer), not
        // on the first CreateContainer's path. Only for berth's own executor: an OCI
        // runtime makes its container cgroups itself.
        if rec.runtime_handler.is_empty() {
            if let Err(e) = cgroup::make_spare(&hs, &rel) {
                tracing::debug!(pod_id = %rec.id, error = %e, "no spare container cgroup");
            }
        }
        Ok(())
    }

    /// The pod slice with the systemd driver. The kubelet normally made it; if not, berth
    /// starts it (recorded first, like a cgroupfs directory) and stops it with the last
    /// pod in it. Pod-level limits go to systemd as the slice's properties.
    pub(super) async fn make_pod_slice(
        &self,
        rec: &mut SandboxRecord,
        unit: &str,
        resources: Option<&Resources>,
        undo: &mut Undo,
    ) -> Result<()> {
        let on_bus = |f: Box<dyn FnOnce() -> Result<(), String> + Send>| async move {
            crate::traced::spawn_blocking(f).await.map_err(internal)
        };
        let active = {
            let unit = unit.to_string();
            crate::traced::spawn_blocking(move || slice::slice_active(&unit))
                .await
                .map_err(internal)?
                .map_err(internal)?
        };
        // Another pod of berth's in the same slice: berth started it, whoever stops it.
        let ours = !active
            || self
                .pods_in_slice(&rec.id, &rec.cgroup)?
                .iter()
                .any(|r| !r.cgroup_created.is_empty());
        let v2 = self.inner.hierarchies.iter().find(|h| h.v2).map(|h| h.mount.clone());
        rec.cgroup_created =
            if ours { v2.iter().map(|m| m.join(&rec.cgroup)).collect() } else { Vec::new() };
        {
            let mut tx = self.inner.meta.write()?;
            tx.put(&rec.id, &*rec)?;
            tx.commit()?;
        }
        if !active {
            let (this, id, u) = (self.clone(), rec.id.clone(), unit.to_string());
            undo.push("pod slice", move || this.release_pod_slice(&id, &u, true));
            let (unit, r) = (unit.to_string(), resources.cloned());
            on_bus(Box::new(move || slice::start_slice(&unit, r.as_ref())))
                .await?
                .map_err(internal)?;
        } else if let Some(r) = resources.cloned() {
            let unit = unit.to_string();
            on_bus(Box::new(move || slice::set_slice_limits(&unit, &r)))
                .await?
                .map_err(SandboxError::InvalidArgument)?;
        }
        // The pod's containers get every controller berth limits, as with cgroupfs (systemd
        // enables only those its units ask for, and never hugetlb).
        if let Some(mount) = &v2 {
            crate::cgroupfs::delegate_down(mount, std::path::Path::new(&rec.cgroup))
                .map_err(|e| internal(format!("pod slice: {e}")))?;
        }
        crate::failpoint::crash_point("sandbox.cgroup");
        Ok(())
    }

    /// Removes what berth made of the pod cgroup: its directories (cgroupfs), or the
    /// slice it started unless another pod still uses it (systemd).
    pub(super) fn remove_pod_cgroup(&self, rec: &SandboxRecord) -> Result<()> {
        if let Some(unit) = slice::slice_unit(&rec.cgroup) {
            return self
                .release_pod_slice(&rec.id, unit, !rec.cgroup_created.is_empty())
                .map_err(|e| SandboxError::FailedPrecondition(format!("pod slice: {e}")));
        }
        cgroup::remove_spare(&self.inner.hierarchies, &rec.cgroup);
        cgroup::remove(&rec.cgroup_created, &rec.cgroup).map_err(|e| {
            SandboxError::FailedPrecondition(format!("pod cgroup still in use: {e}"))
        })?;
        remove_berth_parents(&self.inner.meta, &self.inner.hierarchies, &rec.cgroup)?;
        Ok(())
    }

    /// The records of the other pods in the pod cgroup `rel` (a slice several pods share,
    /// like critest's `test.slice`).
    fn pods_in_slice(&self, id: &str, rel: &str) -> Result<Vec<SandboxRecord>> {
        Ok(self
            .inner
            .meta
            .list::<SandboxRecord>()?
            .into_iter()
            .filter(|(other, r)| other != id && r.cgroup == rel)
            .map(|(_, r)| r)
            .collect())
    }

    /// Stops the pod slice berth started unless another pod of berth's still uses it.
    fn release_pod_slice(&self, id: &str, unit: &str, started: bool) -> Result<(), String> {
        if !started {
            return Ok(());
        }
        let rel = crate::systemd::expand_slice(unit)?;
        if !self.pods_in_slice(id, &rel).map_err(|e| e.to_string())?.is_empty() {
            return Ok(());
        }
        slice::stop_slice(unit)
    }

    /// In-place pod resize: new pod-level limits on the pod cgroup, recorded with the pod.
    /// `field` names the request field the limits came from, for errors.
    pub async fn update_resources(&self, wanted: &str, r: Resources, field: &str) -> Result<()> {
        pod_spec::validate_resources(&r, field).map_err(SandboxError::InvalidArgument)?;
        let not_found = || SandboxError::NotFound(format!("pod sandbox {wanted:?} not found"));
        let id = self.resolve(wanted)?.ok_or_else(not_found)?;
        let _lock = self.inner.locks.lock(id.clone()).await;
        let mut rec = match self.inner.meta.get::<SandboxRecord>(&id)? {
            Some(r) if r.state != SandboxState::Creating => r,
            _ => return Err(not_found()),
        };
        if rec.state == SandboxState::NotReady {
            return Err(SandboxError::FailedPrecondition(format!(
                "pod sandbox {id} is stopped: its resources cannot change"
            )));
        }
        let applied = match slice::slice_unit(&rec.cgroup) {
            Some(unit) => {
                let unit = unit.to_string();
                crate::traced::spawn_blocking(move || slice::set_slice_limits(&unit, &r))
                    .await
                    .map_err(internal)?
            }
            None => cgroup::apply(&self.inner.hierarchies, &rec.cgroup, &r),
        };
        applied.map_err(|e| {
            SandboxError::InvalidArgument(format!("{field}: the pod cgroup refused it: {e}"))
        })?;
        rec.resources = Some(r);
        let mut tx = self.inner.meta.write()?;
        tx.put(&rec.id, &rec)?;
        tx.commit()?;
        Ok(())
    }
}

/// Removes the now-empty parent cgroups of `rel` that berth created (for this pod or
/// another one), deepest first; parents still holding other pods stay.
/// Records the shared parents among `planned` (every directory but the pod's own, `rel`)
/// as berth's: the last pod in one removes it.
pub(super) fn record_cgroup_parents(
    tx: &mut WriteTxn,
    planned: &[PathBuf],
    rel: &str,
) -> Result<(), MetadataError> {
    for p in planned.iter().filter(|d| !d.ends_with(rel)) {
        tx.put(&p.to_string_lossy(), &CgroupDirRecord {})?;
    }
    Ok(())
}

fn remove_berth_parents(
    meta: &MetadataStore,
    hs: &[Hierarchy],
    rel: &str,
) -> Result<(), MetadataError> {
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    let mut gone = Vec::new();
    for h in hs {
        for n in (1..parts.len()).rev() {
            let dir = h.mount.join(parts[..n].join("/"));
            let key = dir.to_string_lossy().into_owned();
            if meta.get::<CgroupDirRecord>(&key)?.is_none() {
                continue;
            }
            match std::fs::remove_dir(&dir) {
                Ok(()) => gone.push(key),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => gone.push(key),
                Err(_) => break, // still holds other pods: so do its parents
            }
        }
    }
    if !gone.is_empty() {
        let mut tx = meta.write()?;
        for key in gone {
            tx.delete::<CgroupDirRecord>(&key)?;
        }
        tx.commit()?;
    }
    Ok(())
}
