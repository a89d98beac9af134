//! berthd's configuration: TOML, every key with a default.
//!
//! An absent file means the embedded defaults. An unknown key or a bad value stops
//! start-up with a message naming the key, because a typo silently ignored on a node is
//! worse than a daemon that refuses to start.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where berthd looks for its config when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/berth/config.toml";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Persistent state: images, snapshots, the metadata database.
    pub root: PathBuf,
    /// Volatile state: shim sockets, namespace pins, exit files, the lock file.
    pub state: PathBuf,
    /// The CRI socket the kubelet connects to.
    pub socket: PathBuf,
    /// How long in-flight calls may run after SIGTERM/SIGINT before berthd exits anyway.
    pub shutdown_timeout_secs: u64,
    pub log: LogConfig,
    pub cgroup: CgroupConfig,
    pub image: ImageConfig,
    pub registry: RegistryConfig,
    pub network: NetworkConfig,
    pub containers: ContainersConfig,
    /// Extra runtime handlers (RuntimeClass), by name: an OCI runtime binary that runs the
    /// same bundle the native executor would. The default handler `""` is native.
    pub runtimes: BTreeMap<String, RuntimeHandlerConfig>,
    pub tracing: TracingConfig,
    pub metrics: MetricsConfig,
    pub streaming: StreamingConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            root: "/var/lib/berth".into(),
            state: "/run/berth".into(),
            socket: "/run/berth/berth.sock".into(),
            shutdown_timeout_secs: 10,
            log: LogConfig::default(),
            cgroup: CgroupConfig::default(),
            image: ImageConfig::default(),
            registry: RegistryConfig::default(),
            network: NetworkConfig::default(),
            containers: ContainersConfig::default(),
            runtimes: BTreeMap::new(),
            tracing: TracingConfig::default(),
            metrics: MetricsConfig::default(),
            streaming: StreamingConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeHandlerConfig {
    /// The runtime binary, e.g. `/usr/bin/runc` or `/usr/bin/crun`.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContainersConfig {
    /// Most processes (and threads) one container may have; 0: no limit. A node-wide
    /// guard against fork bombs, as the kubelet's pod pids limit is per pod.
    pub pids_limit: i64,
    /// The per-pod shim binary. Empty: `berth-shim` next to berthd's own binary.
    pub shim_binary: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter: a level (`info`) or directives (`info,berth_runtime=debug`).
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into(), format: LogFormat::Text }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CgroupConfig {
    pub driver: CgroupDriver,
}

/// `cgroupfs`: berth makes pod and container cgroups itself. `systemd`: pods are slices
/// and containers transient scopes, made over D-Bus (cgroup v2 hosts only), which is what
/// a kubelet with `cgroupDriver: systemd` expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    #[default]
    Cgroupfs,
    Systemd,
}

