//! Fuzz targets for what berthd decodes from its clients: a CreateContainer request's
//! config as far as the OCI spec built from it, and from streaming clients SPDY frames
//! (with their zlib header blocks), WebSocket channel framing, and the resize stream.
//! Bolero, as in `runtime.rs` beside it; seed corpora in `__fuzz__/<target>/corpus`.

use berth_cri_server::rpc::container_spec::to_spec;
use berth_cri_server::streaming::spdy::{Codec, Frame, SpdyError};
use berth_cri_server::streaming::{ws_unframe, Framing, SizeDecoder};
use berth_runtime::container::runtime_spec::{self, PodFiles, SpecInput};
use berth_runtime::image::record::ImageConfig;
use berth_runtime::oci_defaults::PodNamespaces;
use bytes::BytesMut;
use prost::Message as _;
use tokio_tungstenite::tungstenite::Message;

use bolero::check;

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

/// Whatever a client sends as a CreateContainer config, berthd answers with a spec or an
/// error naming a field: the CRI decoding and the OCI spec built from it never panic.
#[test]
fn fuzz_container_request() {
    let rootfs = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(rootfs.path().join("etc")).unwrap();
    std::fs::write(rootfs.path().join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    std::fs::write(rootfs.path().join("etc/group"), "root:x:0:\n").unwrap();
    let image = ImageConfig {
        entrypoint: vec!["/bin/sh".into()],
        env: vec!["PATH=/bin".into()],
        ..ImageConfig::default()
    };
    check!(name = "container_request").for_each(|data: &[u8]| {
        let Ok(config) = berth_proto::ContainerConfig::decode(data) else { return };
        let Ok(spec) = to_spec(config) else { return };
        let built = runtime_spec::build(&SpecInput {
            config: &spec,
            image: &image,
            rootfs: rootfs.path(),
            hostname: "pod",
            pod: PodNamespaces::default(),
            target_pid: None,
            files: PodFiles::default(),
            cgroups_path: "/berth/pod/ctr".into(),
            pids_limit: 0,
            apparmor_profile: None,
        });
        if let Err(e) = built {
            assert!(!e.is_empty(), "an error says what is wrong");
        }
    });
}

#[test]
fn fuzz_spdy_frames() {
    check!(name = "spdy").for_each(|data: &[u8]| {
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
    check!(name = "websocket").for_each(|data: &[u8]| {
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
    check!(name = "resize").for_each(|data: &[u8]| {
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
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/__fuzz__");
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let d = dir.join(target).join("corpus");
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
    let request = |config: berth_proto::ContainerConfig| config.encode_to_vec();
    write("container_request", "minimal", &request(container_config(&[], &[])));
    write(
        "container_request",
        "mounts_devices_security",
        &request(container_config(
            &[("/data", "/tmp", 2), ("/ro", "/var/tmp", 1)],
            &[("/dev/fuse", "/dev/null", "rwm")],
        )),
    );
    write("websocket", "stdin", b"\x00echo hi\n");
    write("websocket", "close", b"\xff\x00");
    write("websocket", "base64", b"1aGVsbG8=");
    write("resize", "one", br#"{"Width":80,"Height":24}"#);
    write("resize", "two", br#"{"Width":1,"Height":2}{"Width":65535,"Height":0}"#);
    write("resize", "bad", br#"{"Width":-1,"Height":"x"}{"Width":3"#);
}

/// A create request's config as the kubelet fills one, for the seed corpus.
fn container_config(
    mounts: &[(&str, &str, i32)],
    devices: &[(&str, &str, &str)],
) -> berth_proto::ContainerConfig {
    use berth_proto::{
        Capability, ContainerMetadata, Device, ImageSpec, KeyValue, LinuxContainerConfig,
        LinuxContainerResources, LinuxContainerSecurityContext, Mount, SecurityProfile,
    };
    berth_proto::ContainerConfig {
        metadata: Some(ContainerMetadata { name: "app".into(), attempt: 1 }),
        image: Some(ImageSpec { image: "busybox".into(), ..Default::default() }),
        command: vec!["sleep".into()],
        args: vec!["3600".into()],
        working_dir: "/".into(),
        envs: vec![KeyValue { key: "A".into(), value: "1".into() }],
        mounts: mounts
            .iter()
            .map(|(c, h, propagation)| Mount {
                container_path: c.to_string(),
                host_path: h.to_string(),
                propagation: *propagation,
                ..Default::default()
            })
            .collect(),
        devices: devices
            .iter()
            .map(|(c, h, p)| Device {
                container_path: c.to_string(),
                host_path: h.to_string(),
                permissions: p.to_string(),
            })
            .collect(),
        log_path: "app/1.log".into(),
        stop_signal: 15,
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                cpu_shares: 512,
                cpu_quota: 50_000,
                cpu_period: 100_000,
                memory_limit_in_bytes: 64 << 20,
                oom_score_adj: 900,
                ..Default::default()
            }),
            security_context: Some(LinuxContainerSecurityContext {
                capabilities: Some(Capability {
                    add_capabilities: vec!["NET_ADMIN".into()],
                    drop_capabilities: vec!["ALL".into()],
                    ..Default::default()
                }),
                run_as_user: Some(berth_proto::Int64Value { value: 1000 }),
                seccomp: Some(SecurityProfile { profile_type: 0, ..Default::default() }),
                masked_paths: vec!["/proc/kcore".into()],
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}
