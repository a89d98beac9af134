//! Devices: the nodes a container gets and the device cgroup rules that say which it may
//! open. The default containers hold CAP_MKNOD, so without the rules a container could
//! make a node for the host's disk and read it.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::container_spec::ContainerSpec;
use oci_spec::runtime::{
    LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType,
};

/// What the default device rules allow besides the requested devices: creating any node
/// (not opening it), and the standard devices every container has in `/dev`.
const DEFAULT_ALLOWED: &[(LinuxDeviceType, Option<i64>, Option<i64>, &str)] = &[
    (LinuxDeviceType::C, None, None, "m"),
    (LinuxDeviceType::B, None, None, "m"),
    (LinuxDeviceType::C, Some(1), Some(3), "rwm"), // null
    (LinuxDeviceType::C, Some(1), Some(5), "rwm"), // zero
    (LinuxDeviceType::C, Some(1), Some(7), "rwm"), // full
    (LinuxDeviceType::C, Some(1), Some(8), "rwm"), // random
    (LinuxDeviceType::C, Some(1), Some(9), "rwm"), // urandom
    (LinuxDeviceType::C, Some(5), Some(0), "rwm"), // tty
    (LinuxDeviceType::C, Some(5), Some(1), "rwm"), // console
    (LinuxDeviceType::C, Some(5), Some(2), "rwm"), // ptmx
    (LinuxDeviceType::C, Some(136), None, "rwm"),  // pts
    (LinuxDeviceType::C, Some(10), Some(200), "rwm"), // tun
];

/// Host `/dev` entries a privileged container does not get as nodes (they are mounts of
/// the container's own, or host bookkeeping).
const HOST_DEV_SKIP: &[&str] = &["pts", "ptmx", "shm", "mqueue", "fd", "console", ".lxc", ".udev"];

fn rule(
    allow: bool,
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut b = LinuxDeviceCgroupBuilder::default().allow(allow).typ(typ).access(access);
    if let Some(m) = major {
        b = b.major(m);
    }
    if let Some(m) = minor {
        b = b.minor(m);
    }
    b.build().expect("device rule")
}

/// The device nodes and cgroup rules for a container.
pub fn devices(
    cfg: &ContainerSpec,
    privileged: bool,
) -> Result<(Vec<LinuxDevice>, Vec<LinuxDeviceCgroup>), String> {
    if privileged {
        let mut nodes = Vec::new();
        host_devices(Path::new("/dev"), Path::new("/dev"), true, &mut nodes)?;
        return Ok((nodes, vec![rule(true, LinuxDeviceType::A, None, None, "rwm")]));
    }
    let mut rules = vec![rule(false, LinuxDeviceType::A, None, None, "rwm")];
    rules.extend(DEFAULT_ALLOWED.iter().map(|&(t, ma, mi, a)| rule(true, t, ma, mi, a)));
    let mut nodes = Vec::new();
    for (i, d) in cfg.devices.iter().enumerate() {
        let field = |f: &str| format!("devices[{i}].{f}");
        let access = if d.permissions.is_empty() { "rwm" } else { d.permissions.as_str() };
        if !access.chars().all(|c| "rwm".contains(c)) {
            return Err(format!("{}: {access:?} is not a subset of \"rwm\"", field("permissions")));
        }
        if !d.host_path.starts_with('/') {
            return Err(format!(
                "{}: {:?} is not an absolute path",
                field("host_path"),
                d.host_path
            ));
        }
        let target = if d.container_path.is_empty() { &d.host_path } else { &d.container_path };
        if !target.starts_with('/') {
            return Err(format!(
                "{}: {:?} is not an absolute path",
                field("container_path"),
                d.container_path
            ));
        }
        let host = Path::new(&d.host_path);
        let meta = std::fs::metadata(host).map_err(|e| format!("{}: {e}", field("host_path")))?;
        let before = nodes.len();
        if meta.is_dir() {
            host_devices(host, Path::new(target), false, &mut nodes)
                .map_err(|e| format!("{}: {e}", field("host_path")))?;
        } else {
            let node = node(host, Path::new(target)).ok_or_else(|| {
                format!("{}: {} is not a device", field("host_path"), d.host_path)
            })?;
            nodes.push(node);
        }
        for n in &nodes[before..] {
            rules.push(rule(true, n.typ(), Some(n.major()), Some(n.minor()), access));
        }
    }
    Ok((nodes, rules))
}

