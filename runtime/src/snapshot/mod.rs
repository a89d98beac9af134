//! The overlay snapshotter: one directory per layer, overlay mounts for container rootfs.

pub mod unpack;
