//! The image store: pull, look up, list and remove images, and collect what nothing
//! references any more.

use super::manifest::NodePlatform;
use super::pull::{PullError, Puller};
use super::record::{ImageRecord, LayerRecord, NameRecord};
use super::reference::{parse_image_id, resolve_endpoints, Reference, ReferenceError};
use super::registry::{Credentials, Registries, RegistrySettings};
use crate::content::ContentStore;
use crate::digest::Digest;
use crate::locks::KeyedLocks;
use crate::metadata::{MetadataError, MetadataStore};
use crate::snapshot::image_view::{view_key, ImageViewRecord};
use crate::snapshot::layers::LayerStore;
use crate::snapshot::rootfs::{RootfsDirs, RootfsRecord};
use crate::snapshot::{ExpansionLimits, UnpackLimits};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::RwLock;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    InvalidReference(#[from] ReferenceError),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("failed to pull {reference}: {message}")]
    Pull { reference: String, message: String },
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("{0}")]
    Storage(String),
    #[error("{0}")]
    NotFound(String),
    /// The image is mounted as an image volume by a container.
    #[error("{0}")]
    InUse(String),
}

/// Image store settings.
#[derive(Debug, Clone)]
pub struct ImageSettings {
    pub registry: RegistrySettings,
    pub unpack_limits: UnpackLimits,
    pub expansion_limits: ExpansionLimits,
}

pub struct Images {
    meta: Arc<MetadataStore>,
    content: ContentStore,
    layers: LayerStore,
    layers_root: PathBuf,
    rootfs: RootfsDirs,
    registries: Registries,
    limits: UnpackLimits,
    expansion: ExpansionLimits,
    platform: NodePlatform,
    pull_locks: KeyedLocks,
    layer_locks: KeyedLocks,
    /// Bytes received from registries since start, for the metrics.
    pulled_bytes: Arc<std::sync::atomic::AtomicU64>,
    /// Pulls hold it shared, garbage collection exclusively: a layer a pull has unpacked
    /// but not yet recorded must not look unreferenced.
    gc: RwLock<()>,
}

impl Images {
    /// Opens the image store under `root` and removes what a crash left unreferenced.
    pub fn open(
        root: &Path,
        meta: Arc<MetadataStore>,
        settings: ImageSettings,
    ) -> Result<Self, ImageError> {
        let storage = |e: std::io::Error| ImageError::Storage(e.to_string());
        let content = ContentStore::open(root.join("content"))
            .map_err(|e| ImageError::Storage(e.to_string()))?;
        let layers_root = root.join("snapshots");
        let layers = LayerStore::open(&layers_root).map_err(storage)?;
        let rootfs = RootfsDirs::new(layers_root.join("containers"));
        let images = Self {
            meta,
            content,
            layers,
            layers_root,
            rootfs,
            registries: Registries::new(settings.registry),
            limits: settings.unpack_limits,
            expansion: settings.expansion_limits,
            platform: NodePlatform::current(),
            pull_locks: KeyedLocks::default(),
            layer_locks: KeyedLocks::default(),
            pulled_bytes: Default::default(),
            gc: RwLock::new(()),
        };
        images.collect_garbage_now()?;
        Ok(images)
    }

    /// Pulls `image` (a reference, not an id) and records it; returns the record.
    #[tracing::instrument(name = "image.pull", skip_all, fields(image = image))]
    pub async fn pull(
        &self,
        image: &str,
        creds: Option<&Credentials>,
    ) -> Result<ImageRecord, ImageError> {
        if parse_image_id(image).is_some() {
            return Err(ImageError::InvalidArgument(format!(
                "image.image: {image:?} is an image id; pull by reference (name:tag or name@digest)"
            )));
        }
        let reference = Reference::parse(image)?;
        let result = self.pull_reference(&reference, creds).await;
        if result.is_err() {
            // Layers a failed pull unpacked whole belong to no image: collect them now
            // unless another pull or removal is under way (the next collection will).
            if let Ok(_gc) = self.gc.try_write() {
                if let Err(e) = self.collect_garbage_now() {
                    tracing::warn!(error = %e, "cannot collect what a failed pull left");
                }
            }
        }
        result
    }