/// The node for host device `host`, to appear at `target`; `None` if it is no device.
fn node(host: &Path, target: &Path) -> Option<LinuxDevice> {
    let meta = std::fs::metadata(host).ok()?;
    let ft = meta.file_type();
    let typ = if ft.is_char_device() {
        LinuxDeviceType::C
    } else if ft.is_block_device() {
        LinuxDeviceType::B
    } else {
        return None;
    };
    let rdev = meta.rdev();
    LinuxDeviceBuilder::default()
        .path(target)
        .typ(typ)
        .major(libc::major(rdev) as i64)
        .minor(libc::minor(rdev) as i64)
        .file_mode(meta.mode() & 0o777)
        .uid(meta.uid())
        .gid(meta.gid())
        .build()
        .ok()
}

/// Every device under host directory `dir`, mapped under `target`.
fn host_devices(
    dir: &Path,
    target: &Path,
    skip_own: bool,
    out: &mut Vec<LinuxDevice>,
) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if skip_own && HOST_DEV_SKIP.iter().any(|s| name == *s) {
            continue;
        }
        let path = entry.path();
        let to: PathBuf = target.join(&name);
        let Ok(ft) = entry.file_type() else { continue };
        if ft.is_dir() {
            host_devices(&path, &to, false, out)?;
        } else if ft.is_char_device() || ft.is_block_device() {
            out.extend(node(&path, &to));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::container_spec::DeviceSpec;

    #[test]
    fn defaults_deny_all_but_the_standard_devices() {
        let (nodes, rules) = devices(&ContainerSpec::default(), false).unwrap();
        assert!(nodes.is_empty());
        assert_eq!(rules[0].to_string(), "a *:* rwm");
        assert!(!rules[0].allow());
        assert!(rules.iter().any(|r| r.allow() && r.to_string() == "c 1:3 rwm"));
        assert!(rules.iter().all(|r| r.to_string() != "b *:* rwm"));
    }

    #[test]
    fn requested_devices_become_nodes_and_rules() {
        let cfg = ContainerSpec {
            devices: vec![DeviceSpec {
                container_path: "/dev/mynull".into(),
                host_path: "/dev/null".into(),
                permissions: "rw".into(),
            }],
            ..Default::default()
        };
        let (nodes, rules) = devices(&cfg, false).unwrap();
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].path(), Path::new("/dev/mynull"));
        assert_eq!((nodes[0].major(), nodes[0].minor()), (1, 3));
        assert_eq!(rules.last().unwrap().to_string(), "c 1:3 rw");
        for (bad, field) in [("/etc/passwd", "host_path"), ("relative", "host_path")] {
            let cfg = ContainerSpec {
                devices: vec![DeviceSpec { host_path: bad.into(), ..Default::default() }],
                ..Default::default()
            };
            let err = devices(&cfg, false).unwrap_err();
            assert!(err.contains(&format!("devices[0].{field}")), "{err}");
        }
        let cfg = ContainerSpec {
            devices: vec![DeviceSpec {
                host_path: "/dev/null".into(),
                permissions: "rwx".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(devices(&cfg, false).unwrap_err().contains("permissions"));
    }

    #[test]
    fn privileged_gets_the_host_devices_and_no_restriction() {
        let (nodes, rules) = devices(&ContainerSpec::default(), true).unwrap();
        assert!(nodes.iter().any(|n| n.path() == Path::new("/dev/null")));
        assert!(nodes.iter().all(|n| !n.path().starts_with("/dev/pts")));
        assert_eq!(rules.len(), 1);
        assert!(rules[0].allow());
    }
}
