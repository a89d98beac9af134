//! SPDY/3 name/value header blocks: the uncompressed layout and the per-connection zlib
//! streams that carry it.
//!
//! Layout before compression: `u32` pair count, then per pair `u32` name length, name,
//! `u32` value length, value (big-endian). A name with several values is sent once, its
//! values joined by NUL.

use super::dictionary::DICTIONARY;
use super::error::SpdyError;
use super::limits::{MAX_HEADER_BLOCK_LEN, MAX_HEADER_PAIRS};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Header pairs in the order they were sent. Names are lower-case on the wire (see
/// [`header`] for lookups); a name with several values carries them joined by NUL.
pub type Headers = Vec<(String, String)>;

/// Above this, a decompression buffer is released after use rather than kept for the next
/// block, so that one large block does not pin memory for the life of the connection.
const RETAINED_SCRATCH: usize = 16 * 1024;

const NUL: char = '\0';

/// The value of header `name`, compared ASCII case-insensitively because SPDY/3 requires
/// lower-case names but not every peer obeys. Several values come back joined by NUL, as
/// they were sent.
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// The compressing half of a connection's header state: every header block this side sends
/// continues one zlib stream, which the peer inflates with one matching stream.
#[derive(Debug, Default)]
pub(super) struct HeaderCompressor {
    /// Created on first use: a connection that never sends a header block pays nothing.
    zlib: Option<Compress>,
}

impl HeaderCompressor {
    /// The compressed form of `headers`, ending on a sync flush so the peer can inflate the
    /// whole block from this frame alone.
    ///
    /// Errors leave the zlib stream untouched: everything that can be refused is refused
    /// before any byte enters the compressor.
    pub(super) fn compress(&mut self, headers: &Headers) -> Result<Vec<u8>, SpdyError> {
        let plain = serialize(headers)?;
        let zlib = match &mut self.zlib {
            Some(zlib) => zlib,
            none => none.insert(new_compressor()?),
        };
        deflate_sync(zlib, &plain)
    }
}

fn new_compressor() -> Result<Compress, SpdyError> {
    // Level 6 rather than Go's BestCompression: blocks are tiny, and any level inflates the
    // same on the other side.
    let mut zlib = Compress::new(Compression::default(), true);
    // Set before the first byte so the zlib header carries FDICT and the dictionary's id.
    zlib.set_dictionary(DICTIONARY).map_err(|e| SpdyError::Compress(e.to_string()))?;
    Ok(zlib)
}

fn deflate_sync(zlib: &mut Compress, mut input: &[u8]) -> Result<Vec<u8>, SpdyError> {
    let mut out = Vec::with_capacity(input.len() / 2 + 64);
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity());
        }
        let (in_before, out_before) = (zlib.total_in(), out.len());
        zlib.compress_vec(input, &mut out, FlushCompress::Sync)
            .map_err(|e| SpdyError::Compress(e.to_string()))?;
        let consumed = counted(zlib.total_in() - in_before);
        input = &input[consumed..];
        // zlib's contract: a sync flush is complete once a call returns with output space to
        // spare; with the output full it may still hold back bytes.
        if input.is_empty() && out.len() < out.capacity() {
            return Ok(out);
        }
        if consumed == 0 && out.len() == out_before {
            return Err(SpdyError::Compress("deflate made no progress".into()));
        }
    }
}

/// The inflating half of a connection's header state; see [`HeaderCompressor`].
#[derive(Debug, Default)]
pub(super) struct HeaderDecompressor {
    zlib: Option<Decompress>,
    scratch: Vec<u8>,
    /// Largest the scratch buffer ever grew, so tests can check that hostile input cannot
    /// make it grow without bound.
    #[cfg(test)]
    pub(super) peak_scratch: usize,
}

