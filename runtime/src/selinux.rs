//! SELinux: berth does not label processes or files.
//!
//! On a host with SELinux enabled, a request that asks for labels (`selinux_options` of
//! a pod or container, `selinux_relabel` of a mount) is refused, naming the field: the
//! pod would otherwise run without the separation it asked for. On hosts without SELinux
//! there is nothing to label with and the options are ignored, as containerd ignores
//! them.

use crate::container::ContainerSpec;
use crate::sandbox::PodSpec;
use std::sync::OnceLock;

/// Whether the host has SELinux enabled (selinuxfs shows `enforce`), found once.
pub fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| std::path::Path::new("/sys/fs/selinux/enforce").exists())
}

const REFUSED: &str = "berth does not apply SELinux labels and this host has SELinux \
                       enabled; remove the field or use a runtime that labels";

/// A container request on a host with (`selinux` true) or without SELinux.
pub fn check_container(spec: &ContainerSpec, selinux: bool) -> Result<(), String> {
    if !selinux {
        return Ok(());
    }
    if spec.security.selinux_label {
        return Err(format!("config.linux.security_context.selinux_options: {REFUSED}"));
    }
    if let Some(i) = spec.mounts.iter().position(|m| m.selinux_relabel) {
        return Err(format!("config.mounts[{i}].selinux_relabel: {REFUSED}"));
    }
    Ok(())
}

/// A pod request on a host with (`selinux` true) or without SELinux.
pub fn check_sandbox(spec: &PodSpec, selinux: bool) -> Result<(), String> {
    if selinux && spec.selinux_label {
        return Err(format!("config.linux.security_context.selinux_options: {REFUSED}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::{MountSpec, SecuritySpec};

    fn container(label: bool, relabel: bool) -> ContainerSpec {
        ContainerSpec {
            security: SecuritySpec { selinux_label: label, ..Default::default() },
            mounts: vec![
                MountSpec { container_path: "/a".into(), ..Default::default() },
                MountSpec {
                    container_path: "/b".into(),
                    selinux_relabel: relabel,
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    fn pod(label: bool) -> PodSpec {
        PodSpec { selinux_label: label, ..Default::default() }
    }

    #[test]
    fn without_selinux_the_options_are_ignored() {
        assert!(check_container(&container(true, true), false).is_ok());
        assert!(check_sandbox(&pod(true), false).is_ok());
    }

    #[test]
    fn with_selinux_a_request_for_labels_is_refused_naming_the_field() {
        let err = check_container(&container(true, false), true).unwrap_err();
        assert!(err.starts_with("config.linux.security_context.selinux_options:"), "{err}");
        let err = check_container(&container(false, true), true).unwrap_err();
        assert!(err.starts_with("config.mounts[1].selinux_relabel:"), "{err}");
        let err = check_sandbox(&pod(true), true).unwrap_err();
        assert!(err.starts_with("config.linux.security_context.selinux_options:"), "{err}");
        assert!(err.contains("does not apply SELinux labels"), "{err}");
    }

    #[test]
    fn with_selinux_requests_without_labels_run() {
        assert!(check_container(&container(false, false), true).is_ok());
        assert!(check_sandbox(&pod(false), true).is_ok());
    }
}
