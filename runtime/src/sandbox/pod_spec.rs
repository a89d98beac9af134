//! What a pod asks for (the runtime's view of a CRI `PodSandboxConfig`) and its
//! validation: every field is checked before anything is created, and an error names the
//! field with the CRI's path (`config.metadata.name`, `config.port_mappings[1].host_port`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use berth_network::{PortMapping, Protocol};
use serde::{Deserialize, Serialize};

use super::cgroup_driver::Driver;
pub use super::namespaces::NsMode;
use super::sysctl::{classify, Sysctl, SysctlNs};

/// The pod's identity as the kubelet gives it; unique among live pods.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PodMetadata {
    pub name: String,
    pub uid: String,
    pub namespace: String,
    pub attempt: u32,
}

impl PodMetadata {
    /// The reservation key: containerd's `<name>_<namespace>_<uid>_<attempt>`.
    pub fn key(&self) -> String {
        format!("{}_{}_{}_{}", self.name, self.namespace, self.uid, self.attempt)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DnsConfig {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// A port mapping as requested (protocol as the CRI enum number, ports as given).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortSpec {
    pub protocol: i32,
    pub container_port: i32,
    pub host_port: i32,
    pub host_ip: String,
}

/// Pod-level cgroup resources (a subset of CRI `LinuxContainerResources`; 0 = unset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Resources {
    pub cpu_period: i64,
    pub cpu_quota: i64,
    pub cpu_shares: i64,
    pub memory_limit: i64,
}

/// Everything RunPodSandbox asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodSpec {
    pub metadata: Option<PodMetadata>,
    pub hostname: String,
    pub log_directory: String,
    pub dns: Option<DnsConfig>,
    pub port_mappings: Vec<PortSpec>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub cgroup_parent: String,
    pub sysctls: BTreeMap<String, String>,
    pub network: NsMode,
    pub pid: NsMode,
    pub ipc: NsMode,
    pub runtime_handler: String,
    pub resources: Option<Resources>,
    /// The user namespace option; `None`: the host's.
    pub userns: Option<super::userns::UsernsSpec>,
    /// Whether the request asks for an SELinux label (berth applies none).
    pub selinux_label: bool,
}

/// A request that passed validation, with its parts parsed.
#[derive(Debug, Clone)]
pub struct ValidSpec {
    pub spec: PodSpec,
    pub metadata: PodMetadata,
    pub port_mappings: Vec<PortMapping>,
    pub sysctls: Vec<Sysctl>,
    /// The pod's own user namespace, when it has one.
    pub userns: Option<super::userns::Userns>,
}

impl ValidSpec {
    pub fn host_network(&self) -> bool {
        self.spec.network == NsMode::Node
    }
    pub fn host_ipc(&self) -> bool {
        self.spec.ipc == NsMode::Node
    }
}

const MAX_HOSTNAME: usize = 64;

