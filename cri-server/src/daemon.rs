//! berthd's life: claim the state dir, bind the socket, serve CRI, stop cleanly.

use crate::config::Config;
use crate::rpc::Cri;
use crate::rpc_span::RpcSpanLayer;
use crate::telemetry::prometheus::{self, Metrics, StateSource};
use anyhow::Context;
use berth_proto::{ImageServiceServer, RuntimeServiceServer};
use berth_runtime::container::Containers;
use berth_runtime::image::registry::{HostSettings, RegistrySettings};
use berth_runtime::image::{ImageSettings, Images};
use berth_runtime::metadata::MetadataStore;
use berth_runtime::sandbox::Sandboxes;
use berth_runtime::snapshot::{ExpansionLimits, UnpackLimits};
use berth_runtime::{Layout, StateLock};
use std::fs;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio_stream::wrappers::UnixListenerStream;

pub fn run(
    config: Config,
    config_path: Option<PathBuf>,
    metrics: Arc<Metrics>,
    exporting_traces: bool,
) -> anyhow::Result<()> {
    let layout = Layout::new(&config.root, &config.state);
    layout.create().context("cannot create berth's directories")?;
    let _lock = StateLock::acquire(layout.state())?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("berthd")
        .build()
        .context("cannot start the async runtime")?
        .block_on(serve(config, config_path, layout, metrics, exporting_traces))
}

async fn serve(
    config: Config,
    config_path: Option<PathBuf>,
    layout: Layout,
    metrics: Arc<Metrics>,
    exporting_traces: bool,
) -> anyhow::Result<()> {
    // Before the CRI socket: a daemon that cannot serve its metrics must not look up.
    let metrics_listener = bind_metrics(&config).await?;
    let socket = config.socket.clone();
    let listener = bind_socket(&socket)?;
    let shutdown_timeout = Duration::from_secs(config.shutdown_timeout_secs);
    let meta = Arc::new(
        MetadataStore::open(&layout.root().join("metadata.redb"))
            .context("cannot open the metadata database")?,
    );
    let images = Images::open(layout.root(), meta.clone(), image_settings(&config)?)
        .context("cannot open the image store")?;
    let net_config = config
        .network
        .to_pod_network(layout.root())
        .map_err(|e| anyhow::anyhow!("network.subnet: {e}"))?;
    let meta_for_containers = meta.clone();
    let sandboxes = Sandboxes::open(meta, &layout, net_config, config.cgroup.driver.runtime())
        .await
        .context("cannot open the pod sandbox store")?;
    let shim_binary = if config.containers.shim_binary.is_empty() {
        // Installed next to berthd (cargo builds both into one directory).
        std::env::current_exe()
            .context("cannot find berthd's own path")?
            .with_file_name("berth-shim")
    } else {
        PathBuf::from(&config.containers.shim_binary)
    };
    if !shim_binary.is_file() {
        anyhow::bail!("containers.shim_binary: {} does not exist", shim_binary.display());
    }
    if config.containers.pids_limit < 0 {
        anyhow::bail!("containers.pids_limit: must be 0 (no limit) or more");
    }
    let mut runtimes = std::collections::BTreeMap::new();
    for (name, rt) in &config.runtimes {
        let path = PathBuf::from(&rt.path);
        if name.is_empty() || !path.is_absolute() || !path.is_file() {
            anyhow::bail!(
                "runtimes.{name}.path: {:?} is not an absolute path to a runtime binary",
                rt.path
            );
        }
        runtimes.insert(name.clone(), path);
    }
    // AppArmor, found once: on a host with it, runtime/default is berth's own profile,
    // loaded now if the kernel does not have it (a failure is retried by the first
    // container that needs it, which fails with the reason if it still cannot load).
    let apparmor = berth_runtime::apparmor::AppArmor::detect();
    if apparmor.enabled() {
        match apparmor.ensure_default() {
            Ok(()) => tracing::info!(
                profile = berth_runtime::apparmor::DEFAULT_PROFILE,
                "AppArmor is enabled; runtime/default confines containers with this profile"
            ),
            Err(e) => {
                tracing::error!(error = %e, "AppArmor is enabled but berth's default profile is not loaded")
            }
        }
    } else {
        tracing::info!("AppArmor is not enabled on this host: containers run unconfined by it");
    }
    let containers = Arc::new(
        Containers::new(
            meta_for_containers,
            layout.state(),
            shim_binary,
            config.containers.pids_limit,
        )
        .with_runtimes(runtimes)
        .with_apparmor(apparmor),
    );
    sandboxes.set_pod_shims(containers.clone());
    // Containers still running from before a restart: their exits become STOPPED events.
    containers.watch_running().await;
    let events = containers.events().clone();
    containers.reconcile(&images).await.context("cannot reconcile containers")?;
    let state_source = StateSource {
        sandboxes: sandboxes.clone(),
        containers: containers.clone(),
        pulled_bytes: images.pulled_bytes(),
    };
    let (streaming, streaming_listener) =
        crate::streaming::Streaming::bind(&config.streaming, containers.clone()).await?;
    let cri = Cri::new(
        config,
        config_path,
        layout,
        images,
        sandboxes.clone(),
        containers,
        streaming.clone(),
    );

    // A watch channel, not a Notify: a signal that lands before anyone waits is not lost.
    let (stop_tx, stop) = watch::channel(false);
    spawn_signal_watch(stop_tx)?;
    tokio::spawn(streaming.serve(streaming_listener, stop.clone()));
    if let Some(listener) = metrics_listener {
        tokio::spawn(prometheus::serve(listener, metrics.clone(), state_source, stop.clone()));
    }

    let server = tonic::transport::Server::builder()
        .layer(RpcSpanLayer::new(metrics, exporting_traces))
        .add_service(RuntimeServiceServer::new(cri.clone()))
        .add_service(ImageServiceServer::new(cri))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), {
            let mut stop = stop.clone();
            async move {
                let _ = stop.wait_for(|stopping| *stopping).await;
                // Event streams never end by themselves: end them so shutdown is prompt.
                events.close();
            }
        });
    tracing::info!(socket = %socket.display(), version = env!("CARGO_PKG_VERSION"), "berthd serving CRI");
    notify_systemd(sd_notify::NotifyState::Ready);

    // Serve until a signal, then give in-flight calls (a pull, a long-lived event stream)
    // a bounded time to finish so the daemon always exits.
    let mut server = std::pin::pin!(server);
    let served = tokio::select! {
        r = &mut server => r,
        () = async {
            let mut stop = stop.clone();
            let _ = stop.wait_for(|stopping| *stopping).await;
            tokio::time::sleep(shutdown_timeout).await
        } => {
            tracing::warn!(?shutdown_timeout, "in-flight calls did not finish in time; exiting anyway");
            Ok(())
        }
    };
    notify_systemd(sd_notify::NotifyState::Stopping);
    remove_socket(&socket);
    sandboxes.shutdown();
    served.context("the gRPC server failed")?;
    tracing::info!("berthd stopped");
    Ok(())
}

