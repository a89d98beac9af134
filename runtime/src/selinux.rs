//! SELinux: berth does not label processes or files.
//!
//! On a host with SELinux enabled, a request that asks for labels (`selinux_options` of
//! a pod or container, `selinux_relabel` of a mount) is refused, naming the field: the
//! pod would otherwise run without the separation it asked for. On hosts without SELinux
//! there is nothing to label with and the options are ignored, as containerd ignores
//! them.

use berth_proto::{ContainerConfig, PodSandboxConfig, SeLinuxOption};
use std::sync::OnceLock;

/// Whether the host has SELinux enabled (selinuxfs shows `enforce`), found once.
pub fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| std::path::Path::new("/sys/fs/selinux/enforce").exists())
}

/// Options that ask for something: any part of the context set.
fn asks(o: Option<&SeLinuxOption>) -> bool {
    o.is_some_and(|o| {
        !(o.user.is_empty() && o.role.is_empty() && o.r#type.is_empty() && o.level.is_empty())
    })
}

const REFUSED: &str = "berth does not apply SELinux labels and this host has SELinux \
                       enabled; remove the field or use a runtime that labels";

/// A container request on a host with (`selinux` true) or without SELinux.
pub fn check_container(config: &ContainerConfig, selinux: bool) -> Result<(), String> {
    if !selinux {
        return Ok(());
    }
    let sc = config.linux.as_ref().and_then(|l| l.security_context.as_ref());
    if asks(sc.and_then(|s| s.selinux_options.as_ref())) {
        return Err(format!("config.linux.security_context.selinux_options: {REFUSED}"));
    }
    if let Some(i) = config.mounts.iter().position(|m| m.selinux_relabel) {
        return Err(format!("config.mounts[{i}].selinux_relabel: {REFUSED}"));
    }
    Ok(())
}

/// A pod request on a host with (`selinux` true) or without SELinux.
pub fn check_sandbox(config: &PodSandboxConfig, selinux: bool) -> Result<(), String> {
    if !selinux {
        return Ok(());
    }
    let sc = config.linux.as_ref().and_then(|l| l.security_context.as_ref());
    if asks(sc.and_then(|s| s.selinux_options.as_ref())) {
        return Err(format!("config.linux.security_context.selinux_options: {REFUSED}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::{
        LinuxContainerConfig, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
        LinuxSandboxSecurityContext, Mount,
    };

    fn level(l: &str) -> Option<SeLinuxOption> {
        Some(SeLinuxOption { level: l.into(), ..Default::default() })
    }

    fn container(options: Option<SeLinuxOption>, relabel: bool) -> ContainerConfig {
        ContainerConfig {
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    selinux_options: options,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            mounts: vec![
                Mount { container_path: "/a".into(), ..Default::default() },
                Mount {
                    container_path: "/b".into(),
                    selinux_relabel: relabel,
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    fn pod(options: Option<SeLinuxOption>) -> PodSandboxConfig {
        PodSandboxConfig {
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    selinux_options: options,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn without_selinux_the_options_are_ignored() {
        assert!(check_container(&container(level("s0:c1,c2"), true), false).is_ok());
        assert!(check_sandbox(&pod(level("s0:c1,c2")), false).is_ok());
    }

    #[test]
    fn with_selinux_a_request_for_labels_is_refused_naming_the_field() {
        let err = check_container(&container(level("s0:c1,c2"), false), true).unwrap_err();
        assert!(err.starts_with("config.linux.security_context.selinux_options:"), "{err}");
        let err = check_container(&container(None, true), true).unwrap_err();
        assert!(err.starts_with("config.mounts[1].selinux_relabel:"), "{err}");
        let err = check_sandbox(&pod(level("s0")), true).unwrap_err();
        assert!(err.starts_with("config.linux.security_context.selinux_options:"), "{err}");
        assert!(err.contains("does not apply SELinux labels"), "{err}");
    }

    #[test]
    fn with_selinux_requests_without_labels_run() {
        assert!(check_container(&container(None, false), true).is_ok());
        assert!(check_container(&container(Some(SeLinuxOption::default()), false), true).is_ok());
        assert!(check_sandbox(&pod(None), true).is_ok());
        assert!(check_sandbox(&PodSandboxConfig::default(), true).is_ok());
    }
}
