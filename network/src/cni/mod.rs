//! CNI plugin mode: the pod network comes from the standard CNI plugins, configured by the
//! first config file in the conf dir, with libcni's semantics (ADD in list order with
//! `prevResult` chaining, DEL in reverse order from the cached result, CHECK, a result
//! cache that outlives config changes and restarts).
//!
//! * [`config`]: finding, parsing and re-reading the config file;
//! * [`request`]: `CNI_ARGS`, capabilities' `runtimeConfig`, each plugin's stdin;
//! * [`invoke`]: running one plugin binary with a timeout;
//! * [`result`]: the pod addresses in a result;
//! * [`cache`]: the on-disk result cache;
//! * [`Cni`]: the facade the runtime calls (through [`crate::PodNetworks`]).

pub mod cache;
pub mod config;
pub mod invoke;
pub mod request;
pub mod result;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use ipnet::IpNet;
use serde_json::{Map, Value};

use crate::error::{validate_pod_id, NetworkError, Result};
use crate::readiness::Readiness;
use cache::{CacheEntry, ResultCache};
use config::{ConfigWatch, NetworkList};
use invoke::{Command, Invocation};
pub use request::{Dns, PodRequest};

/// The interface name every pod gets.
pub const IFNAME: &str = "eth0";

/// Settings of CNI mode (berth config keys, but the cache dir, which is under berth's
/// persistent root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniSettings {
    /// Where the network config is, default `/etc/cni/net.d`.
    pub conf_dir: PathBuf,
    /// Where plugin binaries are looked up, in order; default `/opt/cni/bin`.
    pub bin_dirs: Vec<PathBuf>,
    /// How long one plugin call may take before it is killed.
    pub plugin_timeout: Duration,
    /// The result cache, `<root>/cni/results`.
    pub cache_dir: PathBuf,
}

/// What ADD gave a pod.
#[derive(Debug, Clone, PartialEq)]
pub struct CniAttachment {
    /// The network's name.
    pub network: String,
    /// The pod's addresses, IPv4 first.
    pub ips: Vec<IpNet>,
    /// The final result.
    pub result: Value,
}

/// The CNI pod network.
#[derive(Debug)]
pub struct Cni {
    settings: CniSettings,
    watch: ConfigWatch,
    cache: ResultCache,
    pod_cidr: Mutex<String>,
}

/// The list to run, with its binaries, as of now.
struct Usable {
    list: NetworkList,
    binaries: Vec<PathBuf>,
}

impl Cni {
    /// CNI mode with `settings`. Reads nothing yet: the config is loaded on use.
    pub fn new(settings: CniSettings) -> Result<Self> {
        if settings.plugin_timeout.is_zero() {
            return Err(NetworkError::InvalidArgument("CNI plugin timeout must be > 0".into()));
        }
        for p in std::iter::once(&settings.conf_dir).chain(&settings.bin_dirs) {
            if !p.is_absolute() {
                return Err(NetworkError::InvalidArgument(format!(
                    "CNI path {} must be absolute",
                    p.display()
                )));
            }
        }
        if settings.bin_dirs.is_empty() {
            return Err(NetworkError::InvalidArgument("CNI bin_dirs must not be empty".into()));
        }
        Ok(Cni {
            watch: ConfigWatch::new(settings.conf_dir.clone()),
            cache: ResultCache::new(settings.cache_dir.clone()),
            settings,
            pod_cidr: Mutex::new(String::new()),
        })
    }

    pub fn settings(&self) -> &CniSettings {
        &self.settings
    }

    pub fn cache(&self) -> &ResultCache {
        &self.cache
    }

    /// The pod CIDR from the kubelet (UpdateRuntimeConfig): what `usePodCidr` in the
    /// config stands for.
    pub fn set_pod_cidr(&self, cidr: &str) {
        *self.pod_cidr.lock().unwrap_or_else(|p| p.into_inner()) = cidr.to_string();
    }

