//! ImageFsInfo: how much of its filesystem the image store uses.

use super::{errors, Cri};
use berth_proto::{FilesystemIdentifier, FilesystemUsage, ImageFsInfoResponse, UInt64Value};
use tonic::Status;

pub fn image_fs_info(cri: &Cri) -> Result<ImageFsInfoResponse, Status> {
    let usage = cri.inner.images.usage().map_err(errors::image)?;
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    let fs = FilesystemUsage {
        timestamp,
        fs_id: Some(FilesystemIdentifier { mountpoint: usage.mountpoint.display().to_string() }),
        used_bytes: Some(UInt64Value { value: usage.bytes }),
        inodes_used: Some(UInt64Value { value: usage.inodes }),
    };
    Ok(ImageFsInfoResponse { image_filesystems: vec![fs], container_filesystems: Vec::new() })
}
