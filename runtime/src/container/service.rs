//! Containers: created from an image on a pod, run by the pod's shim.
//!
//! berthd never forks a container itself: it prepares the bundle (an overlay rootfs and
//! the OCI spec) and asks the pod's `berth-shim`, started with the pod (`pod_shims`),
//! to create, start, signal and reap it. The shim outlives berthd, so state that matters
//! after a restart (exit codes, times) is read back from the shim or its exit files.

use super::image_volumes;
use super::record::{
    name_key, request_fingerprint, ContainerName, ContainerRecord, ImageMountRecord, MountRecord,
    ResourcesRecord, UserRecord,
};
use super::spec::{self, PodFiles, SpecInput};
use crate::clock::now_ns;
use crate::events::Events;
use crate::ids::{self, new_id};
use crate::image::Images;
use crate::metadata::MetadataStore;
use crate::oci_defaults::PodNamespaces;
use crate::sandbox::record::{SandboxRecord, SandboxState};
use crate::shim::client::{ExitWait, ShimClient};
use crate::shim::protocol::{ContainerState, CreateRequest, ErrorKind, Status};
use crate::shim::{read_exit, ShimPaths};
use crate::snapshot::rootfs;
use berth_proto::ContainerConfig;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The container service's errors: the runtime's.
pub type ContainerError = crate::error::RuntimeError;

type Result<T> = std::result::Result<T, ContainerError>;

