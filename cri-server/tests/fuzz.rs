//! Fuzz targets for what berthd decodes from streaming clients: SPDY frames (with their
//! zlib header blocks), WebSocket channel framing, and the resize stream. Same stable
//! engine and rules as `runtime/tests/fuzz.rs`; seed corpus in `cri-server/fuzz/corpus`.

use berth_cri_server::streaming::spdy::{Codec, Frame, SpdyError};
use berth_cri_server::streaming::{ws_unframe, Framing, SizeDecoder};
use bytes::BytesMut;
use tokio_tungstenite::tungstenite::Message;

#[path = "../../runtime/tests/common/fuzz_engine.rs"]
mod fuzz_engine;
use fuzz_engine::fuzz;

/// Feeds `data` to a codec in reads of varying size, as a socket delivers it; returns the
/// frames up to the first error.
fn decode_all(data: &[u8]) -> (Vec<Frame>, Option<SpdyError>) {
    let mut codec = Codec::new();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut rest = data;
    let mut k = 1usize;
    while !rest.is_empty() {
        let n = (k * 7919 % 4096).clamp(1, rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        k += 1;
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

#[test]
fn fuzz_spdy_frames() {
    fuzz("spdy", |data| {
        let (frames, _) = decode_all(data);
        // What was decoded encodes again and decodes to the same frames (on a fresh
        // connection: header blocks share one zlib stream per direction).
        let mut tx = Codec::new();
        let mut wire = BytesMut::new();
        let mut sent = Vec::new();
        for f in frames {
            if matches!(f, Frame::Unknown { .. }) {
                continue;
            }
            if tx.encode(&f, &mut wire).is_ok() {
                sent.push(f);
            }
        }
        let (back, err) = decode_all(&wire);
        assert!(err.is_none(), "re-encoded frames do not decode: {err:?}");
        assert_eq!(back.len(), sent.len());
        for (a, b) in sent.iter().zip(&back) {
            // Encoding lower-cases header names and joins repeats: compare decoded forms.
            if !matches!(
                a,
                Frame::SynStream { .. } | Frame::SynReply { .. } | Frame::Headers { .. }
            ) {
                assert_eq!(a, b);
            }
        }
    });
}

#[test]
fn fuzz_websocket_channels() {
    fuzz("websocket", |data| {
        let binary = Message::Binary(data.to_vec().into());
        if let Some((ch, payload)) = ws_unframe(Framing::Binary, &binary) {
            assert_eq!(ch, data[0]);
            assert_eq!(payload, &data[1..]);
        }
        let text = Message::Text(String::from_utf8_lossy(data).into_owned().into());
        let _ = ws_unframe(Framing::Base64, &text);
    });
}

#[test]
fn fuzz_resize_stream() {
    fuzz("resize", |data| {
        // Whatever arrives, cut anywhere: no panic.
        let mut raw = SizeDecoder::default();
        for chunk in data.chunks(1 + data.first().copied().unwrap_or(0) as usize % 13) {
            raw.push(chunk);
        }
        // Sizes written back to back, cut anywhere, come out exactly and in order.
        let sizes: Vec<(u16, u16)> = data
            .chunks_exact(4)
            .map(|c| (u16::from_le_bytes([c[0], c[1]]), u16::from_le_bytes([c[2], c[3]])))
            .collect();
        let wire: String =
            sizes.iter().map(|(w, h)| format!(r#"{{"Width":{w},"Height":{h}}}"#)).collect();
        let mut decoder = SizeDecoder::default();
        let mut got = Vec::new();
        for chunk in wire.as_bytes().chunks(1 + data.len() % 17) {
            got.extend(decoder.push(chunk));
        }
        assert_eq!(got, sizes);
    });
}

/// Writes the seed corpus (run with `--ignored` after changing the codec).
#[test]
#[ignore]
fn write_seed_corpus() {
    use berth_cri_server::streaming::spdy::Setting;
    use bytes::Bytes;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let d = dir.join(target);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), bytes).unwrap();
    };
    let h = |pairs: &[(&str, &str)]| {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let sessions: Vec<(&str, Vec<Frame>)> = vec![
        (
            "exec",
            vec![
                Frame::SynStream {
                    stream_id: 1,
                    associated_to: 0,
                    priority: 0,
                    fin: false,
                    unidirectional: false,
                    headers: h(&[("streamtype", "error")]),
                },
                Frame::SynStream {
                    stream_id: 3,
                    associated_to: 0,
                    priority: 0,
                    fin: false,
                    unidirectional: false,
                    headers: h(&[("streamtype", "stdin")]),
                },
                Frame::SynStream {
                    stream_id: 5,
                    associated_to: 0,
                    priority: 0,
                    fin: false,
                    unidirectional: false,
                    headers: h(&[("streamtype", "stdout")]),
                },
                Frame::SynStream {
                    stream_id: 7,
                    associated_to: 0,
                    priority: 0,
                    fin: false,
                    unidirectional: false,
                    headers: h(&[("streamtype", "resize")]),
                },
                Frame::Data {
                    stream_id: 7,
                    fin: false,
                    data: Bytes::from_static(br#"{"Width":80,"Height":24}"#),
                },
                Frame::Data { stream_id: 3, fin: true, data: Bytes::from_static(b"echo hi\n") },
            ],
        ),
        (
            "portforward",
            vec![
                Frame::SynStream {
                    stream_id: 1,
                    associated_to: 0,
                    priority: 0,
                    fin: false,
                    unidirectional: false,
                    headers: h(&[("streamtype", "error"), ("port", "80"), ("requestid", "0")]),
                },
                Frame::SynStream {
                    stream_id: 3,
                    associated_to: 0,
                    priority: 0,
                    fin: false,
                    unidirectional: false,
                    headers: h(&[("streamtype", "data"), ("port", "80"), ("requestid", "0")]),
                },
                Frame::Data {
                    stream_id: 3,
                    fin: false,
                    data: Bytes::from_static(b"GET / HTTP/1.0\r\n\r\n"),
                },
                Frame::RstStream { stream_id: 3, status: 5 },
            ],
        ),
        (
            "control",
            vec![
                Frame::Settings { entries: vec![Setting { flags: 0, id: 7, value: 65536 }] },
                Frame::Ping { id: 1 },
                Frame::WindowUpdate { stream_id: 1, delta: 4096 },
                Frame::SynReply { stream_id: 1, fin: false, headers: h(&[("a", "b")]) },
                Frame::Headers { stream_id: 1, fin: true, headers: h(&[("x", "y\0z")]) },
                Frame::GoAway { last_good_stream_id: 7, status: 0 },
            ],
        ),
    ];
    for (name, frames) in sessions {
        let mut codec = Codec::new();
        let mut wire = BytesMut::new();
        for f in &frames {
            codec.encode(f, &mut wire).unwrap();
        }
        write("spdy", name, &wire);
    }
    write("websocket", "stdin", b"\x00echo hi\n");
    write("websocket", "close", b"\xff\x00");
    write("websocket", "base64", b"1aGVsbG8=");
    write("resize", "one", br#"{"Width":80,"Height":24}"#);
    write("resize", "two", br#"{"Width":1,"Height":2}{"Width":65535,"Height":0}"#);
    write("resize", "bad", br#"{"Width":-1,"Height":"x"}{"Width":3"#);
}
