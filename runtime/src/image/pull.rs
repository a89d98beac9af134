//! Pulling one image from one endpoint: manifest (through an index to this node's
//! platform), config, and every missing layer downloaded in parallel and unpacked while
//! it streams in, each verified (size, digest and diff id) before it is kept.

use super::manifest::{Manifest, NodePlatform};
use super::record::{chain_ids, ImageConfig, LayerRecord, LayerRef};
use super::reference::{Endpoint, Reference};
use super::registry::{Credentials, Registries, RegistryError};
use crate::content::ContentStore;
use crate::digest::{Digest, Hasher};
use crate::snapshot::layers::{disk_usage, LayerStore};
use crate::snapshot::{
    decompress, unpack_layer_bounded, CompressedCount, ExpansionGuard, ExpansionLimits,
    UnpackLimits,
};
use bytes::{Buf, Bytes};
use futures::StreamExt;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A config bigger than this is not an image config.
const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// Nor is a manifest.
const MAX_MANIFEST_BYTES: usize = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{0}")]
    Invalid(String),
    #[error("layer {digest}: {message}")]
    Layer { digest: String, message: String },
    #[error("{0}")]
    Storage(String),
}

/// What a pull from one endpoint produced, ready to be recorded.
pub struct Pulled {
    /// Digest of what the reference resolved to (the index for multi-platform images).
    pub top_digest: Digest,
    pub manifest_digest: Digest,
    pub config_digest: Digest,
    pub config: ImageConfig,
    pub layers: Vec<LayerRef>,
    /// Layers this pull unpacked (others were already on disk).
    pub new_layers: Vec<LayerRecord>,
    pub size: u64,
}

pub struct Puller<'a> {
    pub registries: &'a Registries,
    pub content: &'a ContentStore,
    pub layers: &'a LayerStore,
    pub limits: UnpackLimits,
    pub expansion: ExpansionLimits,
    pub platform: &'a NodePlatform,
    pub layer_locks: &'a crate::locks::KeyedLocks,
    /// Every byte received from a registry is added here (for the metrics).
    pub received: &'a AtomicU64,
}

