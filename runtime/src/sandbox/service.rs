//! [`Sandboxes`]: the pod lifecycle (run, stop, remove, status, list) and start-up
//! reconciliation.

mod pod_cgroup;
mod reconcile;
mod run;
mod teardown;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use berth_network::cni::Cni;
use berth_network::netns::NetnsDir;
use berth_network::{Network, NetworkError, PodNetworkConfig, PodNetworks, Readiness};

use super::cgroup;
use super::filter::{self, Filter};
use super::ipam_store::StoredIpam;
use super::pod_shims::PodShims;
use super::pod_spec::NsMode;
use super::record::{SandboxRecord, SandboxState};
use crate::cgroupfs::{self, Hierarchy};
use crate::ids;
use crate::locks::KeyedLocks;
use crate::metadata::MetadataStore;
use crate::mount_table;
use crate::sandbox::slice;
use crate::Layout;

/// The sandbox service's errors: the runtime's.
pub type SandboxError = crate::error::RuntimeError;

impl From<NetworkError> for SandboxError {
    fn from(e: NetworkError) -> Self {
        match e {
            NetworkError::InvalidArgument(_) => SandboxError::InvalidArgument(e.to_string()),
            NetworkError::AlreadyExists(_) => SandboxError::AlreadyExists(e.to_string()),
            NetworkError::NotFound(_) => SandboxError::NotFound(e.to_string()),
            NetworkError::NotReady(_) => SandboxError::FailedPrecondition(e.to_string()),
            NetworkError::Ipam(berth_network::IpamError::Exhausted { .. }) => {
                SandboxError::ResourceExhausted(e.to_string())
            }
            e => SandboxError::Internal(format!("pod network: {e}")),
        }
    }
}

type Result<T, E = SandboxError> = std::result::Result<T, E>;

use crate::error::internal;

/// The pod service. Cheap to clone.
#[derive(Clone)]
pub struct Sandboxes {
    inner: Arc<Inner>,
}

struct Inner {
    meta: Arc<MetadataStore>,
    pods_dir: NetnsDir,
    hierarchies: Vec<Hierarchy>,
    driver: cgroup::Driver,
    /// The pod network (bridge or CNI), or why it could not be set up.
    network: std::result::Result<PodNetworks, String>,
    ipam: Option<Arc<StoredIpam>>,
    locks: KeyedLocks,
    /// Starts pods' shims early; unset (unit tests), the first container starts it.
    shims: std::sync::OnceLock<Arc<dyn PodShims>>,
}

