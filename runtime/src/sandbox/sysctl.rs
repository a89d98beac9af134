//! Which sysctls a pod may set, and where each one is applied.
//!
//! Only namespaced sysctls are allowed: those a pod can change without touching the
//! node. `net.*` live in the pod's network namespace; `kernel.shm*`, `kernel.msg*`,
//! `kernel.sem` and `fs.mqueue.*` in its IPC namespace. Anything else would change the
//! host for everyone and is refused, naming the sysctl.

use std::path::PathBuf;

/// The namespace a sysctl belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SysctlNs {
    Net,
    Ipc,
}

/// A validated sysctl: its name (dotted), its value and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysctl {
    pub name: String,
    pub value: String,
    pub ns: SysctlNs,
}

impl Sysctl {
    /// The file under `/proc/sys` that sets it.
    pub fn proc_path(&self) -> PathBuf {
        PathBuf::from("/proc/sys").join(to_path(&self.name))
    }
}

/// The namespace of a sysctl, or why it cannot be set in a pod. Accepts dotted
/// (`net.ipv4.ip_forward`) and slashed (`net/ipv4/ip_forward`) names.
pub fn classify(name: &str) -> Result<SysctlNs, String> {
    let ok_chars =
        name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'/' | b'_' | b'-'));
    let dotted = normalize(name);
    if name.is_empty() || !ok_chars || name.split(['.', '/']).any(str::is_empty) {
        return Err(format!("{name:?} is not a sysctl name"));
    }
    const IPC_EXACT: &[&str] = &["kernel.sem"];
    const IPC_PREFIXES: &[&str] = &["kernel.shm", "kernel.msg", "fs.mqueue."];
    if dotted.starts_with("net.") {
        Ok(SysctlNs::Net)
    } else if IPC_EXACT.contains(&dotted.as_str())
        || IPC_PREFIXES.iter().any(|p| dotted.starts_with(p))
    {
        Ok(SysctlNs::Ipc)
    } else {
        Err(format!(
            "sysctl {name:?} is not namespaced (only net.*, kernel.shm*, kernel.msg*, \
             kernel.sem and fs.mqueue.* can be set per pod)"
        ))
    }
}

/// `net/ipv4/ip_forward` -> `net.ipv4.ip_forward`, for classification only.
fn normalize(name: &str) -> String {
    name.replace('/', ".")
}

/// The path below `/proc/sys` of a sysctl name.
fn to_path(name: &str) -> String {
    if name.contains('/') {
        name.to_string()
    } else {
        name.replace('.', "/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        for (name, want) in [
            ("net.ipv4.ip_unprivileged_port_start", Ok(SysctlNs::Net)),
            ("net/ipv4/ping_group_range", Ok(SysctlNs::Net)),
            ("net.ipv4.conf.all.forwarding", Ok(SysctlNs::Net)),
            ("kernel.shmmax", Ok(SysctlNs::Ipc)),
            ("kernel.shm_rmid_forced", Ok(SysctlNs::Ipc)),
            ("kernel.msgmnb", Ok(SysctlNs::Ipc)),
            ("kernel.sem", Ok(SysctlNs::Ipc)),
            ("fs.mqueue.msg_max", Ok(SysctlNs::Ipc)),
            ("kernel/shmall", Ok(SysctlNs::Ipc)),
        ] {
            assert_eq!(classify(name), want, "{name}");
        }
        for bad in [
            "kernel.hostname",
            "vm.swappiness",
            "fs.file-max",
            "",
            "net..x",
            "net.ipv4/../../etc",
            "net.ipv4 x",
            "kernel.domainname",
        ] {
            let err = classify(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }

    #[test]
    fn proc_paths() {
        let s = |name: &str| Sysctl { name: name.into(), value: "1".into(), ns: SysctlNs::Net };
        assert_eq!(
            s("net.ipv4.ip_forward").proc_path(),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(
            s("net/ipv4/conf/eth0.100/forwarding").proc_path(),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0.100/forwarding")
        );
    }
}
