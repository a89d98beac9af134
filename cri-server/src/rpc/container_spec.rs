//! A CRI `ContainerConfig` becomes the runtime's `ContainerSpec`, and CRI resources its
//! `ContainerResources` (and back, for ContainerStatus).
//!
//! Here the CRI's wire forms end: enum numbers become the domain's values (an unknown
//! number is refused, naming the field), and the deprecated string fields that older
//! kubelets fill (`seccomp_profile_path`, `apparmor_profile`) become the same profile
//! requests as the fields that replaced them. What needs the host or the image is the
//! runtime's to check.

use berth_proto::{
    security_profile::ProfileType, ContainerConfig, HugepageLimit, LinuxContainerResources,
    LinuxContainerSecurityContext, MountPropagation, NamespaceMode, SeLinuxOption, SecurityProfile,
    Signal, SupplementalGroupsPolicy,
};
use berth_runtime::container::{
    ContainerMetadata, ContainerResources, ContainerSpec, DeviceSpec, EnvVar, MountSpec,
    ProfileRequest, Propagation, SecuritySpec,
};
use berth_runtime::sandbox::{IdMap, NsMode};

const SC: &str = "config.linux.security_context";

/// The domain spec of a create request; an error names the field at fault.
pub fn to_spec(c: ContainerConfig) -> Result<ContainerSpec, String> {
    let linux = c.linux.unwrap_or_default();
    let mounts = c.mounts.into_iter().enumerate().map(|(i, m)| {
        let propagation = propagation(m.propagation).ok_or_else(|| {
            format!("config.mounts[{i}].propagation: unknown value {}", m.propagation)
        })?;
        Ok(MountSpec {
            container_path: m.container_path,
            host_path: m.host_path,
            readonly: m.readonly,
            propagation,
            recursive_read_only: m.recursive_read_only,
            selinux_relabel: m.selinux_relabel,
            uid_mappings: m.uid_mappings.iter().map(id_map).collect(),
            gid_mappings: m.gid_mappings.iter().map(id_map).collect(),
            image: m.image.map(|i| i.image),
            image_sub_path: m.image_sub_path,
        })
    });
    Ok(ContainerSpec {
        metadata: c.metadata.map(|m| ContainerMetadata { name: m.name, attempt: m.attempt }),
        image: c.image.map(|i| i.image).unwrap_or_default(),
        command: c.command,
        args: c.args,
        working_dir: c.working_dir,
        envs: c.envs.into_iter().map(|kv| EnvVar { key: kv.key, value: kv.value }).collect(),
        mounts: mounts.collect::<Result<_, String>>()?,
        devices: c
            .devices
            .into_iter()
            .map(|d| DeviceSpec {
                container_path: d.container_path,
                host_path: d.host_path,
                permissions: d.permissions,
            })
            .collect(),
        cdi_devices: c.cdi_devices.into_iter().map(|d| d.name).collect(),
        labels: c.labels.into_iter().collect(),
        annotations: c.annotations.into_iter().collect(),
        log_path: c.log_path,
        stdin: c.stdin,
        stdin_once: c.stdin_once,
        tty: c.tty,
        resources: linux.resources.as_ref().map(resources),
        security: security(linux.security_context.unwrap_or_default())?,
        stop_signal: stop_signal(c.stop_signal)
            .ok_or_else(|| format!("config.stop_signal: unknown signal {}", c.stop_signal))?,
    })
}

fn propagation(n: i32) -> Option<Propagation> {
    Some(match MountPropagation::try_from(n).ok()? {
        MountPropagation::PropagationPrivate => Propagation::Private,
        MountPropagation::PropagationHostToContainer => Propagation::HostToContainer,
        MountPropagation::PropagationBidirectional => Propagation::Bidirectional,
    })
}

fn id_map(m: &berth_proto::IdMapping) -> IdMap {
    IdMap { container_id: m.container_id, host_id: m.host_id, length: m.length }
}

