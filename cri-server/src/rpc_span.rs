//! One `tracing` span per CRI call.
//!
//! A tower layer rather than code in each handler, so no RPC (including the unbuilt ones)
//! can escape it. Handlers add the ids they touch with [`record_pod`] and
//! [`record_container`]; the layer logs the outcome with the call's duration and, on
//! failure, the gRPC code and message, and records both in the metrics.
//!
//! The span continues the trace of the W3C `traceparent` the caller sent (the kubelet
//! does), so a pod start shows up under the kubelet's own span.

use crate::telemetry::prometheus::Metrics;
use crate::telemetry::tracing::remote_parent;
use http::{Request, Response};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tower::{Layer, Service};
use tracing::{field::Empty, Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Adds the pod (sandbox) id a call touches to the current RPC span.
pub fn record_pod(id: &str) {
    Span::current().record("pod_id", id);
}

/// Adds the container id a call touches to the current RPC span.
#[allow(dead_code)]
pub fn record_container(id: &str) {
    Span::current().record("container_id", id);
}

#[derive(Debug, Clone)]
pub struct RpcSpanLayer {
    metrics: Arc<Metrics>,
    /// Spans go to an OTLP collector: name them as gRPC server spans there.
    exporting: bool,
}

impl RpcSpanLayer {
    pub fn new(metrics: Arc<Metrics>, exporting: bool) -> Self {
        Self { metrics, exporting }
    }
}

impl<S> Layer<S> for RpcSpanLayer {
    type Service = RpcSpan<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcSpan { inner, metrics: self.metrics.clone(), exporting: self.exporting }
    }
}

#[derive(Debug, Clone)]
pub struct RpcSpan<S> {
    inner: S,
    metrics: Arc<Metrics>,
    exporting: bool,
}

impl<S, B, R> Service<Request<B>> for RpcSpan<S>
where
    S: Service<Request<B>, Response = Response<R>> + Send,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // "/runtime.v1.RuntimeService/RunPodSandbox" -> "RunPodSandbox"
        let path = req.uri().path();
        let rpc = path.rsplit('/').next().unwrap_or(path).to_string();
        let span = tracing::info_span!(
            "rpc",
            rpc = %rpc,
            pod_id = Empty,
            container_id = Empty,
            image = Empty,
            otel.name = Empty,
            otel.kind = Empty,
        );
        if self.exporting {
            // Recorded only for export: in the logs they would repeat `rpc` on every line.
            span.record("otel.name", path.trim_start_matches('/'));
            span.record("otel.kind", "server");
            span.set_attribute("rpc.system", "grpc");
            span.set_attribute("rpc.method", rpc.clone());
            if let Some(parent) = remote_parent(req.headers()) {
                // Only fails if the span was already started, which it cannot be yet.
                let _ = span.set_parent(parent);
            }
        }
        let started = Instant::now();
        let (metrics, exporting) = (self.metrics.clone(), self.exporting);
        let fut = self.inner.call(req);
        Box::pin(
            async move {
                let result = fut.await;
                let elapsed = started.elapsed();
                let elapsed_ms = elapsed.as_secs_f64() * 1000.0;
                let code = match &result {
                    Ok(resp) => {
                        // A failed unary call is a "trailers-only" response: its status is
                        // in the headers. Success (and streams) carry it in trailers.
                        let status = tonic::Status::from_header_map(resp.headers())
                            .filter(|s| s.code() != tonic::Code::Ok);
                        match &status {
                            None => tracing::debug!(elapsed_ms, "ok"),
                            Some(s) if is_server_fault(s.code()) => {
                                tracing::error!(elapsed_ms, code = ?s.code(), error = s.message(), "failed")
                            }
                            Some(s) => {
                                tracing::info!(elapsed_ms, code = ?s.code(), error = s.message(), "failed")
                            }
                        }
                        status.map_or(tonic::Code::Ok, |s| s.code())
                    }
                    Err(e) => {
                        tracing::error!(elapsed_ms, error = %e, "transport error");
                        tonic::Code::Unavailable
                    }
                };
                metrics.observe_rpc(&rpc, elapsed, code);
                if exporting {
                    let span = Span::current();
                    span.set_attribute("rpc.grpc.status_code", code as i64);
                    if code != tonic::Code::Ok {
                        span.set_status(opentelemetry::trace::Status::error(format!("{code:?}")));
                    }
                }
                result
            }
            .instrument(span),
        )
    }
}

/// Codes that mean berthd (not the caller) is at fault, worth an operator's attention.
fn is_server_fault(code: tonic::Code) -> bool {
    matches!(code, tonic::Code::Internal | tonic::Code::Unknown | tonic::Code::DataLoss)
}
