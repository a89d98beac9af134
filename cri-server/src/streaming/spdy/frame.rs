//! SPDY/3 frames: the wire layout, encoding and incremental decoding.
//!
//! Every frame starts with eight bytes, big-endian:
//!
//! ```text
//! control: 1 | version (15) | type (16) | flags (8) | length (24) | payload
//! data:    0 | stream id (31)           | flags (8) | length (24) | data
//! ```

use super::error::SpdyError;
use super::headers::{HeaderCompressor, HeaderDecompressor, Headers};
use super::limits::MAX_FRAME_LEN;
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The only version spoken; Kubernetes negotiates `SPDY/3.1`, whose frames say 3.
pub const VERSION: u16 = 3;

pub const FLAG_FIN: u8 = 0x01;
/// SYN_STREAM only: the sender will not receive on this stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;

const HEADER_LEN: usize = 8;
const CONTROL_BIT: u32 = 0x8000_0000;
const STREAM_ID_MASK: u32 = 0x7fff_ffff;
const SETTING_ID_MASK: u32 = 0x00ff_ffff;
const MAX_PRIORITY: u8 = 7;

mod kind {
    pub const SYN_STREAM: u16 = 1;
    pub const SYN_REPLY: u16 = 2;
    pub const RST_STREAM: u16 = 3;
    pub const SETTINGS: u16 = 4;
    pub const PING: u16 = 6;
    pub const GOAWAY: u16 = 7;
    pub const HEADERS: u16 = 8;
    pub const WINDOW_UPDATE: u16 = 9;
}

/// RST_STREAM status codes.
pub mod rst {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INVALID_STREAM: u32 = 2;
    pub const REFUSED_STREAM: u32 = 3;
    pub const UNSUPPORTED_VERSION: u32 = 4;
    pub const CANCEL: u32 = 5;
    pub const INTERNAL_ERROR: u32 = 6;
    pub const FLOW_CONTROL_ERROR: u32 = 7;
    pub const STREAM_IN_USE: u32 = 8;
    pub const STREAM_ALREADY_CLOSED: u32 = 9;
    pub const FRAME_TOO_LARGE: u32 = 11;
}

/// GOAWAY status codes.
pub mod goaway {
    pub const OK: u32 = 0;
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INTERNAL_ERROR: u32 = 2;
}

/// One SETTINGS entry. `id` has 24 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub flags: u8,
    pub id: u32,
    pub value: u32,
}

/// A decoded frame. Stream ids and window deltas are 31-bit; the reserved top bit is
/// dropped on decode and must be clear on encode.
///
/// The codec checks layout, not protocol semantics: a zero stream id, a zero RST status or
/// a SYN_STREAM with a forbidden header decode fine, for the session to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream_id: u32,
        fin: bool,
        data: Bytes,
    },
    SynStream {
        stream_id: u32,
        associated_to: u32,
        /// 0 (highest) to 7.
        priority: u8,
        fin: bool,
        unidirectional: bool,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        entries: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    /// A control frame of a type this codec does not know: skipped by callers (spec: ignore).
    Unknown {
        kind: u16,
    },
}

/// The header-compression state of one end of one connection: the zlib stream of the
/// frames it encodes and the zlib stream of the frames it decodes. SPDY/3 header blocks
/// share ONE zlib stream per direction for the whole connection, so a Codec must be used
/// for every frame of the connection in order, and never for two connections.
#[derive(Debug, Default)]
pub struct Codec {
    tx: HeaderCompressor,
    rx: HeaderDecompressor,
}

/// The eight bytes in front of every frame.
#[derive(Debug, Clone, Copy)]
enum Head {
    Control { kind: u16, flags: u8, len: usize },
    Data { stream_id: u32, flags: u8, len: usize },
}

impl Head {
    fn parse(bytes: [u8; HEADER_LEN]) -> Result<Self, SpdyError> {
        let word = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let flags = bytes[4];
        // A 24-bit length cannot exceed MAX_FRAME_LEN; a peer can make us buffer 16 MiB.
        let len = u32::from_be_bytes([0, bytes[5], bytes[6], bytes[7]]) as usize;
        if word & CONTROL_BIT == 0 {
            return Ok(Head::Data { stream_id: word, flags, len });
        }
        let version = (word >> 16) as u16 & 0x7fff;
        if version != VERSION {
            return Err(SpdyError::UnsupportedVersion(version));
        }
        Ok(Head::Control { kind: word as u16, flags, len })
    }

    fn len(self) -> usize {
        match self {
            Head::Control { len, .. } | Head::Data { len, .. } => len,
        }
    }
}