/// Checks a pod request. The error names the field (CRI path) and the reason.
pub fn validate(spec: PodSpec, driver: Driver) -> Result<ValidSpec, String> {
    let metadata = spec.metadata.clone().ok_or("config.metadata: required")?;
    for (field, value) in [
        ("config.metadata.name", &metadata.name),
        ("config.metadata.namespace", &metadata.namespace),
        ("config.metadata.uid", &metadata.uid),
    ] {
        if value.is_empty() {
            return Err(format!("{field}: required"));
        }
        if value.contains(['\0', '\n']) {
            return Err(format!("{field}: must not contain NUL or newline"));
        }
    }
    // Which handlers exist is berthd's configuration; here only the name's shape.
    if !spec.runtime_handler.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Err(format!("runtime_handler: {:?} is not a valid name", spec.runtime_handler));
    }
    if !spec.log_directory.is_empty() && !Path::new(&spec.log_directory).is_absolute() {
        return Err(format!(
            "config.log_directory: must be an absolute path, got {:?}",
            spec.log_directory
        ));
    }
    if spec.log_directory.contains('\0') {
        return Err("config.log_directory: must not contain NUL".into());
    }
    if spec.hostname.len() > MAX_HOSTNAME
        || !spec.hostname.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
    {
        return Err(format!(
            "config.hostname: {:?} is not a host name (at most {MAX_HOSTNAME} of [A-Za-z0-9.-])",
            spec.hostname
        ));
    }
    if let Some(dns) = &spec.dns {
        for (i, server) in dns.servers.iter().enumerate() {
            if server.parse::<IpAddr>().is_err() {
                return Err(format!(
                    "config.dns_config.servers[{i}]: {server:?} is not an IP address"
                ));
            }
        }
        for (field, list) in [("searches", &dns.searches), ("options", &dns.options)] {
            for (i, v) in list.iter().enumerate() {
                if v.is_empty() || v.contains(|c: char| c.is_whitespace() || c == '\0') {
                    return Err(format!("config.dns_config.{field}[{i}]: {v:?} must be one word"));
                }
            }
        }
    }
    for (field, mode, allowed) in [
        ("network", spec.network, &[NsMode::Pod, NsMode::Node, NsMode::Container][..]),
        ("ipc", spec.ipc, &[NsMode::Pod, NsMode::Node, NsMode::Container][..]),
        ("pid", spec.pid, &[NsMode::Pod, NsMode::Node, NsMode::Container][..]),
    ] {
        if !allowed.contains(&mode) {
            return Err(format!(
                "config.linux.security_context.namespace_options.{field}: {mode:?} is not \
                 allowed for a pod"
            ));
        }
    }
    let userns = super::userns::validate(spec.userns.as_ref())?;
    if userns.is_some() {
        // The host's namespaces are owned by the host's user namespace: a pod root could
        // not use them, and must not be near them.
        for (field, mode) in [("network", spec.network), ("ipc", spec.ipc), ("pid", spec.pid)] {
            if mode == NsMode::Node {
                return Err(format!(
                    "config.linux.security_context.namespace_options.{field}: NODE cannot be \
                     combined with a pod user namespace (userns_options.mode POD)"
                ));
            }
        }
    }
    validate_cgroup_parent(&spec.cgroup_parent, driver)?;
    let port_mappings = port_mappings(&spec.port_mappings)?;
    if spec.network == NsMode::Node && !port_mappings.is_empty() {
        // Like the kubelet: host-network pods use the host's ports directly.
        tracing::debug!("port mappings of a host-network pod are ignored");
    }
    let mut sysctls = Vec::new();
    for (name, value) in &spec.sysctls {
        let field = format!("config.linux.sysctls[{name:?}]");
        let ns = classify(name).map_err(|e| format!("{field}: {e}"))?;
        let (host_mode, what) = match ns {
            SysctlNs::Net => (spec.network == NsMode::Node, "network"),
            SysctlNs::Ipc => (spec.ipc == NsMode::Node, "IPC"),
        };
        if host_mode {
            return Err(format!(
                "{field}: sysctl {name:?} needs the pod's own {what} namespace, but the pod \
                 uses the host's"
            ));
        }
        if value.contains(['\0', '\n']) {
            return Err(format!("{field}: value must not contain NUL or newline"));
        }
        sysctls.push(Sysctl { name: name.clone(), value: value.clone(), ns });
    }
    if let Some(r) = &spec.resources {
        validate_resources(r, "config.linux.resources")?;
    }
    let port_mappings = if spec.network == NsMode::Node { Vec::new() } else { port_mappings };
    Ok(ValidSpec { spec, metadata, port_mappings, sysctls, userns })
}

/// Pod-level limits the kernel would refuse or misread; `field` is where they came from.
pub fn validate_resources(r: &Resources, field: &str) -> Result<(), String> {
    for (name, v) in [
        ("cpu_period", r.cpu_period),
        ("cpu_shares", r.cpu_shares),
        ("memory_limit_in_bytes", r.memory_limit),
    ] {
        if v < 0 {
            return Err(format!("{field}.{name}: must not be negative"));
        }
    }
    if r.cpu_quota < -1 {
        return Err(format!("{field}.cpu_quota: must be -1, 0 or positive"));
    }
    Ok(())
}

/// The cgroupfs driver takes paths (`/kubepods/burstable/pod<uid>`, no `..`) and refuses
/// systemd slices; the systemd driver takes a slice (`kubepods-burstable-pod<uid>.slice`,
/// or a path ending in one) and refuses paths.
fn validate_cgroup_parent(parent: &str, driver: Driver) -> Result<(), String> {
    let field = "config.linux.cgroup_parent";
    if driver == Driver::Systemd {
        if parent.trim_matches('/').is_empty() {
            return Ok(());
        }
        return crate::systemd::pod_slice(parent, "")
            .map(drop)
            .map_err(|e| format!("{field}: {e}; berth's cgroup driver is systemd"));
    }
    if parent.ends_with(".slice") {
        return Err(format!(
            "{field}: {parent:?} is a systemd slice; berth's cgroup driver is cgroupfs"
        ));
    }
    if parent.contains('\0') || parent.split('/').any(|c| c == ".." || c == ".") {
        return Err(format!("{field}: {parent:?} is not a cgroup path"));
    }
    Ok(())
}

