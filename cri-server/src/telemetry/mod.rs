//! Telemetry beyond the logs: spans exported over OTLP (`tracing.rs`) and the Prometheus
//! endpoint (`prometheus.rs`). Logs themselves are `logging.rs`.

pub mod prometheus;
pub mod tracing;