    async fn pull_reference(
        &self,
        reference: &Reference,
        creds: Option<&Credentials>,
    ) -> Result<ImageRecord, ImageError> {
        let _gc = self.gc.read().await;
        // Concurrent pulls of one reference: the first does the work, the rest find the
        // layers on disk and only re-read the manifest.
        let _pulling = self.pull_locks.lock(reference.to_string()).await;
        let puller = Puller {
            registries: &self.registries,
            content: &self.content,
            layers: &self.layers,
            limits: self.limits,
            expansion: self.expansion,
            platform: &self.platform,
            layer_locks: &self.layer_locks,
            received: &self.pulled_bytes,
        };
        let mut failures = Vec::new();
        for ep in resolve_endpoints(reference, &self.registries.settings().mirrors) {
            match puller.pull(reference, &ep, creds).await {
                Ok(pulled) => return self.record(reference, pulled),
                Err(e) => {
                    tracing::info!(endpoint = %ep.host, error = %e, "pull from endpoint failed");
                    let err = match e {
                        PullError::Storage(m) => return Err(ImageError::Storage(m)),
                        other => other.to_string(),
                    };
                    failures.push(format!("{}://{}: {err}", ep.scheme(), ep.host));
                }
            }
        }
        Err(ImageError::Pull { reference: reference.to_string(), message: failures.join("; ") })
    }

    fn record(
        &self,
        reference: &Reference,
        pulled: super::pull::Pulled,
    ) -> Result<ImageRecord, ImageError> {
        let id = pulled.config_digest.clone();
        let tag_name = reference.tag().map(|_| {
            // name:tag, without any digest the reference also carried
            format!("{}:{}", reference.name(), reference.tag().unwrap_or_default())
        });
        let digest_name = format!("{}@{}", reference.name(), pulled.top_digest);
        let mut tx = self.meta.write()?;
        let mut record = tx.get::<ImageRecord>(&id.to_string())?.unwrap_or_else(|| ImageRecord {
            id: id.clone(),
            repo_tags: Vec::new(),
            repo_digests: Vec::new(),
            manifest: pulled.manifest_digest.clone(),
            layers: pulled.layers.clone(),
            size: pulled.size,
            config: pulled.config.clone(),
            pulled_at: crate::clock::now_ns(),
        });
        for name in tag_name.iter().chain(std::iter::once(&digest_name)) {
            // A tag that pointed at another image moves here; that image loses it.
            if let Some(previous) = tx.get::<NameRecord>(name)? {
                if previous.image != id {
                    if let Some(mut other) = tx.get::<ImageRecord>(&previous.image.to_string())? {
                        other.repo_tags.retain(|t| t != name);
                        other.repo_digests.retain(|t| t != name);
                        tx.put(&previous.image.to_string(), &other)?;
                    }
                }
            }
            tx.put(name, &NameRecord { image: id.clone() })?;
        }
        if let Some(tag) = tag_name {
            if !record.repo_tags.contains(&tag) {
                record.repo_tags.push(tag);
            }
        }
        if !record.repo_digests.contains(&digest_name) {
            record.repo_digests.push(digest_name);
        }
        for layer in &pulled.new_layers {
            tx.put(&layer.chain_id.to_string(), layer)?;
        }
        tx.put(&id.to_string(), &record)?;
        tx.commit()?;
        Ok(record)
    }

    /// Finds an image by id (`sha256:…` or bare hex), by `name:tag`, by `name@digest`, or
    /// by a short name (`busybox`). `None` if there is no such image.
    pub fn resolve(&self, image: &str) -> Result<Option<ImageRecord>, ImageError> {
        if let Some(id) = parse_image_id(image) {
            return Ok(self.meta.get::<ImageRecord>(&id)?);
        }
        let reference = Reference::parse(image)?;
        let key = match (reference.digest(), reference.tag()) {
            (Some(digest), _) => format!("{}@{digest}", reference.name()),
            (None, Some(tag)) => format!("{}:{tag}", reference.name()),
            (None, None) => return Ok(None),
        };
        let tx = self.meta.read()?;
        match tx.get::<NameRecord>(&key)? {
            Some(name) => Ok(tx.get::<ImageRecord>(&name.image.to_string())?),
            None => Ok(None),
        }
    }