fn security(sc: LinuxContainerSecurityContext) -> Result<SecuritySpec, String> {
    let seccomp = seccomp(&sc)?;
    let apparmor = apparmor(&sc)?;
    let (pid, target_id) = match sc.namespace_options {
        // No options: the container's own PID namespace, as the CRI's Go default.
        None => (NsMode::Container, String::new()),
        Some(o) => {
            let pid = match NamespaceMode::try_from(o.pid) {
                Ok(NamespaceMode::Pod) => NsMode::Pod,
                Ok(NamespaceMode::Container) => NsMode::Container,
                Ok(NamespaceMode::Node) => NsMode::Node,
                Ok(NamespaceMode::Target) => NsMode::Target,
                Err(_) => {
                    return Err(format!("{SC}.namespace_options.pid: unknown mode {}", o.pid))
                }
            };
            (pid, o.target_id)
        }
    };
    let strict_supplemental_groups =
        match SupplementalGroupsPolicy::try_from(sc.supplemental_groups_policy) {
            Ok(SupplementalGroupsPolicy::Merge) => false,
            Ok(SupplementalGroupsPolicy::Strict) => true,
            Err(_) => {
                return Err(format!(
                    "{SC}.supplemental_groups_policy: unknown policy {}",
                    sc.supplemental_groups_policy
                ))
            }
        };
    let caps = sc.capabilities.unwrap_or_default();
    Ok(SecuritySpec {
        privileged: sc.privileged,
        add_capabilities: caps.add_capabilities,
        drop_capabilities: caps.drop_capabilities,
        add_ambient_capabilities: caps.add_ambient_capabilities,
        pid,
        target_id,
        run_as_user: sc.run_as_user.map(|v| v.value),
        run_as_group: sc.run_as_group.map(|v| v.value),
        run_as_username: sc.run_as_username,
        supplemental_groups: sc.supplemental_groups,
        strict_supplemental_groups,
        readonly_rootfs: sc.readonly_rootfs,
        no_new_privs: sc.no_new_privs,
        masked_paths: sc.masked_paths,
        readonly_paths: sc.readonly_paths,
        seccomp,
        apparmor,
        selinux_label: asks_for_label(sc.selinux_options.as_ref()),
    })
}

/// Whether SELinux options (a pod's or a container's) ask for a label: any part set.
pub fn asks_for_label(o: Option<&SeLinuxOption>) -> bool {
    o.is_some_and(|o| {
        !(o.user.is_empty() && o.role.is_empty() && o.r#type.is_empty() && o.level.is_empty())
    })
}

/// The profile type of a `SecurityProfile` field.
fn profile_type(p: &SecurityProfile, field: &str) -> Result<ProfileType, String> {
    ProfileType::try_from(p.profile_type)
        .map_err(|_| format!("{field}.profile_type: unknown value {}", p.profile_type))
}

/// The seccomp request: the field, else the deprecated string kubelets before 1.25 fill;
/// neither is unconfined, as Kubernetes defines it.
fn seccomp(sc: &LinuxContainerSecurityContext) -> Result<ProfileRequest, String> {
    let (path, field) = match &sc.seccomp {
        Some(p) => {
            let field = format!("{SC}.seccomp");
            match profile_type(p, &field)? {
                ProfileType::Unconfined => return Ok(ProfileRequest::Unconfined),
                ProfileType::RuntimeDefault => return Ok(ProfileRequest::RuntimeDefault),
                ProfileType::Localhost => {
                    (p.localhost_ref.as_str(), format!("{field}.localhost_ref"))
                }
            }
        }
        None => {
            let field = format!("{SC}.seccomp_profile_path");
            #[allow(deprecated)]
            match sc.seccomp_profile_path.as_str() {
                "" | "unconfined" => return Ok(ProfileRequest::Unconfined),
                "runtime/default" | "docker/default" => return Ok(ProfileRequest::RuntimeDefault),
                p => match p.strip_prefix("localhost/") {
                    Some(path) => (path, field),
                    None => {
                        return Err(format!(
                            "{field}: {p:?} is not \"runtime/default\", \"unconfined\" or \
                             \"localhost/<path>\""
                        ))
                    }
                },
            }
        }
    };
    if !path.starts_with('/') {
        return Err(format!("{field}: {path:?} is not an absolute path"));
    }
    Ok(ProfileRequest::Localhost(path.to_string()))
}

/// The AppArmor request: the field wins over the deprecated string; neither is the
/// runtime's default, as the CRI defines it.
fn apparmor(sc: &LinuxContainerSecurityContext) -> Result<ProfileRequest, String> {
    if let Some(p) = &sc.apparmor {
        let field = format!("{SC}.apparmor");
        return match profile_type(p, &field)? {
            ProfileType::RuntimeDefault => Ok(ProfileRequest::RuntimeDefault),
            ProfileType::Unconfined => Ok(ProfileRequest::Unconfined),
            ProfileType::Localhost => {
                // The name alone; a `localhost/` prefix (the string form's) is tolerated.
                let name = p.localhost_ref.strip_prefix("localhost/").unwrap_or(&p.localhost_ref);
                profile_name(name).map_err(|e| format!("{field}.localhost_ref: {e}"))?;
                Ok(ProfileRequest::Localhost(name.to_string()))
            }
        };
    }
    let field = format!("{SC}.apparmor_profile");
    #[allow(deprecated)]
    match sc.apparmor_profile.as_str() {
        "" | "runtime/default" => Ok(ProfileRequest::RuntimeDefault),
        "unconfined" => Ok(ProfileRequest::Unconfined),
        s => match s.strip_prefix("localhost/") {
            Some(name) => {
                profile_name(name).map_err(|e| format!("{field}: {e}"))?;
                Ok(ProfileRequest::Localhost(name.to_string()))
            }
            None => Err(format!(
                "{field}: {s:?} is not \"runtime/default\", \"unconfined\" or \
                 \"localhost/<profile name>\""
            )),
        },
    }
}

/// A name the kernel's profile list can hold on one line.
fn profile_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("the profile name is empty".into());
    }
    if name.contains(['\n', '\0']) {
        return Err(format!("{name:?} is not a profile name"));
    }
    Ok(())
}