impl HeaderDecompressor {
    /// Inflates one frame's header block and parses it.
    ///
    /// An error leaves the zlib stream somewhere inside the block, out of step with the
    /// peer's, so the connection cannot decode another header block.
    pub(super) fn decompress(&mut self, compressed: &[u8]) -> Result<Headers, SpdyError> {
        let zlib = self.zlib.get_or_insert_with(|| Decompress::new(true));
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let result = inflate_block(zlib, compressed, &mut scratch);
        #[cfg(test)]
        {
            self.peak_scratch = self.peak_scratch.max(scratch.capacity());
        }
        let headers = result.and_then(|()| parse(&scratch));
        if scratch.capacity() <= RETAINED_SCRATCH {
            self.scratch = scratch;
        }
        headers
    }
}

/// Inflates all of `input` into `out`, which stays within [`MAX_HEADER_BLOCK_LEN`] + 1 bytes
/// of capacity: one byte over the limit is enough to tell that the block is too large.
fn inflate_block(
    zlib: &mut Decompress,
    mut input: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), SpdyError> {
    const CAP: usize = MAX_HEADER_BLOCK_LEN + 1;
    // `out` is empty here, so this asks for the capacity itself.
    out.reserve_exact((input.len() * 4).clamp(256, CAP));
    loop {
        if out.len() == out.capacity() {
            if out.capacity() >= CAP {
                return Err(SpdyError::HeaderBlockTooLarge);
            }
            out.reserve_exact(out.capacity().min(CAP - out.capacity()));
        }
        let (in_before, out_before) = (zlib.total_in(), out.len());
        let status = zlib.decompress_vec(input, out, FlushDecompress::Sync);
        let consumed = counted(zlib.total_in() - in_before);
        input = &input[consumed..];
        let status = match status {
            Ok(status) => status,
            Err(e) => match e.needs_dictionary() {
                // The stream's header names the dictionary (FDICT) and has been consumed;
                // the deflate data after it can only be read once the dictionary is set.
                Some(id) => {
                    set_dictionary(zlib, id)?;
                    continue;
                }
                None => return Err(SpdyError::Decompress(e.to_string())),
            },
        };
        if status == Status::StreamEnd {
            // The peer ended its stream: this block may be whole, but none can follow it.
            if input.is_empty() {
                return Ok(());
            }
            return Err(SpdyError::Decompress("data after the end of the zlib stream".into()));
        }
        // Like deflate's sync flush: inflate only stops with output space to spare once it
        // has used up its input and holds nothing back.
        if input.is_empty() && out.len() < out.capacity() {
            return Ok(());
        }
        if consumed == 0 && out.len() == out_before {
            return Err(SpdyError::Decompress("inflate made no progress".into()));
        }
    }
}

fn set_dictionary(zlib: &mut Decompress, id: u32) -> Result<(), SpdyError> {
    zlib.set_dictionary(DICTIONARY).map(drop).map_err(|_| {
        SpdyError::Decompress(format!(
            "the zlib stream wants the dictionary with Adler-32 {id:#010x}, not SPDY/3's"
        ))
    })
}

/// A difference of zlib's running totals over one call: at most the length of the slice
/// that call was given, so it fits.
fn counted(n: u64) -> usize {
    n as usize
}

/// The uncompressed block: names lower-cased and repeated names merged into one
/// NUL-joined value, because Go's reader (kubectl, crictl) rejects a block with either
/// upper-case or duplicate names.
fn serialize(headers: &Headers) -> Result<Vec<u8>, SpdyError> {
    let merged = merge_names(headers);
    if merged.len() > MAX_HEADER_PAIRS {
        return Err(SpdyError::TooManyHeaders(merged.len()));
    }
    let len = 4 + merged.iter().map(|(n, v)| 8 + n.len() + v.len()).sum::<usize>();
    if len > MAX_HEADER_BLOCK_LEN {
        return Err(SpdyError::HeaderBlockTooLarge);
    }
    let mut plain = Vec::with_capacity(len);
    put_len(&mut plain, merged.len());
    for (name, value) in &merged {
        put_len(&mut plain, name.len());
        plain.extend_from_slice(name.as_bytes());
        put_len(&mut plain, value.len());
        plain.extend_from_slice(value.as_bytes());
    }
    Ok(plain)
}

