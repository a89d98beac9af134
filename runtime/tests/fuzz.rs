//! Coverage-blind fuzzing on stable Rust: each target replays its checked-in seed corpus
//! (`runtime/fuzz/corpus/<target>/`), then feeds mutations of it for a bounded time
//! (`BERTH_FUZZ_SECS`, default 2 s per target; CI runs longer). A failing input is written
//! to `target/fuzz-failures/<target>-<n>` and reported with the seed to replay it
//! (`BERTH_FUZZ_SEED`).
//!
//! Why not cargo-fuzz: libfuzzer-sys and `-Zsanitizer` need nightly, and the only
//! toolchain here is stable. The targets take `&[u8]` like `fuzz_target!` bodies, so they
//! can move to cargo-fuzz unchanged when a nightly is available.

use berth_runtime::image::manifest::Manifest;
use berth_runtime::image::pull::parse_config;
use berth_runtime::image::reference::Reference;
use berth_runtime::shim::log::{LineSplitter, Stream, MAX_LINE};
use berth_runtime::snapshot::{unpack_layer, UnpackLimits};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
}

const INTERESTING: &[&[u8]] = &[
    b"\0",
    b"\xff",
    b"\n",
    b"/",
    b"../",
    b":",
    b"@",
    b"sha256:",
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b"-1",
    b"99999999999999999999",
    b".wh.",
    b".wh..wh..opq",
    b"\xc3\xa9",
];

fn mutate(rng: &mut Rng, input: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(7) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            2 => {
                let s = INTERESTING[rng.below(INTERESTING.len())];
                v.splice(at..at, s.iter().copied());
            }
            3 if !v.is_empty() => {
                let end = (at + rng.below(64)).min(v.len());
                v.drain(at.min(end)..end);
            }
            4 if !v.is_empty() => {
                // Repeat a chunk: long names, deep nesting.
                let start = rng.below(v.len());
                let end = (start + rng.below(32)).min(v.len());
                let chunk: Vec<u8> = v[start..end].repeat(1 + rng.below(64));
                v.splice(at..at, chunk);
            }
            5 if !corpus.is_empty() => {
                let other = &corpus[rng.below(corpus.len())];
                let start = rng.below(other.len() + 1);
                let end = (start + rng.below(512)).min(other.len());
                v.splice(at..at, other[start..end].iter().copied());
            }
            _ => v.truncate(at),
        }
    }
    v
}

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target)
}

/// Replays the corpus through `check`, then mutations of it until the time is up.
fn fuzz(target: &str, check: impl Fn(&[u8])) {
    let mut corpus: Vec<Vec<u8>> = std::fs::read_dir(corpus_dir(target))
        .unwrap_or_else(|e| panic!("{target}: corpus: {e}"))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(!corpus.is_empty(), "{target}: empty seed corpus");
    corpus.sort();
    let secs: u64 = std::env::var("BERTH_FUZZ_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(2);
    let seed: u64 =
        std::env::var("BERTH_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
                as u64
        });
    let mut rng = Rng(seed.max(1));
    let run = |input: &[u8], n: usize| {
        if catch_unwind(AssertUnwindSafe(|| check(input))).is_err() {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-failures");
            let _ = std::fs::create_dir_all(&dir);
            let path = dir.join(format!("{target}-{n}"));
            let _ = std::fs::write(&path, input);
            panic!(
                "{target}: input {n} failed (BERTH_FUZZ_SEED={seed}), saved to {}",
                path.display()
            );
        }
    };
    for (n, input) in corpus.iter().enumerate() {
        run(input, n);
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut n = corpus.len();
    while Instant::now() < deadline {
        let base = corpus[rng.below(corpus.len())].clone();
        let input = mutate(&mut rng, &base, &corpus);
        run(&input, n);
        n += 1;
    }
    eprintln!("{target}: {n} inputs in {secs} s (BERTH_FUZZ_SEED={seed})");
}

#[test]
fn fuzz_image_reference() {
    fuzz("reference", |data| {
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
    fuzz("manifest", |data| {
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
    fuzz("config", |data| {
        let _ = parse_config(data);
    });
}

#[test]
fn fuzz_log_writer() {
    fuzz("log", |data| {
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
    if !nix_is_root() {
        eprintln!("fuzz_layer_extraction needs root (owners, devices, xattrs); skipped");
        return;
    }
    let outer = tempfile::tempdir().unwrap();
    fuzz("unpack", |data| {
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
