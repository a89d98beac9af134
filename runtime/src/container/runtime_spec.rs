//! The container's [`ContainerSpec`] plus the image's config become one OCI runtime spec, with
//! Kubernetes' rules: `command` replaces the image's Entrypoint and `args` its Cmd, the
//! request's env overrides the image's, and the security context decides user,
//! capabilities, seccomp, masked paths and the read-only root.
//!
//! The spec is the one contract between "what to run" and "how": the native executor in
//! the shim and any OCI runtime binary take the same document.

use super::container_spec::{
    ContainerResources, ContainerSpec, MountSpec, ProfileRequest, Propagation, SecuritySpec,
};
use super::devices;
use super::user::{self, UserRequest};
use crate::image::record::ImageConfig;
use crate::oci_defaults::{self as defaults, PodNamespaces};
use crate::sandbox::NsMode;
use oci_spec::runtime::{
    Capabilities, Capability, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxMemoryBuilder,
    LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, LinuxSeccomp, Mount, MountBuilder, Spec, UserBuilder,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Files the pod shares with its containers, bind-mounted over the image's.
#[derive(Debug, Clone, Default)]
pub struct PodFiles {
    pub hostname: Option<PathBuf>,
    pub resolv_conf: Option<PathBuf>,
    pub hosts: Option<PathBuf>,
    /// The pod's /dev/shm; `None` keeps a private tmpfs.
    pub shm: Option<PathBuf>,
}

/// Everything the spec is made from.
pub struct SpecInput<'a> {
    pub config: &'a ContainerSpec,
    pub image: &'a ImageConfig,
    /// The container's mounted root filesystem (for `/etc/passwd` lookups).
    pub rootfs: &'a Path,
    pub hostname: &'a str,
    pub pod: PodNamespaces<'a>,
    /// The pid of the target container for PID namespace mode TARGET.
    pub target_pid: Option<i32>,
    pub files: PodFiles,
    pub cgroups_path: String,
    /// Maximum processes in the container's cgroup; 0: unlimited.
    pub pids_limit: i64,
    /// The AppArmor profile its processes run under (`None`: unconfined), as
    /// [`crate::apparmor`] chose it for the request and the host.
    pub apparmor_profile: Option<String>,
}

