//! What the metadata store keeps of a pod, its name reservation and its IP lease.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::pod_spec::{DnsConfig, NsMode, PodMetadata, Resources};
use crate::metadata::Record;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SandboxState {
    /// RunPodSandbox is setting it up (or crashed doing so): hidden from lists, cleaned up
    /// by start-up reconciliation.
    #[default]
    Creating,
    Ready,
    NotReady,
}

/// A host port mapping as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRecord {
    pub protocol: String,
    pub host_port: u16,
    pub container_port: u16,
    pub host_ip: Option<Ipv4Addr>,
}

/// One pod. Written (state `Creating`) before anything is created on the host, so a
/// crash at any step leaves a record naming what may have to be cleaned.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    pub metadata: PodMetadata,
    pub state: SandboxState,
    /// Unix time in nanoseconds.
    pub created_at: i64,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub runtime_handler: String,
    pub hostname: String,
    pub log_directory: String,
    pub dns: Option<DnsConfig>,
    pub network: NsMode,
    pub pid: NsMode,
    pub ipc: NsMode,
    /// `<state>/pods/<id>`: pins, shm, hostname/resolv.conf/hosts.
    pub dir: PathBuf,
    /// Network namespace pin, when the pod has its own network.
    pub netns: Option<PathBuf>,
    pub ipc_ns: Option<PathBuf>,
    pub uts_ns: Option<PathBuf>,
    /// The pod's /dev/shm (a tmpfs of its own, or the host's with host IPC).
    pub shm: Option<PathBuf>,
    /// The pod cgroup (cgroupfs path, relative to each hierarchy's root).
    pub cgroup: String,
    /// Directories berth created for the cgroup (deepest last), per hierarchy mount:
    /// removed (deepest first) with the pod.
    pub cgroup_created: Vec<PathBuf>,
    pub resources: Option<Resources>,
    /// The pod's IPv4 address (the one `/etc/hosts` names).
    pub ip: Option<Ipv4Addr>,
    /// Every address of the pod, primary first (CNI mode may give IPv6 ones too).
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    pub veth: Option<String>,
    pub port_mappings: Vec<PortRecord>,
    pub sysctls: BTreeMap<String, String>,
    /// The pod's user namespace (mappings) when it has one; pinned at `user_ns`.
    #[serde(default)]
    pub userns: Option<super::userns::Userns>,
    #[serde(default)]
    pub user_ns: Option<PathBuf>,
}

impl Record for SandboxRecord {
    const TABLE: &'static str = "sandboxes";
}

/// A reserved pod name (`PodMetadata::key`) -> the pod holding it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameRecord {
    pub sandbox_id: String,
}

impl Record for NameRecord {
    const TABLE: &'static str = "sandbox_names";
}

/// An IP lease of the bridge network, keyed by pod id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub ip: Ipv4Addr,
    /// The subnet it was leased from (a config change makes old leases foreign).
    pub subnet: String,
}

impl Record for LeaseRecord {
    const TABLE: &'static str = "ip_leases";
}

/// The IPAM's next-fit cursor, keyed by subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorRecord {
    pub last: Ipv4Addr,
}

impl Record for CursorRecord {
    const TABLE: &'static str = "ip_cursor";
}

/// A parent cgroup directory berth created for some pod (keyed by its path). Shared by
/// the pods below it; removed by whichever pod leaves it empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupDirRecord {}

impl Record for CgroupDirRecord {
    const TABLE: &'static str = "cgroup_dirs";
}
