//! CreateContainer: the request checked, the name reserved, the bundle built (rootfs,
//! image volumes, OCI spec) and handed to the pod's shim; and the undo of all of it
//! when a create fails or was cut short by a crash.

use crate::cgroup_migration::MigrationWarmer;
use crate::clock::now_ns;
use crate::container::container_spec::ContainerSpec;
use crate::container::image_volumes;
use crate::container::record::{
    name_key, request_fingerprint, ContainerName, ContainerRecord, ImageMountRecord, MountRecord,
    UserRecord,
};
use crate::container::runtime_spec::{self, PodFiles, SpecInput};
use crate::error::internal;
use crate::ids::new_id;
use crate::image::Images;
use crate::oci_defaults::PodNamespaces;
use crate::sandbox::record::{SandboxRecord, SandboxState};
use crate::sandbox::NsMode;
use crate::shim::protocol::CreateRequest;
use crate::snapshot::rootfs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{ContainerError, Containers, Result};

impl Containers {
    /// Creates a container in `pod` from `config`; returns its id.
    pub async fn create(
        self: &Arc<Self>,
        images: &Images,
        pod: &SandboxRecord,
        config: ContainerSpec,
    ) -> Result<String> {
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| ContainerError::InvalidArgument("config.metadata: required".into()))?;
        if meta.name.is_empty() {
            return Err(ContainerError::InvalidArgument("config.metadata.name: required".into()));
        }
        let image = config.image.trim().to_string();
        if image.is_empty() {
            return Err(ContainerError::InvalidArgument("config.image.image: required".into()));
        }
        if pod.state != SandboxState::Ready {
            return Err(ContainerError::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                pod.id
            )));
        }
        if !config.cdi_devices.is_empty() {
            // Nothing on the node resolves CDI names to devices and mounts for berth.
            return Err(ContainerError::InvalidArgument(
                "config.CDI_devices: CDI devices are not supported by berth; request devices \
                 by path (config.devices)"
                    .into(),
            ));
        }
        // Where the container's process is moved into its cgroup with the kernel's
        // global lock (an OCI runtime's move, a systemd scope), the lock's wait starts
        // now, beside the work below.
        let in_scope = crate::sandbox::slice::slice_unit(&pod.cgroup).is_some();
        MigrationWarmer::shared().warm_for(in_scope, pod.runtime_handler.is_empty());
        image_volumes::validate(images, &config)?;
        if !pod.runtime_handler.is_empty() && config.mounts.iter().any(|m| m.recursive_read_only) {
            return Err(ContainerError::InvalidArgument(format!(
                "mounts: recursive_read_only is not supported by runtime handler {:?}",
                pod.runtime_handler
            )));
        }
        let log_file = log_file(&pod.log_directory, &config.log_path)?;
        let image_config = images.resolve(&image).map_err(internal)?.ok_or_else(|| {
            ContainerError::NotFound(format!(
                "config.image.image: image {image:?} is not present; pull it first"
            ))
        })?;
        let stop_signal = config.stop_signal.unwrap_or(0);
        let apparmor_profile = {
            let (req, privileged) = (config.security.apparmor.clone(), config.security.privileged);
            self.blocking(move |this| this.apparmor.profile_for(&req, privileged)).await??
        };

        let key = name_key(&pod.id, &meta.name, meta.attempt);
        // One create per name at a time: the kubelet's retry of a create that outlived its
        // deadline waits here, then gets the container the first call made.
        let _name_lock = self.locks.lock(format!("name/{key}")).await;
        if let Some(existing) = self.meta.get::<ContainerName>(&key)? {
            return match self.meta.get::<ContainerRecord>(&existing.container_id)? {
                Some(rec) if !rec.creating && rec.request == request_fingerprint(&config) => {
                    Ok(rec.id)
                }
                _ => Err(ContainerError::AlreadyExists(format!(
                    "container name {key:?} is reserved for {}",
                    existing.container_id
                ))),
            };
        }
        let id = new_id().map_err(internal)?;
        let bundle = self.state.join("containers").join(&id);
        let rootfs_dir = bundle.join("rootfs");
        // The record goes in first, marked as being created, with the name: a crash at any
        // later point leaves a record start-up removes along with what it names.
        let record = ContainerRecord {
            id: id.clone(),
            pod_id: pod.id.clone(),
            name: meta.name.clone(),
            attempt: meta.attempt,
            image: image.clone(),
            image_id: image_config.id.clone(),
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
            log_path: config.log_path.clone(),
            log_file: log_file.clone(),
            mounts: config
                .mounts
                .iter()
                .map(|m| MountRecord {
                    container_path: m.container_path.clone(),
                    host_path: m.host_path.clone(),
                    readonly: m.readonly,
                    propagation: m.propagation,
                    image: None,
                })
                .collect(),
            tty: config.tty,
            stdin: config.stdin,
            stdin_once: config.stdin_once,
            created_at: now_ns(),
            bundle: bundle.clone(),
            rootfs: rootfs_dir.clone(),
            resources: config.resources.clone(),
            creating: true,
            request: request_fingerprint(&config),
            exit: None,
            image_ref: digest_reference(&image, &image_config),
            user: None,
            stop_signal,
        };
        {
            let mut tx = self.meta.write()?;
            if let Some(existing) = tx.get::<ContainerName>(&key)? {
                return Err(ContainerError::AlreadyExists(format!(
                    "container name {key:?} is reserved for {}",
                    existing.container_id
                )));
            }
            tx.put(&key, &ContainerName { container_id: id.clone() })?;
            tx.put(&id, &record)?;
            tx.commit()?;
        }
        let early_dirs = early_cgroup_dirs(pod, &id);
        let prepared = self
            .prepare_bundle(
                images,
                pod,
                &config,
                &image,
                &image_config.config,
                &id,
                &bundle,
                &rootfs_dir,
                log_file,
                apparmor_profile,
            )
            .await;
        // The record as it will be once created, made durable while the shim creates the
        // container (a sync beside the container's set-up instead of after it).
        let created = prepared.map(|(user, views, request)| {
            let mut done = record.clone();
            done.creating = false;
            done.user = Some(user);
            for view in views {
                let m = &mut done.mounts[view.index];
                let requested = config.mounts[view.index].image.as_deref();
                let requested = requested.map(str::trim).unwrap_or_default();
                m.host_path = view.source.display().to_string();
                m.readonly = true;
                m.image = Some(ImageMountRecord {
                    image: requested.to_string(),
                    image_ref: digest_reference(requested, &view.image),
                    sub_path: config.mounts[view.index].image_sub_path.clone(),
                });
            }
            (done, request)
        });
        match self.create_in_shim(pod, &id, early_dirs, created).await {
            Ok(()) => {
                self.events.created(&id, &pod.id);
                Ok(id)
            }
            Err(e) => {
                if let Err(undo) = self.undo_create(images, &record).await {
                    tracing::error!(container_id = %id, error = %undo, "cannot undo a failed create");
                }
                Err(e)
            }
        }
    }

    /// Removes what a create made (or may have made, after a crash): the shim's
    /// container, the rootfs mount, the writable layer, the bundle, the record and name.
    pub(super) async fn undo_create(
        self: &Arc<Self>,
        images: &Images,
        rec: &ContainerRecord,
    ) -> Result<()> {
        let (pod, id) = (rec.pod_id.clone(), rec.id.clone());
        self.blocking(move |this| {
            if let Ok(mut c) = this.shim(&pod, false) {
                let _ = c.delete(&id);
            }
        })
        .await?;
        // The cgroup made early (see `early_cgroup_dirs`) when the shim never got the
        // container; without the pod's record, its teardown removed them with the pod's.
        if let Some(pod) = self.meta.get::<SandboxRecord>(&rec.pod_id)? {
            if let Some(dirs) = early_cgroup_dirs_path(&pod, &rec.id) {
                let removed =
                    self.blocking(move |_| crate::executor::cgroups::remove(&dirs)).await?;
                if let Err(e) = removed {
                    tracing::warn!(container_id = %rec.id, error = %e.0, "container cgroup left");
                }
            }
        }
        crate::mount_table::unmount(&rec.rootfs).map_err(internal)?;
        image_volumes::unmount_all(&rec.bundle)?;
        images.release_rootfs(&rec.id).await.map_err(internal)?;
        images.release_image_views(&rec.id).await.map_err(internal)?;
        match std::fs::remove_dir_all(&rec.bundle) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(internal(e)),
            _ => {}
        }
        let mut tx = self.meta.write()?;
        tx.delete::<ContainerRecord>(&rec.id)?;
        let key = name_key(&rec.pod_id, &rec.name, rec.attempt);
        if tx.get::<ContainerName>(&key)?.is_some_and(|n| n.container_id == rec.id) {
            tx.delete::<ContainerName>(&key)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Start-up: containers whose create was interrupted by a crash are removed, and so
    /// are shims whose pod is gone.
    pub async fn reconcile(self: &Arc<Self>, images: &Images) -> Result<()> {
        for (id, rec) in self.meta.list::<ContainerRecord>()? {
            if rec.creating {
                tracing::warn!(container_id = %id, "removing a container whose create was interrupted");
                self.undo_create(images, &rec).await?;
            }
        }
        // Image volumes of containers that are gone (their views went with the bundle).
        let live = self.meta.list::<ContainerRecord>()?.into_iter().map(|(id, _)| id).collect();
        images.release_image_views_except(&live).await.map_err(internal)?;
        self.blocking(|this| this.stop_orphan_shims()).await?
    }

    /// Asks the pod's shim to create the container from its prepared bundle, once the
    /// cgroup directories berthd made early (if any) are made; while the shim sets the
    /// container up, the record `done` (no longer being created) is committed. A crash
    /// before that commit leaves a record start-up undoes (the shim's container with it);
    /// one after it, a container the shim has or had the request for. A failed create
    /// is undone by the caller, record and all.
    async fn create_in_shim(
        self: &Arc<Self>,
        pod: &SandboxRecord,
        id: &str,
        early_dirs: Option<EarlyDirs>,
        prepared: Result<(ContainerRecord, CreateRequest)>,
    ) -> Result<()> {
        // Waited for on every path, so that no directory is made after a failed create
        // was undone. A failure here is the shim's to report: it makes them again.
        if let Some(made) = early_dirs {
            if let Ok(Err(e)) = made.await {
                tracing::debug!(container_id = %id, error = %e, "early container cgroup failed");
            }
        }
        let (done, request) = prepared?;
        let pod_id = pod.id.clone();
        self.blocking(move |this| {
            let mut shim = this.shim(&pod_id, true)?;
            let (created, recorded) = shim.create_while(request, || {
                crate::failpoint::crash_point("container.created");
                let mut tx = this.meta.write()?;
                tx.put(&done.id, &done)?;
                tx.commit()?;
                crate::failpoint::crash_point("container.recorded");
                Ok::<(), ContainerError>(())
            });
            created.map_err(|e| {
                ContainerError::FailedPrecondition(format!("creating the container: {e}"))
            })?;
            recorded.unwrap_or(Ok(()))
        })
        .await?
    }

    /// The container's bundle: image volumes, the root filesystem mounted, the OCI spec
    /// written; and the request that asks the shim to create it.
    #[allow(clippy::too_many_arguments)]
    async fn prepare_bundle(
        self: &Arc<Self>,
        images: &Images,
        pod: &SandboxRecord,
        config: &ContainerSpec,
        image: &str,
        image_config: &crate::image::record::ImageConfig,
        id: &str,
        bundle: &Path,
        rootfs_dir: &Path,
        log_file: Option<PathBuf>,
        apparmor_profile: Option<String>,
    ) -> Result<(UserRecord, Vec<image_volumes::MountedView>, CreateRequest)> {
        std::fs::create_dir_all(bundle).map_err(internal)?;
        let (with_views, views) = image_volumes::mount_all(images, id, bundle, config).await?;
        let config = &with_views;
        let plan = images.prepare_rootfs(id, image).await.map_err(internal)?;
        match (&pod.user_ns, &pod.userns) {
            (Some(userns), Some(u)) => {
                let shift = rootfs::IdShift { userns, host_root: u.host_root() };
                rootfs::mount_overlay_idmapped(
                    &plan.lowers,
                    &plan.upper,
                    &plan.work,
                    rootfs_dir,
                    &shift,
                )
                .map_err(|e| ContainerError::FailedPrecondition(format!("root filesystem: {e}")))?
            }
            _ => rootfs::mount_overlay(&plan.lowers, &plan.upper, &plan.work, rootfs_dir)
                .map_err(internal)?,
        }
        crate::failpoint::crash_point("container.rootfs");
        let cgroups_path = crate::sandbox::cgroup::container_cgroups_path(&pod.cgroup, id);
        let (pod_pid_ns, target_pid) = self.pid_namespace_of(pod, config).await?;
        let spec = runtime_spec::build(&SpecInput {
            config,
            image: image_config,
            rootfs: rootfs_dir,
            hostname: &pod.hostname,
            pod: PodNamespaces {
                net: pod.netns.as_deref(),
                ipc: pod.ipc_ns.as_deref(),
                uts: pod.uts_ns.as_deref(),
                pid: pod_pid_ns.as_deref(),
                user: pod.user_ns.as_deref().zip(pod.userns),
            },
            target_pid,
            files: PodFiles {
                hostname: Some(pod.dir.join("hostname")).filter(|p| p.exists()),
                resolv_conf: Some(pod.dir.join("resolv.conf")).filter(|p| p.exists()),
                hosts: Some(pod.dir.join("hosts")).filter(|p| p.exists()),
                shm: pod.shm.clone(),
            },
            cgroups_path,
            pids_limit: self.pids_limit,
            apparmor_profile,
        })
        .map_err(ContainerError::InvalidArgument)?;
        let json = serde_json::to_vec_pretty(&spec).map_err(internal)?;
        std::fs::write(bundle.join("config.json"), json).map_err(internal)?;
        let user = spec
            .process()
            .as_ref()
            .map(|p| UserRecord {
                uid: p.user().uid(),
                gid: p.user().gid(),
                supplemental_groups: p.user().additional_gids().clone().unwrap_or_default(),
            })
            .unwrap_or_default();
        let request = CreateRequest {
            container_id: id.to_string(),
            bundle: bundle.to_path_buf(),
            log_path: log_file.unwrap_or_default(),
            tty: config.tty,
            stdin: config.stdin,
            stdin_once: config.stdin_once,
            runtime: self.runtime_binary(&pod.runtime_handler)?,
        };
        Ok((user, views, request))
    }

    /// What the container's PID namespace is joined from: the pod's init (mode POD, which
    /// starts it on first use) or a running target container of the same pod (TARGET).
    async fn pid_namespace_of(
        self: &Arc<Self>,
        pod: &SandboxRecord,
        config: &ContainerSpec,
    ) -> Result<(Option<PathBuf>, Option<i32>)> {
        let field = "config.linux.security_context.namespace_options";
        let target_id = &config.security.target_id;
        match config.security.pid {
            NsMode::Pod => {
                let pod_id = pod.id.clone();
                let user_ns = pod.user_ns.clone();
                let pid = self
                    .blocking(move |this| {
                        this.shim(&pod_id, true)?
                            .pod_init(user_ns.as_deref())
                            .map_err(|e| internal(e.to_string()))
                    })
                    .await??;
                Ok((Some(PathBuf::from(format!("/proc/{pid}/ns/pid"))), None))
            }
            NsMode::Target => {
                let target = self.get(target_id).map_err(|_| {
                    ContainerError::NotFound(format!(
                        "{field}.target_id: container {target_id:?} not found"
                    ))
                })?;
                if target.pod_id != pod.id {
                    return Err(ContainerError::InvalidArgument(format!(
                        "{field}.target_id: container {} is in another pod",
                        target.id
                    )));
                }
                let (pod_id, tid) = (pod.id.clone(), target.id.clone());
                let state = self
                    .blocking(move |this| {
                        this.shim(&pod_id, false)?.state(&tid).map_err(|e| internal(e.to_string()))
                    })
                    .await??;
                if state.status != crate::shim::protocol::Status::Running || state.pid <= 0 {
                    return Err(ContainerError::FailedPrecondition(format!(
                        "{field}.target_id: container {} is not running",
                        target.id
                    )));
                }
                Ok((None, Some(state.pid)))
            }
            NsMode::Container | NsMode::Node => Ok((None, None)),
        }
    }
}