/// Builds the spec; an error names the request field at fault.
pub fn build(input: &SpecInput<'_>) -> Result<Spec, String> {
    let cfg = input.config;
    let sc = &cfg.security;
    let privileged = sc.privileged;

    let mut spec = defaults::default_spec(input.rootfs, &[], &input.pod, Some(&input.cgroups_path));
    let args = process_args(cfg, input.image)?;
    // A group alone would run as the image's user with a group the image never meant
    // for it; Kubernetes refuses that combination.
    if sc.run_as_group.is_some() && sc.run_as_user.is_none() && sc.run_as_username.is_empty() {
        return Err("linux.security_context.run_as_group: set without run_as_user or \
                    run_as_username"
            .into());
    }
    let user = user::resolve(
        input.rootfs,
        &UserRequest {
            run_as_user: sc.run_as_user,
            run_as_group: sc.run_as_group,
            run_as_username: sc.run_as_username.clone(),
            supplemental_groups: sc.supplemental_groups.clone(),
            strict_groups: sc.strict_supplemental_groups,
            image_user: input.image.user.clone(),
        },
    )?;

    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(args));
    process.set_env(Some(env(cfg, input.image)?));
    process.set_cwd(PathBuf::from(working_dir(cfg, input.image)?));
    process.set_terminal(Some(cfg.tty));
    process.set_user(
        UserBuilder::default()
            .uid(user.uid)
            .gid(user.gid)
            .additional_gids(user.additional_gids)
            .build()
            .map_err(|e| e.to_string())?,
    );
    process.set_no_new_privileges(Some(sc.no_new_privs));
    process.set_apparmor_profile(input.apparmor_profile.clone());
    let mut caps = capabilities(sc)?;
    // Ambient capabilities survive execve for a non-root user; the kernel keeps one only
    // while it is also permitted and inheritable, so it joins every set.
    let mut ambient = Capabilities::new();
    for name in &sc.add_ambient_capabilities {
        ambient.insert(capability(name).map_err(|e| {
            format!("linux.security_context.capabilities.add_ambient_capabilities: {e}")
        })?);
    }
    caps.extend(ambient.iter().copied());
    let seccomp_caps = caps.clone();
    process.set_capabilities(Some(
        LinuxCapabilitiesBuilder::default()
            .bounding(caps.clone())
            .effective(caps.clone())
            .permitted(caps)
            .inheritable(ambient.clone())
            .ambient(ambient)
            .build()
            .map_err(|e| e.to_string())?,
    ));
    let resources = cfg.resources.clone().unwrap_or_default();
    if resources.oom_score_adj != 0 {
        process.set_oom_score_adj(Some(resources.oom_score_adj as i32));
    }
    spec.set_process(Some(process));

    let mut root = spec.root().clone().unwrap_or_default();
    root.set_readonly(Some(sc.readonly_rootfs));
    spec.set_root(Some(root));
    spec.set_hostname(Some(input.hostname.to_string()));
    let userns = input.pod.user.map(|(_, u)| u);
    spec.set_mounts(Some(mounts(cfg, &input.files, privileged, userns)?));
    let annotations: HashMap<String, String> =
        cfg.annotations.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    spec.set_annotations(Some(annotations));

    let mut l = spec.linux().clone().unwrap_or_default();
    l.set_namespaces(Some(namespaces(&input.pod, sc.pid, input.target_pid)?));
    if privileged {
        l.set_masked_paths(Some(Vec::new()));
        l.set_readonly_paths(Some(Vec::new()));
    } else {
        if !sc.masked_paths.is_empty() {
            l.set_masked_paths(Some(sc.masked_paths.clone()));
        }
        if !sc.readonly_paths.is_empty() {
            l.set_readonly_paths(Some(sc.readonly_paths.clone()));
        }
    }
    l.set_seccomp(seccomp(privileged, &seccomp_caps, &sc.seccomp)?);
    let (nodes, device_rules) = devices::devices(cfg, privileged)?;
    l.set_devices(Some(nodes));
    let mut oci_resources = linux_resources(&resources, input.pids_limit)?;
    oci_resources.set_devices(Some(device_rules));
    l.set_resources(Some(oci_resources));
    l.set_rootfs_propagation(rootfs_propagation(cfg));
    spec.set_linux(Some(l));
    Ok(spec)
}

/// Kubernetes' rule: `command` replaces Entrypoint (and then Cmd is dropped); `args`
/// replace Cmd.
pub fn process_args(cfg: &ContainerSpec, image: &ImageConfig) -> Result<Vec<String>, String> {
    let mut args =
        if cfg.command.is_empty() { image.entrypoint.clone() } else { cfg.command.clone() };
    if !cfg.args.is_empty() {
        args.extend(cfg.args.iter().cloned());
    } else if cfg.command.is_empty() {
        args.extend(image.cmd.iter().cloned());
    }
    if args.is_empty() {
        return Err("command: neither the request nor the image says what to run".into());
    }
    Ok(args)
}

/// The image's environment with the request's variables set over it, in order.
///
/// The CRI carries values as bytes; an OCI process environment is strings, so a value
/// that is not UTF-8 is refused rather than mangled.
pub fn env(cfg: &ContainerSpec, image: &ImageConfig) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = image.env.clone();
    for (i, kv) in cfg.envs.iter().enumerate() {
        let value = std::str::from_utf8(&kv.value)
            .map_err(|_| format!("envs[{i}].value: the value of {:?} is not UTF-8", kv.key))?;
        let entry = format!("{}={value}", kv.key);
        match out.iter_mut().find(|e| e.split('=').next() == Some(kv.key.as_str())) {
            Some(existing) => *existing = entry,
            None => out.push(entry),
        }
    }
    Ok(out)
}