impl CgroupDriver {
    pub fn runtime(self) -> berth_runtime::sandbox::cgroup::Driver {
        match self {
            CgroupDriver::Cgroupfs => berth_runtime::sandbox::cgroup::Driver::Cgroupfs,
            CgroupDriver::Systemd => berth_runtime::sandbox::cgroup::Driver::Systemd,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageConfig {
    /// A pull that receives nothing from the registry for this long is aborted.
    pub pull_progress_timeout_secs: u64,
    /// Refuse a layer that unpacks to more than this many bytes (a decompression bomb).
    pub max_layer_bytes: u64,
    /// Refuse a layer with more than this many entries.
    pub max_layer_entries: u64,
    /// Refuse a layer that unpacks to more than this many times the compressed bytes
    /// read so far (a decompression bomb), once past `expansion_floor_bytes`; 0: off.
    pub max_expansion_ratio: u64,
    /// Unpacked bytes any layer may reach before `max_expansion_ratio` applies.
    pub expansion_floor_bytes: u64,
    /// Refuse to go on unpacking when the filesystem under `root` has less than this
    /// many bytes available; 0: off.
    pub min_free_bytes: u64,
    /// Images reported as pinned (`Image.pinned`), which the kubelet's image garbage
    /// collection never removes: references (`registry.k8s.io/pause:3.10`) or ids.
    pub pinned: Vec<String>,
}

impl Default for ImageConfig {
    fn default() -> Self {
        let expansion = berth_runtime::snapshot::ExpansionLimits::default();
        Self {
            pull_progress_timeout_secs: 60,
            max_layer_bytes: 64 << 30,
            max_layer_entries: 10_000_000,
            max_expansion_ratio: expansion.max_ratio,
            expansion_floor_bytes: expansion.floor_bytes,
            min_free_bytes: expansion.min_free_bytes,
            pinned: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// A docker-style `config.json` whose `auths` are used when a pull brings no
    /// credentials of its own. Empty: none.
    pub auth_file: String,
    /// Per registry host (`docker.io`, `registry.k8s.io`, …): endpoints tried in order
    /// before the registry itself. A mirror keeps the repository path.
    pub mirrors: BTreeMap<String, MirrorConfig>,
    /// Per endpoint host (`host[:port]`): TLS settings.
    pub hosts: BTreeMap<String, HostConfig>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostConfig {
    /// A PEM file of CA certificates to trust for this host, besides the system's.
    pub ca_file: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MirrorConfig {
    /// Base URLs such as `http://127.0.0.1:5000` (plain HTTP) or `https://mirror.example`.
    pub endpoints: Vec<String>,
}

/// Where pods' networks come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// berth's own bridge, IPAM and hostPort rules (`bridge`, `subnet`, `nft_table`, `mtu`).
    #[default]
    Bridge,
    /// CNI plugins (`conf_dir`, `bin_dirs`, `plugin_timeout_secs`).
    Cni,
}

/// The pod network: the built-in bridge (default) or CNI plugins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// `bridge` (berth's own) or `cni` (the plugins of `conf_dir`).
    pub mode: NetworkMode,
    /// CNI mode: the directory whose first `.conflist`/`.conf`/`.json` (by name) is the
    /// pod network; re-read when it changes.
    pub conf_dir: PathBuf,
    /// CNI mode: where plugin binaries are looked for, in order (`CNI_PATH`).
    pub bin_dirs: Vec<PathBuf>,
    /// CNI mode: how long one plugin call may take before it is killed and the call fails.
    pub plugin_timeout_secs: u64,
    /// The bridge pods' veths attach to.
    pub bridge: String,
    /// The pod subnet (IPv4); its first host address is the bridge's (the pods' gateway).
    pub subnet: String,
    /// The nftables table (family `ip`) berth keeps its masquerade and hostPort rules in.
    pub nft_table: String,
    /// MTU of the bridge and pods' interfaces; unset: the uplink's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Bridge mode: keep one pod network (a network namespace with its veth pair) made
    /// ahead, so that the next pod adopts it instead of making its own on its start.
    pub warm_pod: bool,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            mode: NetworkMode::Bridge,
            conf_dir: "/etc/cni/net.d".into(),
            bin_dirs: vec!["/opt/cni/bin".into()],
            plugin_timeout_secs: 60,
            bridge: "berth0".into(),
            subnet: "10.88.0.0/16".into(),
            nft_table: "berth".into(),
            mtu: None,
            warm_pod: true,
        }
    }
}

impl NetworkConfig {
    /// berth-network's view of it (validated by [`Config::validate`]).
    pub fn to_network(&self) -> Result<berth_network::NetworkConfig, String> {
        let subnet: ipnet::Ipv4Net = self
            .subnet
            .parse()
            .map_err(|e| format!("{:?} is not an IPv4 subnet (a.b.c.d/n): {e}", self.subnet))?;
        Ok(berth_network::NetworkConfig {
            bridge: self.bridge.clone(),
            subnet,
            nft_table: self.nft_table.clone(),
            mtu: self.mtu,
            warm: self.warm_pod,
        })
    }

    /// The pod network to build; CNI's result cache goes under `root`.
    pub fn to_pod_network(&self, root: &Path) -> Result<berth_network::PodNetworkConfig, String> {
        Ok(match self.mode {
            NetworkMode::Bridge => berth_network::PodNetworkConfig::Bridge(self.to_network()?),
            NetworkMode::Cni => {
                berth_network::PodNetworkConfig::Cni(berth_network::cni::CniSettings {
                    conf_dir: self.conf_dir.clone(),
                    bin_dirs: self.bin_dirs.clone(),
                    plugin_timeout: std::time::Duration::from_secs(self.plugin_timeout_secs),
                    cache_dir: root.join("cni/results"),
                })
            }
        })
    }
}

/// Longest plugin timeout accepted (an hour): longer is a typo, and would hold a
/// RunPodSandbox that long.
const MAX_PLUGIN_TIMEOUT_SECS: u64 = 3600;

/// Export of spans over OTLP/gRPC.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracingConfig {
    /// The OTLP/gRPC collector, `http://HOST:PORT` (usually port 4317). Empty: no export.
    pub endpoint: String,
    /// Of the traces that start in berthd (calls without a W3C `traceparent`), how many
    /// in a million are recorded: 0 = none, 1000000 = all. A call that brings a
    /// `traceparent` follows its caller's decision (its sampled flag, which the kubelet
    /// sets by its own `samplingRatePerMillion`), so one trace is never half recorded.
    pub sampling_rate_per_million: u32,
}

/// The streaming server behind Exec, Attach and PortForward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamingConfig {
    /// The IP address to listen on. The URLs carry it, so the kubelet (or whoever the
    /// kubelet hands them to) must reach it.
    pub address: String,
    /// The TCP port; 0: a free port chosen at start.
    pub port: u16,
    /// How long a URL stays usable (it is usable once).
    pub token_ttl_secs: u64,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        Self { address: "127.0.0.1".into(), port: 0, token_ttl_secs: 60 }
    }
}

