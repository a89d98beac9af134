//! [`PodNetworks`]: the pod network the runtime calls, whichever mode it is in — the
//! built-in bridge ([`Network`]) or CNI plugins ([`Cni`]).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use crate::cni::{Cni, PodRequest};
use crate::error::Result;
use crate::network::Network;
use crate::readiness::Readiness;

/// The configured pod network.
#[derive(Debug, Clone)]
pub enum PodNetworks {
    /// The built-in bridge (`berth0`), IPAM and nftables hostPorts.
    Bridge(Arc<Network>),
    /// CNI plugins from the conf dir.
    Cni(Arc<Cni>),
}

/// What a pod got from the network.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attached {
    /// The pod's addresses, primary first (IPv4 before IPv6).
    pub ips: Vec<IpAddr>,
    /// The host end of the pod's veth, when berth made it (bridge mode).
    pub veth: Option<String>,
}

impl Attached {
    /// The first IPv4 address (what `/etc/hosts` names the pod by).
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        self.ips.iter().find_map(|ip| match ip {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        })
    }
}

impl PodNetworks {
    /// `bridge` or `cni`.
    pub fn mode(&self) -> &'static str {
        match self {
            PodNetworks::Bridge(_) => "bridge",
            PodNetworks::Cni(_) => "cni",
        }
    }

    /// The bridge network, in bridge mode.
    pub fn bridge(&self) -> Option<&Arc<Network>> {
        match self {
            PodNetworks::Bridge(n) => Some(n),
            PodNetworks::Cni(_) => None,
        }
    }

    /// The CNI network, in CNI mode.
    pub fn cni(&self) -> Option<&Arc<Cni>> {
        match self {
            PodNetworks::Bridge(_) => None,
            PodNetworks::Cni(c) => Some(c),
        }
    }

    /// Gives the pod its network; on failure, whatever this call did is undone.
    pub async fn setup_pod(&self, req: &PodRequest) -> Result<Attached> {
        match self {
            PodNetworks::Bridge(n) => {
                let got = n.setup_pod(&req.pod_id, &req.netns, &req.port_mappings).await?;
                Ok(Attached { ips: vec![IpAddr::V4(got.ip)], veth: Some(got.veth) })
            }
            PodNetworks::Cni(c) => {
                let got = c.add(req).await?;
                Ok(Attached { ips: got.ips.iter().map(|n| n.addr()).collect(), veth: None })
            }
        }
    }

    /// Pins the namespace of the pod network made ahead at `path` for pod `pod_id`, if the
    /// bridge keeps one waiting; `false` (nothing done) otherwise: the caller makes one.
    pub fn pin_warm(&self, pod_id: &str, path: &std::path::Path) -> Result<bool> {
        match self {
            PodNetworks::Bridge(n) => n.pin_warm(pod_id, path),
            PodNetworks::Cni(_) => Ok(false),
        }
    }

    /// Lets go of what [`PodNetworks::pin_warm`] took for a pod whose start failed before
    /// its network was set up.
    pub fn release_warm(&self, pod_id: &str) {
        if let PodNetworks::Bridge(n) = self {
            n.release_warm(pod_id);
        }
    }

    /// Takes the pod's network away. Idempotent.
    pub async fn teardown_pod(&self, req: &PodRequest) -> Result<()> {
        match self {
            PodNetworks::Bridge(n) => n.teardown_pod(&req.pod_id).await,
            PodNetworks::Cni(c) => c.del(req).await,
        }
    }

    /// Waits for what a teardown of the pod left running in the background (bridge mode:
    /// the deletion of its veth), so that nothing of it is left.
    pub async fn settle_pod(&self, pod_id: &str) -> Result<()> {
        match self {
            PodNetworks::Bridge(n) => n.settle_pod(pod_id).await,
            PodNetworks::Cni(_) => Ok(()),
        }
    }

    /// The NetworkReady condition.
    pub async fn readiness(&self) -> Readiness {
        match self {
            PodNetworks::Bridge(n) => n.readiness().await,
            PodNetworks::Cni(c) => c.readiness(),
        }
    }

    /// The kubelet's pod CIDR (UpdateRuntimeConfig). The bridge has its own subnet and
    /// does not use it.
    pub fn set_pod_cidr(&self, cidr: &str) {
        match self {
            PodNetworks::Bridge(_) => {
                tracing::debug!(pod_cidr = cidr, "the bridge network uses its own subnet")
            }
            PodNetworks::Cni(c) => c.set_pod_cidr(cidr),
        }
    }

    /// Start-up: removes what pods not in `live` still hold — bridge mode: their hostPort
    /// rules; CNI mode: their cached attachments (DEL from the cache).
    pub async fn remove_stale(&self, live: &HashSet<String>) {
        match self {
            PodNetworks::Bridge(network) => match network.firewall().pods().await {
                Ok(pods) => {
                    for pod in pods.iter().filter(|p| !live.contains(*p)) {
                        tracing::info!(pod_id = %pod, "removing stale hostPort rules");
                        if let Err(e) = network.firewall().remove_pod(pod).await {
                            tracing::warn!(pod_id = %pod, error = %e, "cannot remove rules");
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot list firewall rules"),
            },
            PodNetworks::Cni(cni) => match cni.cached_pods() {
                Ok(pods) => {
                    for (pod, netns) in pods.into_iter().filter(|(p, _)| !live.contains(p)) {
                        tracing::info!(pod_id = %pod, "CNI DEL of a stale cached attachment");
                        let req = PodRequest { pod_id: pod.clone(), netns, ..Default::default() };
                        if let Err(e) = cni.del(&req).await {
                            tracing::warn!(pod_id = %pod, error = %e, "stale CNI attachment kept");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the CNI result cache"),
            },
        }
    }
}

/// Which pod network to build, with its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodNetworkConfig {
    Bridge(crate::network::NetworkConfig),
    Cni(crate::cni::CniSettings),
}
