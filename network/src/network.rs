//! The facade the runtime calls: one bridge network, pods in and out of it.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use ipnet::Ipv4Net;
use rtnetlink::Handle;
use tokio::task::JoinHandle;

use crate::bridge::{self, PodAddress, VETH_ALIAS_PREFIX};
use crate::error::{validate_pod_id, NetworkError, Result};
use crate::firewall::{Firewall, PortMapping, DEFAULT_TABLE};
use crate::ipam::Ipam;
use crate::readiness::Readiness;
use crate::warm::{self, WarmPair};

const DEFAULT_MTU: u32 = 1500;
const MIN_MTU: u32 = 68;
const MAX_MTU: u32 = 65535;
/// How long after a pod took the pair made ahead the next one is made: after that pod's
/// own start (its container's create and start, a few milliseconds), not on top of it.
const WARM_AGAIN_AFTER: std::time::Duration = std::time::Duration::from_millis(10);

/// Settings of the bridge network (all of them are berth config keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// Bridge name, default `berth0`.
    pub bridge: String,
    /// Pod subnet, default `10.88.0.0/16`; the first host address is the gateway.
    pub subnet: Ipv4Net,
    /// nftables table (family `ip`), default `berth`.
    pub nft_table: String,
    /// MTU of the bridge and pod interfaces. `None` (the default): the MTU of the host
    /// interface holding the default route, or 1500 without one — so pods on a host whose
    /// uplink has a small MTU (tunnels, some clouds) do not send packets it cannot carry.
    pub mtu: Option<u32>,
    /// Whether a pod network is kept made ahead for the next pod (see [`crate::warm`]).
    pub warm: bool,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            bridge: "berth0".into(),
            subnet: "10.88.0.0/16".parse().expect("valid default subnet"),
            nft_table: DEFAULT_TABLE.into(),
            mtu: None,
            warm: true,
        }
    }
}

/// Where pod addresses come from. The runtime implements this over its metadata store
/// (typically: in one transaction, read the leases, [`Ipam::from_leases`], allocate, write
/// the new lease back), so leases survive restarts. Both calls are keyed by pod id;
/// `allocate` for a pod that already holds a lease should return that lease, and `release`
/// of a pod without one must succeed.
pub trait IpAllocator: Send + Sync {
    fn allocate(&self, pod_id: &str) -> Result<Ipv4Addr>;
    fn release(&self, pod_id: &str) -> Result<()>;
}

/// An in-memory allocator (tests, or a runtime that persists leases elsewhere).
impl IpAllocator for Mutex<Ipam> {
    fn allocate(&self, pod_id: &str) -> Result<Ipv4Addr> {
        let mut ipam = self.lock().unwrap_or_else(|p| p.into_inner());
        Ok(ipam.allocate(pod_id)?)
    }

    fn release(&self, pod_id: &str) -> Result<()> {
        let mut ipam = self.lock().unwrap_or_else(|p| p.into_inner());
        ipam.release(pod_id);
        Ok(())
    }
}

/// What a pod got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetwork {
    /// The pod's address on `eth0`.
    pub ip: Ipv4Addr,
    /// The default gateway (the bridge's address).
    pub gateway: Ipv4Addr,
    /// Prefix length of the pod subnet.
    pub prefix: u8,
    /// Name of the host end of the pod's veth pair.
    pub veth: String,
    /// MTU of the pod's `eth0`.
    pub mtu: u32,
}

/// The bridge network: bridge, IPAM (through an [`IpAllocator`]), veths and firewall.
pub struct Network {
    config: NetworkConfig,
    gateway: Ipv4Addr,
    prefix: u8,
    handle: Handle,
    firewall: Firewall,
    allocator: Arc<dyn IpAllocator>,
    base_ready: tokio::sync::OnceCell<()>,
    mtu: tokio::sync::OnceCell<u32>,
    /// veth deletions under way, by pod (see [`Network::teardown_pod`]).
    unlinking: Mutex<HashMap<String, JoinHandle<Result<()>>>>,
    warm: Mutex<Warm>,
}

/// The pod network made ahead: the one waiting (or being made), and those pods took whose
/// namespace is pinned and whose veth is not attached yet.
#[derive(Default)]
struct Warm {
    ready: Option<WarmPair>,
    making: bool,
    taken: HashMap<String, WarmPair>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("config", &self.config)
            .field("gateway", &self.gateway)
            .finish_non_exhaustive()
    }
}