/// The Prometheus endpoint.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// `IP:PORT` to serve `/metrics` on, e.g. `127.0.0.1:9090`. Empty: no endpoint.
    pub address: String,
}

impl MetricsConfig {
    /// The address to listen on, if the endpoint is on.
    pub fn socket_addr(&self) -> Result<Option<std::net::SocketAddr>, String> {
        if self.address.is_empty() {
            return Ok(None);
        }
        self.address
            .parse()
            .map(Some)
            .map_err(|_| format!("{:?} is not an IP:PORT address", self.address))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: key `{key}`: {message}", path.display())]
    Key { path: PathBuf, key: String, message: String },
    #[error("{}: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
}

impl Config {
    /// Parses a config file's text. `origin` is only used in error messages.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::parse(text).map_err(|e| ConfigError::Syntax {
            path: origin.to_path_buf(),
            message: e.message().to_string(),
        })?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let message = inner.message().to_string();
            // serde_path_to_error already ends the path with the unknown key's name.
            let message =
                if message.starts_with("unknown field") { "unknown key".into() } else { message };
            ConfigError::Key { path: origin.to_path_buf(), key, message }
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    /// Loads the config berthd should run with: `explicit` if given (it must exist), else
    /// [`DEFAULT_CONFIG_PATH`] when present, else the embedded defaults.
    pub fn load(explicit: Option<&Path>) -> Result<(Self, Option<PathBuf>), ConfigError> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => DEFAULT_CONFIG_PATH.into(),
            None => return Ok((Self::default(), None)),
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|source| ConfigError::Read { path: path.clone(), source })?;
        Ok((Self::parse(&text, &path)?, Some(path)))
    }

    /// The complete default config as TOML; parses back to `Config::default()`.
    pub fn default_toml() -> String {
        let body = toml::to_string_pretty(&Self::default()).expect("default config serializes");
        format!(
            "# berthd configuration. Every key is shown with its default value.\n\
             # Mirrors are added per registry host, for example:\n\
             #   [registry.mirrors.\"registry.k8s.io\"]\n\
             #   endpoints = [\"http://127.0.0.1:5000\"]\n\n{body}"
        )
    }

    /// Checks values serde cannot: absolute paths, log filter syntax, mirror URLs.
    pub fn validate(&self, origin: &Path) -> Result<(), ConfigError> {
        let bad = |key: &str, message: String| ConfigError::Key {
            path: origin.to_path_buf(),
            key: key.into(),
            message,
        };
        for (key, path) in [("root", &self.root), ("state", &self.state), ("socket", &self.socket)]
        {
            if !path.is_absolute() {
                return Err(bad(key, format!("must be an absolute path, got {:?}", path)));
            }
        }
        if let Err(why) = check_log_filter(&self.log.level) {
            let message = format!("invalid log filter {:?}: {why}", self.log.level);
            return Err(bad("log.level", message));
        }
        for (host, mirror) in &self.registry.mirrors {
            let key = format!("registry.mirrors.\"{host}\".endpoints");
            if host.is_empty() || host.contains('/') {
                return Err(bad(&key, format!("{host:?} is not a registry host name")));
            }
            for endpoint in &mirror.endpoints {
                berth_runtime::image::reference::parse_mirror_url(endpoint)
                    .map_err(|e| bad(&key, e.to_string()))?;
            }
        }
        if self.image.pull_progress_timeout_secs == 0 {
            return Err(bad("image.pull_progress_timeout_secs", "must be at least 1".into()));
        }
        for (host, h) in &self.registry.hosts {
            if !h.ca_file.is_empty() && !Path::new(&h.ca_file).is_absolute() {
                let key = format!("registry.hosts.\"{host}\".ca_file");
                return Err(bad(&key, format!("must be an absolute path, got {:?}", h.ca_file)));
            }
        }
        if !self.registry.auth_file.is_empty() && !Path::new(&self.registry.auth_file).is_absolute()
        {
            return Err(bad("registry.auth_file", "must be an absolute path".into()));
        }
        let net = self.network.to_network().map_err(|e| bad("network.subnet", e))?;
        if net.subnet.prefix_len() > 30 {
            return Err(bad("network.subnet", format!("{} has no room for pods", net.subnet)));
        }
        berth_network::bridge::validate_ifname(&net.bridge)
            .map_err(|e| bad("network.bridge", e.to_string()))?;
        berth_network::Firewall::new(&net.nft_table, net.subnet, &net.bridge)
            .map_err(|e| bad("network.nft_table", e.to_string()))?;
        if let Some(mtu) = net.mtu {
            if !(68..=65535).contains(&mtu) {
                return Err(bad("network.mtu", format!("{mtu} is not 68-65535")));
            }
        }
        if !self.network.conf_dir.is_absolute() {
            let dir = &self.network.conf_dir;
            return Err(bad("network.conf_dir", format!("must be an absolute path, got {dir:?}")));
        }
        if self.network.bin_dirs.is_empty() {
            return Err(bad("network.bin_dirs", "must name at least one directory".into()));
        }
        for (i, dir) in self.network.bin_dirs.iter().enumerate() {
            let s = dir.to_string_lossy();
            if !dir.is_absolute() || s.contains(':') {
                return Err(bad(
                    &format!("network.bin_dirs[{i}]"),
                    format!("must be an absolute path without ':', got {dir:?}"),
                ));
            }
        }
        let timeout = self.network.plugin_timeout_secs;
        if !(1..=MAX_PLUGIN_TIMEOUT_SECS).contains(&timeout) {
            return Err(bad(
                "network.plugin_timeout_secs",
                format!("{timeout} is not 1-{MAX_PLUGIN_TIMEOUT_SECS}"),
            ));
        }
        if !self.tracing.endpoint.is_empty() {
            check_otlp_endpoint(&self.tracing.endpoint).map_err(|e| bad("tracing.endpoint", e))?;
        }
        if self.tracing.sampling_rate_per_million > 1_000_000 {
            let rate = self.tracing.sampling_rate_per_million;
            return Err(bad(
                "tracing.sampling_rate_per_million",
                format!("{rate} is not 0-1000000"),
            ));
        }
        self.metrics.socket_addr().map_err(|e| bad("metrics.address", e))?;
        Ok(())
    }
}

