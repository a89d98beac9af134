//! What the metadata store keeps about images and layers.

use crate::digest::Digest;
use crate::metadata::Record;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A pulled image, keyed by its id (the config digest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub id: Digest,
    /// Fully-qualified `registry/repo:tag` names pointing at this image.
    pub repo_tags: Vec<String>,
    /// Fully-qualified `registry/repo@sha256:…` names (manifest digests).
    pub repo_digests: Vec<String>,
    /// The manifest (platform-specific, never the index) it was pulled from.
    pub manifest: Digest,
    pub layers: Vec<LayerRef>,
    /// Compressed size as the registry served it: config plus layers, as containerd
    /// reports it.
    pub size: u64,
    pub config: ImageConfig,
    /// Nanoseconds since the epoch.
    pub pulled_at: i64,
}

impl Record for ImageRecord {
    const TABLE: &'static str = "images";
}

/// One layer of an image as the manifest and config describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRef {
    /// Digest of the compressed blob.
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// Digest of the uncompressed tar (the config's `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// Identity of the layer stack up to and including this layer.
    pub chain_id: Digest,
}

/// The parts of an image's config that container creation and the CRI need.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub user: String,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    pub stop_signal: String,
    pub volumes: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub architecture: String,
    pub os: String,
}

/// Name → image id, for lookups by tag or digest reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameRecord {
    pub image: Digest,
}

impl Record for NameRecord {
    const TABLE: &'static str = "image_names";
}

/// An unpacked layer on disk, keyed by chain id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    pub chain_id: Digest,
    pub diff_id: Digest,
    /// Disk usage of the unpacked layer.
    pub bytes: u64,
    pub inodes: u64,
}

impl Record for LayerRecord {
    const TABLE: &'static str = "layers";
}

/// The chain ids of a stack of layers given their diff ids, bottom first (OCI image
/// spec: `ChainID(L0) = DiffID(L0)`, `ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))`).
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff in diff_ids {
        let next = match out.last() {
            None => diff.clone(),
            Some(parent) => Digest::of(format!("{parent} {diff}").as_bytes()),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        assert_eq!(ids[1], Digest::of(format!("{a} {b}").as_bytes()));
        assert!(chain_ids(&[]).is_empty());
    }
}