impl Network {
    /// A network with `config`, taking addresses from `allocator`. Validates the config
    /// and opens a netlink connection (its task runs on the current tokio runtime, so this
    /// must be called inside one). Changes nothing on the host until used.
    pub fn new(config: NetworkConfig, allocator: Arc<dyn IpAllocator>) -> Result<Self> {
        bridge::validate_ifname(&config.bridge)?;
        let plan = Ipam::new(config.subnet)?;
        let firewall = Firewall::new(&config.nft_table, config.subnet, &config.bridge)?;
        if let Some(mtu) = config.mtu {
            if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
                return Err(NetworkError::InvalidArgument(format!(
                    "mtu {mtu} must be {MIN_MTU}-{MAX_MTU}"
                )));
            }
        }
        let handle = bridge::connect()?;
        Ok(Network {
            gateway: plan.gateway(),
            prefix: plan.prefix_len(),
            config: NetworkConfig { subnet: plan.subnet(), ..config },
            handle,
            firewall,
            allocator,
            base_ready: tokio::sync::OnceCell::new(),
            mtu: tokio::sync::OnceCell::new(),
            unlinking: Mutex::default(),
            warm: Mutex::default(),
        })
    }

    fn warm(&self) -> std::sync::MutexGuard<'_, Warm> {
        self.warm.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts making the pod network made ahead, `after` from now, unless the network keeps
    /// none, or one is waiting or being made. Needs a tokio runtime.
    pub fn warm_up(self: &Arc<Self>, after: std::time::Duration) {
        {
            let mut w = self.warm();
            if !self.config.warm || w.ready.is_some() || w.making {
                return;
            }
            w.making = true;
        }
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let made = async {
                this.ensure().await?;
                warm::make(&this.handle, this.mtu().await?).await
            }
            .await;
            let mut w = this.warm();
            w.making = false;
            match made {
                Ok(pair) => w.ready = Some(pair),
                Err(e) => tracing::warn!(error = %e, "cannot make a pod network ahead"),
            }
        });
    }

    /// For pod `pod_id`: pins the namespace of the pod network made ahead at `path`, if one
    /// is waiting ([`Network::setup_pod`] then attaches its veth); starts making the next
    /// either way. `false`, with nothing pinned, if none is waiting.
    pub fn pin_warm(self: &Arc<Self>, pod_id: &str, path: &Path) -> Result<bool> {
        validate_pod_id(pod_id)?;
        let taken = self.warm().ready.take();
        // The next, or a first one if none was made yet (the bridge was not up at start-up).
        self.warm_up(WARM_AGAIN_AFTER);
        let Some(pair) = taken else { return Ok(false) };
        pair.pin(path)?;
        self.warm().taken.insert(pod_id.to_string(), pair);
        Ok(true)
    }

    /// Lets go of the pair pod `pod_id` took ahead and never attached (its start failed
    /// before the network): with its namespace unpinned, the pair is gone.
    pub fn release_warm(&self, pod_id: &str) {
        self.warm().taken.remove(pod_id);
    }

    /// The configuration (subnet with host bits cleared).
    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// The gateway address (the bridge's).
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// The firewall.
    pub fn firewall(&self) -> &Firewall {
        &self.firewall
    }

    /// The host-side netlink handle.
    pub fn netlink(&self) -> &Handle {
        &self.handle
    }

    /// Makes sure the bridge (with its address and sysctls) and the firewall table exist.
    /// Returns the bridge's interface index. Idempotent; [`Network::setup_pod`] calls it.
    pub async fn ensure(&self) -> Result<u32> {
        let mtu = self.mtu().await?;
        let index = bridge::ensure_bridge(
            &self.handle,
            &self.config.bridge,
            self.gateway,
            self.prefix,
            mtu,
        )
        .await?;
        self.base_ready.get_or_try_init(|| self.firewall.ensure_base()).await?;
        Ok(index)
    }

    /// The MTU used for the bridge and pod interfaces (see [`NetworkConfig::mtu`]).
    pub async fn mtu(&self) -> Result<u32> {
        self.mtu
            .get_or_try_init(|| async {
                if let Some(mtu) = self.config.mtu {
                    return Ok(mtu);
                }
                let found = bridge::uplink_mtu(&self.handle).await?;
                Ok(found.filter(|m| (MIN_MTU..=MAX_MTU).contains(m)).unwrap_or(DEFAULT_MTU))
            })
            .await
            .copied()
    }

    /// Host veths that carry a berth alias, as (veth, pod id), for reconciliation.
    pub async fn pod_veths(&self) -> Result<Vec<(String, String)>> {
        bridge::pod_veths(&self.handle).await
    }

    /// Gives the pod whose network namespace is pinned at `netns_path` an address from the
    /// allocator, a veth pair into the bridge, a default route and its hostPort mappings.
    /// On failure everything this call did is undone (rules, veth, lease) and the error
    /// returned. A pod whose veth already exists gets `AlreadyExists` and nothing is
    /// touched.
    #[tracing::instrument(name = "network.setup", skip_all, fields(pod_id = pod_id))]
    pub async fn setup_pod(
        &self,
        pod_id: &str,
        netns_path: &Path,
        port_mappings: &[PortMapping],
    ) -> Result<PodNetwork> {
        validate_pod_id(pod_id)?;
        Firewall::validate_mappings(port_mappings)?;
        let veth = bridge::veth_name(pod_id);
        if let Some(link) = bridge::find_link(&self.handle, &veth).await? {
            return Err(NetworkError::AlreadyExists(format!(
                "veth {veth} exists (alias {:?})",
                bridge::alias_of(&link).unwrap_or_default()
            )));
        }
        let bridge_index = self.ensure().await?;

        let ip = self.allocator.allocate(pod_id)?;
        let result =
            self.setup_with_ip(pod_id, netns_path, port_mappings, bridge_index, ip, &veth).await;
        if result.is_err() {
            if let Err(e) = self.allocator.release(pod_id) {
                tracing::warn!(pod_id, error = %e, "could not release IP after failed setup");
            }
        }
        result
    }

    async fn setup_with_ip(
        &self,
        pod_id: &str,
        netns_path: &Path,
        port_mappings: &[PortMapping],
        bridge_index: u32,
        ip: Ipv4Addr,
        veth: &str,
    ) -> Result<PodNetwork> {
        let usable = self.config.subnet.contains(&ip)
            && ip != self.gateway
            && ip != self.config.subnet.network()
            && ip != self.config.subnet.broadcast();
        if !usable {
            return Err(NetworkError::InvalidArgument(format!(
                "allocator gave {ip}, which is not a pod address of {}",
                self.config.subnet
            )));
        }
        let addr =
            PodAddress { ip, prefix: self.prefix, gateway: self.gateway, mtu: self.mtu().await? };
        // Either removes the pair itself if configuring it fails.
        let taken = self.warm().taken.remove(pod_id);
        match taken {
            Some(pair) => pair.attach(&self.handle, bridge_index, veth, pod_id, addr).await?,
            None => {
                bridge::create_pod_veth(&self.handle, bridge_index, veth, pod_id, netns_path, addr)
                    .await?
            }
        }
        if !port_mappings.is_empty() {
            if let Err(e) = self.firewall.add_port_mappings(pod_id, ip, port_mappings).await {
                // add_port_mappings is one transaction: on failure it added nothing, but a
                // partial earlier state of this pod would be removed here too.
                if let Err(e) = self.firewall.remove_pod(pod_id).await {
                    tracing::warn!(pod_id, error = %e, "could not remove rules after failed setup");
                }
                if let Err(e) = bridge::delete_link(&self.handle, veth).await {
                    tracing::warn!(pod_id, error = %e, "could not delete veth after failed setup");
                }
                return Err(e);
            }
        }
        Ok(PodNetwork {
            ip,
            gateway: self.gateway,
            prefix: self.prefix,
            veth: veth.to_string(),
            mtu: addr.mtu,
        })
    }

    /// Removes a pod's hostPort rules and veth pair and releases its address. Idempotent:
    /// whatever is already gone is skipped. Every step is attempted; the first error is
    /// returned. The netns pin itself is the caller's (see [`crate::netns`]).
    pub async fn teardown_pod(&self, pod_id: &str) -> Result<()> {
        validate_pod_id(pod_id)?;
        let mut first_err: Option<NetworkError> = None;
        let mut note = |r: Result<()>| {
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        };
        self.release_warm(pod_id);
        note(self.firewall.remove_pod(pod_id).await);

        note(self.unlink_veth(pod_id).await);
        note(self.allocator.release(pod_id));
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Starts deleting the pod's veth pair and returns without waiting for it: the kernel
    /// takes tens of milliseconds to unregister a device (it waits out RCU grace
    /// periods), and nothing needs the pair gone before the pod is removed. The pod's end
    /// is in the namespace the caller unpins next, so the pair carries no traffic
    /// meanwhile. [`Network::settle_pod`] waits for the deletion; after a crash, start-up
    /// tears a stopped pod down again.
    async fn unlink_veth(&self, pod_id: &str) -> Result<()> {
        let Some(index) = self.our_veth(pod_id).await? else { return Ok(()) };
        let mut unlinking = self.unlinking.lock().unwrap_or_else(|p| p.into_inner());
        if unlinking.get(pod_id).is_some_and(|t| !t.is_finished()) {
            return Ok(());
        }
        let (handle, veth) = (self.handle.clone(), bridge::veth_name(pod_id));
        let pod = pod_id.to_string();
        let task = tokio::spawn(async move {
            let deleted = bridge::delete_link_index(&handle, index, &veth).await;
            if let Err(e) = &deleted {
                tracing::warn!(pod_id = %pod, veth, error = %e, "cannot delete the pod's veth");
            }
            deleted
        });
        // Finished deletions of pods never removed are not kept.
        unlinking.retain(|_, t| !t.is_finished());
        unlinking.insert(pod_id.to_string(), task);
        Ok(())
    }

    /// The index of the pod's veth, if it exists and is this pod's (not another pod's
    /// with the same hashed name).
    async fn our_veth(&self, pod_id: &str) -> Result<Option<u32>> {
        let veth = bridge::veth_name(pod_id);
        let Some(link) = bridge::find_link(&self.handle, &veth).await? else { return Ok(None) };
        let ours = format!("{VETH_ALIAS_PREFIX}{pod_id}");
        match bridge::alias_of(&link) {
            Some(alias) if alias != ours => {
                tracing::warn!(pod_id, veth, alias, "veth belongs to another pod; kept");
                Ok(None)
            }
            _ => Ok(Some(link.header.index)),
        }
    }

    /// Waits until the veth deletion a teardown of the pod started is done, and deletes
    /// the veth now if it is still there (that deletion failed, or was never started):
    /// once this returns, nothing of the pod is left on the bridge.
    pub async fn settle_pod(&self, pod_id: &str) -> Result<()> {
        validate_pod_id(pod_id)?;
        let task = self.unlinking.lock().unwrap_or_else(|p| p.into_inner()).remove(pod_id);
        if let Some(task) = task {
            // Its failure was logged; what it left is deleted below.
            let _ = task.await;
        }
        if let Some(index) = self.our_veth(pod_id).await? {
            bridge::delete_link_index(&self.handle, index, &bridge::veth_name(pod_id)).await?;
        }
        Ok(())
    }

    /// Whether the network can take pods: the bridge exists and is up, and the firewall
    /// table exists. Before the first [`Network::ensure`] this is `NotReady`.
    pub async fn readiness(&self) -> Readiness {
        match bridge::link_state(&self.handle, &self.config.bridge).await {
            Ok(Some(state)) if state.up => {}
            Ok(_) => {
                return Readiness::not_ready(
                    "NetworkPluginNotReady",
                    format!("bridge {} is missing or down", self.config.bridge),
                )
            }
            Err(e) => return Readiness::not_ready("NetworkPluginNotReady", e.to_string()),
        }
        match self.firewall.table_exists().await {
            Ok(true) => Readiness::Ready,
            Ok(false) => Readiness::not_ready(
                "NetworkPluginNotReady",
                format!("nftables table ip {} is missing", self.config.nft_table),
            ),
            Err(e) => Readiness::not_ready("NetworkPluginNotReady", e.to_string()),
        }
    }

    /// Deletes the bridge and the firewall table (tests, uninstall). Pods' veths attached
    /// to the bridge are detached by the kernel but not deleted; tear pods down first.
    pub async fn destroy(&self) -> Result<()> {
        let fw = self.firewall.remove_all().await;
        bridge::delete_link(&self.handle, &self.config.bridge).await?;
        fw
    }
}