/// A level (`info`) or `target=level` directives. tracing would take a bare word as a
/// target name, so `level = "loud"` would silently log nothing; refuse it instead.
fn check_log_filter(filter: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = directive.rsplit_once('=').map_or(directive, |(_, level)| level);
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!("{level:?} is not one of {}", LEVELS.join(", ")));
        }
    }
    tracing_subscriber::EnvFilter::builder().parse(filter).map(drop).map_err(|e| e.to_string())
}

/// `http://host:port`: the exporter speaks plain gRPC (no TLS is built in), and a
/// missing port would silently mean 80, not the collector's 4317.
fn check_otlp_endpoint(endpoint: &str) -> Result<(), String> {
    let uri: http::Uri = endpoint.parse().map_err(|e| format!("{endpoint:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(format!("{endpoint:?}: https is not supported; use http://")),
        _ => return Err(format!("{endpoint:?} must be http://HOST:PORT")),
    }
    let authority = uri.authority().ok_or_else(|| format!("{endpoint:?} names no host"))?;
    if authority.port_u16().is_none() || authority.host().is_empty() {
        return Err(format!("{endpoint:?} must name a host and port (http://HOST:4317)"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!("{endpoint:?}: an OTLP/gRPC endpoint has no path"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn default_toml_round_trips() {
        assert_eq!(parse(&Config::default_toml()).unwrap(), Config::default());
    }

    #[test]
    fn mirrors_parse() {
        let c = parse(
            "[registry.mirrors.\"registry.k8s.io\"]\nendpoints = [\"http://127.0.0.1:5000\"]\n",
        )
        .unwrap();
        assert_eq!(c.registry.mirrors["registry.k8s.io"].endpoints, ["http://127.0.0.1:5000"]);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse("rooot = \"/x\"").unwrap_err().to_string();
        assert!(err.contains("`rooot`"), "{err}");
        let err = parse("[log]\nlevle = \"debug\"").unwrap_err().to_string();
        assert!(err.contains("`log.levle`"), "{err}");
        let err = parse("[registry.mirrors.\"docker.io\"]\nendpoint = []").unwrap_err().to_string();
        assert!(err.contains("endpoint`"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let err = parse("[log]\nformat = \"xml\"").unwrap_err().to_string();
        assert!(err.contains("`log.format`"), "{err}");
        let err = parse("[cgroup]\ndriver = \"systemdd\"").unwrap_err().to_string();
        assert!(err.contains("`cgroup.driver`"), "{err}");
        assert_eq!(
            parse("[cgroup]\ndriver = \"systemd\"").unwrap().cgroup.driver,
            CgroupDriver::Systemd
        );
        let err = parse("shutdown_timeout_secs = -1").unwrap_err().to_string();
        assert!(err.contains("`shutdown_timeout_secs`"), "{err}");
        let err = parse("root = \"relative\"").unwrap_err().to_string();
        assert!(err.contains("`root`"), "{err}");
        let err = parse("[registry.mirrors.\"docker.io\"]\nendpoints = [\"ftp://127.0.0.1:5000\"]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("registry.mirrors.\"docker.io\".endpoints"), "{err}");
        let err = parse("[log]\nlevel = \"loud\"").unwrap_err().to_string();
        assert!(err.contains("`log.level`"), "{err}");
        let err = parse("[network]\nsubnet = \"10.0.0.0/31\"").unwrap_err().to_string();
        assert!(err.contains("`network.subnet`"), "{err}");
        let err = parse("[network]\nsubnet = \"nope\"").unwrap_err().to_string();
        assert!(err.contains("`network.subnet`"), "{err}");
        let err = parse("[network]\nbridge = \"a/b\"").unwrap_err().to_string();
        assert!(err.contains("`network.bridge`"), "{err}");
        let err = parse("[network]\nnft_table = \"x y\"").unwrap_err().to_string();
        assert!(err.contains("`network.nft_table`"), "{err}");
        let err = parse("[network]\nmtu = 10").unwrap_err().to_string();
        assert!(err.contains("`network.mtu`"), "{err}");
        let err = parse("[network]\nmode = \"calico\"").unwrap_err().to_string();
        assert!(err.contains("`network.mode`"), "{err}");
        let err = parse("[network]\nconf_dir = \"net.d\"").unwrap_err().to_string();
        assert!(err.contains("`network.conf_dir`"), "{err}");
        let err = parse("[network]\nbin_dirs = []").unwrap_err().to_string();
        assert!(err.contains("`network.bin_dirs`"), "{err}");
        let err = parse("[network]\nbin_dirs = [\"/a\", \"b\"]").unwrap_err().to_string();
        assert!(err.contains("`network.bin_dirs[1]`"), "{err}");
        for t in ["0", "3601", "-1"] {
            let err = parse(&format!("[network]\nplugin_timeout_secs = {t}")).unwrap_err();
            assert!(err.to_string().contains("`network.plugin_timeout_secs`"), "{err}");
        }
        let c = parse("[network]\nbridge = \"bt0\"\nsubnet = \"10.1.0.0/24\"\nmtu = 1400").unwrap();
        assert_eq!(c.network.to_network().unwrap().mtu, Some(1400));
    }

    #[test]
    fn cni_mode() {
        let c = parse(
            "[network]\nmode = \"cni\"\nconf_dir = \"/etc/net\"\nbin_dirs = [\"/a\", \"/b\"]\n\
             plugin_timeout_secs = 5",
        )
        .unwrap();
        assert_eq!(c.network.mode, NetworkMode::Cni);
        match c.network.to_pod_network(Path::new("/var/lib/berth")).unwrap() {
            berth_network::PodNetworkConfig::Cni(s) => {
                assert_eq!(s.conf_dir, Path::new("/etc/net"));
                assert_eq!(s.bin_dirs, [Path::new("/a"), Path::new("/b")]);
                assert_eq!(s.plugin_timeout, std::time::Duration::from_secs(5));
                assert_eq!(s.cache_dir, Path::new("/var/lib/berth/cni/results"));
            }
            other => panic!("{other:?}"),
        }
        let d = Config::default().network;
        assert_eq!(d.mode, NetworkMode::Bridge);
        assert_eq!(d.conf_dir, Path::new("/etc/cni/net.d"));
        assert_eq!(d.bin_dirs, [Path::new("/opt/cni/bin")]);
        assert_eq!(d.plugin_timeout_secs, 60);
    }

    #[test]
    fn default_toml_shows_telemetry_off() {
        let t = Config::default_toml();
        assert!(t.contains("[tracing]\nendpoint = \"\"\nsampling_rate_per_million = 0\n"), "{t}");
        assert!(t.contains("[metrics]\naddress = \"\"\n"), "{t}");
    }

    #[test]
    fn telemetry_keys_are_checked() {
        let c = parse(
            "[tracing]\nendpoint = \"http://127.0.0.1:4317\"\nsampling_rate_per_million = 1000000\n\
             [metrics]\naddress = \"127.0.0.1:9090\"",
        )
        .unwrap();
        assert_eq!(c.tracing.sampling_rate_per_million, 1_000_000);
        assert_eq!(c.metrics.socket_addr().unwrap(), Some("127.0.0.1:9090".parse().unwrap()));
        assert_eq!(Config::default().metrics.socket_addr().unwrap(), None);
        for (text, key) in [
            ("[tracing]\nendpoint = \"127.0.0.1:4317\"", "`tracing.endpoint`"),
            ("[tracing]\nendpoint = \"http://collector\"", "`tracing.endpoint`"),
            ("[tracing]\nendpoint = \"https://collector:4317\"", "`tracing.endpoint`"),
            ("[tracing]\nendpoint = \"http://c:4317/v1/traces\"", "`tracing.endpoint`"),
            (
                "[tracing]\nsampling_rate_per_million = 1000001",
                "`tracing.sampling_rate_per_million`",
            ),
            ("[tracing]\nsampling_rate_per_million = -1", "`tracing.sampling_rate_per_million`"),
            ("[tracing]\nendpont = \"\"", "`tracing.endpont`"),
            ("[metrics]\naddress = \"localhost\"", "`metrics.address`"),
            ("[metrics]\naddress = \"9090\"", "`metrics.address`"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text:?}: {err}");
        }
    }

    #[test]
    fn layer_bounds() {
        let d = Config::default().image;
        assert_eq!(
            (d.max_expansion_ratio, d.expansion_floor_bytes, d.min_free_bytes),
            (100, 512 << 20, 1 << 30)
        );
        let t = Config::default_toml();
        for key in [
            "max_expansion_ratio = 100\n",
            "expansion_floor_bytes = 536870912\n",
            "min_free_bytes = 1073741824\n",
        ] {
            assert!(t.contains(key), "{key} missing from {t}");
        }
        let c = parse("[image]\nmax_expansion_ratio = 0\nmin_free_bytes = 0\n").unwrap();
        assert_eq!((c.image.max_expansion_ratio, c.image.min_free_bytes), (0, 0));
        for key in ["max_expansion_ratio", "expansion_floor_bytes", "min_free_bytes"] {
            for value in ["-1", "\"big\"", "1.5"] {
                let err = parse(&format!("[image]\n{key} = {value}")).unwrap_err().to_string();
                assert!(err.contains(&format!("`image.{key}`")), "{key} = {value}: {err}");
            }
        }
        let err = parse("[image]\nmax_expansion = 5").unwrap_err().to_string();
        assert!(err.contains("`image.max_expansion`"), "{err}");
    }

    #[test]
    fn syntax_error_is_reported() {
        let err = parse("root = ").unwrap_err().to_string();
        assert!(err.contains("test.toml"), "{err}");
    }
}
