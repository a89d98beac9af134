//! The stable fuzz engine the fuzz test targets share (`runtime/tests/fuzz.rs`,
//! `cri-server/tests/fuzz.rs`): replays a target's seed corpus
//! (`<crate>/fuzz/corpus/<target>/`), then mutations of it for `BERTH_FUZZ_SECS`. A
//! failing input is saved to `target/fuzz-failures/<target>-<n>` and reported with the
//! seed that replays the run (`BERTH_FUZZ_SEED`).

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
pub fn fuzz(target: &str, check: impl Fn(&[u8])) {
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
