//! Images and image indexes: their manifests and configs built as JSON and pushed.

use std::collections::BTreeMap;

use anyhow::Result;
use serde_json::{json, Value};

use super::client::RegistryClient;
use super::layer::{sha256_digest, Compression, Layer, LayerBuilder};
use super::media::*;

/// `created` of every fixture image and history entry, for reproducible digests.
pub const CREATED: &str = "2024-01-01T00:00:00Z";

/// Which manifest family to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestFormat {
    /// OCI image manifest / OCI image index.
    Oci,
    /// Docker image manifest v2 schema 2 / Docker manifest list.
    Docker,
}

impl ManifestFormat {
    pub fn manifest_media_type(self) -> &'static str {
        match self {
            ManifestFormat::Oci => MEDIA_OCI_MANIFEST,
            ManifestFormat::Docker => MEDIA_DOCKER_MANIFEST,
        }
    }

    pub fn index_media_type(self) -> &'static str {
        match self {
            ManifestFormat::Oci => MEDIA_OCI_INDEX,
            ManifestFormat::Docker => MEDIA_DOCKER_LIST,
        }
    }

    pub fn config_media_type(self) -> &'static str {
        match self {
            ManifestFormat::Oci => MEDIA_OCI_CONFIG,
            ManifestFormat::Docker => MEDIA_DOCKER_CONFIG,
        }
    }

    /// The layer media type for a compression. Docker schema2 has no zstd type;
    /// Docker itself writes the OCI one there, and so do we.
    pub fn layer_media_type(self, c: Compression) -> &'static str {
        match (self, c) {
            (ManifestFormat::Oci, Compression::None) => "application/vnd.oci.image.layer.v1.tar",
            (ManifestFormat::Oci, Compression::Gzip) => {
                "application/vnd.oci.image.layer.v1.tar+gzip"
            }
            (_, Compression::Zstd) => "application/vnd.oci.image.layer.v1.tar+zstd",
            (ManifestFormat::Docker, Compression::None) => {
                "application/vnd.docker.image.rootfs.diff.tar"
            }
            (ManifestFormat::Docker, Compression::Gzip) => {
                "application/vnd.docker.image.rootfs.diff.tar.gzip"
            }
        }
    }
}

/// An OS/architecture pair as OCI spells it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn new(architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: variant.map(str::to_string),
        }
    }

    /// The platform of the machine the tests run on, in GOARCH terms.
    pub fn host() -> Platform {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "x86" => ("386", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7")),
            "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
            "loongarch64" => ("loong64", None),
            other => (other, None),
        };
        Platform::new(arch, variant)
    }

    /// `linux/arm/v7` style.
    pub fn to_os_arch(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{}", self.os, self.architecture, v),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }

    fn to_json(&self) -> Value {
        let mut p = json!({ "os": self.os, "architecture": self.architecture });
        if let Some(v) = &self.variant {
            p["variant"] = json!(v);
        }
        p
    }
}

/// The runtime part of an image config (`config` in the JSON).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub env: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub stop_signal: Option<String>,
    pub volumes: Vec<String>,
    /// `"80/tcp"` style.
    pub exposed_ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

impl ImageConfig {
    fn to_json(&self) -> Value {
        let mut c = serde_json::Map::new();
        let set = |c: &mut serde_json::Map<String, Value>, k: &str, v: Value| {
            c.insert(k.to_string(), v);
        };
        if !self.env.is_empty() {
            set(&mut c, "Env", json!(self.env));
        }
        if let Some(v) = &self.entrypoint {
            set(&mut c, "Entrypoint", json!(v));
        }
        if let Some(v) = &self.cmd {
            set(&mut c, "Cmd", json!(v));
        }
        if let Some(v) = &self.working_dir {
            set(&mut c, "WorkingDir", json!(v));
        }
        if let Some(v) = &self.user {
            set(&mut c, "User", json!(v));
        }
        if let Some(v) = &self.stop_signal {
            set(&mut c, "StopSignal", json!(v));
        }
        // OCI encodes sets as objects with empty-object values.
        let set_of = |items: &[String]| -> Value {
            Value::Object(items.iter().map(|k| (k.clone(), json!({}))).collect())
        };
        if !self.volumes.is_empty() {
            set(&mut c, "Volumes", set_of(&self.volumes));
        }
        if !self.exposed_ports.is_empty() {
            set(&mut c, "ExposedPorts", set_of(&self.exposed_ports));
        }
        if !self.labels.is_empty() {
            set(&mut c, "Labels", json!(self.labels));
        }
        Value::Object(c)
    }
}

