//! Log output: `tracing` events as text or JSON lines on stderr; and, when an OTLP
//! collector is configured, the same spans exported as traces.

use crate::config::LogFormat;
use std::io::IsTerminal;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer, Registry};

pub fn init(
    level: &str,
    format: LogFormat,
    tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
) -> anyhow::Result<()> {
    // RUST_LOG, when set, wins: it is how an operator turns on debug for one module
    // without editing the node's config.
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(directives)?,
        _ => EnvFilter::try_new(level)?,
    };
    let ansi = std::io::stderr().is_terminal();
    let fmt_layer = fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Text => fmt_layer.boxed(),
        LogFormat::Json => fmt_layer.json().flatten_event(true).with_current_span(true).boxed(),
    };
    // Traces get berth's own spans at info whatever the log level: a quiet log must not
    // mean an empty trace, and a debug log must not flood the collector with the HTTP
    // stack's internals (which the exporter itself uses).
    let traces = tracer.map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_threads(false)
            .with_location(false)
            .with_tracked_inactivity(false)
            .with_filter(
                Targets::new()
                    // berthd's own modules (the binary crate) and the libraries.
                    .with_target("berthd", LevelFilter::INFO)
                    .with_target("berth_cri_server", LevelFilter::INFO)
                    .with_target("berth_runtime", LevelFilter::INFO)
                    .with_target("berth_network", LevelFilter::INFO),
            )
    });
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traces)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))
}
