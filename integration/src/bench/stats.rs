//! Summaries of repeated timings: min, median, p90, p99, max.

use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub name: String,
    pub runs: usize,
    pub min_ms: f64,
    pub median_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Summary {
    /// Summarises `samples` (any order). Percentiles are nearest-rank.
    pub fn of(name: &str, samples: &[Duration]) -> Summary {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        let rank = |p: f64| -> f64 {
            if ms.is_empty() {
                return f64::NAN;
            }
            let i = ((p / 100.0) * ms.len() as f64).ceil() as usize;
            ms[i.clamp(1, ms.len()) - 1]
        };
        let median = if ms.is_empty() {
            f64::NAN
        } else if ms.len() % 2 == 1 {
            ms[ms.len() / 2]
        } else {
            (ms[ms.len() / 2 - 1] + ms[ms.len() / 2]) / 2.0
        };
        Summary {
            name: name.to_string(),
            runs: ms.len(),
            min_ms: ms.first().copied().unwrap_or(f64::NAN),
            median_ms: median,
            p90_ms: rank(90.0),
            p99_ms: rank(99.0),
            max_ms: ms.last().copied().unwrap_or(f64::NAN),
        }
    }
}

/// A fixed-width table of summaries.
pub fn table(rows: &[Summary]) -> String {
    let mut out = format!(
        "{:<28} {:>5} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
        "step", "runs", "min ms", "median ms", "p90 ms", "p99 ms", "max ms"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<28} {:>5} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1}\n",
            r.name, r.runs, r.min_ms, r.median_ms, r.p90_ms, r.p99_ms, r.max_ms
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let samples: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let s = Summary::of("x", &samples);
        assert_eq!((s.min_ms, s.max_ms), (1.0, 100.0));
        assert_eq!(s.median_ms, 50.5);
        assert_eq!(s.p90_ms, 90.0);
        assert_eq!(s.p99_ms, 99.0);
        let one = Summary::of("one", &[Duration::from_millis(7)]);
        assert_eq!((one.median_ms, one.p99_ms), (7.0, 7.0));
        assert!(Summary::of("none", &[]).median_ms.is_nan());
    }
}
