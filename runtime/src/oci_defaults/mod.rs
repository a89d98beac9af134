//! Building OCI runtime specs: the defaults every container starts from (standard mounts,
//! masked and read-only paths, containerd's default capability set, the RuntimeDefault
//! seccomp profile). The CRI → spec translation builds on these.

use std::path::Path;

use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxNamespace,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxSeccomp, LinuxSeccompAction,
    LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscallBuilder, Mount,
    MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

/// The RuntimeDefault profile's text (see the file for its format).
pub const RUNTIME_DEFAULT_PROFILE: &str = include_str!("seccomp_default.txt");

/// containerd's default capability set for containers.
pub fn default_capabilities() -> Capabilities {
    use Capability::*;
    [
        Chown,
        DacOverride,
        Fsetid,
        Fowner,
        Mknod,
        NetRaw,
        Setgid,
        Setuid,
        Setfcap,
        Setpcap,
        NetBindService,
        SysChroot,
        Kill,
        AuditWrite,
    ]
    .into_iter()
    .collect()
}

/// Every capability this process may hand out (privileged containers): the names this
/// build knows, limited to the caller's own bounding set (a node without
/// CAP_SYS_RESOURCE, as a nested one, cannot grant it).
pub fn all_capabilities() -> Capabilities {
    let bounding = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("CapBnd:").and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            })
        })
        .unwrap_or(u64::MAX);
    crate::executor::caps::NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| bounding & (1 << i) != 0)
        .filter_map(|(_, n)| {
            serde_json::from_value(serde_json::Value::String((*n).to_string())).ok()
        })
        .collect()
}

pub fn masked_paths() -> Vec<String> {
    [
        "/proc/acpi",
        "/proc/asound",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/sys/firmware",
        "/sys/devices/virtual/powercap",
    ]
    .map(String::from)
    .to_vec()
}

pub fn readonly_paths() -> Vec<String> {
    ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        .map(String::from)
        .to_vec()
}

fn m(dest: &str, typ: &str, src: &str, opts: &[&str]) -> Mount {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(src)
        .options(opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .expect("static mount")
}

/// The standard mounts: /proc, /dev (tmpfs), /dev/pts, /dev/shm, /dev/mqueue, /sys (ro),
/// /sys/fs/cgroup (ro).
pub fn default_mounts() -> Vec<Mount> {
    vec![
        m("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        m("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"]),
        m(
            "/dev/pts",
            "devpts",
            "devpts",
            &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        ),
        m("/dev/shm", "tmpfs", "shm", &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
        m("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"]),
        m("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", "ro"]),
        m("/sys/fs/cgroup", "cgroup", "cgroup", &["nosuid", "noexec", "nodev", "relatime", "ro"]),
    ]
}

/// Parses the profile text format into an OCI seccomp object; a `[CAP_X]` section is
/// kept only when `has_cap("CAP_X")`.
pub fn parse_profile(text: &str, has_cap: impl Fn(&str) -> bool) -> Result<LinuxSeccomp, String> {
    let mut syscalls: Vec<oci_spec::runtime::LinuxSyscall> = Vec::new();
    let mut in_section = false;
    let mut section_applies = true;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(cap) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_section = true;
            section_applies = has_cap(cap);
            continue;
        }
        if !section_applies {
            continue;
        }
        let mut parts = line.split_whitespace();
        let name = parts.next().unwrap_or_default().to_string();
        let mut b = LinuxSyscallBuilder::default()
            .names(vec![name])
            .action(LinuxSeccompAction::ScmpActAllow);
        let bad = || format!("profile line {}: {line:?}", n + 1);
        if let Some(cond) = parts.next() {
            if let Some(errno) = cond.strip_prefix("!errno=") {
                b = b
                    .action(LinuxSeccompAction::ScmpActErrno)
                    .errno_ret(errno.parse::<u32>().map_err(|_| bad())?);
            } else {
                let cond = cond.strip_prefix("arg").ok_or_else(bad)?;
                let (lhs, rhs) = cond.split_once("==").ok_or_else(bad)?;
                let num = |s: &str| {
                    s.strip_prefix("0x")
                        .map_or_else(|| s.parse::<u64>(), |h| u64::from_str_radix(h, 16))
                        .map_err(|_| bad())
                };
                let mut args = Vec::new();
                if let Some((idx, mask)) = lhs.split_once('&') {
                    let arg = LinuxSeccompArgBuilder::default()
                        .index(idx.parse::<usize>().map_err(|_| bad())?)
                        .value(num(mask)?)
                        .value_two(num(rhs)?)
                        .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
                        .build()
                        .map_err(|e| e.to_string())?;
                    args.push(arg);
                } else {
                    let idx = lhs.parse::<usize>().map_err(|_| bad())?;
                    for v in rhs.split('|') {
                        args.push(
                            LinuxSeccompArgBuilder::default()
                                .index(idx)
                                .value(num(v)?)
                                .op(LinuxSeccompOperator::ScmpCmpEq)
                                .build()
                                .map_err(|e| e.to_string())?,
                        );
                    }
                }
                b = b.args(args);
            }
        }
        let rule = b.build().map_err(|e| e.to_string())?;
        if in_section {
            syscalls.retain(|s| s.names() != rule.names());
        }
        syscalls.push(rule);
    }
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(libc::EPERM as u32)
        .architectures(vec![
            oci_spec::runtime::Arch::ScmpArchX86_64,
            oci_spec::runtime::Arch::ScmpArchX86,
            oci_spec::runtime::Arch::ScmpArchX32,
        ])
        .syscalls(syscalls)
        .build()
        .map_err(|e| e.to_string())
}