    pub fn pod_cidr(&self) -> String {
        self.pod_cidr.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn cni_path(&self) -> String {
        let dirs: Vec<String> =
            self.settings.bin_dirs.iter().map(|d| d.display().to_string()).collect();
        dirs.join(":")
    }

    fn binaries(&self, list: &NetworkList) -> std::result::Result<Vec<PathBuf>, String> {
        list.plugin_types()
            .into_iter()
            .map(|t| {
                config::find_plugin(&self.settings.bin_dirs, t).ok_or_else(|| {
                    format!(
                        "CNI plugin {t:?} of network {:?} ({}) not found in {}",
                        list.name,
                        list.file.display(),
                        self.cni_path()
                    )
                })
            })
            .collect()
    }

    /// The current config and its binaries, or why pods cannot be networked.
    fn usable(&self) -> std::result::Result<Usable, String> {
        let current = self.watch.current();
        let list = current.as_ref().as_ref().map_err(Clone::clone)?.clone();
        let binaries = self.binaries(&list)?;
        Ok(Usable { list, binaries })
    }

    /// NetworkReady: a valid config exists and all its plugins are installed.
    pub fn readiness(&self) -> Readiness {
        match self.usable() {
            Ok(_) => Readiness::Ready,
            Err(message) => Readiness::not_ready("NetworkPluginNotReady", message),
        }
    }

    /// Facts for `crictl info`.
    pub fn info(&self) -> Value {
        let current = self.watch.current();
        let attachments = self.cache.entries().map(|e| e.len()).ok();
        let mut info = serde_json::json!({
            "mode": "cni",
            "confDir": self.settings.conf_dir,
            "binDirs": self.settings.bin_dirs,
            "pluginTimeoutSecs": self.settings.plugin_timeout.as_secs(),
            "cacheDir": self.cache.dir(),
            "podCIDR": self.pod_cidr(),
            // Pods holding an attachment (a cached ADD result).
            "leases": attachments,
        });
        match current.as_ref() {
            Ok(list) => {
                info["configFile"] = list.file.display().to_string().into();
                info["network"] = list.name.clone().into();
                info["cniVersion"] = list.cni_version.clone().into();
                info["plugins"] = list.plugin_types().into();
                if let Err(e) = self.binaries(list) {
                    info["error"] = e.into();
                }
            }
            Err(e) => info["error"] = e.clone().into(),
        }
        info
    }

    /// The pod ids that have a cached attachment, with the netns each was added in.
    pub fn cached_pods(&self) -> Result<Vec<(String, PathBuf)>> {
        Ok(self.cache.entries()?.into_iter().map(|(_, e)| (e.container_id, e.netns)).collect())
    }

    /// ADD: runs every plugin of the current list in order. On failure, DEL runs for the
    /// whole list (best effort) and the error names the plugin.
    #[tracing::instrument(name = "cni.add", skip_all, fields(pod_id = %req.pod_id))]
    pub async fn add(&self, req: &PodRequest) -> Result<CniAttachment> {
        validate_pod_id(&req.pod_id)?;
        let Usable { list, binaries } = self.usable().map_err(NetworkError::NotReady)?;
        let caps = req.capability_args().map_err(NetworkError::InvalidArgument)?;
        let mut list_json = list.to_json();
        request::substitute_pod_cidr(&mut list_json, &self.pod_cidr())
            .map_err(|e| NetworkError::NotReady(format!("{}: {e}", list.file.display())))?;
        let Value::Object(obj) = list_json.clone() else { unreachable!("to_json is an object") };
        let list = NetworkList::from_list(&list.file, obj).map_err(NetworkError::NotReady)?;
        let args = req.cni_args();
        // The loopback is the runtime's in CNI mode (as containerd and CRI-O do it).
        crate::bridge::loopback_up(&req.netns).await?;

        let netns = req.netns.display().to_string();
        let args_text = request::cni_args_string(&args);
        let cni_path = self.cni_path();
        let inv = Invocation {
            command: Command::Add,
            container_id: &req.pod_id,
            netns: &netns,
            ifname: IFNAME,
            args: &args_text,
            path: &cni_path,
        };
        let mut prev: Option<Value> = None;
        for (plugin, binary) in list.plugins.iter().zip(&binaries) {
            let stdin =
                request::plugin_stdin(&list.name, &list.cni_version, plugin, prev.as_ref(), &caps);
            let ty = plugin.get("type").and_then(Value::as_str).unwrap_or("?");
            let out = self.call(binary, &inv, &stdin).await;
            let parsed = out.and_then(|bytes| {
                serde_json::from_slice::<Value>(&bytes)
                    .map_err(|e| format!("printed no JSON result: {e}"))
            });
            match parsed {
                Ok(result) => prev = Some(result),
                Err(why) => {
                    let err = NetworkError::Plugin(format!(
                        "CNI plugin {ty} ({}) ADD of network {:?} for pod {} failed: {why}",
                        binary.display(),
                        list.name,
                        req.pod_id
                    ));
                    self.rollback(&list, &binaries, &inv, prev.as_ref(), &caps).await;
                    return Err(err);
                }
            }
        }
        let result = prev.unwrap_or_else(|| serde_json::json!({"cniVersion": list.cni_version}));
        let ips = match result::pod_ips(&result, IFNAME) {
            Ok(ips) => ips,
            Err(e) => {
                self.rollback(&list, &binaries, &inv, Some(&result), &caps).await;
                return Err(NetworkError::Plugin(format!("network {:?}: {e}", list.name)));
            }
        };
        let entry = CacheEntry {
            kind: cache::KIND.into(),
            container_id: req.pod_id.clone(),
            if_name: IFNAME.into(),
            network_name: list.name.clone(),
            config_file: list.file.clone(),
            netns: req.netns.clone(),
            config: list_json,
            cni_args: args,
            capability_args: caps.clone(),
            result: result.clone(),
        };
        if let Err(e) = self.cache.write(&entry) {
            self.rollback(&list, &binaries, &inv, Some(&result), &caps).await;
            return Err(e);
        }
        tracing::info!(network = %list.name, ips = ?ips, "CNI ADD done");
        Ok(CniAttachment { network: list.name, ips, result })
    }

    /// Runs one plugin; the error is a sentence.
    async fn call(
        &self,
        binary: &Path,
        inv: &Invocation<'_>,
        stdin: &Value,
    ) -> std::result::Result<Vec<u8>, String> {
        let bytes = serde_json::to_vec(stdin).map_err(|e| e.to_string())?;
        tracing::debug!(plugin = %binary.display(), command = inv.command.as_str(), "CNI plugin call");
        invoke::run(binary, inv, &bytes, self.settings.plugin_timeout)
            .await
            .map_err(|e| e.to_string())
    }

    /// After a failed ADD: DEL for every plugin, in reverse, errors only logged.
    async fn rollback(
        &self,
        list: &NetworkList,
        binaries: &[PathBuf],
        add: &Invocation<'_>,
        prev: Option<&Value>,
        caps: &Map<String, Value>,
    ) {
        let inv = Invocation { command: Command::Del, ..add.clone() };
        if let Err(e) = self.del_list(list, binaries, &inv, prev, caps).await {
            tracing::warn!(pod_id = add.container_id, error = %e, "CNI DEL after a failed ADD");
        }
    }

    /// DEL for every plugin of `list` in reverse order. Every plugin is called; the
    /// first error is returned.
    async fn del_list(
        &self,
        list: &NetworkList,
        binaries: &[PathBuf],
        inv: &Invocation<'_>,
        prev: Option<&Value>,
        caps: &Map<String, Value>,
    ) -> std::result::Result<(), String> {
        // libcni hands the cached result to DEL from 0.4.0 on.
        let prev = prev.filter(|_| version_at_least(&list.cni_version, (0, 4, 0)));
        let mut first = None;
        for (plugin, binary) in list.plugins.iter().zip(binaries).rev() {
            let stdin = request::plugin_stdin(&list.name, &list.cni_version, plugin, prev, caps);
            if let Err(why) = self.call(binary, inv, &stdin).await {
                let ty = plugin.get("type").and_then(Value::as_str).unwrap_or("?");
                first.get_or_insert(format!(
                    "CNI plugin {ty} ({}) DEL of network {:?} for pod {} failed: {why}",
                    binary.display(),
                    list.name,
                    inv.container_id
                ));
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// DEL: from the cached attachment when there is one (its list, arguments and result;
    /// the cache entry is removed only when every plugin succeeded), else — when the pod's
    /// netns still exists, so it may hold something — with the current config. With
    /// neither there is nothing to do. `CNI_NETNS` is empty once the netns is gone.
    #[tracing::instrument(name = "cni.del", skip_all, fields(pod_id = %req.pod_id))]
    pub async fn del(&self, req: &PodRequest) -> Result<()> {
        validate_pod_id(&req.pod_id)?;
        let live_ns = crate::netns::is_netns(&req.netns);
        let netns = if live_ns { req.netns.display().to_string() } else { String::new() };
        let cni_path = self.cni_path();
        let cached = self.cache.find(&req.pod_id, IFNAME)?;
        if cached.is_empty() {
            if !live_ns {
                return Ok(());
            }
            let Ok(Usable { list, binaries }) = self.usable() else {
                tracing::debug!("no cached CNI result and no usable config: nothing to delete");
                return Ok(());
            };
            let caps = req.capability_args().unwrap_or_default();
            let args = request::cni_args_string(&req.cni_args());
            let inv = Invocation {
                command: Command::Del,
                container_id: &req.pod_id,
                netns: &netns,
                ifname: IFNAME,
                args: &args,
                path: &cni_path,
            };
            return self
                .del_list(&list, &binaries, &inv, None, &caps)
                .await
                .map_err(NetworkError::Plugin);
        }
        for (path, entry) in cached {
            let list = cached_list(&path, &entry)?;
            let binaries = self.binaries(&list).map_err(NetworkError::NotReady)?;
            let args = request::cni_args_string(&entry.cni_args);
            let inv = Invocation {
                command: Command::Del,
                container_id: &req.pod_id,
                netns: &netns,
                ifname: &entry.if_name,
                args: &args,
                path: &cni_path,
            };
            self.del_list(&list, &binaries, &inv, Some(&entry.result), &entry.capability_args)
                .await
                .map_err(NetworkError::Plugin)?;
            self.cache.remove(&path)?;
            tracing::info!(network = %list.name, "CNI DEL done");
        }
        Ok(())
    }

    /// CHECK (CNI 0.4.0 and later): every plugin of the cached list, in order, with the
    /// cached result as `prevResult`. A pod without a cached attachment is `NotFound`.
    pub async fn check(&self, pod_id: &str, netns: &Path) -> Result<()> {
        validate_pod_id(pod_id)?;
        let cached = self.cache.find(pod_id, IFNAME)?;
        let Some((path, entry)) = cached.into_iter().next() else {
            return Err(NetworkError::NotFound(format!("no CNI attachment of pod {pod_id}")));
        };
        let list = cached_list(&path, &entry)?;
        if !version_at_least(&list.cni_version, (0, 4, 0)) {
            return Err(NetworkError::InvalidArgument(format!(
                "CNI CHECK needs cniVersion 0.4.0 or later; network {:?} is {}",
                list.name, list.cni_version
            )));
        }
        if list.disable_check {
            return Ok(());
        }
        let binaries = self.binaries(&list).map_err(NetworkError::NotReady)?;
        let netns = netns.display().to_string();
        let args = request::cni_args_string(&entry.cni_args);
        let cni_path = self.cni_path();
        let inv = Invocation {
            command: Command::Check,
            container_id: pod_id,
            netns: &netns,
            ifname: &entry.if_name,
            args: &args,
            path: &cni_path,
        };
        for (plugin, binary) in list.plugins.iter().zip(&binaries) {
            let stdin = request::plugin_stdin(
                &list.name,
                &list.cni_version,
                plugin,
                Some(&entry.result),
                &entry.capability_args,
            );
            if let Err(why) = self.call(binary, &inv, &stdin).await {
                let ty = plugin.get("type").and_then(Value::as_str).unwrap_or("?");
                return Err(NetworkError::Plugin(format!(
                    "CNI plugin {ty} CHECK of network {:?} for pod {pod_id} failed: {why}",
                    list.name
                )));
            }
        }
        Ok(())
    }
}

/// The plugin list an ADD used, as its cache entry at `path` keeps it (DEL and CHECK run
/// that list, not the current config).
fn cached_list(path: &Path, entry: &CacheEntry) -> Result<NetworkList> {
    let Value::Object(obj) = entry.config.clone() else {
        return Err(NetworkError::Plugin(format!(
            "CNI cache {} holds no plugin list",
            path.display()
        )));
    };
    NetworkList::from_list(&entry.config_file, obj)
        .map_err(|e| NetworkError::Plugin(format!("CNI cache {}: {e}", path.display())))
}

fn version_at_least(v: &str, min: (u32, u32, u32)) -> bool {
    config::parse_version(v).is_some_and(|v| v >= min)
}
