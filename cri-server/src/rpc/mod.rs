//! The CRI services. `runtime_service.rs` and `image_service.rs` are the tonic trait
//! impls and only dispatch; each group of RPCs lives in its own file, thin: validate,
//! call the domain, map the answer.

mod container_checkpoint;
mod container_create;
mod container_events;
mod container_exec_sync;
mod container_lifecycle;
pub mod container_spec;
mod container_stats;
mod container_status;
mod container_update;
mod errors;
mod image_fs_info;
mod image_pull;
mod image_remove;
mod image_service;
mod image_status;
mod list_streams;
// The ledger of the request surface; only its test reads it.
#[cfg(test)]
mod request_surface;
mod runtime_config;
mod runtime_service;
mod sandbox_list;
mod sandbox_metrics;
mod sandbox_remove;
mod sandbox_run;
mod sandbox_stats;
mod sandbox_status;
mod sandbox_stop;
mod sandbox_update;
mod status;
mod streaming_urls;
mod version;

use crate::config::Config;
use crate::streaming::Streaming;
use berth_runtime::container::Containers;
use berth_runtime::image::Images;
use berth_runtime::sandbox::Sandboxes;
use berth_runtime::stats::Stats;
use berth_runtime::Layout;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// What every handler can reach. Cheap to clone: tonic wants one value per service.
#[derive(Clone)]
pub struct Cri {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    config_path: Option<PathBuf>,
    layout: Layout,
    /// Set by the kubelet through UpdateRuntimeConfig; handed to the network when it asks.
    pod_cidr: Mutex<String>,
    images: Images,
    sandboxes: Sandboxes,
    containers: Arc<Containers>,
    stats: Stats,
    streaming: Streaming,
}

impl Cri {
    pub fn new(
        config: Config,
        config_path: Option<PathBuf>,
        layout: Layout,
        images: Images,
        sandboxes: Sandboxes,
        containers: Arc<Containers>,
        streaming: Streaming,
    ) -> Self {
        let pod_cidr = Mutex::new(String::new());
        let stats = Stats::new().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the cgroup mounts; stats will be zeros");
            Stats::with_hierarchies(Vec::new())
        });
        Self {
            inner: Arc::new(Inner {
                config,
                config_path,
                layout,
                pod_cidr,
                images,
                sandboxes,
                containers,
                stats,
                streaming,
            }),
        }
    }
}
