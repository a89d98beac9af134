//! [`Sandboxes`]: the pod lifecycle (run, stop, remove, status, list) and start-up
//! reconciliation.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Arc;

use berth_network::cni::{self, Cni, PodRequest};
use berth_network::netns::{self, NetnsDir};
use berth_network::{
    Network, NetworkError, PodNetworkConfig, PodNetworks, PortMapping, Protocol, Readiness,
};

use super::cgroup::{self, Hierarchy};
use super::files;
use super::filter::{self, Filter};
use super::ipam_store::StoredIpam;
use super::mounts;
use super::namespaces::{self, NsRequest};
use super::pod_shims::PodShims;
use super::record::{CgroupDirRecord, NameRecord, PortRecord, SandboxRecord, SandboxState};
use super::spec::{self, NsMode, PodSpec, Resources, ValidSpec};
use super::sysctl::SysctlNs;
use super::undo::Undo;
use super::userns;
use crate::clock::now_ns;
use crate::ids::{self, new_id};
use crate::image::locks::KeyedLocks;
use crate::metadata::{MetadataError, MetadataStore};
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
        let hierarchies = cgroup::hierarchies().map_err(|e| internal(format!("cgroups: {e}")))?;
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
            crate::traced::spawn_blocking(|| cgroup::slice_active("-.slice"))
                .await
                .map_err(internal)?
                .map_err(|e| internal(format!("the systemd cgroup driver: {e}")))?;
        }
        let (network, ipam) = match net_config {
            PodNetworkConfig::Bridge(net_config) => {
                let ipam = Arc::new(StoredIpam::new(meta.clone(), net_config.subnet));
                match Network::new(net_config, ipam.clone()) {
                    Ok(n) => {
                        if let Err(e) = n.ensure().await {
                            tracing::error!(error = %e, "cannot set up the bridge network; pods with their own network will fail until it works");
                        }
                        (Ok(PodNetworks::Bridge(Arc::new(n))), Some(ipam))
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

    /// Runs a pod: validates the request, then creates everything, or nothing.
    pub async fn run(&self, spec: PodSpec) -> Result<String> {
        let v = spec::validate(spec, self.inner.driver).map_err(SandboxError::InvalidArgument)?;
        // PID mode POD (the CRI default): the pod's containers are to share one PID
        // namespace with an init as PID 1. berthd never forks, so that namespace and its
        // init come from the pod shim with the first container; the sandbox itself has no
        // process, and says so in its verbose status.
        if !v.host_network() {
            if let Err(e) = &self.inner.network {
                return Err(SandboxError::FailedPrecondition(format!(
                    "the pod network is not ready: {e}"
                )));
            }
        }
        // On a task of its own: a caller that goes away does not stop set-up half-way
        // (and if it did, the undo stack would still clean up).
        let this = self.clone();
        let setup = async move {
            // One set-up per pod name at a time: the kubelet's retry of a RunPodSandbox that
            // outlived its deadline waits here, then gets the pod the first call made.
            let key = v.metadata.key();
            let _name_lock = this.inner.locks.lock(format!("name/{key}")).await;
            if let Some(id) = this.finished_twin(&key, &v)? {
                return Ok(id);
            }
            let id = new_id().map_err(internal)?;
            this.run_inner(id.clone(), v).await.map(|()| id)
        };
        tokio::spawn(tracing::Instrument::in_current_span(setup))
            .await
            .map_err(|e| internal(format!("pod set-up task: {e}")))?
    }

    /// The ready pod an identical earlier request made under this name, if any. A pod
    /// under the name that differs, or is no longer ready, keeps the name reserved.
    fn finished_twin(&self, key: &str, v: &ValidSpec) -> Result<Option<String>> {
        let Some(holder) = self.inner.meta.get::<NameRecord>(key)? else { return Ok(None) };
        let rec = self.inner.meta.get::<SandboxRecord>(&holder.sandbox_id)?;
        match rec {
            Some(r)
                if r.state == SandboxState::Ready
                    && r.labels == v.spec.labels
                    && r.annotations == v.spec.annotations
                    && r.runtime_handler == v.spec.runtime_handler
                    && r.log_directory == v.spec.log_directory =>
            {
                Ok(Some(r.id))
            }
            _ => Err(SandboxError::AlreadyExists(format!(
                "pod sandbox name {key:?} is reserved for {}",
                holder.sandbox_id
            ))),
        }
    }

    async fn run_inner(&self, id: String, v: ValidSpec) -> Result<()> {
        let _lock = self.inner.locks.lock(id.clone()).await;
        let started = std::time::Instant::now();
        let dir = self.inner.pods_dir.path().join(&id);
        let cgroup_rel = match self.inner.driver {
            cgroup::Driver::Cgroupfs => cgroup::pod_cgroup(&v.spec.cgroup_parent, &id),
            cgroup::Driver::Systemd => {
                crate::systemd::pod_slice(&v.spec.cgroup_parent, &id).map(|(_, rel)| rel).map_err(
                    |e| SandboxError::InvalidArgument(format!("config.linux.cgroup_parent: {e}")),
                )?
            }
        };
        let mut rec = SandboxRecord {
            id: id.clone(),
            metadata: v.metadata.clone(),
            state: SandboxState::Creating,
            created_at: now_ns(),
            labels: v.spec.labels.clone(),
            annotations: v.spec.annotations.clone(),
            runtime_handler: v.spec.runtime_handler.clone(),
            hostname: v.spec.hostname.clone(),
            log_directory: v.spec.log_directory.clone(),
            dns: v.spec.dns.clone(),
            network: v.spec.network,
            pid: v.spec.pid,
            ipc: v.spec.ipc,
            dir: dir.clone(),
            cgroup: cgroup_rel.clone(),
            resources: v.spec.resources,
            port_mappings: v
                .port_mappings
                .iter()
                .map(|m| PortRecord {
                    protocol: format!("{:?}", m.protocol).to_lowercase(),
                    host_port: m.host_port,
                    container_port: m.container_port,
                    host_ip: m.host_ip,
                })
                .collect(),
            sysctls: v.spec.sysctls.clone(),
            ..Default::default()
        };
        let mut undo = Undo::default();
        match self.create(&mut rec, &v, &mut undo).await {
            Ok(()) => {
                undo.commit();
                tracing::info!(pod_id = %id, name = %v.metadata.key(), ip = ?rec.ip, elapsed_ms = started.elapsed().as_secs_f64() * 1000.0, "pod sandbox ready");
                Ok(())
            }
            Err(e) => {
                tracing::info!(pod_id = %id, error = %e, "pod sandbox failed; undoing");
                undo.rollback().await;
                Err(e)
            }
        }
    }

    async fn create(&self, rec: &mut SandboxRecord, v: &ValidSpec, undo: &mut Undo) -> Result<()> {
        let id = rec.id.clone();
        let meta = self.inner.meta.clone();

        // 1. The record and the name reservation, in one transaction.
        let key = v.metadata.key();
        {
            let mut tx = meta.write()?;
            if let Some(holder) = tx.get::<NameRecord>(&key)? {
                return Err(SandboxError::AlreadyExists(format!(
                    "pod sandbox name {key:?} is reserved for {}",
                    holder.sandbox_id
                )));
            }
            tx.put(&key, &NameRecord { sandbox_id: id.clone() })?;
            tx.put(&id, &*rec)?;
            tx.commit()?;
        }
        {
            let (meta, id, key) = (meta.clone(), id.clone(), key.clone());
            undo.push("record", move || {
                let mut tx = meta.write().map_err(|e| e.to_string())?;
                tx.delete::<SandboxRecord>(&id).map_err(|e| e.to_string())?;
                tx.delete::<NameRecord>(&key).map_err(|e| e.to_string())?;
                tx.commit().map_err(|e| e.to_string())
            });
        }

        crate::failpoint::crash_point("sandbox.recorded");
        // The pod's shim starts now, beside the rest of the set-up, and is not waited for:
        // the first container waits for it if it has to. After a crash from here on,
        // start-up stops a shim whose pod it removed.
        if let Some(shims) = self.inner.shims.get() {
            shims.clone().start_early(&id);
            let (shims, id) = (shims.clone(), id.clone());
            undo.push_async("shim", move || async move {
                crate::traced::spawn_blocking(move || shims.discard(&id))
                    .await
                    .map_err(|e| e.to_string())
            });
        }
        // 2. The pod's directory (everything below goes in it).
        let dir = rec.dir.clone();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(dir.join("ns"))
            .map_err(|e| internal(format!("create {}: {e}", dir.display())))?;
        {
            let dir = dir.clone();
            undo.push("pod directory", move || mounts::remove_tree(&dir));
        }

        // 3. Namespaces. With a user namespace, net, IPC and UTS are made inside it (so
        // it owns them) and only configured from here.
        let mut req = NsRequest {
            ipc: (!v.host_ipc()).then(|| dir.join("ns/ipc")),
            uts: (!v.host_network()).then(|| (dir.join("ns/uts"), v.spec.hostname.clone())),
            ipc_sysctls: v.sysctls.iter().filter(|s| s.ns == SysctlNs::Ipc).cloned().collect(),
            existing: false,
        };
        if let Some(userns) = v.userns {
            let pins = userns::Pins {
                user: dir.join("ns/user"),
                net: dir.join("ns/net"),
                ipc: dir.join("ns/ipc"),
                uts: dir.join("ns/uts"),
            };
            rec.userns = Some(userns);
            rec.user_ns = Some(pins.user.clone());
            rec.netns = Some(pins.net.clone());
            let made = pins.clone();
            crate::traced::spawn_blocking(move || userns::create(&userns, &made))
                .await
                .map_err(internal)?
                .map_err(internal)?;
            undo.push("user namespace pins", move || {
                userns::remove(&pins);
                Ok(())
            });
            req.existing = true;
        } else if !v.host_network() {
            let pin = dir.join("ns/net");
            netns::create_at(&pin)?;
            rec.netns = Some(pin.clone());
            undo.push("netns pin", move || netns::remove(&pin).map_err(|e| e.to_string()));
        }
        crate::failpoint::crash_point("sandbox.netns");
        rec.ipc_ns = req.ipc.clone();
        rec.uts_ns = req.uts.as_ref().map(|(p, _)| p.clone());
        let pins: Vec<PathBuf> = rec.ipc_ns.iter().chain(rec.uts_ns.iter()).cloned().collect();
        crate::traced::spawn_blocking(move || namespaces::create(req))
            .await
            .map_err(internal)??;
        undo.push("ipc/uts pins", move || pins.iter().try_for_each(|p| namespaces::remove_pin(p)));

        // 4. /dev/shm.
        if v.host_ipc() {
            rec.shm = Some(PathBuf::from("/dev/shm"));
        } else {
            let shm = dir.join("shm");
            mounts::mount_shm(&shm, mounts::SHM_SIZE).map_err(internal)?;
            rec.shm = Some(shm.clone());
            undo.push("shm", move || mounts::unmount(&shm));
        }

        // 5. The pod cgroup. What will be made is recorded first, so that a crash at any
        // point leaves a record start-up can clean up from (removal tolerates what was
        // never made, and keeps a parent another pod still uses).
        if let Some(unit) = cgroup::slice_unit(&rec.cgroup).map(str::to_string) {
            self.make_pod_slice(rec, &unit, v.spec.resources.as_ref(), undo).await?;
        } else {
            self.make_pod_cgroup(rec, v.spec.resources.as_ref(), undo)?;
        }

        // 6. The network, then the net sysctls (some name the pod's eth0).
        if let Some(pin) = rec.netns.clone() {
            let network = self.network()?;
            {
                let (network, req) = (network.clone(), pod_request(rec, &pin));
                undo.push_async("network", move || async move {
                    network.teardown_pod(&req).await.map_err(|e| e.to_string())
                });
            }
            let got = network.setup_pod(&pod_request(rec, &pin)).await?;
            crate::failpoint::crash_point("sandbox.network");
            rec.ip = got.ipv4();
            rec.ips = got.ips;
            rec.veth = got.veth;
            let net_sysctls: Vec<_> =
                v.sysctls.iter().filter(|s| s.ns == SysctlNs::Net).cloned().collect();
            if !net_sysctls.is_empty() {
                netns::run_in_async(&pin, move || {
                    net_sysctls.iter().try_for_each(namespaces::write_sysctl)
                })
                .await??;
            }
        }

        // 7. hostname, resolv.conf, hosts.
        let (hostname, hosts) = if v.host_network() {
            let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
            (files::host_hostname(), hosts)
        } else {
            (v.spec.hostname.clone(), files::hosts(&v.spec.hostname, rec.ip))
        };
        let resolv = match &v.spec.dns {
            Some(dns) => files::resolv_conf(dns),
            None => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        };
        for (name, text) in
            [("hostname", format!("{hostname}\n")), ("resolv.conf", resolv), ("hosts", hosts)]
        {
            let path = dir.join(name);
            std::fs::write(&path, text)
                .map_err(|e| internal(format!("write {}: {e}", path.display())))?;
        }

        // 8. Ready.
        rec.state = SandboxState::Ready;
        let mut tx = meta.write()?;
        tx.put(&id, &*rec)?;
        tx.commit()?;
        Ok(())
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

    /// Stops a pod: its network is torn down (hostPort rules, veth, netns, IP lease) and
    /// it becomes NOTREADY. A pod that is gone or already stopped is fine.
    pub async fn stop(&self, wanted: &str) -> Result<()> {
        let Some(id) = self.resolve(wanted)? else { return Ok(()) };
        let _lock = self.inner.locks.lock(id.clone()).await;
        let Some(mut rec) = self.inner.meta.get::<SandboxRecord>(&id)? else { return Ok(()) };
        self.stop_locked(&mut rec).await
    }

    async fn stop_locked(&self, rec: &mut SandboxRecord) -> Result<()> {
        // NOTREADY is recorded before anything is torn down, and the teardown (idempotent)
        // runs on every stop and at start-up for NOTREADY pods: a crash half-way through
        // never leaves a pod READY without its network, nor a stopped one holding it.
        if rec.state != SandboxState::NotReady {
            rec.state = SandboxState::NotReady;
            rec.ip = None;
            rec.ips.clear();
            rec.veth = None;
            let mut tx = self.inner.meta.write()?;
            tx.put(&rec.id, &*rec)?;
            tx.commit()?;
            crate::failpoint::crash_point("sandbox.stopping");
        }
        self.teardown_network(rec).await?;
        tracing::info!(pod_id = %rec.id, "pod sandbox stopped");
        Ok(())
    }

    async fn teardown_network(&self, rec: &SandboxRecord) -> Result<()> {
        if let Some(pin) = &rec.netns {
            match &self.inner.network {
                Ok(n) => n.teardown_pod(&pod_request(rec, pin)).await?,
                Err(e) => tracing::warn!(pod_id = %rec.id, error = %e, "no network to tear down"),
            }
            netns::remove(pin)?;
        }
        if let Some(ipam) = &self.inner.ipam {
            use berth_network::IpAllocator;
            ipam.release(&rec.id)?;
        }
        Ok(())
    }

    /// The pod cgroup with the cgroupfs driver: the directories missing are recorded
    /// before they are made.
    fn make_pod_cgroup(
        &self,
        rec: &mut SandboxRecord,
        resources: Option<&Resources>,
        undo: &mut Undo,
    ) -> Result<()> {
        let meta = self.inner.meta.clone();
        let hs = self.inner.hierarchies.clone();
        let rel = rec.cgroup.clone();
        let planned = cgroup::missing(&hs, &rel);
        rec.cgroup_created = planned.clone();
        {
            let mut tx = meta.write()?;
            for p in planned.iter().filter(|d| !d.ends_with(&rel)) {
                tx.put(&p.to_string_lossy(), &CgroupDirRecord {})?;
            }
            tx.put(&rec.id, &*rec)?;
            tx.commit()?;
        }
        {
            let (meta, hs, rel, planned) = (meta.clone(), hs.clone(), rel.clone(), planned.clone());
            undo.push("cgroup", move || {
                cgroup::remove(&planned, &rel)?;
                remove_berth_parents(&meta, &hs, &rel).map_err(|e| e.to_string())
            });
        }
        cgroup::create(&hs, &rel).map_err(internal)?;
        crate::failpoint::crash_point("sandbox.cgroup");
        if let Some(r) = resources {
            cgroup::apply(&hs, &rec.cgroup, r).map_err(SandboxError::InvalidArgument)?;
        }

        Ok(())
    }

    /// The pod slice with the systemd driver. The kubelet normally made it; if not, berth
    /// starts it (recorded first, like a cgroupfs directory) and stops it with the last
    /// pod in it. Pod-level limits go to systemd as the slice's properties.
    async fn make_pod_slice(
        &self,
        rec: &mut SandboxRecord,
        unit: &str,
        resources: Option<&Resources>,
        undo: &mut Undo,
    ) -> Result<()> {
        let on_bus = |f: Box<dyn FnOnce() -> Result<(), String> + Send>| async move {
            crate::traced::spawn_blocking(f).await.map_err(internal)
        };
        let active = {
            let unit = unit.to_string();
            crate::traced::spawn_blocking(move || cgroup::slice_active(&unit))
                .await
                .map_err(internal)?
                .map_err(internal)?
        };
        // Another pod of berth's in the same slice: berth started it, whoever stops it.
        let ours = !active
            || self
                .pods_in_slice(&rec.id, &rec.cgroup)?
                .iter()
                .any(|r| !r.cgroup_created.is_empty());
        let v2 = self.inner.hierarchies.iter().find(|h| h.v2).map(|h| h.mount.clone());
        rec.cgroup_created =
            if ours { v2.iter().map(|m| m.join(&rec.cgroup)).collect() } else { Vec::new() };
        {
            let mut tx = self.inner.meta.write()?;
            tx.put(&rec.id, &*rec)?;
            tx.commit()?;
        }
        if !active {
            let (this, id, u) = (self.clone(), rec.id.clone(), unit.to_string());
            undo.push("pod slice", move || this.release_pod_slice(&id, &u, true));
            let (unit, r) = (unit.to_string(), resources.cloned());
            on_bus(Box::new(move || cgroup::start_slice(&unit, r.as_ref())))
                .await?
                .map_err(internal)?;
        } else if let Some(r) = resources.cloned() {
            let unit = unit.to_string();
            on_bus(Box::new(move || cgroup::set_slice_limits(&unit, &r)))
                .await?
                .map_err(SandboxError::InvalidArgument)?;
        }
        // The pod's containers get every controller berth limits, as with cgroupfs (systemd
        // enables only those its units ask for, and never hugetlb).
        if let Some(mount) = &v2 {
            cgroup::delegate_down(mount, std::path::Path::new(&rec.cgroup))
                .map_err(|e| internal(format!("pod slice: {}", e.0)))?;
        }
        crate::failpoint::crash_point("sandbox.cgroup");
        Ok(())
    }

    /// Removes what berth made of the pod cgroup: its directories (cgroupfs), or the
    /// slice it started unless another pod still uses it (systemd).
    fn remove_pod_cgroup(&self, rec: &SandboxRecord) -> Result<()> {
        if let Some(unit) = cgroup::slice_unit(&rec.cgroup) {
            return self
                .release_pod_slice(&rec.id, unit, !rec.cgroup_created.is_empty())
                .map_err(|e| SandboxError::FailedPrecondition(format!("pod slice: {e}")));
        }
        cgroup::remove(&rec.cgroup_created, &rec.cgroup).map_err(|e| {
            SandboxError::FailedPrecondition(format!("pod cgroup still in use: {e}"))
        })?;
        remove_berth_parents(&self.inner.meta, &self.inner.hierarchies, &rec.cgroup)?;
        Ok(())
    }

    /// The records of the other pods in the pod cgroup `rel` (a slice several pods share,
    /// like critest's `test.slice`).
    fn pods_in_slice(&self, id: &str, rel: &str) -> Result<Vec<SandboxRecord>> {
        Ok(self
            .inner
            .meta
            .list::<SandboxRecord>()?
            .into_iter()
            .filter(|(other, r)| other != id && r.cgroup == rel)
            .map(|(_, r)| r)
            .collect())
    }

    /// Stops the pod slice berth started unless another pod of berth's still uses it.
    fn release_pod_slice(&self, id: &str, unit: &str, started: bool) -> Result<(), String> {
        if !started {
            return Ok(());
        }
        let rel = crate::systemd::expand_slice(unit)?;
        if !self.pods_in_slice(id, &rel).map_err(|e| e.to_string())?.is_empty() {
            return Ok(());
        }
        cgroup::stop_slice(unit)
    }

    /// Removes a pod (stopping it first if needed): pins, shm, files, cgroup, record.
    /// A pod that is gone is fine.
    pub async fn remove(&self, wanted: &str) -> Result<()> {
        let Some(id) = self.resolve(wanted)? else { return Ok(()) };
        let _lock = self.inner.locks.lock(id.clone()).await;
        let Some(mut rec) = self.inner.meta.get::<SandboxRecord>(&id)? else { return Ok(()) };
        if rec.state != SandboxState::NotReady {
            // A pod still being created (or a crash leftover) is torn down the same way.
            self.teardown_network(&rec).await?;
            rec.state = SandboxState::NotReady;
        }
        if let (Some(_), Ok(network)) = (&rec.netns, &self.inner.network) {
            network.settle_pod(&rec.id).await?;
        }
        // Unmounts, cgroup removal and (systemd driver) stopping the slice over D-Bus block:
        // off the async workers.
        let (this, r) = (self.clone(), rec.clone());
        crate::traced::spawn_blocking(move || this.remove_host_state(&r))
            .await
            .map_err(internal)??;
        let mut tx = self.inner.meta.write()?;
        tx.delete::<SandboxRecord>(&id)?;
        let key = rec.metadata.key();
        if tx.get::<NameRecord>(&key)?.is_some_and(|n| n.sandbox_id == id) {
            tx.delete::<NameRecord>(&key)?;
        }
        tx.commit()?;
        tracing::info!(pod_id = %id, "pod sandbox removed");
        Ok(())
    }

    fn remove_host_state(&self, rec: &SandboxRecord) -> Result<()> {
        // The user namespace last: the others are its.
        let pins = rec.ipc_ns.iter().chain(&rec.uts_ns).chain(&rec.netns).chain(&rec.user_ns);
        for pin in pins {
            namespaces::remove_pin(pin).map_err(internal)?;
        }
        if let Some(shm) = rec.shm.as_ref().filter(|p| p.starts_with(&rec.dir)) {
            mounts::unmount(shm).map_err(internal)?;
        }
        cgroup::kill_leftovers(&self.inner.hierarchies, &rec.cgroup)
            .map_err(|e| SandboxError::FailedPrecondition(format!("pod cgroup: {e}")))?;
        self.remove_pod_cgroup(rec)?;
        if rec.dir.starts_with(self.inner.pods_dir.path()) && rec.dir != self.inner.pods_dir.path()
        {
            mounts::remove_tree(&rec.dir).map_err(internal)?;
        }
        Ok(())
    }

    /// In-place pod resize: new pod-level limits on the pod cgroup, recorded with the pod.
    /// `field` names the request field the limits came from, for errors.
    pub async fn update_resources(&self, wanted: &str, r: Resources, field: &str) -> Result<()> {
        super::spec::validate_resources(&r, field).map_err(SandboxError::InvalidArgument)?;
        let not_found = || SandboxError::NotFound(format!("pod sandbox {wanted:?} not found"));
        let id = self.resolve(wanted)?.ok_or_else(not_found)?;
        let _lock = self.inner.locks.lock(id.clone()).await;
        let mut rec = match self.inner.meta.get::<SandboxRecord>(&id)? {
            Some(r) if r.state != SandboxState::Creating => r,
            _ => return Err(not_found()),
        };
        if rec.state == SandboxState::NotReady {
            return Err(SandboxError::FailedPrecondition(format!(
                "pod sandbox {id} is stopped: its resources cannot change"
            )));
        }
        let applied = match cgroup::slice_unit(&rec.cgroup) {
            Some(unit) => {
                let unit = unit.to_string();
                crate::traced::spawn_blocking(move || cgroup::set_slice_limits(&unit, &r))
                    .await
                    .map_err(internal)?
            }
            None => cgroup::apply(&self.inner.hierarchies, &rec.cgroup, &r),
        };
        applied.map_err(|e| {
            SandboxError::InvalidArgument(format!("{field}: the pod cgroup refused it: {e}"))
        })?;
        rec.resources = Some(r);
        let mut tx = self.inner.meta.write()?;
        tx.put(&rec.id, &rec)?;
        tx.commit()?;
        Ok(())
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

    /// Start-up: pods whose set-up was interrupted are removed; pods whose namespaces are
    /// gone (the host rebooted, the state dir was wiped) become NOTREADY and their network,
    /// cgroups and leases are cleaned; rules, leases and directories that belong to no pod
    /// are removed.
    async fn reconcile(&self) -> Result<()> {
        let records = self.inner.meta.list::<SandboxRecord>()?;
        for (id, mut rec) in records {
            match rec.state {
                SandboxState::Creating => {
                    tracing::warn!(pod_id = %id, "removing a pod whose set-up was interrupted");
                    if let Err(e) = self.remove(&id).await {
                        tracing::error!(pod_id = %id, error = %e, "cannot remove interrupted pod");
                    }
                }
                SandboxState::Ready => {
                    let pins: Vec<&PathBuf> = rec
                        .netns
                        .iter()
                        .chain(&rec.ipc_ns)
                        .chain(&rec.uts_ns)
                        .chain(&rec.user_ns)
                        .collect();
                    if pins.iter().all(|p| namespaces::is_pin(p)) {
                        continue;
                    }
                    tracing::warn!(pod_id = %id, "pod namespaces are gone (host reboot?); marking NOTREADY");
                    if let Err(e) = self.teardown_network(&rec).await {
                        tracing::error!(pod_id = %id, error = %e, "cannot tear down network");
                    }
                    for pin in rec.ipc_ns.iter().chain(&rec.uts_ns).chain(&rec.user_ns) {
                        let _ = namespaces::remove_pin(pin);
                    }
                    if let Err(e) = self.remove_pod_cgroup(&rec) {
                        tracing::warn!(pod_id = %id, error = %e, "cannot remove pod cgroup");
                    }
                    rec.state = SandboxState::NotReady;
                    rec.ip = None;
                    rec.ips.clear();
                    rec.veth = None;
                    let mut tx = self.inner.meta.write()?;
                    tx.put(&id, &rec)?;
                    tx.commit()?;
                }
                SandboxState::NotReady => {
                    // A stop may have been cut off between recording NOTREADY and the
                    // teardown; finishing it again is harmless.
                    if let Err(e) = self.teardown_network(&rec).await {
                        tracing::warn!(pod_id = %id, error = %e, "cannot finish tearing down a stopped pod's network");
                    }
                }
            }
        }
        let live: HashSet<String> = self
            .inner
            .meta
            .list::<SandboxRecord>()?
            .into_iter()
            .filter(|(_, r)| r.state == SandboxState::Ready)
            .map(|(k, _)| k)
            .collect();
        let known: HashSet<String> =
            self.inner.meta.list::<SandboxRecord>()?.into_iter().map(|(k, _)| k).collect();
        if let Ok(network) = &self.inner.network {
            network.remove_stale(&live).await;
        }
        if let Some(ipam) = &self.inner.ipam {
            use berth_network::IpAllocator;
            for holder in ipam.holders()?.into_iter().filter(|h| !live.contains(h)) {
                tracing::info!(pod_id = %holder, "releasing stale IP lease");
                ipam.release(&holder)?;
            }
        }
        if let Ok(entries) = std::fs::read_dir(self.inner.pods_dir.path()) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !known.contains(&name) {
                    tracing::info!(dir = %entry.path().display(), "removing stale pod directory");
                    if let Err(e) = mounts::remove_tree(&entry.path()) {
                        tracing::warn!(error = %e, "cannot remove stale pod directory");
                    }
                }
            }
        }
        Ok(())
    }

    /// At daemon exit: when no pod is left, the pods directory's own mount is taken away
    /// so berthd leaves no mount behind; with pods, it stays (their pins live in it).
    pub fn shutdown(&self) {
        let dir = self.inner.pods_dir.path();
        let below: Vec<PathBuf> =
            mounts::mounts_under(dir).into_iter().filter(|m| m != dir).collect();
        if below.is_empty() {
            if let Err(e) = self.inner.pods_dir.unmount() {
                tracing::warn!(error = %e, "cannot unmount the pods directory");
            }
        }
    }
}

/// What the pod network is told about a pod (CNI_ARGS, capabilities), from its record.
fn pod_request(rec: &SandboxRecord, netns: &std::path::Path) -> PodRequest {
    let port_mappings = rec
        .port_mappings
        .iter()
        .filter_map(|p| {
            let protocol = Protocol::from_name(&p.protocol)?;
            Some(PortMapping {
                protocol,
                host_port: p.host_port,
                container_port: p.container_port,
                host_ip: p.host_ip,
            })
        })
        .collect();
    PodRequest {
        pod_id: rec.id.clone(),
        namespace: rec.metadata.namespace.clone(),
        name: rec.metadata.name.clone(),
        uid: rec.metadata.uid.clone(),
        netns: netns.to_path_buf(),
        port_mappings,
        dns: rec.dns.as_ref().map(|d| cni::Dns {
            servers: d.servers.clone(),
            searches: d.searches.clone(),
            options: d.options.clone(),
        }),
        annotations: rec.annotations.clone(),
    }
}

/// Removes the now-empty parent cgroups of `rel` that berth created (for this pod or
/// another one), deepest first; parents still holding other pods stay.
fn remove_berth_parents(
    meta: &MetadataStore,
    hs: &[Hierarchy],
    rel: &str,
) -> Result<(), MetadataError> {
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    let mut gone = Vec::new();
    for h in hs {
        for n in (1..parts.len()).rev() {
            let dir = h.mount.join(parts[..n].join("/"));
            let key = dir.to_string_lossy().into_owned();
            if meta.get::<CgroupDirRecord>(&key)?.is_none() {
                continue;
            }
            match std::fs::remove_dir(&dir) {
                Ok(()) => gone.push(key),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => gone.push(key),
                Err(_) => break, // still holds other pods: so do its parents
            }
        }
    }
    if !gone.is_empty() {
        let mut tx = meta.write()?;
        for key in gone {
            tx.delete::<CgroupDirRecord>(&key)?;
        }
        tx.commit()?;
    }
    Ok(())
}

/// Helper for callers holding a CRI map.
pub fn to_btree<I: IntoIterator<Item = (String, String)>>(it: I) -> BTreeMap<String, String> {
    it.into_iter().collect()
}