fn port_mappings(specs: &[PortSpec]) -> Result<Vec<PortMapping>, String> {
    let mut out = Vec::new();
    for (i, p) in specs.iter().enumerate() {
        let field = format!("config.port_mappings[{i}]");
        // The kubelet lists every container port; only those with a hostPort map.
        if p.host_port == 0 {
            continue;
        }
        let port = |name: &str, v: i32| {
            u16::try_from(v)
                .ok()
                .filter(|&v| v != 0)
                .ok_or_else(|| format!("{field}.{name}: {v} is not a port (1-65535)"))
        };
        let host_port = port("host_port", p.host_port)?;
        let container_port = port("container_port", p.container_port)?;
        let protocol = match p.protocol {
            0 => Protocol::Tcp,
            1 => Protocol::Udp,
            2 => Protocol::Sctp,
            n => return Err(format!("{field}.protocol: {n} is not TCP, UDP or SCTP")),
        };
        let host_ip = match p.host_ip.as_str() {
            "" => None,
            ip => match ip.parse::<IpAddr>() {
                Ok(IpAddr::V4(v4)) if v4 == Ipv4Addr::UNSPECIFIED => None,
                Ok(IpAddr::V4(v4)) => Some(v4),
                Ok(IpAddr::V6(_)) => {
                    return Err(format!(
                        "{field}.host_ip: {ip:?} is IPv6; berth's bridge network is IPv4 only"
                    ))
                }
                Err(_) => return Err(format!("{field}.host_ip: {ip:?} is not an IP address")),
            },
        };
        let mapping = PortMapping { protocol, host_port, container_port, host_ip };
        if out.iter().any(|m: &PortMapping| {
            m.protocol == mapping.protocol
                && m.host_port == mapping.host_port
                && (m.host_ip.is_none()
                    || mapping.host_ip.is_none()
                    || m.host_ip == mapping.host_ip)
        }) {
            return Err(format!("{field}.host_port: {host_port} is mapped twice"));
        }
        out.push(mapping);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> PodSpec {
        PodSpec {
            metadata: Some(PodMetadata {
                name: "web".into(),
                uid: "u1".into(),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: "web-0".into(),
            ..Default::default()
        }
    }

    #[test]
    fn accepts_a_plain_pod() {
        let v = validate(good(), Driver::Cgroupfs).unwrap();
        assert_eq!(v.metadata.key(), "web_default_u1_0");
        assert!(v.port_mappings.is_empty() && v.sysctls.is_empty());
    }

    #[test]
    fn errors_name_the_field() {
        type Edit = fn(&mut PodSpec);
        let cases: &[(Edit, &str)] = &[
            (|s| s.metadata = None, "config.metadata: required"),
            (|s| s.metadata.as_mut().unwrap().name.clear(), "config.metadata.name: required"),
            (|s| s.metadata.as_mut().unwrap().uid.clear(), "config.metadata.uid: required"),
            (
                |s| s.metadata.as_mut().unwrap().namespace.clear(),
                "config.metadata.namespace: required",
            ),
            (|s| s.log_directory = "rel/logs".into(), "config.log_directory"),
            (|s| s.hostname = "a b".into(), "config.hostname"),
            (|s| s.runtime_handler = "../runc".into(), "runtime_handler"),
            (|s| s.cgroup_parent = "kubepods.slice".into(), "config.linux.cgroup_parent"),
            (|s| s.cgroup_parent = "/a/../b".into(), "config.linux.cgroup_parent"),
            (
                |s| {
                    s.sysctls.insert("vm.swappiness".into(), "1".into());
                },
                "config.linux.sysctls[\"vm.swappiness\"]",
            ),
            (
                |s| {
                    s.network = NsMode::Node;
                    s.sysctls.insert("net.ipv4.ip_forward".into(), "1".into());
                },
                "the pod uses the host's",
            ),
            (
                |s| {
                    s.port_mappings.push(PortSpec {
                        protocol: 0,
                        container_port: 80,
                        host_port: 70000,
                        host_ip: String::new(),
                    })
                },
                "config.port_mappings[0].host_port",
            ),
            (
                |s| {
                    s.port_mappings.push(PortSpec {
                        protocol: 7,
                        container_port: 80,
                        host_port: 8080,
                        host_ip: String::new(),
                    })
                },
                "config.port_mappings[0].protocol",
            ),
            (
                |s| {
                    s.port_mappings.push(PortSpec {
                        protocol: 0,
                        container_port: 80,
                        host_port: 8080,
                        host_ip: "nope".into(),
                    })
                },
                "config.port_mappings[0].host_ip",
            ),
            (
                |s| s.dns = Some(DnsConfig { servers: vec!["x".into()], ..Default::default() }),
                "config.dns_config.servers[0]",
            ),
            (|s| s.pid = NsMode::Target, "namespace_options.pid"),
        ];
        for (i, (edit, want)) in cases.iter().enumerate() {
            let mut s = good();
            edit(&mut s);
            let err = validate(s, Driver::Cgroupfs).unwrap_err();
            assert!(err.contains(want), "case {i}: {err:?} lacks {want:?}");
        }
    }

    #[test]
    fn port_mappings_skip_zero_host_ports_and_parse() {
        let mut s = good();
        s.port_mappings = vec![
            PortSpec { protocol: 0, container_port: 80, host_port: 0, host_ip: String::new() },
            PortSpec {
                protocol: 1,
                container_port: 53,
                host_port: 5353,
                host_ip: "0.0.0.0".into(),
            },
            PortSpec {
                protocol: 0,
                container_port: 80,
                host_port: 8080,
                host_ip: "127.0.0.1".into(),
            },
        ];
        let v = validate(s, Driver::Cgroupfs).unwrap();
        assert_eq!(
            v.port_mappings,
            vec![
                PortMapping::new(Protocol::Udp, 5353, 53),
                PortMapping {
                    protocol: Protocol::Tcp,
                    host_port: 8080,
                    container_port: 80,
                    host_ip: Some(Ipv4Addr::LOCALHOST)
                },
            ]
        );
    }
}