fn working_dir(cfg: &ContainerSpec, image: &ImageConfig) -> Result<String, String> {
    let dir =
        [cfg.working_dir.as_str(), image.working_dir.as_str()].into_iter().find(|d| !d.is_empty());
    match dir {
        None => Ok("/".into()),
        Some(d) if d.starts_with('/') => Ok(d.into()),
        Some(d) => Err(format!("working_dir: {d:?} is not an absolute path")),
    }
}

fn capability(name: &str) -> Result<Capability, String> {
    let full = crate::executor::caps::canonical_name(name);
    serde_json::from_value(serde_json::Value::String(full))
        .map_err(|_| format!("linux.security_context.capabilities: unknown capability {name:?}"))
}

/// The default set, plus the request's additions, minus its drops (`ALL` in either).
fn capabilities(sc: &SecuritySpec) -> Result<Capabilities, String> {
    if sc.privileged {
        return Ok(defaults::all_capabilities());
    }
    let mut caps = defaults::default_capabilities();
    let is_all = |c: &String| c.eq_ignore_ascii_case("ALL");
    let (add, drop) = (&sc.add_capabilities, &sc.drop_capabilities);
    if add.iter().any(is_all) {
        caps = defaults::all_capabilities();
    }
    for name in add.iter().filter(|c| !is_all(c)) {
        caps.insert(capability(name)?);
    }
    if drop.iter().any(is_all) {
        caps.clear();
        // Adding after dropping ALL keeps what was explicitly asked for.
        for name in add.iter().filter(|c| !is_all(c)) {
            caps.insert(capability(name)?);
        }
    }
    for name in drop.iter().filter(|c| !is_all(c)) {
        caps.remove(&capability(name)?);
    }
    Ok(caps)
}

fn seccomp(
    privileged: bool,
    caps: &Capabilities,
    profile: &ProfileRequest,
) -> Result<Option<LinuxSeccomp>, String> {
    if privileged {
        return Ok(None);
    }
    let field = "linux.security_context.seccomp";
    match profile {
        ProfileRequest::Unconfined => Ok(None),
        ProfileRequest::RuntimeDefault => Ok(Some(defaults::runtime_default_seccomp_for(caps))),
        ProfileRequest::Localhost(path) => {
            if !path.starts_with('/') {
                return Err(format!("{field}.localhost_ref: {path:?} is not an absolute path"));
            }
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{field}: {path}: {e}"))?;
            serde_json::from_str(&text)
                .map_err(|e| format!("{field}: {path} is not a seccomp profile: {e}"))
        }
    }
}

fn namespaces(
    pod: &PodNamespaces<'_>,
    pid_mode: NsMode,
    target_pid: Option<i32>,
) -> Result<Vec<LinuxNamespace>, String> {
    let ns = |t: LinuxNamespaceType, path: Option<PathBuf>| {
        let b = LinuxNamespaceBuilder::default().typ(t);
        match path {
            Some(p) => b.path(p).build(),
            None => b.build(),
        }
        .map_err(|e| e.to_string())
    };
    let mut out = vec![ns(LinuxNamespaceType::Mount, None)?];
    if let Some((path, _)) = pod.user {
        out.insert(0, ns(LinuxNamespaceType::User, Some(path.to_path_buf()))?);
    }
    match pid_mode {
        NsMode::Node => {}
        NsMode::Pod => out.push(ns(LinuxNamespaceType::Pid, pod.pid.map(Path::to_path_buf))?),
        NsMode::Container => out.push(ns(LinuxNamespaceType::Pid, None)?),
        NsMode::Target => {
            let pid = target_pid
                .ok_or("linux.security_context.namespace_options.target_id: the target container is not running")?;
            out.push(ns(
                LinuxNamespaceType::Pid,
                Some(PathBuf::from(format!("/proc/{pid}/ns/pid"))),
            )?);
        }
    }
    // Net, IPC and UTS are the pod's: a path to its pinned namespace, or none at all when
    // the pod uses the node's.
    for (t, path) in [
        (LinuxNamespaceType::Network, pod.net),
        (LinuxNamespaceType::Ipc, pod.ipc),
        (LinuxNamespaceType::Uts, pod.uts),
    ] {
        if let Some(p) = path {
            out.push(ns(t, Some(p.to_path_buf()))?);
        }
    }
    Ok(out)
}