/// The image store's settings from the config; CA files are read now so a missing one
/// stops start-up instead of failing every pull.
fn image_settings(config: &Config) -> anyhow::Result<ImageSettings> {
    let mut hosts = std::collections::BTreeMap::new();
    for (host, h) in &config.registry.hosts {
        let ca_pem = match h.ca_file.as_str() {
            "" => None,
            path => Some(fs::read(path).with_context(|| {
                format!("registry.hosts.\"{host}\".ca_file: cannot read {path}")
            })?),
        };
        hosts.insert(host.clone(), HostSettings { ca_pem });
    }
    Ok(ImageSettings {
        registry: RegistrySettings {
            mirrors: config
                .registry
                .mirrors
                .iter()
                .map(|(h, m)| (h.clone(), m.endpoints.clone()))
                .collect(),
            hosts,
            auth_file: Some(&config.registry.auth_file)
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
            progress_timeout: Duration::from_secs(config.image.pull_progress_timeout_secs),
        },
        unpack_limits: UnpackLimits {
            max_bytes: config.image.max_layer_bytes,
            max_entries: config.image.max_layer_entries,
        },
        expansion_limits: ExpansionLimits {
            max_ratio: config.image.max_expansion_ratio,
            floor_bytes: config.image.expansion_floor_bytes,
            min_free_bytes: config.image.min_free_bytes,
        },
    })
}

/// Binds the Prometheus endpoint when `metrics.address` is set; a port in use stops
/// start-up rather than leaving a node silently unmonitored.
async fn bind_metrics(config: &Config) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    let Some(addr) =
        config.metrics.socket_addr().map_err(|e| anyhow::anyhow!("metrics.address: {e}"))?
    else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("metrics.address: cannot listen on {addr}"))?;
    tracing::info!(address = %addr, "serving metrics at /metrics");
    Ok(Some(listener))
}

/// Binds the CRI socket: parent dirs created, a stale socket replaced, mode 0660 owned by
/// root (only root and the socket's group may drive the runtime).
fn bind_socket(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(parent) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(parent)
            .with_context(|| format!("cannot create socket directory {}", parent.display()))?;
    }
    match fs::symlink_metadata(path) {
        // The state lock guarantees no other berthd owns it: it is a leftover of a crash.
        Ok(meta) if meta.file_type().is_socket() => fs::remove_file(path)
            .with_context(|| format!("cannot remove stale socket {}", path.display()))?,
        Ok(_) => {
            anyhow::bail!("{} exists and is not a socket; refusing to replace it", path.display())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", path.display())),
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot bind CRI socket {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o660))
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    if nix::unistd::geteuid().is_root() {
        nix::unistd::chown(path, Some(0.into()), Some(0.into()))
            .with_context(|| format!("cannot chown {} to root", path.display()))?;
    }
    Ok(listener)
}

fn remove_socket(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(socket = %path.display(), "cannot remove socket: {e}");
        }
    }
}

/// Turns the first SIGTERM or SIGINT into a stop request.
fn spawn_signal_watch(stop: watch::Sender<bool>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "stopping: no new calls accepted");
        stop.send_replace(true);
        // Keep the sender alive: receivers must see "stopping", never "channel closed".
        stop.closed().await;
    });
    Ok(())
}

fn notify_systemd(state: sd_notify::NotifyState) {
    if let Err(e) = sd_notify::notify(false, &[state]) {
        tracing::debug!("sd_notify failed: {e}");
    }
}
