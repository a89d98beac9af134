//! RunPodSandbox: the CRI config becomes a domain `PodSpec`; the domain validates it and
//! creates the pod (or nothing).

use super::{errors, Cri};
use crate::rpc_span::record_pod;
use berth_proto::{
    LinuxContainerResources, NamespaceMode, PodSandboxConfig, RunPodSandboxRequest,
    RunPodSandboxResponse,
};
use berth_runtime::sandbox::{
    DnsConfig, IdMap, NsMode, PodMetadata, PodSpec, PortSpec, Resources, UsernsSpec,
};
use tonic::Status;

pub async fn run_pod_sandbox(
    cri: &Cri,
    req: RunPodSandboxRequest,
) -> Result<RunPodSandboxResponse, Status> {
    let config = req.config.ok_or_else(|| errors::missing("config"))?;
    if !cri.inner.containers.has_runtime_handler(&req.runtime_handler) {
        return Err(Status::invalid_argument(format!(
            "runtime_handler: {:?} is not configured (known: {:?})",
            req.runtime_handler,
            cri.inner.containers.runtime_handlers()
        )));
    }
    let spec = to_spec(config, req.runtime_handler);
    berth_runtime::selinux::check_sandbox(&spec, berth_runtime::selinux::enabled())
        .map_err(Status::invalid_argument)?;
    if spec.userns.as_ref().is_some_and(|u| u.mode != NsMode::Node)
        && !spec.runtime_handler.is_empty()
    {
        return Err(Status::invalid_argument(format!(
            "config.linux.security_context.namespace_options.userns_options: runtime handler \
             {:?} does not support user namespaces (the default handler does)",
            spec.runtime_handler
        )));
    }
    let id = cri.inner.sandboxes.run(spec).await.map_err(errors::runtime)?;
    record_pod(&id);
    Ok(RunPodSandboxResponse { pod_sandbox_id: id })
}

pub fn ns_mode(mode: i32) -> NsMode {
    match NamespaceMode::try_from(mode) {
        Ok(NamespaceMode::Pod) => NsMode::Pod,
        Ok(NamespaceMode::Container) => NsMode::Container,
        Ok(NamespaceMode::Node) => NsMode::Node,
        // TARGET, or a number this version does not know: refused by validation.
        _ => NsMode::Target,
    }
}

pub fn ns_mode_to_cri(mode: NsMode) -> i32 {
    match mode {
        NsMode::Pod => NamespaceMode::Pod as i32,
        NsMode::Container => NamespaceMode::Container as i32,
        NsMode::Node => NamespaceMode::Node as i32,
        NsMode::Target => NamespaceMode::Target as i32,
    }
}

pub fn resources(r: &LinuxContainerResources) -> Resources {
    Resources {
        cpu_period: r.cpu_period,
        cpu_quota: r.cpu_quota,
        cpu_shares: r.cpu_shares,
        memory_limit: r.memory_limit_in_bytes,
    }
}

fn id_map(m: &berth_proto::IdMapping) -> IdMap {
    IdMap { container_id: m.container_id, host_id: m.host_id, length: m.length }
}

/// The CRI form of a stored mapping.
pub fn id_map_to_cri(m: &IdMap) -> berth_proto::IdMapping {
    berth_proto::IdMapping { container_id: m.container_id, host_id: m.host_id, length: m.length }
}

fn to_spec(c: PodSandboxConfig, runtime_handler: String) -> PodSpec {
    let linux = c.linux.unwrap_or_default();
    let ns = linux.security_context.as_ref().and_then(|s| s.namespace_options.clone());
    let ns = ns.unwrap_or_default();
    PodSpec {
        metadata: c.metadata.map(|m| PodMetadata {
            name: m.name,
            uid: m.uid,
            namespace: m.namespace,
            attempt: m.attempt,
        }),
        hostname: c.hostname,
        log_directory: c.log_directory,
        dns: c.dns_config.map(|d| DnsConfig {
            servers: d.servers,
            searches: d.searches,
            options: d.options,
        }),
        port_mappings: c
            .port_mappings
            .into_iter()
            .map(|p| PortSpec {
                protocol: p.protocol,
                container_port: p.container_port,
                host_port: p.host_port,
                host_ip: p.host_ip,
            })
            .collect(),
        labels: c.labels.into_iter().collect(),
        annotations: c.annotations.into_iter().collect(),
        cgroup_parent: linux.cgroup_parent,
        sysctls: linux.sysctls.into_iter().collect(),
        network: ns_mode(ns.network),
        pid: ns_mode(ns.pid),
        ipc: ns_mode(ns.ipc),
        userns: ns.userns_options.as_ref().map(|u| UsernsSpec {
            mode: ns_mode(u.mode),
            uids: u.uids.iter().map(id_map).collect(),
            gids: u.gids.iter().map(id_map).collect(),
        }),
        runtime_handler,
        // The pod's own limits, else its overhead (what the kubelet sizes the pod by).
        resources: linux.resources.as_ref().or(linux.overhead.as_ref()).map(resources),
        selinux_label: super::container_spec::asks_for_label(
            linux.security_context.as_ref().and_then(|s| s.selinux_options.as_ref()),
        ),
    }
}