/// The RuntimeDefault seccomp profile for a process with the default capabilities.
pub fn runtime_default_seccomp() -> LinuxSeccomp {
    runtime_default_seccomp_for(&default_capabilities())
}

/// The RuntimeDefault seccomp profile for a process holding `caps` (bounding set).
pub fn runtime_default_seccomp_for(caps: &Capabilities) -> LinuxSeccomp {
    let has_cap = |name: &str| {
        serde_json::from_value::<Capability>(serde_json::Value::String(name.into()))
            .is_ok_and(|c| caps.contains(&c))
    };
    let mut p = parse_profile(RUNTIME_DEFAULT_PROFILE, has_cap).expect("built-in profile parses");
    if cfg!(target_arch = "aarch64") {
        p.set_architectures(Some(vec![
            oci_spec::runtime::Arch::ScmpArchAarch64,
            oci_spec::runtime::Arch::ScmpArchArm,
        ]));
    }
    p
}

fn ns(t: LinuxNamespaceType, path: Option<&Path>) -> LinuxNamespace {
    let b = LinuxNamespaceBuilder::default().typ(t);
    match path {
        Some(p) => b.path(p).build(),
        None => b.build(),
    }
    .expect("namespace")
}

/// Namespace paths of the pod the container joins; `None`: a new one.
#[derive(Debug, Default, Clone)]
pub struct PodNamespaces<'a> {
    pub net: Option<&'a Path>,
    pub ipc: Option<&'a Path>,
    pub uts: Option<&'a Path>,
    pub pid: Option<&'a Path>,
    /// The pod's user namespace (pin and mappings); `None`: the host's.
    pub user: Option<(&'a Path, crate::sandbox::Userns)>,
}

/// The OCI form of a pod id mapping.
pub(crate) fn id_mapping(m: crate::sandbox::IdMap) -> oci_spec::runtime::LinuxIdMapping {
    oci_spec::runtime::LinuxIdMappingBuilder::default()
        .container_id(m.container_id)
        .host_id(m.host_id)
        .size(m.length)
        .build()
        .expect("id mapping")
}