    pub fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        Ok(self.meta.list::<ImageRecord>()?.into_iter().map(|(_, r)| r).collect())
    }

    /// Removes an image and every name pointing at it, then its unreferenced layers and
    /// blobs. Removing an image that is not there succeeds.
    pub async fn remove(&self, image: &str) -> Result<(), ImageError> {
        let Some(record) = self.resolve(image)? else { return Ok(()) };
        let _gc = self.gc.write().await;
        let mut tx = self.meta.write()?;
        // A container's own image may go (its rootfs keeps the layers), but an image
        // volume names the image itself: its pod would fail to restart the container.
        if let Some((_, view)) =
            tx.list::<ImageViewRecord>()?.into_iter().find(|(_, v)| v.image == record.id)
        {
            return Err(ImageError::InUse(format!(
                "image {} is mounted as an image volume by container {}",
                record.id, view.container_id
            )));
        }
        for name in record.repo_tags.iter().chain(&record.repo_digests) {
            if tx.get::<NameRecord>(name)?.is_some_and(|n| n.image == record.id) {
                tx.delete::<NameRecord>(name)?;
            }
        }
        tx.delete::<ImageRecord>(&record.id.to_string())?;
        tx.commit()?;
        self.collect_garbage_now()
    }

    /// Deletes layers and blobs that no image references. Callers hold the GC lock (or
    /// run before any pull can start).
    fn collect_garbage_now(&self) -> Result<(), ImageError> {
        let images = self.list()?;
        let mut live_layers = HashSet::new();
        let mut live_blobs = HashSet::new();
        for image in &images {
            live_blobs.insert(image.id.clone());
            live_blobs.insert(image.manifest.clone());
            for name in &image.repo_digests {
                if let Some(d) = name.rsplit_once('@').and_then(|(_, d)| d.parse::<Digest>().ok()) {
                    live_blobs.insert(d);
                }
            }
            for layer in &image.layers {
                live_layers.insert(layer.chain_id.clone());
            }
        }
        let storage = |e: &dyn std::fmt::Display| ImageError::Storage(e.to_string());
        // A container's rootfs keeps its image's layers alive after the image is gone.
        let rootfs = self.meta.list::<RootfsRecord>()?;
        for (_, record) in &rootfs {
            live_layers.extend(record.layers.iter().cloned());
        }
        for (_, view) in self.meta.list::<ImageViewRecord>()? {
            live_layers.extend(view.layers);
        }
        // Writable layers without a record were being created when berthd died.
        for id in self.rootfs.list().map_err(|e| storage(&e))? {
            if !rootfs.iter().any(|(key, _)| *key == id) {
                self.rootfs.remove(&id).map_err(|e| storage(&e))?;
            }
        }
        let mut tx = self.meta.write()?;
        for (key, layer) in tx.list::<LayerRecord>()? {
            if !live_layers.contains(&layer.chain_id) {
                tx.delete::<LayerRecord>(&key)?;
            }
        }
        if !tx.is_empty() {
            tx.commit()?;
        }
        for chain_id in self.layers.list().map_err(|e| storage(&e))? {
            if !live_layers.contains(&chain_id) {
                tracing::debug!(layer = %chain_id, "removing unreferenced layer");
                self.layers.remove(&chain_id).map_err(|e| storage(&e))?;
            }
        }
        for blob in self.content.list().map_err(|e| storage(&e))? {
            if !live_blobs.contains(&blob) {
                self.content.delete(&blob).map_err(|e| storage(&e))?;
            }
        }
        Ok(())
    }

    /// Bytes and inodes the image store uses: unpacked layers plus kept blobs.
    pub fn usage(&self) -> Result<FsUsage, ImageError> {
        let mut usage = FsUsage { mountpoint: self.layers_root.clone(), bytes: 0, inodes: 0 };
        for (_, layer) in self.meta.list::<LayerRecord>()? {
            usage.bytes += layer.bytes;
            usage.inodes += layer.inodes;
        }
        for blob in self.content.list().map_err(|e| ImageError::Storage(e.to_string()))? {
            usage.bytes += self.content.size(&blob).unwrap_or(0);
            usage.inodes += 1;
        }
        Ok(usage)
    }

    /// The chain ids of `record`'s layers, all of which must be on disk.
    fn layers_on_disk(&self, record: &ImageRecord) -> Result<Vec<Digest>, ImageError> {
        let layers: Vec<Digest> = record.layers.iter().map(|l| l.chain_id.clone()).collect();
        if let Some(missing) = layers.iter().find(|l| !self.layers.contains(l)) {
            return Err(ImageError::Storage(format!(
                "layer {missing} of image {} is missing on disk",
                record.id
            )));
        }
        Ok(layers)
    }

    /// Creates the writable layer of container `id` on top of `image` and returns what to
    /// mount. From now on the image's layers stay on disk until [`release_rootfs`]
    /// (Self::release_rootfs), even if the image itself is removed.
    pub async fn prepare_rootfs(&self, id: &str, image: &str) -> Result<RootfsPlan, ImageError> {
        let _gc = self.gc.read().await;
        let record = self.resolve(image)?.ok_or_else(|| {
            ImageError::InvalidArgument(format!("image {image:?} is not present; pull it first"))
        })?;
        let layers = self.layers_on_disk(&record)?;
        let mut tx = self.meta.write()?;
        if tx.get::<RootfsRecord>(id)?.is_some() {
            return Err(ImageError::InvalidArgument(format!(
                "container {id} already has a root filesystem"
            )));
        }
        tx.put(
            id,
            &RootfsRecord { id: id.to_string(), image: record.id.clone(), layers: layers.clone() },
        )?;
        // Not synced to disk: the container's record, synced before this call, already
        // names the writable layer (start-up's undo of an unfinished create removes it by
        // the container's id, record or not), and its create's last commit, synced, makes
        // this one durable too. A collection in this process sees it at once.
        tx.commit_unsynced()?;
        if let Err(e) = self.rootfs.create(id) {
            let mut tx = self.meta.write()?;
            tx.delete::<RootfsRecord>(id)?;
            tx.commit()?;
            let _ = self.rootfs.remove(id);
            return Err(ImageError::Storage(format!("creating the writable layer of {id}: {e}")));
        }
        Ok(RootfsPlan {
            image: record.id,
            lowers: layers.iter().map(|l| self.layers.fs_path(l)).collect(),
            upper: self.rootfs.upper(id),
            work: self.rootfs.work(id),
        })
    }

    /// The upper directory of container `id`'s writable layer (for its disk usage).
    /// The directory holding every container's writable layer.
    pub fn writable_layers_root(&self) -> &Path {
        self.rootfs.root()
    }

    pub fn writable_layer(&self, id: &str) -> PathBuf {
        self.rootfs.upper(id)
    }

    /// Deletes container `id`'s writable layer (already unmounted by the caller) and lets
    /// go of its image's layers. Absent is fine.
    ///
    /// The record's removal is not synced to disk: the caller removes the container's
    /// own record next, in a synced commit that carries this one. A crash in between
    /// leaves both records (the writable layer gone), and removing the container again
    /// finishes the job.
    pub async fn release_rootfs(&self, id: &str) -> Result<(), ImageError> {
        let _gc = self.gc.write().await;
        self.rootfs.remove(id).map_err(|e| {
            ImageError::Storage(format!("removing the writable layer of {id}: {e}"))
        })?;
        let mut tx = self.meta.write()?;
        let Some(released) = tx.get::<RootfsRecord>(id)? else { return Ok(()) };
        tx.delete::<RootfsRecord>(id)?;
        tx.commit_unsynced()?;
        // While its image is present, every layer the rootfs held is still the image's:
        // nothing to collect (a collection reads every image, rootfs and blob).
        if self.meta.get::<ImageRecord>(&released.image.to_string())?.is_none() {
            self.collect_garbage_now()?;
        }
        Ok(())
    }

    /// Records image volume `mount` of container `id` on `image` and returns the layers
    /// to mount, bottom first. From now on RemoveImage refuses the image and its layers
    /// stay on disk, until [`release_image_views`](Self::release_image_views).
    pub async fn prepare_image_view(
        &self,
        id: &str,
        mount: usize,
        image: &str,
    ) -> Result<ImageViewPlan, ImageError> {
        let _gc = self.gc.read().await;
        let record = self.resolve(image)?.ok_or_else(|| {
            ImageError::NotFound(format!("image {image:?} is not present; pull it first"))
        })?;
        let layers = self.layers_on_disk(&record)?;
        let view = ImageViewRecord {
            container_id: id.to_string(),
            mount,
            image: record.id.clone(),
            layers: layers.clone(),
        };
        let mut tx = self.meta.write()?;
        tx.put(&view_key(id, mount), &view)?;
        tx.commit()?;
        Ok(ImageViewPlan {
            image: record,
            lowers: layers.iter().map(|l| self.layers.fs_path(l)).collect(),
        })
    }

    /// Forgets the image volumes of container `id` (already unmounted by the caller) and
    /// collects what they alone kept. Absent is fine.
    pub async fn release_image_views(&self, id: &str) -> Result<(), ImageError> {
        self.release_views_where(|v| v.container_id == id).await
    }

    /// Forgets image volumes whose container is not in `live` (start-up: the container's
    /// record went before its views, or never came).
    pub async fn release_image_views_except(
        &self,
        live: &HashSet<String>,
    ) -> Result<(), ImageError> {
        self.release_views_where(|v| !live.contains(&v.container_id)).await
    }

    async fn release_views_where(
        &self,
        doomed: impl Fn(&ImageViewRecord) -> bool,
    ) -> Result<(), ImageError> {
        let _gc = self.gc.write().await;
        let mut tx = self.meta.write()?;
        let mut released = false;
        for (key, view) in tx.list::<ImageViewRecord>()? {
            if doomed(&view) {
                tx.delete::<ImageViewRecord>(&key)?;
                released = true;
            }
        }
        tx.commit()?;
        if released {
            self.collect_garbage_now()?;
        }
        Ok(())
    }

    /// Images some container mounts as an image volume (reported pinned, so that the
    /// kubelet's image garbage collection passes them by).
    pub fn image_volume_images(&self) -> Result<HashSet<Digest>, ImageError> {
        Ok(self.meta.list::<ImageViewRecord>()?.into_iter().map(|(_, v)| v.image).collect())
    }

    /// The count of bytes received from registries by pulls, live.
    pub fn pulled_bytes(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.pulled_bytes.clone()
    }

    /// The directory of an unpacked layer, for overlay mounts.
    pub fn layer_path(&self, chain_id: &Digest) -> PathBuf {
        self.layers.fs_path(chain_id)
    }
}