/// The task making a container's cgroup directories early.
type EarlyDirs = tokio::task::JoinHandle<std::result::Result<(), crate::executor::Error>>;

/// The container's cgroup directories, made on the blocking pool beside the bundle's
/// preparation (the root filesystem's mount, the spec): on a hybrid host that is ten
/// `mkdir`s of the kernel's heavier kind (about 0.4 ms), which the shim otherwise makes
/// after the spec is written, on the create's critical path; it finds them made. Only for
/// the native executor with cgroupfs: a systemd scope is systemd's to make, and an OCI
/// runtime makes its own.
fn early_cgroup_dirs(pod: &SandboxRecord, id: &str) -> Option<EarlyDirs> {
    let path = early_cgroup_dirs_path(pod, id)?;
    // The pod's spare, renamed, where the kernel can (v1): nothing left to make beside.
    let hierarchies = crate::executor::cgroups::hierarchies().ok()?;
    if crate::sandbox::cgroup::take_spare(&hierarchies, &pod.cgroup, id) {
        return None;
    }
    Some(crate::traced::spawn_blocking(move || crate::executor::cgroups::make_dirs(&path)))
}

/// The cgroups path whose directories berthd makes early for container `id` of `pod`.
fn early_cgroup_dirs_path(pod: &SandboxRecord, id: &str) -> Option<PathBuf> {
    let scope = crate::sandbox::slice::slice_unit(&pod.cgroup).is_some();
    (pod.runtime_handler.is_empty() && !scope)
        .then(|| PathBuf::from(crate::sandbox::cgroup::container_cgroups_path(&pod.cgroup, id)))
}

