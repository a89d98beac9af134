//! One workload's results on several endpoints, side by side: per step the median on
//! each endpoint and its ratio to the first endpoint's, as a table, JSON or a chart.

use crate::bench::chart::Series;
use crate::bench::density::Report;
use crate::bench::endpoint::EndpointInfo;
use crate::bench::stats::Summary;
use serde::Serialize;

/// What one endpoint gave.
pub enum Outcome {
    /// Latencies per step.
    Latency(Vec<Summary>),
    /// The density workload's memory figures.
    Memory(Report),
}

impl Outcome {
    /// (step, unit, value) rows: medians in ms, or memory in KiB.
    fn figures(&self) -> Vec<(String, &'static str, f64)> {
        match self {
            Outcome::Latency(rows) => {
                rows.iter().map(|s| (s.name.clone(), "ms", s.median_ms)).collect()
            }
            Outcome::Memory(r) => {
                let (rss, pss) = r.per_pod();
                let (_, loaded) = r.totals();
                vec![
                    ("RSS per pod".into(), "KiB", rss),
                    ("PSS per pod".into(), "KiB", pss),
                    (format!("RSS with {} pods", r.pods), "KiB", loaded.rss_kib as f64),
                    (format!("PSS with {} pods", r.pods), "KiB", loaded.pss_kib as f64),
                ]
            }
        }
    }
}

/// One step on every endpoint.
#[derive(Debug, Serialize)]
pub struct StepFigures {
    pub step: String,
    pub unit: &'static str,
    /// The median (or memory figure) on each endpoint, in endpoint order.
    pub values: Vec<f64>,
    /// Each value over the first endpoint's (the first is 1).
    pub ratios: Vec<f64>,
}

#[derive(Debug, Serialize)]
pub struct Comparison {
    pub workload: String,
    /// `interleaved` (rounds alternate between endpoints) or `sequential`.
    pub order: &'static str,
    pub endpoints: Vec<EndpointInfo>,
    pub steps: Vec<StepFigures>,
    /// Each endpoint's full summaries (latency workloads).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub summaries: Vec<Vec<Summary>>,
    /// Each endpoint's density report.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub density: Vec<Report>,
}

impl Comparison {
    pub fn new(
        workload: &str,
        order: &'static str,
        endpoints: Vec<EndpointInfo>,
        outcomes: Vec<Outcome>,
    ) -> Self {
        let figures: Vec<_> = outcomes.iter().map(Outcome::figures).collect();
        let steps = figures
            .first()
            .map(|first| {
                first
                    .iter()
                    .enumerate()
                    .map(|(i, (step, unit, base))| {
                        let values: Vec<f64> =
                            figures.iter().map(|f| f.get(i).map_or(f64::NAN, |r| r.2)).collect();
                        let ratios = values.iter().map(|v| ratio(*v, *base)).collect();
                        StepFigures { step: step.clone(), unit, values, ratios }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let (mut summaries, mut density) = (Vec::new(), Vec::new());
        for o in outcomes {
            match o {
                Outcome::Latency(rows) => summaries.push(rows),
                Outcome::Memory(r) => density.push(r),
            }
        }
        Comparison { workload: workload.into(), order, endpoints, steps, summaries, density }
    }

    /// The table: a legend naming each endpoint's letter, then per step each endpoint's
    /// figure and its ratio to the first.
    pub fn table(&self) -> String {
        let letters: Vec<String> = (0..self.endpoints.len()).map(letter).collect();
        let runs = self.summaries.first().and_then(|s| s.first()).map(|s| s.runs);
        let mut out = self.workload.clone();
        if let Some(runs) = runs {
            out.push_str(&format!(", {runs} samples of the first step per endpoint"));
        }
        out.push_str(match self.order {
            "interleaved" => ", rounds interleaved across endpoints\n",
            _ => ", one endpoint after another\n",
        });
        for (l, e) in letters.iter().zip(&self.endpoints) {
            out.push_str(&format!("  {l}: {} ({})\n", e.label, e.endpoint));
        }
        let unit = self.steps.first().map_or("ms", |s| s.unit);
        let width = self.steps.iter().map(|s| s.step.len()).max().unwrap_or(4).max(28);
        out.push_str(&format!("{:<width$}", "step"));
        for l in &letters {
            out.push_str(&format!(" {:>12}", format!("{l} {unit}")));
        }
        for l in letters.iter().skip(1) {
            out.push_str(&format!(" {:>9}", format!("{l}/{}", letters[0])));
        }
        out.push('\n');
        for s in &self.steps {
            out.push_str(&format!("{:<width$}", s.step));
            for v in &s.values {
                out.push_str(&format!(" {v:>12.1}"));
            }
            for r in s.ratios.iter().skip(1) {
                out.push_str(&format!(" {:>9}", format!("{r:.2}x")));
            }
            out.push('\n');
        }
        out
    }

    /// The chart's bars: one series per endpoint.
    pub fn series(&self) -> Vec<Series> {
        self.endpoints
            .iter()
            .enumerate()
            .map(|(k, e)| Series {
                label: e.label.clone(),
                values: self.steps.iter().map(|s| s.values[k]).collect(),
            })
            .collect()
    }

    pub fn step_names(&self) -> Vec<String> {
        self.steps.iter().map(|s| s.step.clone()).collect()
    }

    pub fn unit(&self) -> &'static str {
        self.steps.first().map_or("ms", |s| s.unit)
    }
}

fn ratio(v: f64, base: f64) -> f64 {
    if base > 0.0 && v.is_finite() {
        v / base
    } else {
        f64::NAN
    }
}

/// A, B, … Z, then E27, E28, …
fn letter(k: usize) -> String {
    if k < 26 {
        char::from(b'A' + k as u8).to_string()
    } else {
        format!("E{}", k + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn info(label: &str) -> EndpointInfo {
        EndpointInfo {
            label: label.into(),
            endpoint: format!("unix:///{label}.sock"),
            runtime_name: label.into(),
            runtime_version: "1".into(),
        }
    }

    #[test]
    fn medians_and_ratios_side_by_side() {
        let ms = |v: &[u64]| v.iter().map(|m| Duration::from_millis(*m)).collect::<Vec<_>>();
        let a = vec![Summary::of("Run", &ms(&[10, 10, 30])), Summary::of("Stop", &ms(&[4]))];
        let b = vec![Summary::of("Run", &ms(&[20, 40, 40])), Summary::of("Stop", &ms(&[2]))];
        let c = Comparison::new(
            "lifecycle",
            "interleaved",
            vec![info("a"), info("b")],
            vec![Outcome::Latency(a), Outcome::Latency(b)],
        );
        assert_eq!(c.steps[0].values, vec![10.0, 40.0]);
        assert_eq!(c.steps[0].ratios, vec![1.0, 4.0]);
        assert_eq!(c.steps[1].ratios, vec![1.0, 0.5]);
        let table = c.table();
        assert!(table.contains("  A: a (unix:///a.sock)"), "{table}");
        let run = table.lines().find(|l| l.starts_with("Run ")).unwrap();
        let cols: Vec<&str> = run.split_whitespace().collect();
        assert_eq!(cols, ["Run", "10.0", "40.0", "4.00x"]);
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["steps"][1]["ratios"][1], 0.5);
        assert_eq!(c.series()[1].values, vec![40.0, 2.0]);
    }
}