/// A default spec running `args` as root in `rootfs`, with the standard mounts, masked
/// and read-only paths, the default capabilities, no_new_privs and RuntimeDefault seccomp.
pub fn default_spec(
    rootfs: &Path,
    args: &[&str],
    pod: &PodNamespaces<'_>,
    cgroups_path: Option<&str>,
) -> Spec {
    let caps = default_capabilities();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps.clone())
        .inheritable(Capabilities::new())
        .ambient(Capabilities::new())
        .build()
        .expect("caps");
    let process = ProcessBuilder::default()
        .args(args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .env(vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()])
        .cwd("/")
        .user(UserBuilder::default().uid(0u32).gid(0u32).build().expect("user"))
        .capabilities(capabilities)
        .no_new_privileges(true)
        .rlimits(vec![])
        .build()
        .expect("process");
    let mut namespaces = vec![
        ns(LinuxNamespaceType::Mount, None),
        ns(LinuxNamespaceType::Pid, pod.pid),
        ns(LinuxNamespaceType::Network, pod.net),
        ns(LinuxNamespaceType::Ipc, pod.ipc),
        ns(LinuxNamespaceType::Uts, pod.uts),
    ];
    if let Some((path, _)) = pod.user {
        namespaces.insert(0, ns(LinuxNamespaceType::User, Some(path)));
    }
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .masked_paths(masked_paths())
        .readonly_paths(readonly_paths())
        .seccomp(runtime_default_seccomp())
        .build()
        .expect("linux");
    linux.set_resources(None);
    if let Some((_, userns)) = pod.user {
        linux.set_uid_mappings(Some(vec![id_mapping(userns.uid)]));
        linux.set_gid_mappings(Some(vec![id_mapping(userns.gid)]));
    }
    if let Some(cg) = cgroups_path {
        linux.set_cgroups_path(Some(cg.into()));
    }
    SpecBuilder::default()
        .version("1.2.0")
        .root(RootBuilder::default().path(rootfs).readonly(false).build().expect("root"))
        .process(process)
        .hostname("berth")
        .mounts(default_mounts())
        .linux(linux)
        .build()
        .expect("spec")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_default_is_an_allow_list_with_eperm_default() {
        let p = runtime_default_seccomp();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.default_errno_ret(), Some(libc::EPERM as u32));
        let names: Vec<&str> =
            p.syscalls().iter().flatten().flat_map(|s| s.names()).map(String::as_str).collect();
        assert!(names.len() > 250);
        for banned in [
            "mount",
            "unshare",
            "setns",
            "ptrace",
            "bpf",
            "kexec_load",
            "reboot",
            "keyctl",
            "pivot_root",
        ] {
            assert!(!names.contains(&banned), "{banned} must not be allowed");
        }
        let clone = p.syscalls().iter().flatten().find(|s| s.names()[0] == "clone").unwrap();
        let arg = clone.args().as_ref().unwrap()[0];
        assert_eq!((arg.value(), arg.value_two()), (0x7E02_0000, Some(0)));
        let personality =
            p.syscalls().iter().flatten().find(|s| s.names()[0] == "personality").unwrap();
        assert_eq!(personality.args().as_ref().unwrap().len(), 5);
        let clone3 = p.syscalls().iter().flatten().find(|s| s.names()[0] == "clone3").unwrap();
        assert_eq!(clone3.errno_ret(), Some(38));
        // It compiles with libseccomp.
        crate::executor::seccomp::build(&p).unwrap();
    }

    #[test]
    fn a_pod_user_namespace_is_joined_first_with_its_mappings() {
        let m = crate::sandbox::IdMap { container_id: 0, host_id: 1000, length: 65536 };
        let userns = crate::sandbox::Userns { uid: m, gid: m };
        let pod = PodNamespaces {
            user: Some((Path::new("/p/ns/user"), userns)),
            net: Some(Path::new("/p/ns/net")),
            ..Default::default()
        };
        let spec = default_spec(Path::new("/r"), &["sh"], &pod, None);
        let linux = spec.linux().as_ref().unwrap();
        let first = &linux.namespaces().as_ref().unwrap()[0];
        assert_eq!(first.typ(), LinuxNamespaceType::User);
        assert_eq!(first.path().as_deref(), Some(Path::new("/p/ns/user")));
        let uid = &linux.uid_mappings().as_ref().unwrap()[0];
        assert_eq!((uid.container_id(), uid.host_id(), uid.size()), (0, 1000, 65536));
        assert_eq!(linux.gid_mappings().as_ref().unwrap().len(), 1);
    }

    #[test]
    fn default_spec_round_trips_as_json() {
        let spec =
            default_spec(Path::new("/r"), &["sh"], &PodNamespaces::default(), Some("/berth/x"));
        let json = serde_json::to_string(&spec).unwrap();
        let back: Spec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec);
        assert_eq!(
            crate::executor::caps::mask(Some(&default_capabilities())).unwrap().count_ones(),
            14
        );
        assert!(all_capabilities().len() > 30);
    }
}
