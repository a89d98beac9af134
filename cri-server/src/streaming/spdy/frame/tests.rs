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
    assert!(matches!(Codec::new().decode(&mut buf), Err(SpdyError::UnsupportedVersion(0x7fff))));
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
        (control(kind::SETTINGS, 0, &[0xff, 0xff, 0xff, 0xff]), "SETTINGS claiming 2^32-1 entries"),
        (control(kind::SETTINGS, 0, &[0, 0, 0, 1, 0, 0, 0, 1]), "SETTINGS entry cut short"),
        (control(kind::SETTINGS, 0, &[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1]), "SETTINGS extra entry"),
        (
            control(kind::SYN_STREAM, 0, &[0, 0, 0, 1, 0, 0, 0, 0, 0]),
            "SYN_STREAM cut in its fields",
        ),
        (control(kind::SYN_STREAM, 0, &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]), "SYN_STREAM without block"),
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
    assert_eq!(rx.decode(&mut buf).unwrap(), Some(Frame::WindowUpdate { stream_id: 1, delta: 2 }));
    assert_eq!(
        rx.decode(&mut buf).unwrap(),
        Some(Frame::RstStream { stream_id: 0x7fff_ffff, status: 1 })
    );
}

#[test]
fn spdy_oversize_frames_are_refused() {
    let mut tx = Codec::new();
    let mut out = BytesMut::new();
    let too_big = Frame::Data { stream_id: 1, fin: false, data: vec![0; MAX_FRAME_LEN + 1].into() };
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
    let many = headers((0..=MAX_HEADER_PAIRS).map(|i| (i.to_string(), String::new())).collect());
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
