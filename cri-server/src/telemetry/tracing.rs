//! Span export over OTLP/gRPC, and continuing the caller's W3C trace.
//!
//! Export never stands in a call's way: a finished span is handed to a bounded queue and
//! the call goes on; a background thread sends batches to the collector. When the queue
//! is full (the collector is slow or gone) spans are dropped and counted, never waited
//! for.

use super::prometheus::{Metrics, SpanDrop};
use crate::config::TracingConfig;
use anyhow::Context as _;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter,
    SpanProcessor,
};
use opentelemetry_sdk::Resource;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Spans waiting for export at most; past it they are dropped (and counted).
const MAX_QUEUE: usize = 4096;
/// How often queued spans are sent.
const EXPORT_DELAY: Duration = Duration::from_secs(2);
/// How long one batch may take to reach the collector.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// The running exporter. Keep it until berthd exits, then [`shutdown`](Self::shutdown).
pub struct TraceExport {
    provider: SdkTracerProvider,
    /// The exporter's gRPC connection lives here, apart from the CRI server's runtime, so
    /// a stuck collector cannot take a CRI worker and berthd's runtime can stop first.
    runtime: tokio::runtime::Runtime,
}

impl TraceExport {
    /// Starts exporting to `config.endpoint`; returns the tracer for the tracing layer.
    pub fn start(
        config: &TracingConfig,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<(Self, opentelemetry_sdk::trace::SdkTracer)> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("berthd-otlp")
            .enable_all()
            .build()
            .context("cannot start the trace exporter's runtime")?;
        // The channel connects lazily, on its runtime: an absent collector is not an
        // error at start-up, only dropped spans later.
        let exporter = {
            let _guard = runtime.enter();
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(&config.endpoint)
                .with_timeout(EXPORT_TIMEOUT)
                .build()
                .with_context(|| {
                    format!("tracing.endpoint: cannot export to {}", config.endpoint)
                })?
        };
        let queued = Arc::new(AtomicUsize::new(0));
        let exporter = Counted {
            inner: exporter,
            queued: queued.clone(),
            metrics: metrics.clone(),
            failing: AtomicBool::new(false),
        };
        let batch = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_max_queue_size(MAX_QUEUE)
                    .with_scheduled_delay(EXPORT_DELAY)
                    .build(),
            )
            .build();
        let rate = f64::from(config.sampling_rate_per_million) / 1_000_000.0;
        let provider = SdkTracerProvider::builder()
            .with_span_processor(Bounded { inner: batch, queued, metrics })
            // A caller's traceparent decides for its calls; the rate is for the rest.
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(rate))))
            .with_resource(
                Resource::builder()
                    .with_service_name("berth")
                    .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                    .build(),
            )
            .build();
        let tracer = provider.tracer("berthd");
        Ok((Self { provider, runtime }, tracer))
    }

    /// Sends what is queued, waiting at most `timeout`: a dead collector cannot hold
    /// berthd's exit.
    pub fn shutdown(self, timeout: Duration) {
        let Self { provider, runtime } = self;
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        // On a thread of its own: the SDK bounds its wait, but a bug there must not
        // become a daemon that never exits.
        let flusher =
            std::thread::Builder::new().name("berthd-otlp-flush".into()).spawn(move || {
                let _ = done_tx.send(provider.shutdown_with_timeout(timeout));
            });
        match flusher {
            Ok(_) => match done_rx.recv_timeout(timeout + Duration::from_millis(500)) {
                Ok(Ok(())) => tracing::debug!("trace export flushed"),
                Ok(Err(e)) => tracing::warn!(error = %e, "trace export not flushed"),
                Err(_) => tracing::warn!(?timeout, "trace export flush timed out"),
            },
            Err(e) => tracing::warn!(error = %e, "cannot flush trace export"),
        }
        runtime.shutdown_background();
    }
}

/// The OpenTelemetry context a caller sent in its `traceparent` (and `tracestate`)
/// metadata, if it sent a valid one.
pub fn remote_parent(headers: &http::HeaderMap) -> Option<opentelemetry::Context> {
    headers.get("traceparent")?;
    let cx = TraceContextPropagator::new().extract(&Headers(headers));
    cx.span().span_context().is_valid().then_some(cx)
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Holds the batch processor's queue under [`MAX_QUEUE`] spans and counts what it turns
/// away (the SDK drops silently past its queue).
#[derive(Debug)]
struct Bounded<P> {
    inner: P,
    /// Spans handed to `inner` and not yet through the exporter.
    queued: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl<P: SpanProcessor> SpanProcessor for Bounded<P> {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= MAX_QUEUE {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.metrics.spans_dropped(SpanDrop::QueueFull, 1);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Counts what the collector took and what it did not, and says once (not per batch)
/// when export starts and stops failing.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    queued: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    failing: AtomicBool,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let result = self.inner.export(batch).await;
        self.queued.fetch_sub(n, Ordering::AcqRel);
        match &result {
            Ok(()) => {
                self.metrics.spans_exported(n as u64);
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("trace export to the collector works again");
                }
            }
            Err(e) => {
                self.metrics.spans_dropped(SpanDrop::ExportFailed, n as u64);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "cannot export spans; dropping them (counted in berth_trace_spans_dropped_total) until the collector answers");
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_read_from_metadata() {
        let mut headers = http::HeaderMap::new();
        assert!(remote_parent(&headers).is_none());
        headers.insert("traceparent", "garbage".parse().unwrap());
        assert!(remote_parent(&headers).is_none());
        headers.insert(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".parse().unwrap(),
        );
        let cx = remote_parent(&headers).unwrap();
        let span = cx.span();
        let sc = span.span_context();
        assert_eq!(sc.trace_id().to_string(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(sc.span_id().to_string(), "b7ad6b7169203331");
        assert!(sc.is_sampled() && sc.is_remote());
    }
}