impl Puller<'_> {
    pub async fn pull(
        &self,
        reference: &Reference,
        ep: &Endpoint,
        creds: Option<&Credentials>,
    ) -> Result<Pulled, PullError> {
        let wanted = reference.digest().or(reference.tag()).unwrap_or("latest");
        let top = self.registries.manifest(ep, wanted, creds).await?;
        let top_digest = Digest::of(&top);
        if let Some(pinned) = reference.digest() {
            if top_digest.to_string() != pinned {
                return Err(PullError::Invalid(format!(
                    "manifest digest is {top_digest}, not the {pinned} the reference pins"
                )));
            }
        }
        check_manifest_size(&top)?;
        let (manifest_bytes, manifest_digest) = match parse(&top)? {
            Manifest::Image(_) => (top.clone(), top_digest.clone()),
            Manifest::Index(index) => {
                let chosen =
                    self.platform.select(&index).map_err(|e| PullError::Invalid(e.to_string()))?;
                let digest = parse_digest(chosen.digest().as_ref(), "manifest")?;
                let bytes = self.registries.manifest(ep, &digest.to_string(), creds).await?;
                check_manifest_size(&bytes)?;
                if Digest::of(&bytes) != digest {
                    return Err(PullError::Invalid(format!(
                        "manifest {digest}: content does not match its digest"
                    )));
                }
                (bytes, digest)
            }
        };
        let Manifest::Image(manifest) = parse(&manifest_bytes)? else {
            return Err(PullError::Invalid("an image index points at another index".into()));
        };

        let config_desc = manifest.config();
        let config_digest = parse_digest(config_desc.digest().as_ref(), "config")?;
        let config_bytes = self.config(ep, &config_digest, config_desc.size(), creds).await?;
        let (config, diff_ids) = parse_config(&config_bytes)?;
        if diff_ids.len() != manifest.layers().len() {
            return Err(PullError::Invalid(format!(
                "image config lists {} layers but the manifest has {}",
                diff_ids.len(),
                manifest.layers().len()
            )));
        }

        let chains = chain_ids(&diff_ids);
        let mut layers = Vec::with_capacity(diff_ids.len());
        for ((desc, diff_id), chain_id) in manifest.layers().iter().zip(&diff_ids).zip(&chains) {
            layers.push(LayerRef {
                digest: parse_digest(desc.digest().as_ref(), "layer")?,
                media_type: desc.media_type().to_string(),
                size: desc.size(),
                diff_id: diff_id.clone(),
                chain_id: chain_id.clone(),
            });
        }
        // Every layer's fetch runs to its end, even after one failed: dropping a fetch
        // mid-way would leave its unpacker (a blocking thread) writing into a directory
        // being deleted, and the pull would answer before its partial layers are gone.
        let fetches = layers.iter().map(|layer| self.layer(ep, layer, creds));
        let fetched = futures::future::join_all(fetches).await;
        let mut new_layers = Vec::new();
        for f in fetched {
            new_layers.extend(f?);
        }

        // Manifests and config are kept so the image can be inspected and re-verified.
        let store = |d: &Digest, b: &[u8]| {
            self.content.put(d, b).map_err(|e| PullError::Storage(e.to_string()))
        };
        store(&top_digest, &top)?;
        store(&manifest_digest, &manifest_bytes)?;
        store(&config_digest, &config_bytes)?;

        let size = config_desc.size() + layers.iter().map(|l| l.size).sum::<u64>();
        Ok(Pulled { top_digest, manifest_digest, config_digest, config, layers, new_layers, size })
    }

    async fn config(
        &self,
        ep: &Endpoint,
        digest: &Digest,
        size: u64,
        creds: Option<&Credentials>,
    ) -> Result<Vec<u8>, PullError> {
        if self.content.contains(digest) {
            return self.content.read(digest).map_err(|e| PullError::Storage(e.to_string()));
        }
        if size > MAX_CONFIG_BYTES {
            return Err(PullError::Invalid(format!("image config of {size} bytes is too large")));
        }
        let mut stream = self.registries.blob(ep, &digest.to_string(), creds).await?;
        let mut bytes = Vec::with_capacity(size as usize);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            self.received.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            bytes.extend_from_slice(&chunk);
            if bytes.len() as u64 > size {
                break;
            }
        }
        if bytes.len() as u64 != size || Digest::of(&bytes) != *digest {
            return Err(PullError::Invalid(format!(
                "config {digest}: got {} bytes that do not match the manifest's size {size} and digest",
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    /// Makes sure a layer is on disk. Returns its record when this call unpacked it.
    #[tracing::instrument(name = "image.layer", skip_all, fields(digest = %layer.digest, size = layer.size))]
    async fn layer(
        &self,
        ep: &Endpoint,
        layer: &LayerRef,
        creds: Option<&Credentials>,
    ) -> Result<Option<LayerRecord>, PullError> {
        // One download per layer, even across concurrent pulls of images that share it.
        let _guard = self.layer_locks.lock(layer.chain_id.to_string()).await;
        if self.layers.contains(&layer.chain_id) {
            return Ok(None);
        }
        let err = |message: String| PullError::Layer { digest: layer.digest.to_string(), message };
        let pending = self.layers.begin(&layer.chain_id).map_err(|e| err(e.to_string()))?;

        let mut stream = self.registries.blob(ep, &layer.digest.to_string(), creds).await?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(32);
        let compressed = Arc::new(Mutex::new(Hasher::default()));
        let unpacker = {
            let compressed = compressed.clone();
            let media_type = layer.media_type.clone();
            let dest = pending.fs_path();
            let limits = self.limits;
            let expansion = self.expansion;
            crate::traced::spawn_blocking(move || -> Result<(Digest, u64), String> {
                let _span = tracing::info_span!("layer.unpack", media_type = %media_type).entered();
                let count = CompressedCount::default();
                let reader = count.reader(HashingReader {
                    inner: ChannelReader { rx, buf: Bytes::new() },
                    hasher: compressed,
                });
                let tar = decompress(&media_type, reader).map_err(|e| e.to_string())?;
                let mut tar = DiffReader { inner: tar, hasher: Hasher::default() };
                let guard = ExpansionGuard::new(expansion, count, dest.clone());
                // unpack_layer drains the trailing padding too: the diff id covers it.
                let stats = unpack_layer_bounded(&mut tar, &dest, &limits, Some(guard))
                    .map_err(|e| e.to_string())?;
                Ok((tar.hasher.finish(), stats.bytes))
            })
        };
        let mut received = 0u64;
        let mut download_error = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => {
                    received += bytes.len() as u64;
                    self.received.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    if received > layer.size {
                        download_error = Some(format!(
                            "registry sent more than the {} bytes declared",
                            layer.size
                        ));
                        break;
                    }
                    // A closed channel means the unpacker failed; its error says why.
                    if tx.send(bytes).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    download_error = Some(e.to_string());
                    break;
                }
            }
        }
        drop(tx);
        let unpacked = unpacker.await.map_err(|e| err(format!("unpack task failed: {e}")))?;
        if let Some(message) = download_error {
            return Err(err(message));
        }
        let (diff_id, _bytes) = unpacked.map_err(err)?;
        let compressed = std::mem::take(&mut *compressed.lock().unwrap_or_else(|p| p.into_inner()));
        if compressed.len() != layer.size {
            return Err(err(format!(
                "got {} bytes, the manifest declares {}",
                compressed.len(),
                layer.size
            )));
        }
        let actual = compressed.finish();
        if actual != layer.digest {
            return Err(err(format!("content has digest {actual}: corrupt or tampered blob")));
        }
        if diff_id != layer.diff_id {
            return Err(err(format!(
                "uncompressed content has digest {diff_id}, the config says {}",
                layer.diff_id
            )));
        }
        let (bytes, inodes) = disk_usage(&pending.fs_path()).map_err(|e| err(e.to_string()))?;
        pending.commit().map_err(|e| err(e.to_string()))?;
        Ok(Some(LayerRecord {
            chain_id: layer.chain_id.clone(),
            diff_id: layer.diff_id.clone(),
            bytes,
            inodes,
        }))
    }
}

fn check_manifest_size(bytes: &[u8]) -> Result<(), PullError> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(PullError::Invalid(format!("manifest of {} bytes is too large", bytes.len())));
    }
    Ok(())
}

