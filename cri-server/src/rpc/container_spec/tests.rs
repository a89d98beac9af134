use super::*;
use berth_proto::{
    Capability, ImageSpec, Int64Value, KeyValue, LinuxContainerConfig, Mount, NamespaceOption,
    SeLinuxOption,
};

fn with_sc(sc: LinuxContainerSecurityContext) -> ContainerConfig {
    ContainerConfig {
        linux: Some(LinuxContainerConfig { security_context: Some(sc), ..Default::default() }),
        ..Default::default()
    }
}

#[test]
fn a_full_request_keeps_every_field() {
    let config = ContainerConfig {
        metadata: Some(berth_proto::ContainerMetadata { name: "c".into(), attempt: 2 }),
        image: Some(ImageSpec { image: "busybox".into(), ..Default::default() }),
        command: vec!["/bin/sh".into()],
        args: vec!["-c".into(), "true".into()],
        working_dir: "/w".into(),
        envs: vec![KeyValue { key: "A".into(), value: "1".into() }],
        mounts: vec![Mount {
            container_path: "/data".into(),
            host_path: "/srv".into(),
            readonly: true,
            propagation: MountPropagation::PropagationHostToContainer as i32,
            ..Default::default()
        }],
        log_path: "c.log".into(),
        tty: true,
        stop_signal: Signal::Sigquit as i32,
        labels: [("l".to_string(), "v".to_string())].into(),
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                memory_limit_in_bytes: 1 << 20,
                hugepage_limits: vec![HugepageLimit { page_size: "2MB".into(), limit: 4 << 20 }],
                ..Default::default()
            }),
            security_context: Some(LinuxContainerSecurityContext {
                run_as_user: Some(Int64Value { value: 1000 }),
                capabilities: Some(Capability {
                    add_capabilities: vec!["NET_ADMIN".into()],
                    ..Default::default()
                }),
                namespace_options: Some(NamespaceOption {
                    pid: NamespaceMode::Target as i32,
                    target_id: "abc".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }),
        ..Default::default()
    };
    let spec = to_spec(config).unwrap();
    assert_eq!(spec.metadata, Some(ContainerMetadata { name: "c".into(), attempt: 2 }));
    assert_eq!((spec.image.as_str(), spec.working_dir.as_str()), ("busybox", "/w"));
    assert_eq!(spec.command, ["/bin/sh"]);
    assert_eq!(spec.envs, [EnvVar { key: "A".into(), value: b"1".to_vec() }]);
    assert_eq!(spec.mounts[0].propagation, Propagation::HostToContainer);
    assert!(spec.mounts[0].readonly);
    assert_eq!(spec.stop_signal, Some(libc::SIGQUIT));
    assert_eq!(spec.labels["l"], "v");
    let r = spec.resources.as_ref().unwrap();
    assert_eq!((r.memory_limit_in_bytes, r.hugepage_limits["2MB"]), (1 << 20, 4 << 20));
    assert_eq!(resources(&resources_to_cri(r)), *r, "status reports what was asked");
    let sc = &spec.security;
    assert_eq!(
        (sc.run_as_user, sc.add_capabilities.as_slice()),
        (Some(1000), &["NET_ADMIN".to_string()][..])
    );
    assert_eq!((sc.pid, sc.target_id.as_str()), (NsMode::Target, "abc"));
    assert_eq!(sc.seccomp, ProfileRequest::Unconfined);
    assert_eq!(sc.apparmor, ProfileRequest::RuntimeDefault);
}

#[test]
fn without_namespace_options_the_container_has_its_own_pid_namespace() {
    let spec = to_spec(ContainerConfig::default()).unwrap();
    assert_eq!(spec.security.pid, NsMode::Container);
    let pod = with_sc(LinuxContainerSecurityContext {
        namespace_options: Some(NamespaceOption::default()),
        ..Default::default()
    });
    assert_eq!(to_spec(pod).unwrap().security.pid, NsMode::Pod, "POD is the enum's zero");
}

#[test]
fn unknown_enum_values_are_refused_naming_the_field() {
    let cases: Vec<(ContainerConfig, &str)> = vec![
        (ContainerConfig { stop_signal: 999, ..Default::default() }, "config.stop_signal:"),
        (
            ContainerConfig {
                mounts: vec![Mount { propagation: 7, ..Default::default() }],
                ..Default::default()
            },
            "config.mounts[0].propagation:",
        ),
        (
            with_sc(LinuxContainerSecurityContext {
                namespace_options: Some(NamespaceOption { pid: 9, ..Default::default() }),
                ..Default::default()
            }),
            "config.linux.security_context.namespace_options.pid:",
        ),
        (
            with_sc(LinuxContainerSecurityContext {
                supplemental_groups_policy: 5,
                ..Default::default()
            }),
            "config.linux.security_context.supplemental_groups_policy:",
        ),
        (
            with_sc(LinuxContainerSecurityContext {
                seccomp: Some(SecurityProfile { profile_type: 8, ..Default::default() }),
                ..Default::default()
            }),
            "config.linux.security_context.seccomp.profile_type:",
        ),
    ];
    for (config, field) in cases {
        let err = to_spec(config).unwrap_err();
        assert!(err.starts_with(field), "{field}: {err}");
    }
}

#[test]
fn stop_signals_map_to_linux_numbers() {
    use Signal as S;
    let n = |s: S| stop_signal(s as i32);
    assert_eq!(n(S::RuntimeDefault), Some(None));
    assert_eq!(n(S::Sigquit), Some(Some(libc::SIGQUIT)));
    assert_eq!(n(S::Sigcld), Some(Some(libc::SIGCHLD)));
    assert_eq!(n(S::Sigrtmin), Some(Some(libc::SIGRTMIN())));
    assert_eq!(n(S::Sigrtminplus15), Some(Some(libc::SIGRTMIN() + 15)));
    assert_eq!(n(S::Sigrtmaxminus14), Some(Some(libc::SIGRTMAX() - 14)));
    assert_eq!(n(S::Sigrtmax), Some(Some(libc::SIGRTMAX())));
    assert_eq!(stop_signal(999), None);
}

