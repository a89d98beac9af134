//! The bounds the codec holds every peer to.

/// Largest frame payload: the most the 24-bit length field can say, which is also what Go's
/// framer allows for data frames (`MaxDataLength`). A reader therefore never needs more
/// than 8 + `MAX_FRAME_LEN` bytes buffered for [`super::Codec::decode`] to make progress.
pub const MAX_FRAME_LEN: usize = 0xff_ffff;

/// Largest uncompressed header block accepted or produced. SPDY itself has no limit, and a
/// few kilobytes of zlib can inflate to megabytes, so without one a peer could make us
/// allocate without bound.
pub const MAX_HEADER_BLOCK_LEN: usize = 256 * 1024;

/// Most header pairs in one block; Kubernetes streams send fewer than ten.
pub const MAX_HEADER_PAIRS: usize = 1024;
