//! The pod's /dev/shm tmpfs (the mount table itself is [`crate::mount_table`]).

use std::path::Path;

use nix::mount::{mount, MsFlags};

/// Default size of a pod's /dev/shm, as the kubelet and containerd use.
pub const SHM_SIZE: u64 = 64 << 20;

/// Mounts a tmpfs of `size` bytes at `dir` (created if needed).
pub fn mount_shm(dir: &Path, size: u64) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let data = format!("mode=1777,size={size}");
    mount(
        Some("shm"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(data.as_str()),
    )
    .map_err(|e| format!("mount shm tmpfs at {}: {e}", dir.display()))
}