#[test]
#[allow(deprecated)]
fn seccomp_the_field_and_the_deprecated_string() {
    let legacy = |path: &str| {
        seccomp(&LinuxContainerSecurityContext {
            seccomp_profile_path: path.into(),
            ..Default::default()
        })
    };
    assert_eq!(legacy(""), Ok(ProfileRequest::Unconfined));
    assert_eq!(legacy("unconfined"), Ok(ProfileRequest::Unconfined));
    assert_eq!(legacy("docker/default"), Ok(ProfileRequest::RuntimeDefault));
    assert_eq!(legacy("runtime/default"), Ok(ProfileRequest::RuntimeDefault));
    assert_eq!(legacy("localhost//p.json"), Ok(ProfileRequest::Localhost("/p.json".into())));
    for bad in ["localhost/rel.json", "nonsense"] {
        let err = legacy(bad).unwrap_err();
        assert!(err.starts_with("config.linux.security_context.seccomp_profile_path:"), "{err}");
    }
    let field = |t: ProfileType, r: &str| {
        seccomp(&LinuxContainerSecurityContext {
            seccomp: Some(SecurityProfile { profile_type: t as i32, localhost_ref: r.into() }),
            seccomp_profile_path: "nonsense".into(),
            ..Default::default()
        })
    };
    assert_eq!(field(ProfileType::RuntimeDefault, ""), Ok(ProfileRequest::RuntimeDefault));
    assert_eq!(field(ProfileType::Localhost, "/p"), Ok(ProfileRequest::Localhost("/p".into())));
    let err = field(ProfileType::Localhost, "p").unwrap_err();
    assert!(err.starts_with("config.linux.security_context.seccomp.localhost_ref:"), "{err}");
}

#[test]
fn selinux_options_ask_for_a_label_only_when_set() {
    let label = |o: Option<SeLinuxOption>| {
        let sc = LinuxContainerSecurityContext { selinux_options: o, ..Default::default() };
        to_spec(with_sc(sc)).unwrap().security.selinux_label
    };
    assert!(!label(None));
    assert!(!label(Some(SeLinuxOption::default())));
    assert!(label(Some(SeLinuxOption { level: "s0:c1,c2".into(), ..Default::default() })));
}

fn aa(apparmor: Option<(ProfileType, &str)>, legacy: &str) -> LinuxContainerSecurityContext {
    #[allow(deprecated)]
    LinuxContainerSecurityContext {
        apparmor: apparmor
            .map(|(t, r)| SecurityProfile { profile_type: t as i32, localhost_ref: r.into() }),
        apparmor_profile: legacy.into(),
        ..Default::default()
    }
}

#[test]
fn apparmor_the_field_and_the_deprecated_string() {
    assert_eq!(apparmor(&aa(None, "")).unwrap(), ProfileRequest::RuntimeDefault);
    assert_eq!(apparmor(&aa(None, "runtime/default")).unwrap(), ProfileRequest::RuntimeDefault);
    assert_eq!(apparmor(&aa(None, "unconfined")).unwrap(), ProfileRequest::Unconfined);
    assert_eq!(
        apparmor(&aa(None, "localhost/my-profile")).unwrap(),
        ProfileRequest::Localhost("my-profile".into())
    );
    let t = |t, r| apparmor(&aa(Some((t, r)), "")).unwrap();
    assert_eq!(t(ProfileType::RuntimeDefault, ""), ProfileRequest::RuntimeDefault);
    assert_eq!(t(ProfileType::Unconfined, ""), ProfileRequest::Unconfined);
    assert_eq!(t(ProfileType::Localhost, "p"), ProfileRequest::Localhost("p".into()));
    assert_eq!(t(ProfileType::Localhost, "localhost/p"), ProfileRequest::Localhost("p".into()));
}

#[test]
fn apparmor_the_field_wins_over_the_string() {
    let both = aa(Some((ProfileType::Unconfined, "")), "localhost/p");
    assert_eq!(apparmor(&both).unwrap(), ProfileRequest::Unconfined);
    let both = aa(Some((ProfileType::Localhost, "a")), "unconfined");
    assert_eq!(apparmor(&both).unwrap(), ProfileRequest::Localhost("a".into()));
    // A malformed string under a set field is not looked at.
    let both = aa(Some((ProfileType::RuntimeDefault, "")), "nonsense");
    assert_eq!(apparmor(&both).unwrap(), ProfileRequest::RuntimeDefault);
}

#[test]
fn apparmor_malformed_requests_name_their_field() {
    for legacy in ["docker-default", "localhost/", "Unconfined", "localhost/a\nb"] {
        let err = apparmor(&aa(None, legacy)).unwrap_err();
        assert!(err.starts_with("config.linux.security_context.apparmor_profile:"), "{err}");
    }
    let mut bad = aa(Some((ProfileType::RuntimeDefault, "")), "");
    bad.apparmor.as_mut().unwrap().profile_type = 7;
    let err = apparmor(&bad).unwrap_err();
    assert!(err.starts_with("config.linux.security_context.apparmor.profile_type:"), "{err}");
    assert!(err.contains('7'), "{err}");
    for r in ["", "localhost/", "  "] {
        let err = apparmor(&aa(Some((ProfileType::Localhost, r)), "")).unwrap_err();
        assert!(err.starts_with("config.linux.security_context.apparmor.localhost_ref:"), "{err}");
    }
}