/// The request's stop signal as a Linux signal number: `Some(None)` for the runtime's
/// default, `None` for a number the CRI does not define.
fn stop_signal(n: i32) -> Option<Option<i32>> {
    use Signal as S;
    let n = match S::try_from(n).ok()? {
        S::RuntimeDefault => return Some(None),
        S::Sigabrt | S::Sigiot => libc::SIGABRT,
        S::Sigalrm => libc::SIGALRM,
        S::Sigbus => libc::SIGBUS,
        S::Sigchld | S::Sigcld => libc::SIGCHLD,
        S::Sigcont => libc::SIGCONT,
        S::Sigfpe => libc::SIGFPE,
        S::Sighup => libc::SIGHUP,
        S::Sigill => libc::SIGILL,
        S::Sigint => libc::SIGINT,
        S::Sigio | S::Sigpoll => libc::SIGIO,
        S::Sigkill => libc::SIGKILL,
        S::Sigpipe => libc::SIGPIPE,
        S::Sigprof => libc::SIGPROF,
        S::Sigpwr => libc::SIGPWR,
        S::Sigquit => libc::SIGQUIT,
        S::Sigsegv => libc::SIGSEGV,
        S::Sigstkflt => libc::SIGSTKFLT,
        S::Sigstop => libc::SIGSTOP,
        S::Sigsys => libc::SIGSYS,
        S::Sigterm => libc::SIGTERM,
        S::Sigtrap => libc::SIGTRAP,
        S::Sigtstp => libc::SIGTSTP,
        S::Sigttin => libc::SIGTTIN,
        S::Sigttou => libc::SIGTTOU,
        S::Sigurg => libc::SIGURG,
        S::Sigusr1 => libc::SIGUSR1,
        S::Sigusr2 => libc::SIGUSR2,
        S::Sigvtalrm => libc::SIGVTALRM,
        S::Sigwinch => libc::SIGWINCH,
        S::Sigxcpu => libc::SIGXCPU,
        S::Sigxfsz => libc::SIGXFSZ,
        // The real-time signals, counted as the C library counts them (SIGRTMIN is 34
        // with glibc: two are reserved for its threads).
        rt => {
            let v = rt as i32;
            let (min, max) = (S::Sigrtmin as i32, S::Sigrtmax as i32);
            if v < S::Sigrtmaxminus14 as i32 {
                libc::SIGRTMIN() + (v - min)
            } else {
                libc::SIGRTMAX() - (max - v)
            }
        }
    };
    Some(Some(n))
}

/// The domain's form of CRI resources.
pub fn resources(r: &LinuxContainerResources) -> ContainerResources {
    ContainerResources {
        cpu_period: r.cpu_period,
        cpu_quota: r.cpu_quota,
        cpu_shares: r.cpu_shares,
        memory_limit_in_bytes: r.memory_limit_in_bytes,
        oom_score_adj: r.oom_score_adj,
        cpuset_cpus: r.cpuset_cpus.clone(),
        cpuset_mems: r.cpuset_mems.clone(),
        hugepage_limits: r.hugepage_limits.iter().map(|h| (h.page_size.clone(), h.limit)).collect(),
        unified: r.unified.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        memory_swap_limit_in_bytes: r.memory_swap_limit_in_bytes,
    }
}

/// The CRI form of kept resources, as ContainerStatus reports them.
pub fn resources_to_cri(r: &ContainerResources) -> LinuxContainerResources {
    LinuxContainerResources {
        cpu_period: r.cpu_period,
        cpu_quota: r.cpu_quota,
        cpu_shares: r.cpu_shares,
        memory_limit_in_bytes: r.memory_limit_in_bytes,
        oom_score_adj: r.oom_score_adj,
        cpuset_cpus: r.cpuset_cpus.clone(),
        cpuset_mems: r.cpuset_mems.clone(),
        hugepage_limits: r
            .hugepage_limits
            .iter()
            .map(|(page_size, limit)| HugepageLimit { page_size: page_size.clone(), limit: *limit })
            .collect(),
        unified: r.unified.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        memory_swap_limit_in_bytes: r.memory_swap_limit_in_bytes,
    }
}

#[cfg(test)]
mod tests;
