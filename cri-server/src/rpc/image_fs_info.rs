//! ImageFsInfo: how much of its filesystems the image store and the containers' writable
//! layers use.

use super::{errors, Cri};
use berth_proto::{FilesystemIdentifier, FilesystemUsage, ImageFsInfoResponse, UInt64Value};
use std::os::unix::fs::MetadataExt;
use tonic::Status;

pub async fn image_fs_info(cri: &Cri) -> Result<ImageFsInfoResponse, Status> {
    let usage = cri.inner.images.usage().map_err(errors::image)?;
    let timestamp = berth_runtime::clock::now_ns();
    let fs = |mountpoint: String, bytes: u64, inodes: u64| FilesystemUsage {
        timestamp,
        fs_id: Some(FilesystemIdentifier { mountpoint }),
        used_bytes: Some(UInt64Value { value: bytes }),
        inodes_used: Some(UInt64Value { value: inodes }),
    };
    // The writable layers: the kubelet compares their mountpoint with the image store's
    // to tell whether images and containers share a filesystem (then it runs one image
    // GC and one eviction signal for both), so on one filesystem they name the same one.
    let uppers: Vec<_> = (cri.inner.containers.list().map_err(errors::runtime)?.iter())
        .map(|c| cri.inner.images.writable_layer(&c.id))
        .collect();
    // Walking the layers is blocking I/O; a layer gone meanwhile counts nothing.
    let (bytes, inodes) = berth_runtime::traced::spawn_blocking(move || {
        let layers = uppers.iter().filter_map(|u| berth_runtime::stats::fs::usage(u).ok());
        layers.fold((0, 0), |(b, i), l| (b + l.bytes, i + l.inodes))
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))?;
    let writable_root = cri.inner.images.writable_layers_root();
    let device = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.dev()).ok();
    let shared =
        device(writable_root).is_some() && device(writable_root) == device(&usage.mountpoint);
    let containers_at = if shared { &usage.mountpoint } else { writable_root };
    Ok(ImageFsInfoResponse {
        image_filesystems: vec![fs(
            usage.mountpoint.display().to_string(),
            usage.bytes,
            usage.inodes,
        )],
        container_filesystems: vec![fs(containers_at.display().to_string(), bytes, inodes)],
    })
}
