//! Fuzz targets for what berth decodes from registries and containers: image references,
//! manifests, image configs, hostile layer tarballs and the log lines a container writes.
//!
//! They run on bolero. A plain `cargo test` replays each target's seed corpus
//! (`fuzz/tests/__fuzz__/<target>/corpus/`, and any `crashes/` beside it), then random
//! inputs for a bounded time (`BOLERO_RANDOM_TEST_TIME_MS`, bolero's default 1 s; a
//! failure prints the `BOLERO_RANDOM_SEED` that replays it). CI also runs each target
//! coverage-guided under libFuzzer with cargo-bolero (`.ci/fuzz`).

use berth_runtime::image::manifest::Manifest;
use berth_runtime::image::pull::parse_config;
use berth_runtime::image::reference::Reference;
use berth_runtime::shim::log::{LineSplitter, Stream, MAX_LINE};
use berth_runtime::snapshot::{unpack_layer, UnpackLimits};
use bolero::check;
use std::path::{Path, PathBuf};

#[test]
fn fuzz_image_reference() {
    check!(name = "reference").for_each(|data: &[u8]| {
        let Ok(s) = std::str::from_utf8(data) else { return };
        if let Ok(r) = Reference::parse(s) {
            // What berth prints, it parses back to the same reference.
            let again = Reference::parse(&r.to_string())
                .unwrap_or_else(|e| panic!("{s:?} -> {r} does not parse: {e:?}"));
            assert_eq!(again.to_string(), r.to_string());
        }
    });
}

#[test]
fn fuzz_manifest() {
    check!(name = "manifest").for_each(|data: &[u8]| {
        for ct in [
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
            "application/json",
            "",
        ] {
            let _ = Manifest::parse(data, ct);
        }
    });
}

#[test]
fn fuzz_image_config() {
    check!(name = "config").for_each(|data: &[u8]| {
        let _ = parse_config(data);
    });
}

#[test]
fn fuzz_log_writer() {
    check!(name = "log").for_each(|data: &[u8]| {
        // The bytes cut into arbitrary reads, as a pipe delivers them.
        let mut splitter = LineSplitter::new(Stream::Stderr);
        let mut out = Vec::new();
        let mut rest = data;
        let mut k = 1usize;
        while !rest.is_empty() {
            let n = (k * 7919 % 20_000).clamp(1, rest.len());
            splitter.push(&rest[..n], 1_700_000_000_123_456_789, &mut out);
            rest = &rest[n..];
            k += 1;
        }
        splitter.finish(1_700_000_000_123_456_789, &mut out);
        // Every record is well formed, and the records give back exactly the input.
        let mut back = Vec::new();
        let mut last_full = true;
        let mut records = out.split(|&b| b == b'\n').collect::<Vec<_>>();
        assert_eq!(records.pop(), Some(&b""[..]), "output ends with a record's newline");
        for rec in records {
            let prefix = b"2023-11-14T22:13:20.123456789Z stderr ";
            assert!(rec.starts_with(prefix), "bad record {:?}", String::from_utf8_lossy(rec));
            let tag = rec[prefix.len()];
            let text = &rec[prefix.len() + 2..];
            assert!(text.len() <= MAX_LINE);
            // Text never holds a newline: split() above would have cut it; so a record
            // whose text came from a line is whole here.
            back.extend_from_slice(text);
            match tag {
                b'F' => {
                    back.push(b'\n');
                    last_full = true;
                }
                b'P' => {
                    assert_eq!(text.len(), MAX_LINE, "only full-size parts are partial");
                    last_full = false;
                }
                t => panic!("bad tag {t}"),
            }
        }
        assert!(last_full, "the last record must be F");
        let mut want = data.to_vec();
        if !want.is_empty() && want.last() != Some(&b'\n') {
            want.push(b'\n');
        }
        assert_eq!(back, want);
    });
}

/// Unpacks into `<tmp>/a/b/layer` and checks nothing appeared beside it.
#[test]
fn fuzz_layer_extraction() {
    assert!(nix_is_root(), "unpacking sets owners, devices and xattrs: run as root");
    let outer = tempfile::tempdir().unwrap();
    check!(name = "unpack").for_each(|data: &[u8]| {
        let base = outer.path().join("a/b");
        let _ = std::fs::remove_dir_all(outer.path().join("a"));
        let dest = base.join("layer");
        std::fs::create_dir_all(&dest).unwrap();
        let limits = UnpackLimits { max_bytes: 8 << 20, max_entries: 10_000 };
        let _ = unpack_layer(data, &dest, &limits);
        let beside: Vec<_> = walk_all(outer.path())
            .into_iter()
            .filter(|p| !p.starts_with(&dest) && p != &base && p != &outer.path().join("a"))
            .collect();
        assert!(beside.is_empty(), "written outside the layer: {beside:?}");
    });
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn walk_all(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        out.push(p.clone());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk_all(&p));
        }
    }
    out
}