impl Codec {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses one complete frame off the front of `buf`; Ok(None) when more bytes are needed
    /// (buf untouched then).
    ///
    /// A bad version is reported as soon as the eight-byte frame header is in, without
    /// waiting for the payload. On an error `buf` is left as it was.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, SpdyError> {
        let Some(head) = buf.first_chunk::<HEADER_LEN>() else { return Ok(None) };
        let head = Head::parse(*head)?;
        if buf.len() < HEADER_LEN + head.len() {
            return Ok(None);
        }
        let frame = match head {
            Head::Data { stream_id, flags, len } => {
                buf.advance(HEADER_LEN);
                let data = buf.split_to(len).freeze();
                return Ok(Some(Frame::Data { stream_id, fin: flags & FLAG_FIN != 0, data }));
            }
            Head::Control { kind, flags, len } => {
                self.decode_control(kind, flags, &buf[HEADER_LEN..HEADER_LEN + len])?
            }
        };
        buf.advance(HEADER_LEN + head.len());
        Ok(Some(frame))
    }

    fn decode_control(&mut self, kind: u16, flags: u8, payload: &[u8]) -> Result<Frame, SpdyError> {
        let fin = flags & FLAG_FIN != 0;
        let mut p = Payload { bytes: payload, frame: kind_name(kind) };
        Ok(match kind {
            kind::SYN_STREAM => {
                let stream_id = p.u31()?;
                let associated_to = p.u31()?;
                let priority = p.u8()? >> 5;
                let _credential_slot = p.u8()?;
                let headers = self.rx.decompress(p.rest())?;
                let unidirectional = flags & FLAG_UNIDIRECTIONAL != 0;
                Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    fin,
                    unidirectional,
                    headers,
                }
            }
            kind::SYN_REPLY => {
                let stream_id = p.u31()?;
                Frame::SynReply { stream_id, fin, headers: self.rx.decompress(p.rest())? }
            }
            kind::HEADERS => {
                let stream_id = p.u31()?;
                Frame::Headers { stream_id, fin, headers: self.rx.decompress(p.rest())? }
            }
            kind::RST_STREAM => {
                p.expect_len(8)?;
                Frame::RstStream { stream_id: p.u31()?, status: p.u32()? }
            }
            kind::SETTINGS => Frame::Settings { entries: p.settings()? },
            kind::PING => {
                p.expect_len(4)?;
                Frame::Ping { id: p.u32()? }
            }
            kind::GOAWAY => {
                p.expect_len(8)?;
                Frame::GoAway { last_good_stream_id: p.u31()?, status: p.u32()? }
            }
            kind::WINDOW_UPDATE => {
                p.expect_len(8)?;
                Frame::WindowUpdate { stream_id: p.u31()?, delta: p.u31()? }
            }
            // No unknown type carries a header block (SPDY/3's CREDENTIAL does not), so
            // skipping one leaves the zlib stream in step.
            other => Frame::Unknown { kind: other },
        })
    }

    /// Appends the wire form of `frame` to `out`.
    ///
    /// A refused frame (a field out of range, a block over the limits) appends nothing and
    /// leaves the zlib stream untouched, so the connection can go on.
    pub fn encode(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), SpdyError> {
        match frame {
            Frame::Data { stream_id, fin, data } => {
                check_stream_id(*stream_id)?;
                check_len(data.len())?;
                put_head(out, *stream_id, flag(*fin, FLAG_FIN), data.len());
                out.extend_from_slice(data);
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                fin,
                unidirectional,
                headers,
            } => {
                check_stream_id(*stream_id)?;
                check_stream_id(*associated_to)?;
                if *priority > MAX_PRIORITY {
                    return Err(SpdyError::Unencodable("priority above 7"));
                }
                let block = self.tx.compress(headers)?;
                let flags = flag(*fin, FLAG_FIN) | flag(*unidirectional, FLAG_UNIDIRECTIONAL);
                put_control(out, kind::SYN_STREAM, flags, 10 + block.len());
                out.put_u32(*stream_id);
                out.put_u32(*associated_to);
                out.put_u8(priority << 5);
                out.put_u8(0); // credential slot: unused since SPDY/3.1
                out.extend_from_slice(&block);
            }
            Frame::SynReply { stream_id, fin, headers } => {
                self.encode_headers(kind::SYN_REPLY, *stream_id, *fin, headers, out)?;
            }
            Frame::Headers { stream_id, fin, headers } => {
                self.encode_headers(kind::HEADERS, *stream_id, *fin, headers, out)?;
            }
            Frame::RstStream { stream_id, status } => {
                encode_pair(out, kind::RST_STREAM, *stream_id, *status)?;
            }
            Frame::Settings { entries } => encode_settings(out, entries)?,
            Frame::Ping { id } => {
                put_control(out, kind::PING, 0, 4);
                out.put_u32(*id);
            }
            Frame::GoAway { last_good_stream_id, status } => {
                encode_pair(out, kind::GOAWAY, *last_good_stream_id, *status)?;
            }
            Frame::WindowUpdate { stream_id, delta } => {
                check_31_bits(*delta, "window delta above 2^31-1")?;
                encode_pair(out, kind::WINDOW_UPDATE, *stream_id, *delta)?;
            }
            Frame::Unknown { .. } => {
                return Err(SpdyError::Unencodable("a frame of unknown type has no payload"))
            }
        }
        Ok(())
    }

    /// SYN_REPLY and HEADERS: a stream id, then a header block.
    fn encode_headers(
        &mut self,
        kind: u16,
        stream_id: u32,
        fin: bool,
        headers: &Headers,
        out: &mut BytesMut,
    ) -> Result<(), SpdyError> {
        check_stream_id(stream_id)?;
        let block = self.tx.compress(headers)?;
        put_control(out, kind, flag(fin, FLAG_FIN), 4 + block.len());
        out.put_u32(stream_id);
        out.extend_from_slice(&block);
        Ok(())
    }
}