/// What to mount for a container's root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsPlan {
    pub image: Digest,
    /// Unpacked layers, bottom first.
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
}

/// What to mount for an image volume.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageViewPlan {
    pub image: ImageRecord,
    /// Unpacked layers, bottom first.
    pub lowers: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsUsage {
    pub mountpoint: PathBuf,
    pub bytes: u64,
    pub inodes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::record::{ImageConfig, LayerRef};

    fn images(root: &Path) -> Images {
        let meta = Arc::new(MetadataStore::open(&root.join("meta.redb")).unwrap());
        let settings = ImageSettings {
            registry: RegistrySettings::default(),
            unpack_limits: UnpackLimits::default(),
            expansion_limits: ExpansionLimits::default(),
        };
        Images::open(root, meta, settings).unwrap()
    }

    /// Records an image of one layer as a pull would, without a registry.
    fn fake_pull(images: &Images) -> Digest {
        let diff = Digest::of(b"layer");
        let pending = images.layers.begin(&diff).unwrap();
        std::fs::write(pending.fs_path().join("f"), b"x").unwrap();
        pending.commit().unwrap();
        let id = Digest::of(b"config");
        let record = ImageRecord {
            id: id.clone(),
            repo_tags: vec!["docker.io/library/fake:latest".into()],
            repo_digests: Vec::new(),
            manifest: Digest::of(b"manifest"),
            layers: vec![LayerRef {
                digest: Digest::of(b"blob"),
                media_type: "application/vnd.oci.image.layer.v1.tar".into(),
                size: 5,
                diff_id: diff.clone(),
                chain_id: diff.clone(),
            }],
            size: 5,
            config: ImageConfig::default(),
            pulled_at: 0,
        };
        let mut tx = images.meta.write().unwrap();
        tx.put(&id.to_string(), &record).unwrap();
        tx.put("docker.io/library/fake:latest", &NameRecord { image: id.clone() }).unwrap();
        tx.put(
            &diff.to_string(),
            &LayerRecord { chain_id: diff.clone(), diff_id: diff, bytes: 1, inodes: 1 },
        )
        .unwrap();
        tx.commit().unwrap();
        id
    }

    #[tokio::test]
    async fn a_rootfs_keeps_its_layers_after_the_image_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let images = images(tmp.path());
        let id = fake_pull(&images);
        let plan = images.prepare_rootfs("c1", "fake").await.unwrap();
        assert_eq!(plan.image, id);
        assert!(plan.lowers[0].join("f").exists() && plan.upper.is_dir() && plan.work.is_dir());
        assert!(images.prepare_rootfs("c1", "fake").await.is_err(), "one rootfs per container");

        images.remove("fake").await.unwrap();
        assert!(images.resolve("fake").unwrap().is_none());
        assert!(plan.lowers[0].join("f").exists(), "a layer in use was collected");

        images.release_rootfs("c1").await.unwrap();
        assert!(!plan.lowers[0].exists(), "the last user is gone, the layer must go");
        assert!(!plan.upper.exists());
        images.release_rootfs("c1").await.unwrap();

        let err = images.prepare_rootfs("c2", "fake").await.unwrap_err();
        assert!(matches!(err, ImageError::InvalidArgument(_)), "{err}");
        assert!(!images.rootfs.dir("c2").exists());
    }

    #[tokio::test]
    async fn an_image_volume_holds_its_image_until_released() {
        let tmp = tempfile::tempdir().unwrap();
        let images = images(tmp.path());
        let id = fake_pull(&images);
        let err = images.prepare_image_view("c1", 0, "absent").await.unwrap_err();
        assert!(matches!(err, ImageError::NotFound(_)), "{err}");
        let plan = images.prepare_image_view("c1", 0, "fake").await.unwrap();
        assert_eq!(plan.image.id, id);
        assert!(plan.lowers[0].join("f").exists());
        assert_eq!(images.image_volume_images().unwrap(), HashSet::from([id.clone()]));

        let err = images.remove("fake").await.unwrap_err();
        assert!(matches!(&err, ImageError::InUse(m) if m.contains("c1")), "{err}");
        assert!(images.resolve("fake").unwrap().is_some(), "a refused removal removed names");
        // Views of containers that are gone go at start-up; those of live ones stay.
        images.release_image_views_except(&HashSet::from(["c1".to_string()])).await.unwrap();
        assert!(images.remove("fake").await.is_err());

        images.release_image_views("c1").await.unwrap();
        images.release_image_views("c1").await.unwrap();
        assert!(images.image_volume_images().unwrap().is_empty());
        images.remove("fake").await.unwrap();
        assert!(!plan.lowers[0].exists(), "the last user is gone, the layer must go");
    }

    #[tokio::test]
    async fn start_up_removes_writable_layers_nobody_recorded() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let images = images(tmp.path());
            fake_pull(&images);
            images.prepare_rootfs("kept", "fake").await.unwrap();
            images.rootfs.create("orphan").unwrap();
        }
        let images = images(tmp.path());
        assert!(images.rootfs.dir("kept").is_dir());
        assert!(!images.rootfs.dir("orphan").exists());
    }
}