fn merge_names(headers: &Headers) -> Vec<(String, String)> {
    let mut merged: Vec<(String, String)> = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        match merged.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => {
                values.push(NUL);
                values.push_str(value);
            }
            None => merged.push((name, value.clone())),
        }
    }
    merged
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    // Callers have bounded every length by MAX_HEADER_BLOCK_LEN.
    let len = u32::try_from(len).expect("header length bounded by MAX_HEADER_BLOCK_LEN");
    out.extend_from_slice(&len.to_be_bytes());
}

/// Parses an uncompressed block. Names keep the case they were sent in and values stay
/// NUL-joined; judging either is the session's business, not the codec's.
fn parse(mut block: &[u8]) -> Result<Headers, SpdyError> {
    let count = take_len(&mut block)?;
    if count > MAX_HEADER_PAIRS {
        return Err(SpdyError::TooManyHeaders(count));
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let name = take_string(&mut block)?;
        let value = take_string(&mut block)?;
        headers.push((name, value));
    }
    if !block.is_empty() {
        return Err(SpdyError::InvalidHeaderBlock("bytes after the last header pair"));
    }
    Ok(headers)
}

fn take_len(block: &mut &[u8]) -> Result<usize, SpdyError> {
    let (len, rest) = block
        .split_first_chunk::<4>()
        .ok_or(SpdyError::InvalidHeaderBlock("truncated length field"))?;
    *block = rest;
    // Any length beyond the block fails in take_string; usize holds every u32 here.
    Ok(u32::from_be_bytes(*len) as usize)
}

