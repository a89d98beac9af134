use super::*;
use crate::container::container_spec::{EnvVar, ProfileRequest};

fn image() -> ImageConfig {
    ImageConfig {
        entrypoint: vec!["/entry".into()],
        cmd: vec!["default-arg".into()],
        env: vec!["PATH=/bin".into(), "A=image".into()],
        user: "www-data".into(),
        ..Default::default()
    }
}

fn rootfs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("etc")).unwrap();
    std::fs::write(
        dir.path().join("etc/passwd"),
        "root:x:0:0::/:/bin/sh\nwww-data:x:33:33::/:/bin/sh\n",
    )
    .unwrap();
    dir
}

fn spec_of(cfg: ContainerSpec, root: &Path) -> Result<Spec, String> {
    spec_with_apparmor(cfg, root, None)
}

fn spec_with_apparmor(
    cfg: ContainerSpec,
    root: &Path,
    apparmor_profile: Option<String>,
) -> Result<Spec, String> {
    build(&SpecInput {
        config: &cfg,
        image: &image(),
        rootfs: root,
        hostname: "pod",
        pod: PodNamespaces {
            net: Some(Path::new("/run/berth/pods/x/ns/net")),
            ipc: Some(Path::new("/run/berth/pods/x/ns/ipc")),
            uts: Some(Path::new("/run/berth/pods/x/ns/uts")),
            pid: None,
            user: None,
        },
        target_pid: None,
        files: PodFiles { hosts: Some(root.join("etc/passwd")), ..Default::default() },
        cgroups_path: "/kubepods/pod1/c1".into(),
        pids_limit: 1024,
        apparmor_profile,
    })
}

#[test]
fn the_apparmor_profile_goes_into_the_process() {
    let root = rootfs();
    let spec = spec_with_apparmor(with_sc(Default::default()), root.path(), None).unwrap();
    assert_eq!(spec.process().as_ref().unwrap().apparmor_profile(), &None);
    let spec =
        spec_with_apparmor(with_sc(Default::default()), root.path(), Some("p".into())).unwrap();
    assert_eq!(spec.process().as_ref().unwrap().apparmor_profile().as_deref(), Some("p"));
    let json = serde_json::to_value(&spec).unwrap();
    assert_eq!(json["process"]["apparmorProfile"], "p", "the OCI field runc reads");
}

fn with_sc(security: SecuritySpec) -> ContainerSpec {
    ContainerSpec { security, ..Default::default() }
}

