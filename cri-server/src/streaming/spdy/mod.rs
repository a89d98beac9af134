//! SPDY/3.1 framing for the Kubernetes streaming protocols.
//!
//! kubectl, crictl and critest reach exec, attach and port-forward by an HTTP/1.1
//! `Upgrade: SPDY/3.1`, then speak SPDY/3 frames (moby/spdystream on
//! golang.org/x/net/spdy's framer). This module is the codec only: bytes to [`Frame`]s and
//! back, including header-block compression. Streams, flow control and I/O belong to the
//! session on top.
//!
//! Two things make SPDY/3 framing stateful, and shape the API:
//!
//! - Header blocks (SYN_STREAM, SYN_REPLY, HEADERS) are zlib-compressed with one zlib
//!   stream per direction for the whole connection, primed with [`DICTIONARY`]. A block
//!   can only be inflated after every earlier one, so one [`Codec`] serves one connection
//!   and sees all of its frames in order.
//! - Hence any decode error is fatal to the connection: after a bad header block the two
//!   zlib streams no longer agree. The session answers with GOAWAY and closes.
//!
//! Interop notes from Go's framer, which is what every Kubernetes client runs:
//! it rejects header blocks with upper-case or repeated names, so [`Codec::encode`]
//! lower-cases names and joins repeated ones with NUL; it ignores the version field, but
//! this codec refuses anything but 3 ([`SpdyError::UnsupportedVersion`]).

mod dictionary;
mod error;
mod frame;
mod headers;
mod limits;

pub use dictionary::DICTIONARY;
pub use error::SpdyError;
pub use frame::{goaway, rst, Codec, Frame, Setting, FLAG_FIN, FLAG_UNIDIRECTIONAL, VERSION};
pub use headers::{header, Headers};
pub use limits::{MAX_FRAME_LEN, MAX_HEADER_BLOCK_LEN, MAX_HEADER_PAIRS};
