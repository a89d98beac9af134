//! Every field of every CRI request message, and what berthd does with it.
//!
//! prost drops fields it does not know and berth compiles every field of the proto, so a
//! field berth forgets is dropped silently. This table is the ledger against that: the
//! test below walks the compiled descriptors of every request message (and every message
//! reachable from one) and fails on a field missing here, so a CRI update shows its new
//! fields as failures. A message used in several requests is listed once; its fields
//! are handled wherever it appears.

/// What berthd does with a request field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Takes effect; an invalid value is refused with InvalidArgument naming the field.
    Handled,
    /// Refused with an error naming the field whenever it is set: berth cannot honour it.
    Refused,
    /// Accepted and ignored by design, for the reason given; CONFORMANCE.md lists it.
    Ignored(&'static str),
}

use Disposition::{Handled, Ignored, Refused};

const WINDOWS: &str = "Windows-only: the kubelet sends it on Windows nodes";
const NO_INFRA: &str = "berth runs no infra (pause) container for the pod-level security \
                        context to apply to; each container's own context applies";
const SELINUX: &str = "berth does not label: ignored on hosts without SELinux, refused on \
                       hosts that enforce it";

/// `Message.field` for every field reachable from a request message.
pub const FIELDS: &[(&str, Disposition)] = &[
    ("VersionRequest.version", Ignored("the kubelet's own API version, informational")),
    // RunPodSandbox and the pod config (also sent with CreateContainer and PullImage).
    ("RunPodSandboxRequest.config", Handled),
    ("RunPodSandboxRequest.runtime_handler", Handled),
    ("PodSandboxConfig.metadata", Handled),
    ("PodSandboxConfig.hostname", Handled),
    ("PodSandboxConfig.log_directory", Handled),
    ("PodSandboxConfig.dns_config", Handled),
    ("PodSandboxConfig.port_mappings", Handled),
    ("PodSandboxConfig.labels", Handled),
    ("PodSandboxConfig.annotations", Handled),
    ("PodSandboxConfig.linux", Handled),
    ("PodSandboxConfig.windows", Ignored(WINDOWS)),
    ("PodSandboxMetadata.name", Handled),
    ("PodSandboxMetadata.uid", Handled),
    ("PodSandboxMetadata.namespace", Handled),
    ("PodSandboxMetadata.attempt", Handled),
    ("DNSConfig.servers", Handled),
    ("DNSConfig.searches", Handled),
    ("DNSConfig.options", Handled),
    ("PortMapping.protocol", Handled),
    ("PortMapping.container_port", Handled),
    ("PortMapping.host_port", Handled),
    ("PortMapping.host_ip", Handled),
    ("LinuxPodSandboxConfig.cgroup_parent", Handled),
    ("LinuxPodSandboxConfig.security_context", Handled),
    ("LinuxPodSandboxConfig.sysctls", Handled),
    ("LinuxPodSandboxConfig.overhead", Handled),
    ("LinuxPodSandboxConfig.resources", Handled),
    ("LinuxSandboxSecurityContext.namespace_options", Handled),
    ("LinuxSandboxSecurityContext.selinux_options", Ignored(SELINUX)),
    ("LinuxSandboxSecurityContext.run_as_user", Ignored(NO_INFRA)),
    ("LinuxSandboxSecurityContext.run_as_group", Ignored(NO_INFRA)),
    ("LinuxSandboxSecurityContext.readonly_rootfs", Ignored(NO_INFRA)),
    ("LinuxSandboxSecurityContext.supplemental_groups", Ignored(NO_INFRA)),
    ("LinuxSandboxSecurityContext.supplemental_groups_policy", Ignored(NO_INFRA)),
    ("LinuxSandboxSecurityContext.privileged", Ignored(NO_INFRA)),
    ("LinuxSandboxSecurityContext.seccomp", Ignored(NO_INFRA)),
    ("LinuxSandboxSecurityContext.apparmor", Ignored(NO_INFRA)),
    ("LinuxSandboxSecurityContext.seccomp_profile_path", Ignored(NO_INFRA)),
    ("NamespaceOption.network", Handled),
    ("NamespaceOption.pid", Handled),
    ("NamespaceOption.ipc", Handled),
    ("NamespaceOption.target_id", Handled),
    ("NamespaceOption.userns_options", Handled),
    ("UserNamespace.mode", Handled),
    ("UserNamespace.uids", Handled),
    ("UserNamespace.gids", Handled),
    ("IDMapping.host_id", Handled),
    ("IDMapping.container_id", Handled),
    ("IDMapping.length", Handled),
    ("SELinuxOption.user", Ignored(SELINUX)),
    ("SELinuxOption.role", Ignored(SELINUX)),
    ("SELinuxOption.type", Ignored(SELINUX)),
    ("SELinuxOption.level", Ignored(SELINUX)),
    ("Int64Value.value", Handled),
    ("SecurityProfile.profile_type", Handled),
    ("SecurityProfile.localhost_ref", Handled),
    ("LinuxContainerResources.cpu_period", Handled),
    ("LinuxContainerResources.cpu_quota", Handled),
    ("LinuxContainerResources.cpu_shares", Handled),
    ("LinuxContainerResources.memory_limit_in_bytes", Handled),
    ("LinuxContainerResources.oom_score_adj", Handled),
    ("LinuxContainerResources.cpuset_cpus", Handled),
    ("LinuxContainerResources.cpuset_mems", Handled),
    ("LinuxContainerResources.hugepage_limits", Handled),
    ("LinuxContainerResources.unified", Handled),
    ("LinuxContainerResources.memory_swap_limit_in_bytes", Handled),
    ("HugepageLimit.page_size", Handled),
    ("HugepageLimit.limit", Handled),
    ("WindowsPodSandboxConfig.security_context", Ignored(WINDOWS)),
    ("WindowsSandboxSecurityContext.run_as_username", Ignored(WINDOWS)),
    ("WindowsSandboxSecurityContext.credential_spec", Ignored(WINDOWS)),
    ("WindowsSandboxSecurityContext.host_process", Ignored(WINDOWS)),
    ("WindowsSandboxSecurityContext.namespace_options", Ignored(WINDOWS)),
    ("WindowsNamespaceOption.network", Ignored(WINDOWS)),
    // Pod lifecycle, listing and status.
    ("StopPodSandboxRequest.pod_sandbox_id", Handled),
    ("RemovePodSandboxRequest.pod_sandbox_id", Handled),
    ("PodSandboxStatusRequest.pod_sandbox_id", Handled),
    ("PodSandboxStatusRequest.verbose", Handled),
    ("ListPodSandboxRequest.filter", Handled),
    ("StreamPodSandboxesRequest.filter", Handled),
    ("PodSandboxFilter.id", Handled),
    ("PodSandboxFilter.state", Handled),
    ("PodSandboxFilter.label_selector", Handled),
    ("PodSandboxStateValue.state", Handled),
    ("UpdatePodSandboxResourcesRequest.pod_sandbox_id", Handled),
    ("UpdatePodSandboxResourcesRequest.overhead", Handled),
    ("UpdatePodSandboxResourcesRequest.resources", Handled),
    // CreateContainer and the container config.
    ("CreateContainerRequest.pod_sandbox_id", Handled),
    ("CreateContainerRequest.config", Handled),
    (
        "CreateContainerRequest.sandbox_config",
        Ignored("berth uses the pod as RunPodSandbox made it; the kubelet resends that config"),
    ),
    ("ContainerConfig.metadata", Handled),
    ("ContainerConfig.image", Handled),
    ("ContainerConfig.command", Handled),
    ("ContainerConfig.args", Handled),
    ("ContainerConfig.working_dir", Handled),
    ("ContainerConfig.envs", Handled),
    ("ContainerConfig.mounts", Handled),
    ("ContainerConfig.devices", Handled),
    ("ContainerConfig.labels", Handled),
    ("ContainerConfig.annotations", Handled),
    ("ContainerConfig.log_path", Handled),
    ("ContainerConfig.stdin", Handled),
    ("ContainerConfig.stdin_once", Handled),
    ("ContainerConfig.tty", Handled),
    ("ContainerConfig.linux", Handled),
    ("ContainerConfig.windows", Ignored(WINDOWS)),
    ("ContainerConfig.CDI_devices", Refused),
    ("ContainerConfig.stop_signal", Handled),
    ("ContainerMetadata.name", Handled),
    ("ContainerMetadata.attempt", Handled),
    ("ImageSpec.image", Handled),
    (
        "ImageSpec.annotations",
        Ignored("platform hints for multi-arch images; berth pulls the node's platform"),
    ),
    (
        "ImageSpec.user_specified_image",
        Ignored("what the user wrote before the kubelet resolved it, informational"),
    ),
    ("ImageSpec.runtime_handler", Handled),
    (
        "ImageSpec.image_ref",
        Ignored(
            "the digest of an image volume's image, informational; berth mounts the image \
             ImageSpec.image names",
        ),
    ),
    ("KeyValue.key", Handled),
    ("KeyValue.value", Handled),
    ("Mount.container_path", Handled),
    ("Mount.host_path", Handled),
    ("Mount.readonly", Handled),
    ("Mount.selinux_relabel", Ignored(SELINUX)),
    ("Mount.propagation", Handled),
    ("Mount.uidMappings", Handled),
    ("Mount.gidMappings", Handled),
    ("Mount.recursive_read_only", Handled),
    ("Mount.image", Handled),
    ("Mount.image_sub_path", Handled),
    ("Device.container_path", Handled),
    ("Device.host_path", Handled),
    ("Device.permissions", Handled),
    ("CDIDevice.name", Refused),
    ("LinuxContainerConfig.resources", Handled),
    ("LinuxContainerConfig.security_context", Handled),
    ("LinuxContainerSecurityContext.capabilities", Handled),
    ("LinuxContainerSecurityContext.privileged", Handled),
    ("LinuxContainerSecurityContext.namespace_options", Handled),
    ("LinuxContainerSecurityContext.selinux_options", Ignored(SELINUX)),
    ("LinuxContainerSecurityContext.run_as_user", Handled),
    ("LinuxContainerSecurityContext.run_as_group", Handled),
    ("LinuxContainerSecurityContext.run_as_username", Handled),
    ("LinuxContainerSecurityContext.readonly_rootfs", Handled),
    ("LinuxContainerSecurityContext.supplemental_groups", Handled),
    ("LinuxContainerSecurityContext.supplemental_groups_policy", Handled),
    ("LinuxContainerSecurityContext.no_new_privs", Handled),
    ("LinuxContainerSecurityContext.masked_paths", Handled),
    ("LinuxContainerSecurityContext.readonly_paths", Handled),
    ("LinuxContainerSecurityContext.seccomp", Handled),
    ("LinuxContainerSecurityContext.apparmor", Handled),
    ("LinuxContainerSecurityContext.apparmor_profile", Handled),
    ("LinuxContainerSecurityContext.seccomp_profile_path", Handled),
    ("Capability.add_capabilities", Handled),
    ("Capability.drop_capabilities", Handled),
    ("Capability.add_ambient_capabilities", Handled),
    ("WindowsContainerConfig.resources", Ignored(WINDOWS)),
    ("WindowsContainerConfig.security_context", Ignored(WINDOWS)),
    ("WindowsContainerResources.cpu_shares", Ignored(WINDOWS)),
    ("WindowsContainerResources.cpu_count", Ignored(WINDOWS)),
    ("WindowsContainerResources.cpu_maximum", Ignored(WINDOWS)),
    ("WindowsContainerResources.memory_limit_in_bytes", Ignored(WINDOWS)),
    ("WindowsContainerResources.rootfs_size_in_bytes", Ignored(WINDOWS)),
    ("WindowsContainerResources.affinity_cpus", Ignored(WINDOWS)),
    ("WindowsCpuGroupAffinity.cpu_mask", Ignored(WINDOWS)),
    ("WindowsCpuGroupAffinity.cpu_group", Ignored(WINDOWS)),
    ("WindowsContainerSecurityContext.run_as_username", Ignored(WINDOWS)),
    ("WindowsContainerSecurityContext.credential_spec", Ignored(WINDOWS)),
    ("WindowsContainerSecurityContext.host_process", Ignored(WINDOWS)),
    // Container lifecycle, listing, status and updates.
    ("StartContainerRequest.container_id", Handled),
    ("StopContainerRequest.container_id", Handled),
    ("StopContainerRequest.timeout", Handled),
    ("RemoveContainerRequest.container_id", Handled),
    ("ListContainersRequest.filter", Handled),
    ("StreamContainersRequest.filter", Handled),
    ("ContainerFilter.id", Handled),
    ("ContainerFilter.state", Handled),
    ("ContainerFilter.pod_sandbox_id", Handled),
    ("ContainerFilter.label_selector", Handled),
    ("ContainerStateValue.state", Handled),
    ("ContainerStatusRequest.container_id", Handled),
    ("ContainerStatusRequest.verbose", Handled),
    ("UpdateContainerResourcesRequest.container_id", Handled),
    ("UpdateContainerResourcesRequest.linux", Handled),
    ("UpdateContainerResourcesRequest.windows", Ignored(WINDOWS)),
    (
        "UpdateContainerResourcesRequest.annotations",
        Ignored("for NRI plugins, which berth does not run"),
    ),
    ("ReopenContainerLogRequest.container_id", Handled),
    ("CheckpointContainerRequest.container_id", Handled),
    ("CheckpointContainerRequest.location", Handled),
    ("CheckpointContainerRequest.timeout", Handled),
    // Streaming.
    ("ExecSyncRequest.container_id", Handled),
    ("ExecSyncRequest.cmd", Handled),
    ("ExecSyncRequest.timeout", Handled),
    ("ExecRequest.container_id", Handled),
    ("ExecRequest.cmd", Handled),
    ("ExecRequest.tty", Handled),
    ("ExecRequest.stdin", Handled),
    ("ExecRequest.stdout", Handled),
    ("ExecRequest.stderr", Handled),
    ("AttachRequest.container_id", Handled),
    ("AttachRequest.stdin", Handled),
    ("AttachRequest.tty", Handled),
    ("AttachRequest.stdout", Handled),
    ("AttachRequest.stderr", Handled),
    ("PortForwardRequest.pod_sandbox_id", Handled),
    ("PortForwardRequest.port", Handled),
    // Stats and metrics.
    ("ContainerStatsRequest.container_id", Handled),
    ("ListContainerStatsRequest.filter", Handled),
    ("StreamContainerStatsRequest.filter", Handled),
    ("ContainerStatsFilter.id", Handled),
    ("ContainerStatsFilter.pod_sandbox_id", Handled),
    ("ContainerStatsFilter.label_selector", Handled),
    ("PodSandboxStatsRequest.pod_sandbox_id", Handled),
    ("ListPodSandboxStatsRequest.filter", Handled),
    ("StreamPodSandboxStatsRequest.filter", Handled),
    ("PodSandboxStatsFilter.id", Handled),
    ("PodSandboxStatsFilter.label_selector", Handled),
    // Runtime.
    ("UpdateRuntimeConfigRequest.runtime_config", Handled),
    ("RuntimeConfig.network_config", Handled),
    ("NetworkConfig.pod_cidr", Handled),
    ("StatusRequest.verbose", Handled),
    // Images.
    ("ListImagesRequest.filter", Handled),
    ("StreamImagesRequest.filter", Handled),
    ("ImageFilter.image", Handled),
    ("ImageStatusRequest.image", Handled),
    ("ImageStatusRequest.verbose", Handled),
    ("PullImageRequest.image", Handled),
    ("PullImageRequest.auth", Handled),
    (
        "PullImageRequest.sandbox_config",
        Ignored("one image store serves the node; the pod changes nothing about a pull"),
    ),
    ("AuthConfig.username", Handled),
    ("AuthConfig.password", Handled),
    ("AuthConfig.auth", Handled),
    ("AuthConfig.server_address", Handled),
    ("AuthConfig.identity_token", Handled),
    ("AuthConfig.registry_token", Handled),
    ("RemoveImageRequest.image", Handled),
];

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use prost_types::field_descriptor_proto::Type;
    use prost_types::{DescriptorProto, FileDescriptorSet};
    use std::collections::{BTreeSet, HashMap};

    /// `Message.field` of every field of every request message and of every message
    /// reachable from one (map entries are leaves).
    fn request_fields() -> BTreeSet<String> {
        let fds = FileDescriptorSet::decode(berth_proto::FILE_DESCRIPTOR_SET).unwrap();
        let file = fds.file.iter().find(|f| f.package() == "runtime.v1").unwrap();
        let messages: HashMap<String, &DescriptorProto> =
            file.message_type.iter().map(|m| (format!(".runtime.v1.{}", m.name()), m)).collect();
        let mut seen = BTreeSet::new();
        let mut fields = BTreeSet::new();
        let mut todo: Vec<String> = file
            .service
            .iter()
            .flat_map(|s| &s.method)
            .map(|m| m.input_type().to_string())
            .collect();
        assert!(todo.len() >= 41, "{} RPCs", todo.len());
        while let Some(name) = todo.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            let msg = messages[&name];
            let maps: Vec<String> = msg
                .nested_type
                .iter()
                .filter(|n| n.options.as_ref().is_some_and(|o| o.map_entry()))
                .map(|n| format!("{name}.{}", n.name()))
                .collect();
            for f in &msg.field {
                fields.insert(format!("{}.{}", msg.name(), f.name()));
                if f.r#type() == Type::Message && !maps.contains(&f.type_name().to_string()) {
                    todo.push(f.type_name().to_string());
                }
            }
        }
        fields
    }

    #[test]
    fn every_request_field_is_handled_refused_or_ignored_by_design() {
        let fields = request_fields();
        let listed: BTreeSet<String> = FIELDS.iter().map(|(f, _)| f.to_string()).collect();
        assert_eq!(listed.len(), FIELDS.len(), "a field is listed twice");
        let unlisted: Vec<_> = fields.difference(&listed).collect();
        assert!(
            unlisted.is_empty(),
            "request fields berth would drop silently; handle each, refuse it, or list it as \
             ignored by design: {unlisted:#?}"
        );
        let stale: Vec<_> = listed.difference(&fields).collect();
        assert!(stale.is_empty(), "listed fields the proto no longer has: {stale:#?}");
    }

    #[test]
    fn conformance_md_lists_every_field_ignored_by_design() {
        let doc = include_str!("../../../CONFORMANCE.md");
        for (field, d) in FIELDS {
            if let Ignored(_) = d {
                assert!(
                    doc.contains(&format!("`{field}`")),
                    "CONFORMANCE.md does not list {field}"
                );
            }
        }
    }
}
