//! Pod sandboxes: pinned namespaces, a pod cgroup, the pod's files and its network.
//!
//! A pod is a set of namespaces pinned by bind mounts under `<state>/pods/<id>/ns/` (net,
//! ipc, uts; each only when the pod does not share the host's), a `/dev/shm` tmpfs, the
//! files its containers will see as `/etc/hostname`, `/etc/resolv.conf` and `/etc/hosts`,
//! a cgroup under the kubelet's `cgroup_parent`, and an address on the bridge network
//! with its hostPort rules. The mounts keep it alive; its one process is the pod's shim,
//! started during set-up to be ready for the first container ([`pod_shims`]).
//!
//! * [`pod_spec`]: the request and its validation; [`sysctl`]: which sysctls a pod may set;
//! * [`namespaces`], [`userns`], [`cgroup`], [`slice`](mod@slice), [`mounts`], [`files`]: the host-side
//!   pieces ([`slice`](mod@slice): the pod cgroup with the systemd driver);
//! * [`ipam_store`]: IP leases in the metadata store; [`record`]: what is stored;
//! * [`pod_shims`]: how set-up starts the pod's shim early (the containers service's);
//! * [`undo`]: the rollback stack that makes RunPodSandbox all-or-nothing;
//! * [`service`]: [`Sandboxes`], run/stop/remove/status/list and start-up reconciliation.

pub mod cgroup;
pub mod cgroup_driver;
pub mod files;
pub mod filter;
pub mod ipam_store;
pub mod mounts;
pub mod namespaces;
pub mod pod_shims;
pub mod pod_spec;
pub mod record;
pub mod service;
pub mod slice;
pub mod sysctl;
pub mod undo;
pub mod userns;

pub use filter::Filter;
pub use pod_shims::PodShims;
pub use pod_spec::{DnsConfig, NsMode, PodMetadata, PodSpec, PortSpec, Resources};
pub use record::{SandboxRecord, SandboxState};
pub use service::{SandboxError, Sandboxes};
pub use userns::{IdMap, Userns, UsernsSpec};
