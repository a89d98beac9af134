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
mod tests {
    use super::*;
    use crate::streaming::spdy::headers::tests::{go_style_stream, pairs};
    use crate::streaming::spdy::limits::{MAX_HEADER_BLOCK_LEN, MAX_HEADER_PAIRS};
    use std::panic::AssertUnwindSafe;

    fn every_kind() -> Vec<Frame> {
        vec![
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                fin: false,
                unidirectional: false,
                headers: pairs(&[("streamtype", "error"), ("requestid", "0")]),
            },
            Frame::SynStream {
                stream_id: 0x7fff_ffff,
                associated_to: 0x7fff_fffd,
                priority: 7,
                fin: true,
                unidirectional: true,
                headers: pairs(&[("streamtype", "stdin"), ("x", "a\u{0}b")]),
            },
            Frame::SynReply { stream_id: 1, fin: false, headers: pairs(&[]) },
            Frame::SynReply { stream_id: 3, fin: true, headers: pairs(&[("status", "200")]) },
            Frame::Data { stream_id: 1, fin: false, data: Bytes::from_static(b"hello") },
            Frame::Data { stream_id: 0x7fff_ffff, fin: true, data: Bytes::new() },
            Frame::RstStream { stream_id: 5, status: rst::CANCEL },
            Frame::Settings { entries: vec![] },
            Frame::Settings {
                entries: vec![
                    Setting { flags: 0, id: 4, value: 100 },
                    Setting { flags: 1, id: 0xff_ffff, value: u32::MAX },
                ],
            },
            Frame::Ping { id: 1 },
            Frame::Ping { id: u32::MAX },
            Frame::GoAway { last_good_stream_id: 7, status: goaway::PROTOCOL_ERROR },
            Frame::Headers { stream_id: 9, fin: true, headers: pairs(&[("port", "80")]) },
            Frame::WindowUpdate { stream_id: 0, delta: 0x7fff_ffff },
        ]
    }

    fn encode_all(frames: &[Frame]) -> BytesMut {
        let mut tx = Codec::new();
        let mut out = BytesMut::new();
        for frame in frames {
            tx.encode(frame, &mut out).unwrap();
        }
        out
    }

    /// Decodes until the buffer runs dry; the buffer keeps whatever is incomplete.
    fn decode_all(rx: &mut Codec, buf: &mut BytesMut) -> Vec<Frame> {
        std::iter::from_fn(|| rx.decode(buf).unwrap()).collect()
    }

    fn control(kind: u16, flags: u8, payload: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        put_control(&mut out, kind, flags, payload.len());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn spdy_round_trips_every_frame_type() {
        let frames = every_kind();
        let mut wire = encode_all(&frames);
        assert_eq!(decode_all(&mut Codec::new(), &mut wire), frames);
        assert!(wire.is_empty());
    }

    /// The wire bytes of the fixed-layout frames, against the layout in the spec.
    #[test]
    fn spdy_fixed_frames_have_the_spec_layout() {
        let wire = encode_all(&[
            Frame::Data { stream_id: 1, fin: true, data: Bytes::from_static(b"ab") },
            Frame::RstStream { stream_id: 3, status: rst::REFUSED_STREAM },
            Frame::Settings { entries: vec![Setting { flags: 1, id: 7, value: 65_536 }] },
            Frame::Ping { id: 2 },
            Frame::GoAway { last_good_stream_id: 5, status: goaway::OK },
            Frame::WindowUpdate { stream_id: 1, delta: 0x1000 },
        ]);
        #[rustfmt::skip]
        let expected: &[u8] = &[
            0, 0, 0, 1, 0x01, 0, 0, 2, b'a', b'b',
            0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 3, 0, 0, 0, 3,
            0x80, 3, 0, 4, 0, 0, 0, 12, 0, 0, 0, 1, 1, 0, 0, 7, 0, 1, 0, 0,
            0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 2,
            0x80, 3, 0, 7, 0, 0, 0, 8, 0, 0, 0, 5, 0, 0, 0, 0,
            0x80, 3, 0, 9, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0x10, 0,
        ];
        assert_eq!(&wire[..], expected);
    }

    #[test]
    fn spdy_syn_stream_layout() {
        let frame = Frame::SynStream {
            stream_id: 3,
            associated_to: 1,
            priority: 2,
            fin: true,
            unidirectional: true,
            headers: pairs(&[("streamtype", "error")]),
        };
        let wire = encode_all(&[frame]);
        assert_eq!(&wire[..4], &[0x80, 3, 0, 1]);
        assert_eq!(wire[4], FLAG_FIN | FLAG_UNIDIRECTIONAL);
        let len = u32::from_be_bytes([0, wire[5], wire[6], wire[7]]) as usize;
        assert_eq!(len, wire.len() - 8);
        assert_eq!(&wire[8..18], &[0, 0, 0, 3, 0, 0, 0, 1, 2 << 5, 0]);
        // The header block starts the connection's zlib stream (zlib header, FDICT).
        assert_eq!(wire[18], 0x78);
    }

    /// Many header blocks over one codec pair: each inflates only after the ones before it.
    #[test]
    fn spdy_header_blocks_in_sequence_share_the_zlib_stream() {
        let frames: Vec<Frame> = (0..60u32)
            .map(|i| {
                let headers = pairs(&[
                    ("streamtype", ["stdout", "stderr", "data"][i as usize % 3]),
                    ("requestid", &i.to_string()),
                ]);
                match i % 3 {
                    0 => Frame::SynStream {
                        stream_id: 2 * i + 1,
                        associated_to: 0,
                        priority: 0,
                        fin: false,
                        unidirectional: false,
                        headers,
                    },
                    1 => Frame::SynReply { stream_id: 2 * i + 1, fin: false, headers },
                    _ => Frame::Headers { stream_id: 2 * i + 1, fin: true, headers },
                }
            })
            .collect();
        let mut tx = Codec::new();
        let mut rx = Codec::new();
        let mut wire = BytesMut::new();
        // Interleaved: frames decode as they arrive, with data frames in between.
        for frame in &frames {
            tx.encode(frame, &mut wire).unwrap();
            tx.encode(
                &Frame::Data { stream_id: 1, fin: false, data: Bytes::from_static(b"x") },
                &mut wire,
            )
            .unwrap();
            assert_eq!(rx.decode(&mut wire).unwrap().as_ref(), Some(frame));
            assert!(matches!(rx.decode(&mut wire).unwrap(), Some(Frame::Data { .. })));
            assert!(wire.is_empty());
        }
    }

    /// A frame that is not all there yet decodes to None and leaves the buffer alone, at every
    /// possible cut.
    #[test]
    fn spdy_every_prefix_is_incomplete_not_an_error() {
        let frames = every_kind();
        let wire = encode_all(&frames).freeze();
        let mut ends = Vec::new();
        let mut rest = BytesMut::from(&wire[..]);
        let mut rx = Codec::new();
        while rx.decode(&mut rest).unwrap().is_some() {
            ends.push(wire.len() - rest.len());
        }
        for cut in 0..=wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            let decoded = decode_all(&mut Codec::new(), &mut buf);
            let whole = ends.iter().filter(|&&end| end <= cut).count();
            assert_eq!(decoded, frames[..whole], "cut at {cut}");
            let consumed = if whole == 0 { 0 } else { ends[whole - 1] };
            assert_eq!(&buf[..], &wire[consumed..cut], "cut at {cut}");
        }
    }

    /// The same stream fed one byte at a time into one codec.
    #[test]
    fn spdy_byte_at_a_time() {
        let frames = every_kind();
        let wire = encode_all(&frames);
        let mut rx = Codec::new();
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for &b in wire.iter() {
            buf.put_u8(b);
            decoded.extend(decode_all(&mut rx, &mut buf));
        }
        assert_eq!(decoded, frames);
    }

    #[test]
    fn spdy_unsupported_version_is_refused_from_the_frame_header() {
        // SPDY/2's SYN_STREAM head, claiming a payload that has not arrived.
        let mut buf = BytesMut::from(&[0x80, 2, 0, 1, 0, 0, 0x10, 0][..]);
        assert!(matches!(Codec::new().decode(&mut buf), Err(SpdyError::UnsupportedVersion(2))));
        assert_eq!(buf.len(), 8, "an error leaves the buffer alone");
        let mut buf = BytesMut::from(&[0xff, 0xff, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1][..]);
        assert!(matches!(
            Codec::new().decode(&mut buf),
            Err(SpdyError::UnsupportedVersion(0x7fff))
        ));
    }

    #[test]
    fn spdy_malformed_control_frames_are_errors() {
        let cases: Vec<(BytesMut, &str)> = vec![
            (control(kind::RST_STREAM, 0, &[0, 0, 0, 1]), "short RST_STREAM"),
            (control(kind::RST_STREAM, 0, &[0; 12]), "long RST_STREAM"),
            (control(kind::PING, 0, &[0; 8]), "long PING"),
            (control(kind::PING, 0, &[]), "empty PING"),
            (control(kind::GOAWAY, 0, &[0; 4]), "SPDY/2-sized GOAWAY"),
            (control(kind::WINDOW_UPDATE, 0, &[0; 12]), "long WINDOW_UPDATE"),
            (control(kind::SETTINGS, 0, &[]), "SETTINGS without count"),
            (
                control(kind::SETTINGS, 0, &[0xff, 0xff, 0xff, 0xff]),
                "SETTINGS claiming 2^32-1 entries",
            ),
            (control(kind::SETTINGS, 0, &[0, 0, 0, 1, 0, 0, 0, 1]), "SETTINGS entry cut short"),
            (
                control(kind::SETTINGS, 0, &[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1]),
                "SETTINGS extra entry",
            ),
            (
                control(kind::SYN_STREAM, 0, &[0, 0, 0, 1, 0, 0, 0, 0, 0]),
                "SYN_STREAM cut in its fields",
            ),
            (
                control(kind::SYN_STREAM, 0, &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
                "SYN_STREAM without block",
            ),
            (control(kind::SYN_REPLY, 0, &[0, 0, 0]), "SYN_REPLY cut in its stream id"),
            (control(kind::HEADERS, 0, &[0, 0, 0, 1, 1, 2, 3, 4]), "HEADERS with a non-zlib block"),
        ];
        for (mut buf, what) in cases {
            let before = buf.clone();
            let result = Codec::new().decode(&mut buf);
            assert!(result.is_err(), "{what}: {result:?}");
            assert_eq!(buf, before, "{what}: an error leaves the buffer alone");
        }
    }

    #[test]
    fn spdy_unknown_control_frames_are_skipped() {
        let mut buf = control(10, 0xff, b"a CREDENTIAL frame");
        buf.extend_from_slice(&control(kind::PING, 0, &[0, 0, 0, 9]));
        let mut rx = Codec::new();
        assert_eq!(rx.decode(&mut buf).unwrap(), Some(Frame::Unknown { kind: 10 }));
        assert_eq!(rx.decode(&mut buf).unwrap(), Some(Frame::Ping { id: 9 }));
        assert!(buf.is_empty());
    }

    #[test]
    fn spdy_reserved_bits_are_ignored_on_decode() {
        let mut buf = control(kind::WINDOW_UPDATE, 0, &[0x80, 0, 0, 1, 0x80, 0, 0, 2]);
        buf.extend_from_slice(&control(kind::RST_STREAM, 0, &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1]));
        let mut rx = Codec::new();
        assert_eq!(
            rx.decode(&mut buf).unwrap(),
            Some(Frame::WindowUpdate { stream_id: 1, delta: 2 })
        );
        assert_eq!(
            rx.decode(&mut buf).unwrap(),
            Some(Frame::RstStream { stream_id: 0x7fff_ffff, status: 1 })
        );
    }

    #[test]
    fn spdy_oversize_frames_are_refused() {
        let mut tx = Codec::new();
        let mut out = BytesMut::new();
        let too_big =
            Frame::Data { stream_id: 1, fin: false, data: vec![0; MAX_FRAME_LEN + 1].into() };
        let err = tx.encode(&too_big, &mut out).unwrap_err();
        assert!(matches!(err, SpdyError::FrameTooLarge { len } if len == MAX_FRAME_LEN + 1));
        assert!(out.is_empty());
        let largest = Frame::Data { stream_id: 1, fin: false, data: vec![7; MAX_FRAME_LEN].into() };
        tx.encode(&largest, &mut out).unwrap();
        assert_eq!(Codec::new().decode(&mut out).unwrap(), Some(largest));
        let settings = Frame::Settings {
            entries: vec![Setting { flags: 0, id: 0, value: 0 }; MAX_FRAME_LEN / 8 + 1],
        };
        assert!(matches!(tx.encode(&settings, &mut out), Err(SpdyError::FrameTooLarge { .. })));
        let headers = |list| Frame::Headers { stream_id: 1, fin: false, headers: list };
        let long = headers(pairs(&[("big", &"v".repeat(MAX_HEADER_BLOCK_LEN))]));
        assert!(matches!(tx.encode(&long, &mut out), Err(SpdyError::HeaderBlockTooLarge)));
        let many =
            headers((0..=MAX_HEADER_PAIRS).map(|i| (i.to_string(), String::new())).collect());
        assert!(matches!(tx.encode(&many, &mut out), Err(SpdyError::TooManyHeaders(_))));
        assert!(out.is_empty());
    }

    #[test]
    fn spdy_unencodable_fields_are_refused() {
        let bad = [
            Frame::Data { stream_id: 0x8000_0000, fin: false, data: Bytes::new() },
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 8,
                fin: false,
                unidirectional: false,
                headers: vec![],
            },
            Frame::SynStream {
                stream_id: 1,
                associated_to: u32::MAX,
                priority: 0,
                fin: false,
                unidirectional: false,
                headers: vec![],
            },
            Frame::SynReply { stream_id: u32::MAX, fin: false, headers: vec![] },
            Frame::RstStream { stream_id: 0x8000_0001, status: 1 },
            Frame::Settings { entries: vec![Setting { flags: 0, id: 0x100_0000, value: 0 }] },
            Frame::WindowUpdate { stream_id: 1, delta: 0x8000_0000 },
            Frame::Unknown { kind: 10 },
        ];
        let mut tx = Codec::new();
        let mut out = BytesMut::new();
        for frame in &bad {
            assert!(tx.encode(frame, &mut out).is_err(), "{frame:?}");
        }
        assert!(out.is_empty());
        // The refusals did not disturb the compressor: a later block still decodes.
        let ok = Frame::SynReply { stream_id: 1, fin: false, headers: pairs(&[("a", "b")]) };
        tx.encode(&ok, &mut out).unwrap();
        assert_eq!(Codec::new().decode(&mut out).unwrap(), Some(ok));
    }

    /// Frames from Go's framer: header blocks compressed at BestCompression by a zlib stream
    /// of the same shape (dictionary, sync flush per block).
    #[test]
    fn spdy_decodes_go_best_compression_frames() {
        let block = |name: &str, value: &str| {
            let mut b = vec![0, 0, 0, 1];
            b.extend_from_slice(&(name.len() as u32).to_be_bytes());
            b.extend_from_slice(name.as_bytes());
            b.extend_from_slice(&(value.len() as u32).to_be_bytes());
            b.extend_from_slice(value.as_bytes());
            b
        };
        let compressed =
            go_style_stream(9, &[block("streamtype", "error"), block("streamtype", "stdout")]);
        let mut wire = BytesMut::new();
        for (i, c) in compressed.iter().enumerate() {
            let mut payload = vec![0, 0, 0, 2 * i as u8 + 1, 0, 0, 0, 0, 0, 0];
            payload.extend_from_slice(c);
            wire.extend_from_slice(&control(kind::SYN_STREAM, 0, &payload));
        }
        let decoded = decode_all(&mut Codec::new(), &mut wire);
        let streamtypes: Vec<_> = decoded
            .iter()
            .map(|f| match f {
                Frame::SynStream { headers, .. } => {
                    crate::streaming::spdy::header(headers, "streamtype").unwrap()
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(streamtypes, ["error", "stdout"]);
    }

    /// xorshift64*: deterministic, and no dependency for it.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
        fn byte(&mut self) -> u8 {
            self.next() as u8
        }
    }

    fn random_bytes(rng: &mut Rng) -> Vec<u8> {
        let mut v: Vec<u8> = (0..rng.below(96)).map(|_| rng.byte()).collect();
        // Mostly valid control heads, so the payload parsers see the random bytes.
        if v.len() >= 8 && rng.below(4) != 0 {
            v[0] = 0x80;
            v[1] = 3;
            v[2] = 0;
            v[3] = rng.below(12) as u8;
            let len = v.len() - 8;
            v[5..8].copy_from_slice(&(len as u32).to_be_bytes()[1..]);
        }
        v
    }

    fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
        let mut v = seed.to_vec();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(v.len() + 1);
            match rng.below(6) {
                0 if at < v.len() => v[at] ^= 1 << rng.below(8),
                1 if at < v.len() => v[at] = rng.byte(),
                2 => v.insert(at, rng.byte()),
                3 if at < v.len() => drop(v.remove(at)),
                4 => v.truncate(at),
                _ => {
                    let end = (at + rng.below(16)).min(v.len());
                    let chunk = v[at..end].to_vec();
                    let to = rng.below(v.len() + 1);
                    v.splice(to..to, chunk);
                }
            }
        }
        v
    }

    /// Decodes until the input is used up or refused, and checks what came out is bounded by
    /// what went in and by the header caps.
    fn decode_hostile(input: &[u8], seen: &mut Seen) {
        let mut rx = Codec::new();
        let mut buf = BytesMut::from(input);
        loop {
            let before = buf.len();
            match rx.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(buf.len() < before, "a frame consumed nothing");
                    assert!(frame_size(&frame) <= MAX_HEADER_BLOCK_LEN + input.len());
                    seen.header_frames += usize::from(
                        frame_size(&frame) > 0
                            && !matches!(frame, Frame::Data { .. } | Frame::Settings { .. }),
                    );
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before);
                    break;
                }
                Err(e) => {
                    seen.header_errors += usize::from(matches!(
                        e,
                        SpdyError::Decompress(_) | SpdyError::InvalidHeaderBlock(_)
                    ));
                    seen.other_errors += 1;
                    break;
                }
            }
        }
        assert!(rx.rx.peak_scratch <= MAX_HEADER_BLOCK_LEN + 1, "{}", rx.rx.peak_scratch);
    }

    /// What the hostile inputs reached, so the test notices if they stop reaching the parts
    /// that matter.
    #[derive(Debug, Default)]
    struct Seen {
        header_frames: usize,
        header_errors: usize,
        other_errors: usize,
    }

    fn frame_size(frame: &Frame) -> usize {
        let block = |h: &Headers| h.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>();
        match frame {
            Frame::Data { data, .. } => data.len(),
            Frame::SynStream { headers, .. }
            | Frame::SynReply { headers, .. }
            | Frame::Headers { headers, .. } => block(headers),
            Frame::Settings { entries } => entries.len() * 8,
            _ => 0,
        }
    }

    /// Thousands of random and mutated inputs: decode may refuse them but never panics or
    /// grows without bound. Seeded, so a failure replays.
    #[test]
    fn spdy_hostile_input_never_panics() {
        let mut rng = Rng(0x5eed_5bd7_0003_0001);
        let seeds: Vec<Vec<u8>> = vec![
            encode_all(&every_kind()).to_vec(),
            encode_all(&every_kind()[..1]).to_vec(),
            encode_all(&every_kind()[10..]).to_vec(),
        ];
        let mut seen = Seen::default();
        for round in 0..10_000 {
            let input = match round % 3 {
                0 => random_bytes(&mut rng),
                _ => {
                    let seed = &seeds[rng.below(seeds.len())];
                    mutate(&mut rng, seed)
                }
            };
            let outcome =
                std::panic::catch_unwind(AssertUnwindSafe(|| decode_hostile(&input, &mut seen)));
            assert!(outcome.is_ok(), "round {round} panicked on input {input:02x?}");
        }
        assert!(
            seen.header_frames > 500 && seen.header_errors > 500 && seen.other_errors > 500,
            "{seen:?}"
        );
    }
}