fn bind(dest: &str, src: &Path, options: &[&str]) -> Result<Mount, String> {
    MountBuilder::default()
        .destination(dest)
        .typ("bind")
        .source(src)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(|e| e.to_string())
}

/// The standard mounts, the pod's files, then the request's mounts (which win over
/// anything at the same destination).
fn mounts(
    cfg: &ContainerSpec,
    files: &PodFiles,
    privileged: bool,
    userns: Option<crate::sandbox::Userns>,
) -> Result<Vec<Mount>, String> {
    let mut out = defaults::default_mounts();
    if privileged {
        // A privileged container sees sysfs and cgroups writable, as with containerd.
        for m in out.iter_mut().filter(|m| m.destination().starts_with("/sys")) {
            let opts: Vec<String> =
                m.options().clone().unwrap_or_default().into_iter().filter(|o| o != "ro").collect();
            m.set_options(Some(opts));
        }
    }
    let wanted: Vec<&str> = cfg.mounts.iter().map(|m| m.container_path.as_str()).collect();
    for (dest, src, ro) in [
        ("/etc/hostname", &files.hostname, false),
        ("/etc/resolv.conf", &files.resolv_conf, false),
        ("/etc/hosts", &files.hosts, false),
        ("/dev/shm", &files.shm, false),
    ] {
        if let (Some(src), false) = (src, wanted.contains(&dest)) {
            if dest == "/dev/shm" {
                out.retain(|m| m.destination() != Path::new("/dev/shm"));
            }
            let mode = if ro { "ro" } else { "rw" };
            out.push(bind(dest, src, &["rbind", "rprivate", mode])?);
        }
    }
    for (i, m) in cfg.mounts.iter().enumerate() {
        let field = |f: &str| format!("mounts[{i}].{f}");
        if !m.container_path.starts_with('/') {
            return Err(format!(
                "{}: {:?} is not an absolute path",
                field("container_path"),
                m.container_path
            ));
        }
        if !m.host_path.starts_with('/') {
            return Err(format!(
                "{}: {:?} is not an absolute path",
                field("host_path"),
                m.host_path
            ));
        }
        if std::fs::symlink_metadata(&m.host_path).is_err() {
            return Err(format!("{}: {} does not exist", field("host_path"), m.host_path));
        }
        let propagation = match m.propagation {
            Propagation::Private => "rprivate",
            Propagation::HostToContainer => "rslave",
            Propagation::Bidirectional => "rshared",
        };
        let mode = if m.readonly { "ro" } else { "rw" };
        let mut options = vec!["rbind", propagation, mode];
        if m.recursive_read_only {
            // Read-only all the way down makes no sense for a mount that is writable, or
            // that takes in (or sends out) mounts made later.
            if !m.readonly || m.propagation != Propagation::Private {
                return Err(format!(
                    "{}: needs readonly and private propagation",
                    field("recursive_read_only")
                ));
            }
            options.push("rro");
        }
        let idmap = idmap_of(m, userns).map_err(|e| format!("{}: {e}", field("uid_mappings")))?;
        if idmap.is_some() {
            options.push("idmap");
        }
        let mut mount = bind(&m.container_path, Path::new(&m.host_path), &options)?;
        if let Some(u) = idmap {
            mount.set_uid_mappings(Some(vec![defaults::id_mapping(u.uid)]));
            mount.set_gid_mappings(Some(vec![defaults::id_mapping(u.gid)]));
        }
        out.retain(|existing| existing.destination() != Path::new(&m.container_path));
        out.push(mount);
    }
    Ok(out)
}