/// A descriptor of a pushed layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerInfo {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    pub diff_id: String,
    pub created_by: String,
}

/// What a push produced.
#[derive(Clone, Debug)]
pub struct PushedImage {
    /// `host:port/repo:tag` (or `@digest` for an index member).
    pub reference: String,
    pub repo: String,
    pub manifest_digest: String,
    pub manifest_media_type: String,
    pub manifest_size: u64,
    pub manifest: Vec<u8>,
    /// Digest of the config blob: the image ID.
    pub config_digest: String,
    pub config: Vec<u8>,
    pub layers: Vec<LayerInfo>,
    pub platform: Platform,
}

impl PushedImage {
    pub fn image_id(&self) -> &str {
        &self.config_digest
    }

    /// `host:port/repo@sha256:…`.
    pub fn digest_reference(&self) -> String {
        let host_repo = self.reference.split('@').next().unwrap_or_default();
        let host_repo = match host_repo.rsplit_once(':') {
            // Strip a tag, not the port (a tag comes after the last '/').
            Some((hr, tag)) if !tag.contains('/') => hr,
            _ => host_repo,
        };
        format!("{host_repo}@{}", self.manifest_digest)
    }

    /// Sum of the layer blob sizes.
    pub fn layers_size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }
}

/// An image to build and push.
#[derive(Clone, Debug)]
pub struct Image {
    pub platform: Platform,
    pub config: ImageConfig,
    pub layers: Vec<Layer>,
    pub format: ManifestFormat,
}

impl Image {
    /// An empty OCI image for the host platform.
    pub fn new() -> Image {
        Image {
            platform: Platform::host(),
            config: ImageConfig::default(),
            layers: Vec::new(),
            format: ManifestFormat::Oci,
        }
    }

    pub fn layer(mut self, layer: Layer) -> Image {
        self.layers.push(layer);
        self
    }

    /// Adds a layer built by `f`, compressed with `compression`.
    pub fn layer_with(
        self,
        compression: Compression,
        created_by: &str,
        f: impl FnOnce(&mut LayerBuilder),
    ) -> Image {
        let mut b = LayerBuilder::new();
        f(&mut b);
        let layer =
            Layer::from_tar(&b.finish(), compression, created_by).expect("compress a layer");
        self.layer(layer)
    }

    pub fn format(mut self, format: ManifestFormat) -> Image {
        self.format = format;
        self
    }

    pub fn platform(mut self, platform: Platform) -> Image {
        self.platform = platform;
        self
    }

    pub fn infos(&self) -> Vec<LayerInfo> {
        self.layers
            .iter()
            .map(|l| LayerInfo {
                media_type: l
                    .media_type
                    .clone()
                    .unwrap_or_else(|| self.format.layer_media_type(l.compression).into()),
                digest: l.digest.clone(),
                size: l.blob.len() as u64,
                diff_id: l.diff_id.clone(),
                created_by: l.created_by.clone(),
            })
            .collect()
    }

    /// Pushes layers, config and manifest; tags the manifest `tag`.
    pub fn push(&self, client: &RegistryClient, repo: &str, tag: &str) -> Result<PushedImage> {
        for l in &self.layers {
            client.push_blob(repo, &l.blob)?;
        }
        push_manifest_for(
            client,
            repo,
            tag,
            self.format,
            &self.platform,
            &self.config,
            &self.infos(),
        )
    }
}

impl Default for Image {
    fn default() -> Self {
        Image::new()
    }
}

/// The config JSON for these layers.
pub fn config_json(platform: &Platform, config: &ImageConfig, layers: &[LayerInfo]) -> Vec<u8> {
    let mut c = json!({
        "created": CREATED,
        "architecture": platform.architecture,
        "os": platform.os,
        "config": config.to_json(),
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
        },
        "history": layers.iter().map(|l| json!({
            "created": CREATED,
            "created_by": l.created_by,
        })).collect::<Vec<_>>(),
    });
    if let Some(v) = &platform.variant {
        c["variant"] = json!(v);
    }
    serde_json::to_vec(&c).expect("serialize config")
}