#[test]
fn command_and_args_follow_kubernetes_rules() {
    let image = image();
    let cfg = |command: &[&str], args: &[&str]| ContainerSpec {
        command: command.iter().map(|s| s.to_string()).collect(),
        args: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    assert_eq!(process_args(&cfg(&[], &[]), &image).unwrap(), ["/entry", "default-arg"]);
    assert_eq!(process_args(&cfg(&[], &["x"]), &image).unwrap(), ["/entry", "x"]);
    assert_eq!(process_args(&cfg(&["/cmd"], &[]), &image).unwrap(), ["/cmd"]);
    assert_eq!(process_args(&cfg(&["/cmd"], &["y"]), &image).unwrap(), ["/cmd", "y"]);
    let err = process_args(&cfg(&[], &[]), &ImageConfig::default()).unwrap_err();
    assert!(err.contains("command"), "{err}");
}

#[test]
fn env_merges_over_the_image() {
    let cfg = ContainerSpec {
        envs: vec![
            EnvVar { key: "A".into(), value: "request".into() },
            EnvVar { key: "B".into(), value: "x=y".into() },
        ],
        ..Default::default()
    };
    assert_eq!(env(&cfg, &image()).unwrap(), ["PATH=/bin", "A=request", "B=x=y"]);
}

#[test]
fn env_value_that_is_not_utf8_is_refused_naming_it() {
    let cfg = ContainerSpec {
        envs: vec![
            EnvVar { key: "A".into(), value: "ok".into() },
            EnvVar { key: "B".into(), value: vec![0xff, 0xfe] },
        ],
        ..Default::default()
    };
    let err = env(&cfg, &image()).unwrap_err();
    assert!(err.starts_with("envs[1].value:"), "{err}");
}

#[test]
fn spec_carries_user_namespaces_resources_and_mounts() {
    let root = rootfs();
    let mut cfg = with_sc(SecuritySpec::default());
    cfg.working_dir = "/work".into();
    cfg.resources = Some(ContainerResources {
        memory_limit_in_bytes: 64 << 20,
        cpu_shares: 512,
        cpu_quota: 50_000,
        cpu_period: 100_000,
        oom_score_adj: 500,
        ..Default::default()
    });
    cfg.mounts = vec![MountSpec {
        container_path: "/data".into(),
        host_path: root.path().display().to_string(),
        readonly: true,
        propagation: Propagation::Bidirectional,
        ..Default::default()
    }];
    let spec = spec_of(cfg, root.path()).unwrap();
    let p = spec.process().as_ref().unwrap();
    assert_eq!(p.args().as_ref().unwrap(), &["/entry", "default-arg"]);
    assert_eq!((p.user().uid(), p.user().gid()), (33, 33), "the image's user");
    assert_eq!(p.cwd(), Path::new("/work"));
    assert_eq!(p.oom_score_adj(), Some(500));
    let linux = spec.linux().as_ref().unwrap();
    let r = linux.resources().as_ref().unwrap();
    assert_eq!(r.memory().as_ref().unwrap().limit(), Some(64 << 20));
    assert_eq!(r.cpu().as_ref().unwrap().shares(), Some(512));
    assert_eq!(r.pids().as_ref().unwrap().limit(), 1024);
    assert_eq!(linux.cgroups_path().as_deref(), Some(Path::new("/kubepods/pod1/c1")));
    let ns = linux.namespaces().as_ref().unwrap();
    let net = ns.iter().find(|n| n.typ() == LinuxNamespaceType::Network).unwrap();
    assert_eq!(net.path().as_deref(), Some(Path::new("/run/berth/pods/x/ns/net")));
    assert!(ns.iter().any(|n| n.typ() == LinuxNamespaceType::Pid && n.path().is_none()));
    assert!(linux.seccomp().is_none(), "no profile asked for is unconfined, as in Kubernetes");
    assert_eq!(linux.rootfs_propagation().as_deref(), Some("rshared"));
    let mounts = spec.mounts().as_ref().unwrap();
    let data = mounts.iter().find(|m| m.destination() == Path::new("/data")).unwrap();
    assert_eq!(data.options().as_ref().unwrap(), &["rbind", "rshared", "ro"]);
    assert!(mounts.iter().any(|m| m.destination() == Path::new("/etc/hosts")));
}

#[test]
fn capabilities_add_drop_all_and_privileged() {
    let root = rootfs();
    let caps_of = |add: &[&str], drop: &[&str], privileged: bool| {
        let sc = SecuritySpec {
            privileged,
            add_capabilities: add.iter().map(|s| s.to_string()).collect(),
            drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let spec = spec_of(with_sc(sc), root.path()).unwrap();
        spec.process()
            .as_ref()
            .unwrap()
            .capabilities()
            .as_ref()
            .unwrap()
            .effective()
            .clone()
            .unwrap()
    };
    let default = caps_of(&[], &[], false);
    assert!(default.contains(&Capability::Chown) && !default.contains(&Capability::SysAdmin));
    let added = caps_of(&["NET_ADMIN"], &["CHOWN"], false);
    assert!(added.contains(&Capability::NetAdmin) && !added.contains(&Capability::Chown));
    let only = caps_of(&["CAP_NET_BIND_SERVICE"], &["ALL"], false);
    assert_eq!(only.into_iter().collect::<Vec<_>>(), [Capability::NetBindService]);
    assert!(caps_of(&["ALL"], &[], false).contains(&Capability::SysAdmin));
    assert!(caps_of(&[], &[], true).contains(&Capability::SysAdmin));
    let err = spec_of(
        with_sc(SecuritySpec { add_capabilities: vec!["BOGUS".into()], ..Default::default() }),
        root.path(),
    )
    .unwrap_err();
    assert!(err.contains("BOGUS"), "{err}");
}

#[test]
fn privileged_and_unconfined_drop_the_confinement() {
    let root = rootfs();
    let spec =
        spec_of(with_sc(SecuritySpec { privileged: true, ..Default::default() }), root.path())
            .unwrap();
    let linux = spec.linux().as_ref().unwrap();
    assert!(linux.seccomp().is_none());
    assert_eq!(linux.masked_paths().as_ref().map(Vec::len), Some(0));
    let unconfined = SecuritySpec {
        seccomp: ProfileRequest::Unconfined,
        readonly_rootfs: true,
        ..Default::default()
    };
    let spec = spec_of(with_sc(unconfined), root.path()).unwrap();
    assert!(spec.linux().as_ref().unwrap().seccomp().is_none());
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
}

fn seccomp_names(sc: SecuritySpec) -> Option<Vec<String>> {
    let root = rootfs();
    let spec = spec_of(with_sc(sc), root.path()).unwrap();
    let seccomp = spec.linux().as_ref().unwrap().seccomp().clone()?;
    Some(seccomp.syscalls().iter().flatten().flat_map(|s| s.names().clone()).collect())
}

#[test]
fn the_default_seccomp_profile_follows_the_capabilities() {
    let sc = |seccomp: ProfileRequest, add: &[&str]| SecuritySpec {
        seccomp,
        add_capabilities: add.iter().map(|c| c.to_string()).collect(),
        ..Default::default()
    };
    assert!(seccomp_names(SecuritySpec::default()).is_none(), "unconfined unless asked");
    assert!(seccomp_names(sc(ProfileRequest::Unconfined, &[])).is_none());
    let plain = seccomp_names(sc(ProfileRequest::RuntimeDefault, &[])).unwrap();
    assert!(!plain.contains(&"sethostname".to_string()));
    let admin = seccomp_names(sc(ProfileRequest::RuntimeDefault, &["SYS_ADMIN"])).unwrap();
    assert!(admin.contains(&"sethostname".to_string()));
    assert_eq!(admin.iter().filter(|n| *n == "clone").count(), 1, "one rule per syscall");
}

#[test]
fn run_as_group_needs_a_user() {
    let root = rootfs();
    let sc = SecuritySpec { run_as_group: Some(1002), ..Default::default() };
    let err = spec_of(with_sc(sc), root.path()).unwrap_err();
    assert!(err.contains("run_as_group"), "{err}");
}

#[test]
fn bad_requests_name_their_field() {
    let root = rootfs();
    let missing = ContainerSpec {
        mounts: vec![MountSpec {
            container_path: "/x".into(),
            host_path: "/definitely/not/here".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    assert!(spec_of(missing, root.path()).unwrap_err().contains("mounts[0].host_path"));
    let relative = ContainerSpec { working_dir: "rel".into(), ..Default::default() };
    assert!(spec_of(relative, root.path()).unwrap_err().contains("working_dir"));
    let localhost = SecuritySpec {
        seccomp: ProfileRequest::Localhost("/no/such/profile.json".into()),
        ..Default::default()
    };
    let err = spec_of(with_sc(localhost), root.path()).unwrap_err();
    assert!(err.contains("linux.security_context.seccomp: /no/such/profile.json"), "{err}");
    let relative =
        SecuritySpec { seccomp: ProfileRequest::Localhost("p.json".into()), ..Default::default() };
    let err = spec_of(with_sc(relative), root.path()).unwrap_err();
    assert!(err.contains("seccomp.localhost_ref"), "{err}");
}