fn take_string(block: &mut &[u8]) -> Result<String, SpdyError> {
    let len = take_len(block)?;
    if len > block.len() {
        return Err(SpdyError::InvalidHeaderBlock("name or value runs past the block"));
    }
    let (bytes, rest) = block.split_at(len);
    *block = rest;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| SpdyError::InvalidHeaderBlock("name or value is not UTF-8"))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::streaming::spdy::dictionary::tests::adler32;

    pub(in crate::streaming::spdy) fn pairs(list: &[(&str, &str)]) -> Headers {
        list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    /// Compresses raw (already serialised) blocks the way Go's framer does: one zlib stream
    /// at `level` primed with the dictionary, a sync flush after each block.
    pub(in crate::streaming::spdy) fn go_style_stream(
        level: u32,
        blocks: &[Vec<u8>],
    ) -> Vec<Vec<u8>> {
        let mut zlib = Compress::new(Compression::new(level), true);
        zlib.set_dictionary(DICTIONARY).unwrap();
        blocks.iter().map(|b| deflate_sync(&mut zlib, b).unwrap()).collect()
    }

    /// Inflates a whole stream with a fresh `flate2` decompressor, independent of the codec.
    fn inflate_independently(compressed: &[u8]) -> Vec<u8> {
        let mut zlib = Decompress::new(true);
        let mut out = Vec::with_capacity(1 << 16);
        let err = zlib.decompress_vec(compressed, &mut out, FlushDecompress::Sync).unwrap_err();
        assert_eq!(err.needs_dictionary(), Some(adler32(DICTIONARY)));
        zlib.set_dictionary(DICTIONARY).unwrap();
        let consumed = zlib.total_in() as usize;
        zlib.decompress_vec(&compressed[consumed..], &mut out, FlushDecompress::Sync).unwrap();
        assert_eq!(zlib.total_in() as usize, compressed.len(), "block not fully inflated");
        out
    }

    #[test]
    fn spdy_header_lookup_ignores_case() {
        let h = pairs(&[("StreamType", "error"), ("port", "80\u{0}81")]);
        assert_eq!(header(&h, "streamtype"), Some("error"));
        assert_eq!(header(&h, "STREAMTYPE"), Some("error"));
        assert_eq!(header(&h, "port"), Some("80\u{0}81"));
        assert_eq!(header(&h, "requestid"), None);
    }

    /// What Go's framer puts inside the zlib stream for a SYN_STREAM with the one header
    /// `streamtype: error`, checked byte by byte after inflating our output independently.
    #[test]
    fn spdy_golden_streamtype_error_block() {
        let compressed =
            HeaderCompressor::default().compress(&pairs(&[("streamtype", "error")])).unwrap();
        let mut expected = vec![0, 0, 0, 1, 0, 0, 0, 10];
        expected.extend_from_slice(b"streamtype");
        expected.extend_from_slice(&[0, 0, 0, 5]);
        expected.extend_from_slice(b"error");
        assert_eq!(inflate_independently(&compressed), expected);
        // Sync flush: the block ends on an empty stored block, so the peer has it all.
        assert!(compressed.ends_with(&[0, 0, 0xff, 0xff]));
    }

    /// The zlib header must name the dictionary by the Adler-32 Go's reader checks it by.
    #[test]
    fn spdy_zlib_header_names_the_dictionary() {
        let compressed = HeaderCompressor::default().compress(&pairs(&[("a", "b")])).unwrap();
        let (cmf, flg) = (compressed[0], compressed[1]);
        assert_eq!(cmf & 0x0f, 8, "deflate");
        assert_eq!((u16::from(cmf) << 8 | u16::from(flg)) % 31, 0, "FCHECK");
        assert_ne!(flg & 0x20, 0, "FDICT");
        let dict_id = u32::from_be_bytes(compressed[2..6].try_into().unwrap());
        assert_eq!(dict_id, adler32(DICTIONARY));
        assert_eq!(dict_id, 0xe3c6_a7c2);
    }

    #[test]
    fn spdy_blocks_share_one_zlib_stream() {
        let h = pairs(&[("streamtype", "stdout"), ("requestid", "42"), ("port", "8080")]);
        let mut tx = HeaderCompressor::default();
        let mut rx = HeaderDecompressor::default();
        let first = tx.compress(&h).unwrap();
        let second = tx.compress(&h).unwrap();
        // The repeat compresses against the first block's history: it cannot start a stream.
        assert!(second.len() < first.len(), "{} >= {}", second.len(), first.len());
        assert!(HeaderDecompressor::default().decompress(&second).is_err());
        assert_eq!(rx.decompress(&first).unwrap(), h);
        assert_eq!(rx.decompress(&second).unwrap(), h);
    }

    /// Two blocks of one stream as C zlib 1.2.13 (Python's `zlib.compressobj(9, zdict=...)`,
    /// `Z_SYNC_FLUSH` after each) wrote them: a second, independent zlib implementation.
    #[test]
    fn spdy_decodes_blocks_from_c_zlib() {
        let hex = |s: &str| -> Vec<u8> {
            (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
        };
        let first = hex(concat!(
            "78f9e3c6a7c202e50e703a2b294a4dcc851625aca9a0800632388b20",
            "d196094ace8c0600000000ffff"
        ));
        let second = hex("c2aa1898bc53f2c1a5369a6a00000000ffff");
        let mut rx = HeaderDecompressor::default();
        let expected = pairs(&[("streamtype", "error"), ("requestid", "0")]);
        assert_eq!(rx.decompress(&first).unwrap(), expected);
        let expected = pairs(&[("streamtype", "stdout"), ("requestid", "0")]);
        assert_eq!(rx.decompress(&second).unwrap(), expected);
    }

    #[test]
    fn spdy_decodes_any_compression_level() {
        let blocks: Vec<Headers> = (0..5)
            .map(|i| pairs(&[("streamtype", "data"), ("port", &format!("{}", 8000 + i))]))
            .collect();
        let plain: Vec<Vec<u8>> = blocks.iter().map(|h| serialize(h).unwrap()).collect();
        for level in [0, 1, 6, 9] {
            let mut rx = HeaderDecompressor::default();
            for (compressed, h) in go_style_stream(level, &plain).iter().zip(&blocks) {
                assert_eq!(&rx.decompress(compressed).unwrap(), h, "level {level}");
            }
        }
    }

    #[test]
    fn spdy_encode_lower_cases_and_merges_names() {
        let h = pairs(&[("Port", "80"), ("requestid", "1"), ("PORT", "81")]);
        let compressed = HeaderCompressor::default().compress(&h).unwrap();
        let decoded = HeaderDecompressor::default().decompress(&compressed).unwrap();
        assert_eq!(decoded, pairs(&[("port", "80\u{0}81"), ("requestid", "1")]));
    }

    #[test]
    fn spdy_encode_refuses_oversize_blocks() {
        let mut tx = HeaderCompressor::default();
        let many: Headers =
            (0..=MAX_HEADER_PAIRS).map(|i| (format!("h{i}"), String::new())).collect();
        assert!(matches!(tx.compress(&many), Err(SpdyError::TooManyHeaders(1025))));
        let long = pairs(&[("big", &"x".repeat(MAX_HEADER_BLOCK_LEN))]);
        assert!(matches!(tx.compress(&long), Err(SpdyError::HeaderBlockTooLarge)));
        // A refusal leaves the stream usable.
        let ok = pairs(&[("a", "b")]);
        let compressed = tx.compress(&ok).unwrap();
        assert_eq!(HeaderDecompressor::default().decompress(&compressed).unwrap(), ok);
    }

    /// A block that inflates past the cap is refused without growing past it.
    #[test]
    fn spdy_decompression_bomb_is_refused() {
        let mut plain = vec![0, 0, 0, 1, 0, 0, 0, 1, b'x', 0, 0x10, 0, 0];
        plain.resize(plain.len() + (1 << 20), b'a');
        let bomb = go_style_stream(9, &[plain]).remove(0);
        assert!(bomb.len() < 4096, "a bomb is small: {}", bomb.len());
        let mut rx = HeaderDecompressor::default();
        assert!(matches!(rx.decompress(&bomb), Err(SpdyError::HeaderBlockTooLarge)));
        assert!(rx.peak_scratch <= MAX_HEADER_BLOCK_LEN + 1, "{}", rx.peak_scratch);
        assert!(rx.scratch.capacity() <= RETAINED_SCRATCH);
    }

    #[test]
    fn spdy_decode_refuses_malformed_blocks() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty"),
            (b"\0\0\0", "short count"),
            (b"\0\0\0\x01\0\0\0\x05ab", "name past the end"),
            (b"\0\0\0\x01\0\0\0\x01a", "missing value length"),
            (b"\0\0\0\x01\0\0\0\x01a\0\0\0\x01bX", "trailing byte"),
            (b"\0\0\0\x01\0\0\0\x01\xff\0\0\0\0", "not UTF-8"),
            (b"\xff\xff\xff\xff", "huge count"),
            (b"\0\0\0\x01\xff\xff\xff\xff", "huge length"),
        ];
        for (plain, what) in cases {
            let compressed = go_style_stream(6, &[plain.to_vec()]).remove(0);
            let result = HeaderDecompressor::default().decompress(&compressed);
            assert!(result.is_err(), "{what}: {result:?}");
        }
    }

    #[test]
    fn spdy_decode_refuses_broken_zlib() {
        let good = HeaderCompressor::default().compress(&pairs(&[("a", "b")])).unwrap();
        let mut wrong_dict = good.clone();
        wrong_dict[2] ^= 1;
        let err = HeaderDecompressor::default().decompress(&wrong_dict).unwrap_err();
        assert!(err.to_string().contains("dictionary"), "{err}");
        // The zlib header and one byte of deflate data: no whole block.
        let truncated = &good[..7];
        assert!(HeaderDecompressor::default().decompress(truncated).is_err());
        assert!(HeaderDecompressor::default().decompress(b"garbage!").is_err());
    }
}
