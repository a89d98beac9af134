//! What berthd counts for Prometheus, and the `/metrics` endpoint that serves it.
//!
//! RPC latency and errors are recorded as calls finish; pods and containers by state are
//! read from the stores on each scrape, so the gauges can never drift from what
//! ListPodSandbox and ListContainers would say.

use berth_runtime::container::Containers;
use berth_runtime::sandbox::{Filter, SandboxState, Sandboxes};
use berth_runtime::shim::protocol::Status as ShimStatus;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The OpenMetrics text format prometheus-client writes (Prometheus scrapes it natively).
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Distinct `rpc` label values kept; past it calls are counted as `other`. The method
/// name comes from the caller, and a caller inventing names must not grow memory.
const MAX_RPC_NAMES: usize = 128;
/// A scraper that sends no request head in this long is disconnected.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    rpc: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    rpc: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

/// Why a finished span never reached the collector.
#[derive(Debug, Clone, Copy)]
pub enum SpanDrop {
    /// The export queue was full (the collector is slow or gone).
    QueueFull,
    /// The collector did not take the batch.
    ExportFailed,
}

pub struct Metrics {
    registry: Registry,
    rpc_names: Mutex<HashSet<String>>,
    rpc_duration: Family<RpcLabels, Histogram, fn() -> Histogram>,
    rpc_errors: Family<ErrorLabels, Counter>,
    pull_duration: Histogram,
    /// Mirrors the image store's own count on each scrape (see [`StateSource`]).
    pull_bytes: Arc<AtomicU64>,
    pods: Family<StateLabels, Gauge>,
    containers: Family<StateLabels, Gauge>,
    spans_exported: Counter,
    spans_dropped: Family<ReasonLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn rpc_histogram() -> Histogram {
    // 0.5 ms to ~65 s: a Version call and a slow RunPodSandbox both land in a bucket.
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("berth");
        let rpc_duration = Family::<RpcLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            rpc_histogram as fn() -> Histogram,
        );
        registry.register(
            "rpc_duration_seconds",
            "Time to answer a CRI call, by RPC",
            rpc_duration.clone(),
        );
        let rpc_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "rpc_errors",
            "CRI calls that failed, by RPC and gRPC code",
            rpc_errors.clone(),
        );
        // 50 ms to ~27 min: pulls range from a cached manifest to gigabytes of layers.
        let pull_duration = Histogram::new(exponential_buckets(0.05, 2.0, 16));
        registry.register(
            "image_pull_duration_seconds",
            "Time of successful PullImage calls",
            pull_duration.clone(),
        );
        let pull_bytes = Arc::new(AtomicU64::new(0));
        registry.register_collector(Box::new(PullBytes(pull_bytes.clone())));
        let pods = Family::<StateLabels, Gauge>::default();
        registry.register("pods", "Pod sandboxes by state", pods.clone());
        let containers = Family::<StateLabels, Gauge>::default();
        registry.register("containers", "Containers by state", containers.clone());
        let spans_exported = Counter::default();
        registry.register(
            "trace_spans_exported",
            "Spans the OTLP collector accepted",
            spans_exported.clone(),
        );
        let spans_dropped = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "trace_spans_dropped",
            "Spans lost on the way to the OTLP collector, by reason",
            spans_dropped.clone(),
        );
        Arc::new(Self {
            registry,
            rpc_names: Mutex::default(),
            rpc_duration,
            rpc_errors,
            pull_duration,
            pull_bytes,
            pods,
            containers,
            spans_exported,
            spans_dropped,
        })
    }

    /// Records one finished CRI call.
    pub fn observe_rpc(&self, rpc: &str, elapsed: Duration, code: tonic::Code) {
        let seconds = elapsed.as_secs_f64();
        let label = self.rpc_label(rpc);
        self.rpc_duration.get_or_create(&RpcLabels { rpc: label.clone() }).observe(seconds);
        if code != tonic::Code::Ok {
            let labels = ErrorLabels { rpc: label, code: format!("{code:?}") };
            self.rpc_errors.get_or_create(&labels).inc();
        } else if rpc == "PullImage" {
            // One successful PullImage is one pull, whichever endpoint served it.
            self.pull_duration.observe(seconds);
        }
    }

    fn rpc_label(&self, rpc: &str) -> String {
        let mut names = self.rpc_names.lock().unwrap_or_else(|p| p.into_inner());
        if names.contains(rpc) || (names.len() < MAX_RPC_NAMES && names.insert(rpc.to_string())) {
            rpc.to_string()
        } else {
            "other".into()
        }
    }

    pub fn spans_exported(&self, n: u64) {
        self.spans_exported.inc_by(n);
    }

    pub fn spans_dropped(&self, why: SpanDrop, n: u64) {
        let reason = match why {
            SpanDrop::QueueFull => "queue_full",
            SpanDrop::ExportFailed => "export_failed",
        };
        self.spans_dropped.get_or_create(&ReasonLabels { reason: reason.into() }).inc_by(n);
    }

    /// The text a scrape gets, with the state gauges taken from `sample`.
    fn render(&self, sample: &StateSample) -> String {
        set_states(&self.pods, &sample.pods);
        set_states(&self.containers, &sample.containers);
        self.pull_bytes.store(sample.pulled_bytes, Ordering::Relaxed);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Every state is always present (at 0 when empty), so a dashboard's series never vanish.
fn set_states(family: &Family<StateLabels, Gauge>, counts: &[(&'static str, i64)]) {
    for (state, n) in counts {
        family.get_or_create(&StateLabels { state: (*state).into() }).set(*n);
    }
}

#[derive(Debug)]
struct PullBytes(Arc<AtomicU64>);

impl Collector for PullBytes {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counter = ConstCounter::new(self.0.load(Ordering::Relaxed));
        let metric = encoder.encode_descriptor(
            "image_pull_bytes",
            "Bytes downloaded from registries by image pulls",
            None,
            counter.metric_type(),
        )?;
        counter.encode(metric)
    }
}

/// Counts taken from the stores at scrape time.
#[derive(Debug, Default)]
struct StateSample {
    pods: Vec<(&'static str, i64)>,
    containers: Vec<(&'static str, i64)>,
    pulled_bytes: u64,
}

/// Where the scrape-time numbers come from.
#[derive(Clone)]
pub struct StateSource {
    pub sandboxes: Sandboxes,
    pub containers: Arc<Containers>,
    pub pulled_bytes: Arc<AtomicU64>,
}

impl StateSource {
    async fn sample(&self) -> StateSample {
        let mut pods = [("ready", 0), ("notready", 0)];
        match self.sandboxes.list(&Filter::default()) {
            Ok(list) => {
                for pod in list {
                    match pod.state {
                        SandboxState::Ready => pods[0].1 += 1,
                        SandboxState::NotReady => pods[1].1 += 1,
                        // Half-made pods are not pods yet (ListPodSandbox hides them too).
                        SandboxState::Creating => {}
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "metrics: cannot list pods"),
        }
        let mut containers = [("created", 0), ("running", 0), ("exited", 0), ("unknown", 0)];
        match self.containers.list() {
            Ok(list) => {
                let observed =
                    futures::future::join_all(list.iter().map(|rec| self.containers.observe(rec)))
                        .await;
                for o in observed {
                    let slot = match o.status {
                        _ if o.unknown => 3,
                        ShimStatus::Created => 0,
                        ShimStatus::Running => 1,
                        ShimStatus::Stopped => 2,
                    };
                    containers[slot].1 += 1;
                }
            }
            Err(e) => tracing::warn!(error = %e, "metrics: cannot list containers"),
        }
        StateSample {
            pods: pods.to_vec(),
            containers: containers.to_vec(),
            pulled_bytes: self.pulled_bytes.load(Ordering::Relaxed),
        }
    }
}

/// Serves `GET /metrics` on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    source: StateSource,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stopping| *stopping) => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors and the like: back off rather than spin.
                tracing::warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (metrics, source) = (metrics.clone(), source.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (metrics, source) = (metrics.clone(), source.clone());
                async move { Ok::<_, std::convert::Infallible>(answer(req, &metrics, &source).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "metrics: connection ended");
            }
        });
    }
}

async fn answer<B>(
    req: Request<B>,
    metrics: &Metrics,
    source: &StateSource,
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, text: &str| {
        let mut resp = Response::new(Full::new(Bytes::from(text.to_string())));
        *resp.status_mut() = status;
        resp
    };
    if req.uri().path() != "/metrics" {
        return reply(StatusCode::NOT_FOUND, "not found; metrics are at /metrics\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    let body = metrics.render(&source.sample().await);
    let mut resp = reply(StatusCode::OK, &body);
    resp.headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(CONTENT_TYPE));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_latency_errors_and_pulls_are_rendered() {
        let m = Metrics::new();
        m.observe_rpc("Version", Duration::from_millis(2), tonic::Code::Ok);
        m.observe_rpc("PodSandboxStatus", Duration::from_millis(1), tonic::Code::NotFound);
        m.observe_rpc("PullImage", Duration::from_secs(1), tonic::Code::Ok);
        m.spans_dropped(SpanDrop::QueueFull, 3);
        let sample = StateSample {
            pods: vec![("ready", 2), ("notready", 0)],
            containers: vec![("running", 1)],
            pulled_bytes: 1234,
        };
        let text = m.render(&sample);
        assert!(text.contains("berth_rpc_duration_seconds_count{rpc=\"Version\"} 1"), "{text}");
        assert!(
            text.contains("berth_rpc_errors_total{rpc=\"PodSandboxStatus\",code=\"NotFound\"} 1"),
            "{text}"
        );
        assert!(text.contains("berth_image_pull_duration_seconds_count 1"), "{text}");
        assert!(text.contains("berth_image_pull_bytes_total 1234"), "{text}");
        assert!(text.contains("berth_pods{state=\"ready\"} 2"), "{text}");
        assert!(text.contains("berth_pods{state=\"notready\"} 0"), "{text}");
        assert!(text.contains("berth_containers{state=\"running\"} 1"), "{text}");
        assert!(
            text.contains("berth_trace_spans_dropped_total{reason=\"queue_full\"} 3"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn invented_rpc_names_cannot_grow_the_labels() {
        let m = Metrics::new();
        for i in 0..MAX_RPC_NAMES + 50 {
            m.observe_rpc(&format!("Made{i}"), Duration::ZERO, tonic::Code::Unimplemented);
        }
        m.observe_rpc("Made0", Duration::ZERO, tonic::Code::Ok);
        let text = m.render(&StateSample::default());
        assert!(text.contains("berth_rpc_duration_seconds_count{rpc=\"Made0\"} 2"), "{text}");
        assert!(text.contains("berth_rpc_duration_seconds_count{rpc=\"other\"} 50"), "{text}");
        let series = text.lines().filter(|l| l.starts_with("berth_rpc_duration_seconds_count"));
        assert_eq!(series.count(), MAX_RPC_NAMES + 1);
    }
}