fn parse(bytes: &[u8]) -> Result<Manifest, PullError> {
    Manifest::parse(bytes, "").map_err(|e| PullError::Invalid(e.to_string()))
}

fn parse_digest(s: &str, what: &str) -> Result<Digest, PullError> {
    s.parse().map_err(|e| PullError::Invalid(format!("{what}: {e}")))
}

/// Reads the parts of an image config berth uses, and its diff ids.
pub fn parse_config(bytes: &[u8]) -> Result<(ImageConfig, Vec<Digest>), PullError> {
    #[derive(serde::Deserialize, Default)]
    #[serde(rename_all = "PascalCase", default)]
    struct Inner {
        user: Option<String>,
        env: Option<Vec<String>>,
        entrypoint: Option<Vec<String>>,
        cmd: Option<Vec<String>>,
        working_dir: Option<String>,
        stop_signal: Option<String>,
        volumes: Option<std::collections::BTreeMap<String, serde_json::Value>>,
        labels: Option<std::collections::BTreeMap<String, String>>,
    }
    #[derive(serde::Deserialize)]
    struct RootFs {
        diff_ids: Vec<String>,
    }
    #[derive(serde::Deserialize)]
    struct Outer {
        #[serde(default)]
        architecture: String,
        #[serde(default)]
        os: String,
        #[serde(default)]
        config: Option<Inner>,
        rootfs: RootFs,
    }
    let outer: Outer = serde_json::from_slice(bytes)
        .map_err(|e| PullError::Invalid(format!("image config: {e}")))?;
    let inner = outer.config.unwrap_or_default();
    let diff_ids = outer
        .rootfs
        .diff_ids
        .iter()
        .map(|d| parse_digest(d, "image config diff id"))
        .collect::<Result<Vec<_>, _>>()?;
    let config = ImageConfig {
        user: inner.user.unwrap_or_default(),
        env: inner.env.unwrap_or_default(),
        entrypoint: inner.entrypoint.unwrap_or_default(),
        cmd: inner.cmd.unwrap_or_default(),
        working_dir: inner.working_dir.unwrap_or_default(),
        stop_signal: inner.stop_signal.unwrap_or_default(),
        volumes: inner.volumes.unwrap_or_default().into_keys().collect(),
        labels: inner.labels.unwrap_or_default(),
        architecture: outer.architecture,
        os: outer.os,
    };
    Ok((config, diff_ids))
}

/// The download side of a layer, as a blocking `Read` for the unpacker.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    buf: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while !self.buf.has_remaining() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.buf = chunk,
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.remaining());
        self.buf.copy_to_slice(&mut out[..n]);
        Ok(n)
    }
}

/// Hashes the compressed stream as the decompressor reads it.
struct HashingReader<R> {
    inner: R,
    hasher: Arc<Mutex<Hasher>>,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        self.hasher.lock().unwrap_or_else(|p| p.into_inner()).update(&out[..n]);
        Ok(n)
    }
}

/// Hashes the uncompressed tar (the diff id) as the unpacker reads it.
struct DiffReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> Read for DiffReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        self.hasher.update(&out[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_fields_and_diff_ids() {
        let d = Digest::of(b"x").to_string();
        let json = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"User":"www-data","Env":["A=1"],"Cmd":["sh"],"Volumes":{{"/data":{{}}}},"StopSignal":"SIGQUIT"}},"rootfs":{{"type":"layers","diff_ids":["{d}"]}}}}"#
        );
        let (config, diff_ids) = parse_config(json.as_bytes()).unwrap();
        assert_eq!(config.user, "www-data");
        assert_eq!(config.cmd, ["sh"]);
        assert_eq!(config.volumes, ["/data"]);
        assert_eq!(config.stop_signal, "SIGQUIT");
        assert_eq!(diff_ids, [Digest::of(b"x")]);
        assert!(parse_config(br#"{"rootfs":{"diff_ids":["sha256:nope"]}}"#).is_err());
        assert!(parse_config(b"[]").is_err());
    }
}
