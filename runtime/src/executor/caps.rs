//! Linux capabilities: names, the bounding and ambient sets, and capset(2).

use std::collections::HashSet;

use oci_spec::runtime::{Capabilities, LinuxCapabilities};

use super::error::{Error, Result};

/// Capability names in kernel number order (`CAP_CHOWN` = 0 …).
pub const NAMES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// A capability name as the kernel and the OCI spec spell it: upper case, `CAP_` prefixed.
/// CRI clients send either form (`NET_ADMIN`, `cap_net_admin`).
pub fn canonical_name(name: &str) -> String {
    let upper = name.to_ascii_uppercase();
    if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

/// The kernel number of a capability name (`CAP_` prefix optional, any case).
pub fn number(name: &str) -> Option<u32> {
    let full = canonical_name(name);
    NAMES.iter().position(|n| *n == full).map(|i| i as u32)
}

/// A set as a 64-bit mask. Capabilities this build does not know are an error.
pub fn mask(set: Option<&Capabilities>) -> Result<u64> {
    let mut m = 0u64;
    for cap in set.into_iter().flatten() {
        // oci-spec serialises Capability as "CAP_…".
        let name = serde_json::to_string(cap).unwrap_or_default();
        let name = name.trim_matches('"');
        let n = number(name).ok_or_else(|| Error(format!("unknown capability {name}")))?;
        m |= 1 << n;
    }
    Ok(m)
}

/// Masks for each set of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapMasks {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
}

impl CapMasks {
    pub fn from_spec(c: Option<&LinuxCapabilities>) -> Result<Self> {
        let Some(c) = c else { return Ok(Self::default()) };
        Ok(Self {
            bounding: mask(c.bounding().as_ref())?,
            effective: mask(c.effective().as_ref())?,
            permitted: mask(c.permitted().as_ref())?,
            inheritable: mask(c.inheritable().as_ref())?,
            ambient: mask(c.ambient().as_ref())?,
        })
    }
}

fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

fn errno(what: &str) -> Error {
    Error(format!("{what}: {}", nix::errno::Errno::last()))
}

/// Drops every capability not in `bounding` from the bounding set (needs CAP_SETPCAP).
pub fn drop_bounding(bounding: u64) -> Result<()> {
    for cap in 0..=last_cap().min(63) {
        if bounding & (1 << cap) == 0 {
            // SAFETY: prctl with integer arguments.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
                let e = nix::errno::Errno::last();
                if e != nix::errno::Errno::EINVAL {
                    return Err(Error(format!("drop bounding capability {cap}: {e}")));
                }
            }
        }
    }
    Ok(())
}

/// Sets the effective, permitted and inheritable sets in one capset(2).
pub fn set_sets(m: &CapMasks) -> Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let hdr = Header { version: 0x2008_0522, pid: 0 };
    let split = |v: u64| (v as u32, (v >> 32) as u32);
    let (e0, e1) = split(m.effective);
    let (p0, p1) = split(m.permitted);
    let (i0, i1) = split(m.inheritable);
    let data = [
        Data { effective: e0, permitted: p0, inheritable: i0 },
        Data { effective: e1, permitted: p1, inheritable: i1 },
    ];
    // SAFETY: capset with a v3 header and two data structs, as the ABI requires.
    if unsafe { libc::syscall(libc::SYS_capset, &hdr as *const Header, data.as_ptr()) } != 0 {
        return Err(errno("capset"));
    }
    Ok(())
}

/// Clears the ambient set and raises the caps in `ambient` (each must be permitted and
/// inheritable).
pub fn set_ambient(ambient: u64) -> Result<()> {
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0, 0, 0);
    }
    for cap in 0..64u32 {
        if ambient & (1 << cap) != 0 {
            // SAFETY: as above.
            let r = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    cap as libc::c_ulong,
                    0,
                    0,
                )
            };
            if r != 0 {
                return Err(errno(&format!("raise ambient capability {}", NAMES[cap as usize])));
            }
        }
    }
    Ok(())
}

/// Names of the caps in a mask (for messages and tests).
pub fn names(mask: u64) -> HashSet<&'static str> {
    NAMES.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, n)| *n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::Capability;

    #[test]
    fn names_and_numbers() {
        assert_eq!(number("CAP_CHOWN"), Some(0));
        assert_eq!(number("net_raw"), Some(13));
        assert_eq!(number("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(number("CAP_NOPE"), None);
        let set: Capabilities = [Capability::Chown, Capability::SysAdmin].into_iter().collect();
        assert_eq!(mask(Some(&set)).unwrap(), 1 | (1 << 21));
        assert_eq!(names(1 << 21), ["CAP_SYS_ADMIN"].into_iter().collect());
    }
}
