//! The overlay snapshotter: one directory per layer, overlay mounts for container rootfs.

mod beneath;
pub mod decompress;
pub mod expansion;
pub mod image_view;
pub mod layers;
pub mod rootfs;
pub mod unpack;

pub use decompress::{decompress, Compression, DecompressError};
pub use expansion::{CompressedCount, ExpansionError, ExpansionGuard, ExpansionLimits};
pub use unpack::{unpack_layer, unpack_layer_bounded, UnpackError, UnpackLimits, UnpackStats};