/// How often a stop looks whether the container's process has installed a handler for
/// the stop signal yet (see [`Containers::stop`]).
const HANDLER_LOOK: Duration = Duration::from_millis(20);

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
    locks: crate::image::locks::KeyedLocks,
    /// Runtime handler name → OCI runtime binary; the default handler "" is native.
    runtimes: std::collections::BTreeMap<String, PathBuf>,
    events: Arc<Events>,
    /// The host's AppArmor: which profile a container's processes run under.
    apparmor: crate::apparmor::AppArmor,
    /// What observing containers learnt that cannot change behind berthd's back, so
    /// that listing does not ask every shim (the kubelet relists every second).
    known: std::sync::Mutex<KnownStates>,
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

    /// Publishes STOPPED for container `id` once it stops (an async Wait on the shim).
    fn watch_exit(self: &Arc<Self>, id: String, pod_id: String) {
        self.watch_started(&id);
        let this = self.clone();
        tokio::spawn(async move {
            let paths = this.shim_paths(&pod_id);
            if let Err(e) = super::exits::wait(&paths, &id).await {
                tracing::debug!(container_id = %id, error = %e, "exit watch ended without an answer");
            }
            this.forget_state(&id);
            this.events().stopped(&id, &pod_id);
        });
    }

    /// After a berthd restart: watches every container still running, so their exits are
    /// published too.
    pub async fn watch_running(self: &Arc<Self>) {
        let Ok(records) = self.list() else { return };
        for rec in records {
            if self.observe(&rec).await.status == Status::Running {
                self.events().running(&rec.id);
                self.watch_exit(rec.id.clone(), rec.pod_id.clone());
            }
        }
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

    /// Creates a container in `pod` from `config`; returns its id.
    pub async fn create(
        self: &Arc<Self>,
        images: &Images,
        pod: &SandboxRecord,
        config: ContainerConfig,
    ) -> Result<String> {
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| ContainerError::InvalidArgument("config.metadata: required".into()))?;
        if meta.name.is_empty() {
            return Err(ContainerError::InvalidArgument("config.metadata.name: required".into()));
        }
        let image = config.image.as_ref().map(|i| i.image.trim().to_string()).unwrap_or_default();
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
        let stop_signal = spec::stop_signal(&config)
            .map_err(|e| ContainerError::InvalidArgument(format!("config.{e}")))?
            .unwrap_or(0);
        let apparmor_profile = {
            let sc = config.linux.as_ref().and_then(|l| l.security_context.clone());
            self.blocking(move |this| this.apparmor.profile_for(&sc.unwrap_or_default())).await??
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
        let mut record = ContainerRecord {
            id: id.clone(),
            pod_id: pod.id.clone(),
            name: meta.name.clone(),
            attempt: meta.attempt,
            image: image.clone(),
            image_id: image_config.id.clone(),
            labels: config.labels.clone().into_iter().collect(),
            annotations: config.annotations.clone().into_iter().collect(),
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
            resources: config
                .linux
                .as_ref()
                .and_then(|l| l.resources.as_ref())
                .map(ResourcesRecord::from),
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
        let result = self
            .create_inner(
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
        match result {
            Ok((user, views)) => {
                crate::failpoint::crash_point("container.created");
                record.creating = false;
                record.user = Some(user);
                for view in views {
                    let m = &mut record.mounts[view.index];
                    let requested = config.mounts[view.index].image.as_ref();
                    let requested = requested.map(|i| i.image.trim()).unwrap_or_default();
                    m.host_path = view.source.display().to_string();
                    m.readonly = true;
                    m.image = Some(ImageMountRecord {
                        image: requested.to_string(),
                        image_ref: digest_reference(requested, &view.image),
                        sub_path: config.mounts[view.index].image_sub_path.clone(),
                    });
                }
                let mut tx = self.meta.write()?;
                tx.put(&id, &record)?;
                tx.commit()?;
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
    async fn undo_create(self: &Arc<Self>, images: &Images, rec: &ContainerRecord) -> Result<()> {
        let (pod, id) = (rec.pod_id.clone(), rec.id.clone());
        self.blocking(move |this| {
            if let Ok(mut c) = this.shim(&pod, false) {
                let _ = c.delete(&id);
            }
        })
        .await?;
        crate::sandbox::mounts::unmount(&rec.rootfs).map_err(internal)?;
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

    #[allow(clippy::too_many_arguments)]
    async fn create_inner(
        self: &Arc<Self>,
        images: &Images,
        pod: &SandboxRecord,
        config: &ContainerConfig,
        image: &str,
        image_config: &crate::image::record::ImageConfig,
        id: &str,
        bundle: &Path,
        rootfs_dir: &Path,
        log_file: Option<PathBuf>,
        apparmor_profile: Option<String>,
    ) -> Result<(UserRecord, Vec<image_volumes::MountedView>)> {
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
        let spec = spec::build(&SpecInput {
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
        let pod_id = pod.id.clone();
        self.blocking(move |this| {
            let mut shim = this.shim(&pod_id, true)?;
            shim.create(request).map_err(|e| {
                ContainerError::FailedPrecondition(format!("creating the container: {e}"))
            })
        })
        .await??;
        Ok((user, views))
    }

    /// What the container's PID namespace is joined from: the pod's init (mode POD, which
    /// starts it on first use) or a running target container of the same pod (TARGET).
    async fn pid_namespace_of(
        self: &Arc<Self>,
        pod: &SandboxRecord,
        config: &ContainerConfig,
    ) -> Result<(Option<PathBuf>, Option<i32>)> {
        let options = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|sc| sc.namespace_options.as_ref());
        let Some(options) = options else { return Ok((None, None)) };
        let field = "config.linux.security_context.namespace_options";
        match berth_proto::NamespaceMode::try_from(options.pid) {
            Ok(berth_proto::NamespaceMode::Pod) => {
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
            Ok(berth_proto::NamespaceMode::Target) => {
                let target = self.get(&options.target_id).map_err(|_| {
                    ContainerError::NotFound(format!(
                        "{field}.target_id: container {:?} not found",
                        options.target_id
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
            Ok(_) => Ok((None, None)),
            Err(_) => Err(ContainerError::InvalidArgument(format!(
                "{field}.pid: unknown mode {}",
                options.pid
            ))),
        }
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

    pub async fn start(self: &Arc<Self>, wanted: &str) -> Result<()> {
        let rec = self.get(wanted)?;
        let _lock = self.locks.lock(rec.id.clone()).await;
        let (id, pod_id) = (rec.id.clone(), rec.pod_id.clone());
        self.blocking(move |this| {
            let mut shim = this.shim(&rec.pod_id, false)?;
            shim.start(&rec.id).map_err(|e| {
                ContainerError::FailedPrecondition(format!("starting {}: {e}", rec.id))
            })
        })
        .await??;
        self.events.started(&id, &pod_id);
        self.watch_exit(id, pod_id);
        Ok(())
    }

    /// What the shim (or, when it is gone, its exit record) says about a container;
    /// from memory when that cannot have changed.
    pub async fn observe(self: &Arc<Self>, rec: &ContainerRecord) -> Observed {
        if let Some(o) = self.known().states.get(&rec.id) {
            return o.clone();
        }
        let o = self.ask(rec).await;
        if o.status == Status::Stopped && !o.unknown && rec.exit.is_none() {
            self.keep_exit(&rec.id, &o).await;
        }
        let mut known = self.known();
        let lasting = match o.status {
            Status::Stopped => !o.unknown,
            // Only while its exit watch runs: the watch forgets the state when it answers.
            Status::Running => known.watched.contains(&rec.id),
            Status::Created => false,
        };
        if lasting {
            known.states.insert(rec.id.clone(), o.clone());
        }
        o
    }

    /// Records a seen exit in the container's record (best effort: the next observation
    /// tries again).
    async fn keep_exit(self: &Arc<Self>, id: &str, o: &Observed) {
        let exit = crate::shim::ExitRecord {
            exit_code: o.exit_code,
            started_at_ns: o.started_at,
            finished_at_ns: o.finished_at,
            oom_killed: o.oom_killed,
            pid: 0,
        };
        let key = id.to_string();
        let kept = self
            .blocking(move |this| -> Result<()> {
                let id = key;
                let mut tx = this.meta.write()?;
                if let Some(mut rec) = tx.get::<ContainerRecord>(&id)? {
                    if rec.exit.is_none() {
                        rec.exit = Some(exit);
                        tx.put(&id, &rec)?;
                        tx.commit()?;
                    }
                }
                Ok(())
            })
            .await;
        if let Ok(Err(e)) = kept {
            tracing::warn!(container_id = %id, error = %e, "cannot record the container's exit");
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, KnownStates> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An exit watch for `id` starts: its running state may be kept.
    pub(super) fn watch_started(&self, id: &str) {
        self.known().watched.insert(id.to_string());
    }

    /// The container stopped, or is going away: ask its shim next time.
    pub(super) fn forget_state(&self, id: &str) {
        let mut known = self.known();
        known.watched.remove(id);
        known.states.remove(id);
    }

    async fn ask(self: &Arc<Self>, rec: &ContainerRecord) -> Observed {
        let (pod, id) = (rec.pod_id.clone(), rec.id.clone());
        let state = self
            .blocking(move |this| this.shim(&pod, false).ok().and_then(|mut s| s.state(&id).ok()))
            .await
            .ok()
            .flatten();
        match state {
            Some(s) => observed(&s),
            // The shim's exit file, else (the volatile state went with a reboot) the exit
            // berthd recorded when it saw it.
            None => match read_exit(&self.shim_paths(&rec.pod_id), &rec.id) {
                Ok(Some(e)) => exited(&e),
                _ => match &rec.exit {
                    Some(e) => exited(e),
                    None => Observed {
                        status: Status::Stopped,
                        pid: 0,
                        started_at: 0,
                        finished_at: 0,
                        exit_code: 255,
                        oom_killed: false,
                        unknown: true,
                    },
                },
            },
        }
    }

    /// Sends `signal` (the image's StopSignal or SIGTERM), waits up to `timeout`, then
    /// SIGKILLs. Stopping a stopped or unknown container succeeds.
    pub async fn stop(
        self: &Arc<Self>,
        wanted: &str,
        timeout: Duration,
        signal: i32,
    ) -> Result<()> {
        let rec = match self.get(wanted) {
            Ok(r) => r,
            Err(ContainerError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let _lock = self.locks.lock(rec.id.clone()).await;
        let id = rec.id.clone();
        let stopped = self.blocking(move |this| this.stop_blocking(&rec, timeout, signal)).await?;
        // Its exit watch may answer a moment later: the next status must not wait for it.
        self.forget_state(&id);
        stopped
    }

    fn stop_blocking(&self, rec: &ContainerRecord, timeout: Duration, signal: i32) -> Result<()> {
        let Ok(mut shim) = self.shim(&rec.pod_id, false) else { return Ok(()) };
        let Ok(state) = shim.state(&rec.id) else { return Ok(()) };
        if state.status != Status::Running {
            return Ok(());
        }
        // Parked before the first signal: the shim answers it as it reaps the process, so
        // the stop returns with the exit rather than at the next look at the state.
        let Ok(mut exit) = ExitWait::send(&self.shim_paths(&rec.pod_id), &rec.id) else {
            return Ok(());
        };
        if !timeout.is_zero() {
            // The container's process is usually PID 1 of its namespace, where a signal
            // with no handler is dropped. A process stopped right after it started may not
            // have installed its handler yet (`sh -c app` before `app` runs): deliver the
            // signal again once a handler appears, so the grace period is not wasted.
            let mut delivered_to_handler = catches(state.pid, signal);
            let _ = shim.kill(&rec.id, signal, false);
            let deadline = Instant::now() + timeout;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                // Without a handler yet, look for one now and then; with one, only the
                // exit (or the end of the grace period) wakes this.
                let slice = if delivered_to_handler { left } else { left.min(HANDLER_LOOK) };
                if exit.stopped_within(slice) {
                    return Ok(());
                }
                if left.is_zero() {
                    break;
                }
                if !delivered_to_handler && catches(state.pid, signal) {
                    delivered_to_handler = true;
                    let _ = shim.kill(&rec.id, signal, false);
                }
            }
        }
        let _ = shim.kill(&rec.id, libc::SIGKILL, true);
        if !exit.stopped_within(Duration::from_secs(10)) {
            return Err(internal(format!("container {} did not die after SIGKILL", rec.id)));
        }
        Ok(())
    }

    /// Removes a container (killing it first if it runs); absent is fine.
    pub async fn remove(self: &Arc<Self>, images: &Images, wanted: &str) -> Result<()> {
        let rec = match self.get(wanted) {
            Ok(r) => r,
            Err(ContainerError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.stop(&rec.id, Duration::ZERO, libc::SIGKILL).await?;
        let _lock = self.locks.lock(rec.id.clone()).await;
        let _ = std::fs::remove_file(self.shim_paths(&rec.pod_id).exit_file(&rec.id));
        self.undo_create(images, &rec).await?;
        self.forget_state(&rec.id);
        self.events.deleted(&rec.id, &rec.pod_id);
        Ok(())
    }

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
            let process = exec_process(&rec, cmd, false)?;
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

    /// CheckpointContainer ([`super::checkpoint`]): the running container dumped into the
    /// archive at `location`, and left running. CRIU works beside the archive (on the
    /// disk the caller chose for it, not in berth's volatile state, which is memory).
    pub async fn checkpoint(
        self: &Arc<Self>,
        images: &Images,
        wanted: &str,
        location: &str,
        timeout: Duration,
    ) -> Result<()> {
        let archive = super::checkpoint::Archive::parse(location)?;
        let rec = self.get(wanted)?;
        let _lock = self.locks.lock(rec.id.clone()).await;
        let upper = images.writable_layer(&rec.id);
        let timeout = if timeout.is_zero() { super::checkpoint::DEFAULT_TIMEOUT } else { timeout };
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
            super::checkpoint::checkpoint(&rec, state.pid, &upper, &work, &archive, timeout)
        })
        .await?
    }

    /// Applies new resources to a created or running container's cgroup, live, and
    /// keeps them for its status (UpdateContainerResources).
    pub async fn update_resources(
        self: &Arc<Self>,
        wanted: &str,
        resources: &berth_proto::LinuxContainerResources,
    ) -> Result<()> {
        let rec = self.get(wanted)?;
        let _lock = self.locks.lock(rec.id.clone()).await;
        let oci = spec::linux_resources(resources, self.pids_limit)
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
        rec.resources = Some(ResourcesRecord::from(resources));
        let mut tx = self.meta.write()?;
        tx.put(&rec.id, &rec)?;
        tx.commit()?;
        Ok(())
    }

    /// Stops every container of a pod (StopPodSandbox).
    pub async fn stop_pod(self: &Arc<Self>, pod_id: &str) -> Result<()> {
        for rec in self.list()?.into_iter().filter(|r| r.pod_id == pod_id) {
            self.stop(&rec.id, Duration::ZERO, libc::SIGKILL).await?;
        }
        // A stopped pod keeps no process: its init (if it shares a PID namespace) goes too.
        let pod = pod_id.to_string();
        self.blocking(move |this| {
            if let Ok(mut shim) = this.shim(&pod, false) {
                let _ = shim.stop_pod_init();
            }
        })
        .await?;
        Ok(())
    }

    /// Removes every container of a pod and its shim (RemovePodSandbox).
    pub async fn remove_pod(self: &Arc<Self>, images: &Images, pod_id: &str) -> Result<()> {
        for rec in self.list()?.into_iter().filter(|r| r.pod_id == pod_id) {
            self.remove(images, &rec.id).await?;
        }
        let pod = pod_id.to_string();
        self.blocking(move |this| {
            if let Ok(mut shim) = this.shim(&pod, false) {
                if shim.shutdown(true).is_ok() {
                    // The connection ends when the shim has exited, after it removed its
                    // socket: wait for that instead of looking for the socket.
                    shim.wait_closed(Duration::from_secs(5));
                }
            }
            let paths = this.shim_paths(&pod);
            // The shim removes its socket as it exits; wait for that, then its directory.
            let deadline = Instant::now() + Duration::from_secs(5);
            while paths.socket().exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = std::fs::remove_dir_all(paths.dir());
        })
        .await?;
        Ok(())
    }
}

/// What a recorded exit says.
fn exited(e: &crate::shim::ExitRecord) -> Observed {
    Observed {
        status: Status::Stopped,
        pid: 0,
        started_at: e.started_at_ns,
        finished_at: e.finished_at_ns,
        exit_code: e.exit_code,
        oom_killed: e.oom_killed,
        unknown: false,
    }
}

fn observed(s: &ContainerState) -> Observed {
    Observed {
        status: s.status,
        pid: s.pid,
        started_at: s.started_at_ns,
        finished_at: s.finished_at_ns,
        exit_code: s.exit_code.unwrap_or(0),
        oom_killed: s.oom_killed,
        unknown: false,
    }
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

/// Whether process `pid` has a handler installed for `signal` (`SigCgt` in its status).
fn catches(pid: i32, signal: i32) -> bool {
    if pid <= 0 || !(1..=64).contains(&signal) {
        return false;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return false };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1u64 << (signal - 1)) != 0)
}

/// The OCI process an exec runs: the container's own (user, environment, working
/// directory, capabilities, rlimits) with `cmd` instead of its args.
pub(super) fn exec_process(
    rec: &ContainerRecord,
    cmd: Vec<String>,
    tty: bool,
) -> Result<serde_json::Value> {
    let spec: oci_spec::runtime::Spec = std::fs::read(rec.bundle.join("config.json"))
        .map_err(internal)
        .and_then(|b| serde_json::from_slice(&b).map_err(internal))?;
    let mut process = spec.process().clone().unwrap_or_default();
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

/// The host pid of a running container; an error naming it when it is not running.
pub(super) fn running_pid(shim: &mut ShimClient, rec: &ContainerRecord) -> Result<i32> {
    match shim.state(&rec.id) {
        Ok(s) if s.status == Status::Running => Ok(s.pid),
        _ => Err(not_running(rec)),
    }
}

fn not_running(rec: &ContainerRecord) -> ContainerError {
    ContainerError::FailedPrecondition(format!("container {} is not running", rec.id))
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
