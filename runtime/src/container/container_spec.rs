//! What a container asks for: the runtime's view of a CRI `ContainerConfig`, as
//! [`crate::sandbox::PodSpec`] is of a `PodSandboxConfig`.
//!
//! cri-server builds it from the request and decodes the CRI's enums and deprecated
//! fields on the way (an unknown enum value is refused there, naming the field); the
//! runtime checks the rest against the host and the image. Errors keep naming fields by
//! their CRI path (`config.mounts[1].host_path`): that is the name the user wrote.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::sandbox::{IdMap, NsMode};
pub use crate::security_profile::ProfileRequest;

/// The container's identity within its pod.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerMetadata {
    pub name: String,
    pub attempt: u32,
}

/// Everything CreateContainer asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerSpec {
    pub metadata: Option<ContainerMetadata>,
    /// The image as the request names it (the kubelet sends the id PullImage gave).
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub working_dir: String,
    pub envs: Vec<EnvVar>,
    pub mounts: Vec<MountSpec>,
    pub devices: Vec<DeviceSpec>,
    /// CDI device names; berth cannot resolve them and refuses a request with any.
    pub cdi_devices: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Relative to the pod's log directory.
    pub log_path: String,
    pub stdin: bool,
    pub stdin_once: bool,
    pub tty: bool,
    pub resources: Option<ContainerResources>,
    pub security: SecuritySpec,
    /// The signal StopContainer sends first; `None`: the image's, else SIGTERM.
    pub stop_signal: Option<i32>,
}

/// One environment variable; the CRI carries values as bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EnvVar {
    pub key: String,
    pub value: Vec<u8>,
}

/// How mounts propagate between the host and the container. The numbers are the stable
/// encoding in container records (and the CRI's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(from = "i32", into = "i32")]
pub enum Propagation {
    #[default]
    Private,
    HostToContainer,
    Bidirectional,
}

impl From<i32> for Propagation {
    fn from(n: i32) -> Self {
        match n {
            1 => Self::HostToContainer,
            2 => Self::Bidirectional,
            _ => Self::Private,
        }
    }
}

impl From<Propagation> for i32 {
    fn from(p: Propagation) -> Self {
        match p {
            Propagation::Private => 0,
            Propagation::HostToContainer => 1,
            Propagation::Bidirectional => 2,
        }
    }
}

/// A volume: a host path, or an image (an image volume) bound into the container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MountSpec {
    pub container_path: String,
    pub host_path: String,
    pub readonly: bool,
    pub propagation: Propagation,
    pub recursive_read_only: bool,
    pub selinux_relabel: bool,
    /// An idmapped mount's mappings (they must be the pod's).
    pub uid_mappings: Vec<IdMap>,
    pub gid_mappings: Vec<IdMap>,
    /// The image of an image volume, as the request names it.
    pub image: Option<String>,
    pub image_sub_path: String,
}

/// A host device node to give the container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceSpec {
    pub container_path: String,
    pub host_path: String,
    /// `r`, `w` and `m` in any combination; empty: all three.
    pub permissions: String,
}

/// The container's cgroup resources as requested (0 or empty: unset); kept in its
/// record to report them back in ContainerStatus.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerResources {
    pub cpu_period: i64,
    pub cpu_quota: i64,
    pub cpu_shares: i64,
    pub memory_limit_in_bytes: i64,
    pub oom_score_adj: i64,
    pub cpuset_cpus: String,
    pub cpuset_mems: String,
    /// page size → limit in bytes
    pub hugepage_limits: BTreeMap<String, u64>,
    pub unified: BTreeMap<String, String>,
    pub memory_swap_limit_in_bytes: i64,
}

/// The security context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecuritySpec {
    pub privileged: bool,
    pub add_capabilities: Vec<String>,
    pub drop_capabilities: Vec<String>,
    pub add_ambient_capabilities: Vec<String>,
    /// The PID namespace: the container's own, the pod's, the node's, or a target's.
    pub pid: NsMode,
    /// The container whose PID namespace is joined in mode [`NsMode::Target`].
    pub target_id: String,
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub run_as_username: String,
    pub supplemental_groups: Vec<i64>,
    /// Only the groups asked for, not merged with the image's for the user.
    pub strict_supplemental_groups: bool,
    pub readonly_rootfs: bool,
    pub no_new_privs: bool,
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    /// Unconfined when not asked for, as Kubernetes defines it for seccomp.
    pub seccomp: ProfileRequest,
    /// The runtime's default when not asked for, as Kubernetes defines it for AppArmor.
    pub apparmor: ProfileRequest,
    /// Whether the request asks for an SELinux label (berth applies none).
    pub selinux_label: bool,
}

/// What a request without a security context gets.
impl Default for SecuritySpec {
    fn default() -> Self {
        Self {
            privileged: false,
            add_capabilities: Vec::new(),
            drop_capabilities: Vec::new(),
            add_ambient_capabilities: Vec::new(),
            pid: NsMode::Container,
            target_id: String::new(),
            run_as_user: None,
            run_as_group: None,
            run_as_username: String::new(),
            supplemental_groups: Vec::new(),
            strict_supplemental_groups: false,
            readonly_rootfs: false,
            no_new_privs: false,
            masked_paths: Vec::new(),
            readonly_paths: Vec::new(),
            seccomp: ProfileRequest::Unconfined,
            apparmor: ProfileRequest::RuntimeDefault,
            selinux_label: false,
        }
    }
}