/// The mappings of an idmapped volume: the CRI mount's, which must be the pod's own (the
/// executor maps through the pod's user namespace).
fn idmap_of(
    m: &MountSpec,
    userns: Option<crate::sandbox::Userns>,
) -> Result<Option<crate::sandbox::Userns>, String> {
    if m.uid_mappings.is_empty() && m.gid_mappings.is_empty() {
        return Ok(None);
    }
    let Some(pod) = userns else {
        return Err("an idmapped mount needs a pod with its own user namespace".into());
    };
    let same = |given: &[crate::sandbox::IdMap], want: crate::sandbox::IdMap| given == [want];
    if !same(&m.uid_mappings, pod.uid) || !same(&m.gid_mappings, pod.gid) {
        return Err("uid and gid mappings must be the pod's user namespace mappings".into());
    }
    Ok(Some(pod))
}

/// A bidirectional volume needs the container's mount tree to stay a peer of the host's,
/// or what the container mounts under it never reaches the host.
fn rootfs_propagation(cfg: &ContainerSpec) -> Option<String> {
    let has = |p: Propagation| cfg.mounts.iter().any(|m| m.propagation == p);
    if has(Propagation::Bidirectional) {
        Some("rshared".into())
    } else if has(Propagation::HostToContainer) {
        Some("rslave".into())
    } else {
        None
    }
}

/// The OCI resources for the requested ones (also used for live updates).
pub fn linux_resources(
    r: &ContainerResources,
    pids_limit: i64,
) -> Result<oci_spec::runtime::LinuxResources, String> {
    let mut cpu = LinuxCpuBuilder::default();
    if r.cpu_shares > 0 {
        cpu = cpu.shares(r.cpu_shares as u64);
    }
    if r.cpu_quota > 0 {
        cpu = cpu.quota(r.cpu_quota);
    }
    if r.cpu_period > 0 {
        cpu = cpu.period(r.cpu_period as u64);
    }
    if !r.cpuset_cpus.is_empty() {
        cpu = cpu.cpus(r.cpuset_cpus.clone());
    }
    if !r.cpuset_mems.is_empty() {
        cpu = cpu.mems(r.cpuset_mems.clone());
    }
    let mut memory = LinuxMemoryBuilder::default();
    if r.memory_limit_in_bytes > 0 {
        memory = memory.limit(r.memory_limit_in_bytes);
        if r.memory_swap_limit_in_bytes > 0 {
            memory = memory.swap(r.memory_swap_limit_in_bytes);
        }
    }
    let mut b = LinuxResourcesBuilder::default()
        .cpu(cpu.build().map_err(|e| e.to_string())?)
        .memory(memory.build().map_err(|e| e.to_string())?);
    if pids_limit > 0 {
        b = b.pids(
            LinuxPidsBuilder::default().limit(pids_limit).build().map_err(|e| e.to_string())?,
        );
    }
    if !r.hugepage_limits.is_empty() {
        let limits = r
            .hugepage_limits
            .iter()
            .map(|(page_size, limit)| {
                if page_size.is_empty() || !page_size.bytes().all(|c| c.is_ascii_alphanumeric()) {
                    return Err(format!(
                        "linux.resources.hugepage_limits: bad page size {page_size:?}"
                    ));
                }
                oci_spec::runtime::LinuxHugepageLimitBuilder::default()
                    .page_size(page_size.clone())
                    .limit(*limit as i64)
                    .build()
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, String>>()?;
        b = b.hugepage_limits(limits);
    }
    if !r.unified.is_empty() {
        b = b.unified(r.unified.clone().into_iter().collect::<HashMap<_, _>>());
    }
    b.build().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