impl Sandboxes {
    /// Opens the service: prepares `<state>/pods`, sets up the pod network (a failure
    /// there is reported by [`Sandboxes::network_readiness`], not returned: host-network
    /// pods still work) and reconciles what the store says with what is on the host.
    ///
    /// The bridge network's bridge and nftables table are made here; CNI mode makes
    /// nothing until a pod runs.
    pub async fn open(
        meta: Arc<MetadataStore>,
        layout: &Layout,
        net_config: PodNetworkConfig,
        driver: cgroup::Driver,
    ) -> Result<Self> {
        let pods_dir = NetnsDir::new(layout.state().join("pods"))
            .map_err(|e| internal(format!("pod state directory: {e}")))?;
        let hierarchies = cgroupfs::hierarchies().map_err(|e| internal(format!("cgroups: {e}")))?;
        if driver == cgroup::Driver::Systemd {
            // Scopes and slices are v2 units here; a v1 or hybrid host would need every v1
            // hierarchy kept in step by hand, which kubelets from 1.35 refuse anyway.
            if hierarchies.iter().any(|h| !h.v2) || hierarchies.is_empty() {
                return Err(internal(
                    "the systemd cgroup driver needs a cgroup v2-only host; this one mounts \
                     cgroup v1 hierarchies (use cgroup.driver = \"cgroupfs\")"
                        .to_string(),
                ));
            }
            crate::traced::spawn_blocking(|| slice::slice_active("-.slice"))
                .await
                .map_err(internal)?
                .map_err(|e| internal(format!("the systemd cgroup driver: {e}")))?;
        }
        let (network, ipam) = match net_config {
            PodNetworkConfig::Bridge(net_config) => {
                let ipam = Arc::new(StoredIpam::new(meta.clone(), net_config.subnet));
                match Network::new(net_config, ipam.clone()) {
                    Ok(n) => {
                        let n = Arc::new(n);
                        match n.ensure().await {
                            // The first pod's network, made ahead.
                            Ok(_) => n.warm_up(std::time::Duration::ZERO),
                            Err(e) => {
                                tracing::error!(error = %e, "cannot set up the bridge network; pods with their own network will fail until it works")
                            }
                        }
                        (Ok(PodNetworks::Bridge(n)), Some(ipam))
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "bridge network unusable");
                        (Err(e.to_string()), None)
                    }
                }
            }
            PodNetworkConfig::Cni(settings) => match Cni::new(settings) {
                Ok(c) => (Ok(PodNetworks::Cni(Arc::new(c))), None),
                Err(e) => {
                    tracing::error!(error = %e, "CNI network unusable");
                    (Err(e.to_string()), None)
                }
            },
        };
        let s = Sandboxes {
            inner: Arc::new(Inner {
                meta,
                pods_dir,
                hierarchies,
                driver,
                ipam,
                network,
                locks: KeyedLocks::default(),
                shims: Default::default(),
            }),
        };
        s.reconcile().await?;
        Ok(s)
    }

    /// Who starts pods' shims: from now on RunPodSandbox starts each pod's shim while it
    /// sets up the pod (set once; later calls are ignored).
    pub fn set_pod_shims(&self, shims: Arc<dyn PodShims>) {
        let _ = self.inner.shims.set(shims);
    }

    /// The NetworkReady condition.
    pub async fn network_readiness(&self) -> Readiness {
        match &self.inner.network {
            Ok(n) => n.readiness().await,
            Err(e) => Readiness::not_ready("NetworkPluginNotReady", e.clone()),
        }
    }

    /// Hands the kubelet's pod CIDR (UpdateRuntimeConfig) to the pod network.
    pub fn set_pod_cidr(&self, cidr: &str) {
        if let Ok(n) = &self.inner.network {
            n.set_pod_cidr(cidr);
        }
    }

    /// CNI CHECK of a ready pod's network (CNI mode only; the cached ADD result is what
    /// the plugins check against).
    pub async fn check_network(&self, wanted: &str) -> Result<()> {
        let rec = self.status(wanted)?;
        let Some(cni) = self.inner.network.as_ref().ok().and_then(PodNetworks::cni) else {
            return Err(SandboxError::FailedPrecondition(
                "network CHECK needs the CNI network mode".into(),
            ));
        };
        let Some(netns) = rec.netns.as_ref().filter(|_| rec.state == SandboxState::Ready) else {
            return Err(SandboxError::FailedPrecondition(format!(
                "pod {} has no network of its own to check",
                rec.id
            )));
        };
        Ok(cni.check(&rec.id, netns).await?)
    }

    /// Network facts for `crictl info`: mode, config and lease count.
    pub fn network_info(&self) -> serde_json::Value {
        let leases = self.inner.ipam.as_ref().and_then(|i| i.holders().ok()).map(|h| h.len());
        match &self.inner.network {
            Ok(PodNetworks::Cni(c)) => c.info(),
            Ok(PodNetworks::Bridge(n)) => serde_json::json!({
                "mode": "bridge",
                "bridge": n.config().bridge,
                "subnet": n.config().subnet.to_string(),
                "gateway": n.gateway().to_string(),
                "nftTable": n.config().nft_table,
                "leases": leases,
            }),
            Err(e) => serde_json::json!({ "error": e }),
        }
    }

    fn network(&self) -> Result<PodNetworks> {
        self.inner.network.clone().map_err(|e| {
            SandboxError::FailedPrecondition(format!("the pod network is not ready: {e}"))
        })
    }

    /// The full id of a pod named by its id or a unique prefix of it ([`ids::resolve`]).
    fn resolve(&self, wanted: &str) -> Result<Option<String>> {
        // Two keys starting with `wanted` tell all three answers apart (the exact one sorts
        // first), without decoding any record.
        let keys = self.inner.meta.keys_with_prefix::<SandboxRecord>(wanted, 2)?;
        ids::resolve("pod_sandbox_id", wanted, keys.iter().map(String::as_str))
    }

    /// One pod, by id or unique prefix.
    pub fn status(&self, wanted: &str) -> Result<SandboxRecord> {
        let not_found = || SandboxError::NotFound(format!("pod sandbox {wanted:?} not found"));
        let id = self.resolve(wanted)?.ok_or_else(not_found)?;
        match self.inner.meta.get::<SandboxRecord>(&id)? {
            Some(r) if r.state != SandboxState::Creating => Ok(r),
            _ => Err(not_found()),
        }
    }

    /// The verbose `info` of PodSandboxStatus, as JSON.
    pub fn verbose_info(&self, rec: &SandboxRecord) -> String {
        let first_mount = self.inner.hierarchies.first().map(|h| h.mount.join(&rec.cgroup));
        serde_json::json!({
            "pid": serde_json::Value::Null,
            "pidNamespace": match rec.pid {
                NsMode::Pod => "pod: created by the pod shim with the first container (no init process yet)",
                NsMode::Node => "node",
                _ => "container",
            },
            "netnsPath": rec.netns,
            "ipcNamespace": rec.ipc_ns,
            "utsNamespace": rec.uts_ns,
            "shm": rec.shm,
            "cgroupParent": format!("/{}", rec.cgroup),
            "cgroupPaths": self.inner.hierarchies.iter().map(|h| h.mount.join(&rec.cgroup)).collect::<Vec<_>>(),
            "cgroup": first_mount,
            "runtimeHandler": rec.runtime_handler,
            "hostname": rec.hostname,
            "hostnamePath": rec.dir.join("hostname"),
            "resolvConfPath": rec.dir.join("resolv.conf"),
            "hostsPath": rec.dir.join("hosts"),
            "logDirectory": rec.log_directory,
            "ip": rec.ip,
            "ips": rec.ips,
            "veth": rec.veth,
            "portMappings": rec.port_mappings.iter().map(|p| serde_json::json!({
                "protocol": p.protocol, "hostPort": p.host_port,
                "containerPort": p.container_port, "hostIP": p.host_ip,
            })).collect::<Vec<_>>(),
            "sysctls": rec.sysctls,
            "resources": rec.resources,
        })
        .to_string()
    }

    /// The pods `filter` keeps, oldest first.
    /// The pods `filter` keeps, oldest first; shared with other readers (the kubelet
    /// relists every second: no copy of every record per call).
    pub fn list(&self, filter: &Filter) -> Result<Vec<Arc<SandboxRecord>>> {
        let all: Vec<Arc<SandboxRecord>> = self
            .inner
            .meta
            .list_shared::<SandboxRecord>()?
            .iter()
            .map(|(_, r)| r.clone())
            .collect();
        let mut out = filter::apply(filter, all);
        out.sort_by_key(|r| r.created_at);
        Ok(out)
    }

    /// At daemon exit: when no pod is left, the pods directory's own mount is taken away
    /// so berthd leaves no mount behind; with pods, it stays (their pins live in it).
    pub fn shutdown(&self) {
        let dir = self.inner.pods_dir.path();
        let below: Vec<PathBuf> =
            mount_table::mounts_under(dir).into_iter().filter(|m| m != dir).collect();
        if below.is_empty() {
            if let Err(e) = self.inner.pods_dir.unmount() {
                tracing::warn!(error = %e, "cannot unmount the pods directory");
            }
        }
    }
}

/// Helper for callers holding a CRI map.
pub fn to_btree<I: IntoIterator<Item = (String, String)>>(it: I) -> BTreeMap<String, String> {
    it.into_iter().collect()
}
