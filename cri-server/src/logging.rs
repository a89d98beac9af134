//! Log output: `tracing` events as text or JSON lines on stderr; and, when an OTLP
//! collector is configured, the same spans exported as traces.

use crate::config::LogFormat;
use std::io::IsTerminal;
use tracing::field::{Field, Visit};
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::fmt::{FormatFields, FormattedFields};
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
        LogFormat::Text => fmt_layer.fmt_fields(TextFields).boxed(),
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

/// Text fields as usual, without `otel.*`: those name the span for the collector and
/// would repeat `rpc` on every line of a call.
struct TextFields;

impl<'w> FormatFields<'w> for TextFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> std::fmt::Result {
        let mut visitor = SkipOtel(DefaultVisitor::new(writer, true));
        fields.record(&mut visitor);
        visitor.0.finish()
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> std::fmt::Result {
        // The visitor puts a space before a field only when one was written before it.
        let is_empty = current.fields.is_empty();
        let mut visitor = SkipOtel(DefaultVisitor::new(current.as_writer(), is_empty));
        fields.record(&mut visitor);
        visitor.0.finish()
    }
}

struct SkipOtel<V>(V);

impl<V: Visit> Visit for SkipOtel<V> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if !field.name().starts_with("otel.") {
            self.0.record_debug(field, value);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if !field.name().starts_with("otel.") {
            self.0.record_str(field, value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.record_i64(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.record_u64(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.record_f64(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.record_bool(field, value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.record_error(field, value);
    }
}
