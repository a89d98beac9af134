//! Pod networking for berth.
//!
//! Owns network namespaces, the `berth0` bridge with its IPAM and port mappings, and the
//! CNI plugin mode. Knows nothing of gRPC: `berth-cri-server` translates.
//!
//! * [`netns`]: pinned network namespaces and running code inside them;
//! * [`ipam`]: the pure IPv4 allocator (persistence is the runtime's);
//! * [`bridge`]: the bridge and per-pod veth pairs over rtnetlink;
//! * [`firewall`]: masquerade and hostPort DNAT in an nftables table of berth's own,
//!   changed over netlink (`nft` internally: the nf_tables messages it needs);
//! * [`Network`]: the bridge network's facade;
//! * [`warm`]: a pod network made ahead for the next pod (bridge mode);
//! * [`cni`]: CNI plugin mode;
//! * [`PodNetworks`]: the one the runtime calls, bridge or CNI.

pub mod bridge;
pub mod cni;
pub mod error;
pub mod firewall;
pub mod ipam;
mod netlink;
pub mod netns;
mod network;
mod nft;
mod pod_networks;
mod readiness;
pub mod warm;

pub use error::{validate_pod_id, NetworkError, Result};
pub use firewall::{Firewall, PortMapping, Protocol};
pub use ipam::{Ipam, IpamError};
pub use network::{IpAllocator, Network, NetworkConfig, PodNetwork};
pub use pod_networks::{Attached, PodNetworkConfig, PodNetworks};
pub use readiness::Readiness;
