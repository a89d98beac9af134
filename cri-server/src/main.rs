//! berthd: a Kubernetes container runtime speaking CRI on a unix socket.

use berth_cri_server::{config, daemon, logging, telemetry};
use clap::{Parser, Subcommand};
use config::{Config, LogFormat};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use telemetry::prometheus::Metrics;
use telemetry::tracing::TraceExport;

#[derive(Debug, Parser)]
#[command(name = "berthd", version, about = "berth: a Kubernetes CRI container runtime")]
struct Cli {
    /// Config file (default: /etc/berth/config.toml when present, else embedded defaults).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Persistent state directory (overrides `root`).
    #[arg(long)]
    root: Option<PathBuf>,
    /// Volatile state directory (overrides `state`).
    #[arg(long)]
    state: Option<PathBuf>,
    /// CRI socket path (overrides `socket`).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Log filter, e.g. `info` or `info,berth_runtime=debug` (overrides `log.level`).
    #[arg(long)]
    log_level: Option<String>,
    /// Log format (overrides `log.format`).
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Print the complete default configuration.
    Default,
    /// Print the effective configuration (file plus flags) and exit.
    Show,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Config { action: ConfigAction::Default }) = cli.command {
        print!("{}", Config::default_toml());
        return ExitCode::SUCCESS;
    }
    let (mut config, config_path) = match Config::load(cli.config.as_deref()) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("berthd: {e}");
            return ExitCode::from(2);
        }
    };
    apply_flags(&mut config, &cli);
    if let Err(e) = config.validate(Path::new("command line")) {
        eprintln!("berthd: {e}");
        return ExitCode::from(2);
    }
    if let Some(Command::Config { action: ConfigAction::Show }) = cli.command {
        print!("{}", toml::to_string_pretty(&config).expect("config serializes"));
        return ExitCode::SUCCESS;
    }
    let metrics = Metrics::new();
    let (export, tracer) = match start_trace_export(&config, &metrics) {
        Ok(Some((export, tracer))) => (Some(export), Some(tracer)),
        Ok(None) => (None, None),
        Err(e) => {
            eprintln!("berthd: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = logging::init(&config.log.level, config.log.format, tracer) {
        eprintln!("berthd: {e:#}");
        return ExitCode::from(2);
    }
    let flush_timeout = Duration::from_secs(config.shutdown_timeout_secs);
    let exporting = export.is_some();
    let code = match daemon::run(config, config_path, metrics, exporting) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    };
    // After the daemon, so the spans of the last calls are in the flush.
    if let Some(export) = export {
        export.shutdown(flush_timeout);
    }
    code
}

fn start_trace_export(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Option<(TraceExport, opentelemetry_sdk::trace::SdkTracer)>> {
    if config.tracing.endpoint.is_empty() {
        return Ok(None);
    }
    TraceExport::start(&config.tracing, metrics.clone()).map(Some)
}

fn apply_flags(config: &mut Config, cli: &Cli) {
    // Relative paths on the command line mean relative to where berthd was started.
    let absolute = |p: &PathBuf| std::path::absolute(p).unwrap_or_else(|_| p.clone());
    if let Some(v) = &cli.root {
        config.root = absolute(v);
    }
    if let Some(v) = &cli.state {
        config.state = absolute(v);
    }
    if let Some(v) = &cli.socket {
        config.socket = absolute(v);
    }
    if let Some(v) = &cli.log_level {
        config.log.level = v.clone();
    }
    if let Some(v) = cli.log_format {
        config.log.format = v;
    }
}