/// RST_STREAM, GOAWAY and WINDOW_UPDATE: a stream id and one more word.
fn encode_pair(out: &mut BytesMut, kind: u16, stream_id: u32, word: u32) -> Result<(), SpdyError> {
    check_stream_id(stream_id)?;
    put_control(out, kind, 0, 8);
    out.put_u32(stream_id);
    out.put_u32(word);
    Ok(())
}

fn encode_settings(out: &mut BytesMut, entries: &[Setting]) -> Result<(), SpdyError> {
    if entries.iter().any(|e| e.id > SETTING_ID_MASK) {
        return Err(SpdyError::Unencodable("setting id above 24 bits"));
    }
    let len = entries.len().saturating_mul(8).saturating_add(4);
    check_len(len)?;
    put_control(out, kind::SETTINGS, 0, len);
    out.put_u32(entries.len() as u32);
    for e in entries {
        out.put_u32(u32::from(e.flags) << 24 | e.id);
        out.put_u32(e.value);
    }
    Ok(())
}

fn check_stream_id(id: u32) -> Result<(), SpdyError> {
    // The top bit is reserved; on a data frame it would turn the frame into a control frame.
    check_31_bits(id, "stream id above 2^31-1")
}

fn check_31_bits(value: u32, why: &'static str) -> Result<(), SpdyError> {
    if value > STREAM_ID_MASK {
        return Err(SpdyError::Unencodable(why));
    }
    Ok(())
}

fn check_len(len: usize) -> Result<(), SpdyError> {
    if len > MAX_FRAME_LEN {
        return Err(SpdyError::FrameTooLarge { len });
    }
    Ok(())
}

fn flag(set: bool, flag: u8) -> u8 {
    if set {
        flag
    } else {
        0
    }
}

/// The head of a data frame, or of a control frame given `CONTROL_BIT | version | type`.
fn put_head(out: &mut BytesMut, first_word: u32, flags: u8, len: usize) {
    debug_assert!(len <= MAX_FRAME_LEN, "callers check the length");
    out.reserve(HEADER_LEN + len);
    out.put_u32(first_word);
    out.put_u32(u32::from(flags) << 24 | len as u32);
}

fn put_control(out: &mut BytesMut, kind: u16, flags: u8, len: usize) {
    // Header blocks are capped far below MAX_FRAME_LEN, so no control frame can exceed it.
    put_head(out, CONTROL_BIT | u32::from(VERSION) << 16 | u32::from(kind), flags, len);
}

fn kind_name(kind: u16) -> &'static str {
    match kind {
        kind::SYN_STREAM => "SYN_STREAM",
        kind::SYN_REPLY => "SYN_REPLY",
        kind::RST_STREAM => "RST_STREAM",
        kind::SETTINGS => "SETTINGS",
        kind::PING => "PING",
        kind::GOAWAY => "GOAWAY",
        kind::HEADERS => "HEADERS",
        kind::WINDOW_UPDATE => "WINDOW_UPDATE",
        _ => "unknown",
    }
}

/// A control frame's payload being read front to back; running short is an error naming
/// the frame, not a panic.
struct Payload<'a> {
    bytes: &'a [u8],
    frame: &'static str,
}

impl<'a> Payload<'a> {
    fn malformed(&self, why: &'static str) -> SpdyError {
        SpdyError::Malformed { frame: self.frame, why }
    }

    /// Go's framer reads fixed-size frames by their layout, not their length, so a peer that
    /// interoperates with it never sends any other length.
    fn expect_len(&self, len: usize) -> Result<(), SpdyError> {
        if self.bytes.len() != len {
            return Err(self.malformed("wrong length for the frame type"));
        }
        Ok(())
    }

    fn u8(&mut self) -> Result<u8, SpdyError> {
        let (&b, rest) = self.bytes.split_first().ok_or_else(|| self.malformed("truncated"))?;
        self.bytes = rest;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32, SpdyError> {
        let (word, rest) =
            self.bytes.split_first_chunk::<4>().ok_or_else(|| self.malformed("truncated"))?;
        self.bytes = rest;
        Ok(u32::from_be_bytes(*word))
    }

    /// A 31-bit field (stream id, window delta) behind a reserved bit, which receivers ignore.
    fn u31(&mut self) -> Result<u32, SpdyError> {
        Ok(self.u32()? & STREAM_ID_MASK)
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }

    fn settings(&mut self) -> Result<Vec<Setting>, SpdyError> {
        let count = self.u32()? as usize;
        // Checked against the length before allocating: the count is the peer's claim.
        if self.bytes.len() != count.saturating_mul(8) {
            return Err(self.malformed("entry count does not match the length"));
        }
        (0..count)
            .map(|_| {
                let word = self.u32()?;
                let flags = (word >> 24) as u8;
                Ok(Setting { flags, id: word & SETTING_ID_MASK, value: self.u32()? })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
