//! The codec's one error type.

use super::limits::{MAX_FRAME_LEN, MAX_HEADER_BLOCK_LEN, MAX_HEADER_PAIRS};

/// Why a frame could not be decoded or encoded.
///
/// Every decode error is a connection error: the peer speaks something else, or the
/// connection's shared zlib stream is out of step with the peer's. Answer with GOAWAY
/// ([`super::goaway::PROTOCOL_ERROR`]) and close. Encode errors are the caller's mistakes and
/// leave the codec usable.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("unsupported SPDY version {0}; only 3 is spoken")]
    UnsupportedVersion(u16),
    #[error("frame payload of {len} bytes exceeds the limit of {MAX_FRAME_LEN}")]
    FrameTooLarge { len: usize },
    #[error("malformed {frame} frame: {why}")]
    Malformed { frame: &'static str, why: &'static str },
    #[error("invalid header block: {0}")]
    InvalidHeaderBlock(&'static str),
    #[error("header block exceeds {max} bytes uncompressed", max = MAX_HEADER_BLOCK_LEN)]
    HeaderBlockTooLarge,
    #[error("header block has {0} pairs, more than {max}", max = MAX_HEADER_PAIRS)]
    TooManyHeaders(usize),
    #[error("header decompression failed: {0}")]
    Decompress(String),
    #[error("header compression failed: {0}")]
    Compress(String),
    #[error("cannot encode frame: {0}")]
    Unencodable(&'static str),
}