/// The absolute log file for `log_path` under the pod's log directory; `None` when the
/// pod has no log directory or the container no log path.
fn log_file(log_directory: &str, log_path: &str) -> Result<Option<PathBuf>> {
    if log_path.is_empty() || log_directory.is_empty() {
        return Ok(None);
    }
    let rel = Path::new(log_path);
    let escapes = rel.is_absolute()
        || rel.components().any(|c| !matches!(c, std::path::Component::Normal(_)));
    if escapes {
        return Err(ContainerError::InvalidArgument(format!(
            "config.log_path: {log_path:?} must be a relative path inside the pod's log directory"
        )));
    }
    Ok(Some(Path::new(log_directory).join(rel)))
}

/// The image's digest reference in the repository the request named (any of its digest
/// references else), or its id when it has none (an image loaded, not pulled).
fn digest_reference(requested: &str, image: &crate::image::record::ImageRecord) -> String {
    let repo = requested.split('@').next().unwrap_or(requested);
    let repo = match repo.rsplit_once(':') {
        Some((r, tag)) if !tag.contains('/') => r,
        _ => repo,
    };
    image
        .repo_digests
        .iter()
        .find(|d| d.split('@').next() == Some(repo))
        .or(image.repo_digests.first())
        .cloned()
        .unwrap_or_else(|| image.id.to_string())
}

#[cfg(test)]
mod tests {
    use super::log_file;

    #[test]
    fn log_paths_stay_in_the_pod_log_directory() {
        assert_eq!(
            log_file("/var/log/pods/p", "c/0.log").unwrap().unwrap().to_str(),
            Some("/var/log/pods/p/c/0.log")
        );
        assert!(log_file("/var/log/pods/p", "").unwrap().is_none());
        assert!(log_file("", "c.log").unwrap().is_none());
        for bad in ["/etc/passwd", "../x.log", "c/../../x.log", "./c.log"] {
            let err = log_file("/var/log/pods/p", bad).unwrap_err().to_string();
            assert!(err.contains("config.log_path"), "{bad}: {err}");
        }
    }
}
