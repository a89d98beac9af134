//! Big images for the pull benchmark: N layers of random bytes.
//!
//! Bytes come from SplitMix64 written out here rather than from `rand`, because
//! the output must stay identical across crate upgrades: the same seed must
//! give the same digests forever, so benchmark runs compare like with like.
//! Layers are built and pushed one at a time, so memory stays at one layer.

use anyhow::Result;

use super::client::RegistryClient;
use super::image::{
    push_manifest_for, ImageConfig, LayerInfo, ManifestFormat, Platform, PushedImage,
};
use super::images;
use super::layer::{Compression, Layer, LayerBuilder};

/// What to generate.
#[derive(Clone, Debug)]
pub struct BigImageSpec {
    pub seed: u64,
    /// Random-data layers (on top of busybox when `busybox_base`).
    pub layers: usize,
    /// Total random payload over all layers, in bytes (random data does not
    /// compress, so this is also about the blob total).
    pub total_bytes: u64,
    /// Files each layer's payload is split into.
    pub files_per_layer: usize,
    pub compression: Compression,
    /// Put the busybox layer first so containers can run from the image.
    pub busybox_base: bool,
}

impl BigImageSpec {
    /// `layers` layers totalling `total_mb` MiB, gzip, on busybox, 4 files a layer.
    pub fn new(seed: u64, layers: usize, total_mb: u64) -> Self {
        BigImageSpec {
            seed,
            layers,
            total_bytes: total_mb * 1024 * 1024,
            files_per_layer: 4,
            compression: Compression::Gzip,
            busybox_base: true,
        }
    }
}

/// SplitMix64: tiny, fast, and fixed forever.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Layer `index` (0-based) of the random layers of `spec`.
pub fn big_layer(spec: &BigImageSpec, index: usize) -> Result<Layer> {
    let layers = spec.layers.max(1) as u64;
    let files = spec.files_per_layer.max(1) as u64;
    // Spread the remainder over the first layers/files so the total is exact.
    let layer_bytes =
        spec.total_bytes / layers + u64::from((index as u64) < spec.total_bytes % layers);
    let mut rng = SplitMix64(spec.seed ^ (index as u64).wrapping_mul(0xA24B_AED4_963E_E407));
    let mut b = LayerBuilder::new();
    let dir = format!("big/layer{index:03}");
    b.dir("big", 0o755).dir(&dir, 0o755);
    for f in 0..files {
        let size = layer_bytes / files + u64::from(f < layer_bytes % files);
        let mut data = vec![0u8; size as usize];
        rng.fill(&mut data);
        b.file(&format!("{dir}/file{f:03}"), 0o644, &data);
    }
    Layer::from_tar(
        &b.finish(),
        spec.compression,
        &format!("berth fixture: big layer {index} seed {}", spec.seed),
    )
}

/// The files of layer `index` (paths as in the image) with the sha256 of each, for a
/// check of what a container sees against what was pushed.
pub fn big_layer_digests(spec: &BigImageSpec, index: usize) -> Vec<(String, String)> {
    let layer = big_layer(
        &BigImageSpec { compression: super::layer::Compression::None, ..spec.clone() },
        index,
    )
    .expect("rebuild layer");
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(&layer.blob[..]);
    for entry in archive.entries().expect("tar entries") {
        let mut entry = entry.expect("tar entry");
        if entry.header().entry_type().is_file() {
            let path = entry.path().expect("path").display().to_string();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).expect("read entry");
            out.push((path, super::layer::sha256_digest(&data)));
        }
    }
    out
}

/// Builds and pushes the image described by `spec` under `repo:tag`.
pub fn push_big_image(
    client: &RegistryClient,
    repo: &str,
    tag: &str,
    spec: &BigImageSpec,
) -> Result<PushedImage> {
    let format = ManifestFormat::Oci;
    let mut infos = Vec::new();
    let mut push = |layer: Layer| -> Result<()> {
        client.push_blob(repo, &layer.blob)?;
        infos.push(LayerInfo {
            media_type: format.layer_media_type(layer.compression).into(),
            size: layer.blob.len() as u64,
            digest: layer.digest,
            diff_id: layer.diff_id,
            created_by: layer.created_by,
        });
        Ok(())
    };
    if spec.busybox_base {
        push(images::busybox_layer(spec.compression))?;
    }
    for i in 0..spec.layers {
        push(big_layer(spec, i)?)?;
    }
    let config = ImageConfig {
        env: vec![images::PATH_ENV.into()],
        cmd: Some(vec!["sh".into()]),
        ..Default::default()
    };
    push_manifest_for(client, repo, tag, format, &Platform::host(), &config, &infos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_sized() {
        let spec = BigImageSpec { compression: Compression::None, ..BigImageSpec::new(7, 3, 0) };
        let spec = BigImageSpec { total_bytes: 100_003, ..spec };
        let a: Vec<Layer> = (0..3).map(|i| big_layer(&spec, i).unwrap()).collect();
        let b: Vec<Layer> = (0..3).map(|i| big_layer(&spec, i).unwrap()).collect();
        assert_eq!(
            a.iter().map(|l| &l.digest).collect::<Vec<_>>(),
            b.iter().map(|l| &l.digest).collect::<Vec<_>>()
        );
        assert_ne!(a[0].digest, a[1].digest);
        let payload: u64 = a
            .iter()
            .map(|l| {
                let mut ar = tar::Archive::new(&l.blob[..]);
                ar.entries().unwrap().map(|e| e.unwrap().header().size().unwrap()).sum::<u64>()
            })
            .sum();
        assert_eq!(payload, 100_003);
    }
}
