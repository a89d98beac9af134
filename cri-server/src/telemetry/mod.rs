//! Telemetry beyond the logs: spans exported over OTLP (`tracing.rs`) and the Prometheus
//! endpoint (`metrics.rs`). Logs themselves are `logging.rs`.

pub mod metrics;
pub mod tracing;