/// The manifest JSON for a config blob and layers.
pub fn manifest_json(
    format: ManifestFormat,
    config_digest: &str,
    config_size: usize,
    layers: &[LayerInfo],
) -> Vec<u8> {
    let m = json!({
        "schemaVersion": 2,
        "mediaType": format.manifest_media_type(),
        "config": {
            "mediaType": format.config_media_type(),
            "digest": config_digest,
            "size": config_size,
        },
        "layers": layers.iter().map(|l| json!({
            "mediaType": l.media_type,
            "digest": l.digest,
            "size": l.size,
        })).collect::<Vec<_>>(),
    });
    serde_json::to_vec(&m).expect("serialize manifest")
}

/// Pushes the config and manifest for layers that are already in the registry.
pub fn push_manifest_for(
    client: &RegistryClient,
    repo: &str,
    reference: &str,
    format: ManifestFormat,
    platform: &Platform,
    config: &ImageConfig,
    layers: &[LayerInfo],
) -> Result<PushedImage> {
    let config = config_json(platform, config, layers);
    let config_digest = client.push_blob(repo, &config)?;
    let manifest = manifest_json(format, &config_digest, config.len(), layers);
    let manifest_digest =
        client.push_manifest(repo, reference, format.manifest_media_type(), &manifest)?;
    let sep = if reference.contains(':') { '@' } else { ':' };
    Ok(PushedImage {
        reference: format!("{}/{repo}{sep}{reference}", client.host()),
        repo: repo.to_string(),
        manifest_digest,
        manifest_media_type: format.manifest_media_type().to_string(),
        manifest_size: manifest.len() as u64,
        manifest,
        config_digest,
        config,
        layers: layers.to_vec(),
        platform: platform.clone(),
    })
}

/// Images of several platforms under one tag.
#[derive(Clone, Debug)]
pub struct ImageIndex {
    pub format: ManifestFormat,
    pub images: Vec<Image>,
}

/// What pushing an index produced.
#[derive(Clone, Debug)]
pub struct PushedIndex {
    pub reference: String,
    pub digest: String,
    pub media_type: String,
    pub index: Vec<u8>,
    /// In index order.
    pub images: Vec<PushedImage>,
}

impl PushedIndex {
    /// The member for `platform`, if any.
    pub fn for_platform(&self, platform: &Platform) -> Option<&PushedImage> {
        self.images.iter().find(|i| &i.platform == platform)
    }
}

impl ImageIndex {
    /// Pushes every member by digest, then the index under `tag`.
    pub fn push(&self, client: &RegistryClient, repo: &str, tag: &str) -> Result<PushedIndex> {
        let mut pushed = Vec::new();
        for image in &self.images {
            // The member's manifest must exist before the index refers to it;
            // push it under its own digest, which we only know after building it.
            for l in &image.layers {
                client.push_blob(repo, &l.blob)?;
            }
            let infos = image.infos();
            let config = config_json(&image.platform, &image.config, &infos);
            let config_digest = sha256_digest(&config);
            let manifest = manifest_json(image.format, &config_digest, config.len(), &infos);
            let digest = sha256_digest(&manifest);
            pushed.push(push_manifest_for(
                client,
                repo,
                &digest,
                image.format,
                &image.platform,
                &image.config,
                &infos,
            )?);
        }
        let index = json!({
            "schemaVersion": 2,
            "mediaType": self.format.index_media_type(),
            "manifests": pushed.iter().map(|p| json!({
                "mediaType": p.manifest_media_type,
                "digest": p.manifest_digest,
                "size": p.manifest_size,
                "platform": p.platform.to_json(),
            })).collect::<Vec<_>>(),
        });
        let index = serde_json::to_vec(&index)?;
        let media_type = self.format.index_media_type();
        let digest = client.push_manifest(repo, tag, media_type, &index)?;
        Ok(PushedIndex {
            reference: format!("{}/{repo}:{tag}", client.host()),
            digest,
            media_type: media_type.to_string(),
            index,
            images: pushed,
        })
    }
}
