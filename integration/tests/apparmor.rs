//! AppArmor through a real berthd: the `apparmor` field and the deprecated
//! `apparmor_profile` string, on this host and on one with AppArmor.
//!
//! The first tests run anywhere and assert what the host allows (on a host without
//! AppArmor: `localhost/` refused, the rest run unconfined). The `#[ignore]`d ones need
//! AppArmor (the VM lane's Debian guest, where run-lane-tests.sh runs them with
//! `--include-ignored`): berth's default profile confines, a loaded localhost profile
//! blocks what it denies, exec'd processes get the container's profile.

use berth_integration::pods::{busybox_with, Node};
use berth_proto::security_profile::ProfileType;
use berth_proto::*;
use std::path::Path;
use std::process::Command;

/// Whether this host has AppArmor enabled (as berthd finds it).
fn apparmor_on() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.trim() == "Y")
        && Path::new("/sys/kernel/security/apparmor").is_dir()
}

fn field(t: ProfileType, localhost_ref: &str) -> LinuxContainerSecurityContext {
    LinuxContainerSecurityContext {
        apparmor: Some(SecurityProfile {
            profile_type: t as i32,
            localhost_ref: localhost_ref.into(),
        }),
        ..Default::default()
    }
}

fn legacy(profile: &str) -> LinuxContainerSecurityContext {
    #[allow(deprecated)]
    LinuxContainerSecurityContext { apparmor_profile: profile.into(), ..Default::default() }
}

/// The OCI spec berthd wrote for the container.
fn spec_of(node: &Node, id: &str) -> serde_json::Value {
    let path = node.berthd.state_dir().join("containers").join(id).join("config.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

async fn refused(node: &Node, pod: &str, name: &str, sc: LinuxContainerSecurityContext) -> String {
    let err = node.create(pod, busybox_with(name, &["true"], sc)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{name}: {err:?}");
    err.message().to_string()
}

#[tokio::test]
async fn malformed_and_unloaded_profiles_are_refused_naming_the_field() {
    let node = Node::start().await;
    let logs = tempfile::tempdir().unwrap();
    let pod = node.run_pod("aa-refused", logs.path()).await;

    let m = refused(&node, &pod, "nonsense", legacy("docker-default")).await;
    assert!(m.contains("config.linux.security_context.apparmor_profile"), "{m}");
    let mut sc = field(ProfileType::RuntimeDefault, "");
    sc.apparmor.as_mut().unwrap().profile_type = 9;
    let m = refused(&node, &pod, "unknown-type", sc).await;
    assert!(m.contains("config.linux.security_context.apparmor.profile_type"), "{m}");
    let m = refused(&node, &pod, "no-name", field(ProfileType::Localhost, "")).await;
    assert!(m.contains("config.linux.security_context.apparmor.localhost_ref"), "{m}");

    // A profile the kernel has not loaded (or cannot have: no AppArmor) is refused, by
    // the field and by the deprecated string, naming the profile.
    let absent = "berth-test-never-loaded";
    let why = if apparmor_on() { "not loaded" } else { "AppArmor is not enabled on this host" };
    for (name, sc) in [
        ("absent-field", field(ProfileType::Localhost, absent)),
        ("absent-string", legacy(&format!("localhost/{absent}"))),
    ] {
        let m = refused(&node, &pod, name, sc).await;
        assert!(m.contains("config.linux.security_context.apparmor"), "{m}");
        assert!(m.contains(absent) && m.contains(why), "{m}");
    }
    let listed = node.list_containers().await;
    assert!(listed.is_empty(), "a refused container was recorded: {listed:?}");
    node.remove_pod_and_check(&pod).await;
}

#[tokio::test]
async fn without_apparmor_runtime_default_and_unconfined_run_unconfined() {
    if apparmor_on() {
        eprintln!("this host has AppArmor: the ignored tests of this file cover it");
        return;
    }
    let node = Node::start().await;
    let logs = tempfile::tempdir().unwrap();
    let pod = node.run_pod("aa-off", logs.path()).await;
    let sleep = ["sleep", "1000"];
    for (name, sc) in [
        ("unset", LinuxContainerSecurityContext::default()),
        ("default-field", field(ProfileType::RuntimeDefault, "")),
        ("default-string", legacy("runtime/default")),
        ("unconfined-field", field(ProfileType::Unconfined, "")),
        ("unconfined-string", legacy("unconfined")),
    ] {
        let id = node.run(&pod, busybox_with(name, &sleep, sc)).await;
        let spec = spec_of(&node, &id);
        assert!(spec["process"].get("apparmorProfile").is_none(), "{name}: {}", spec["process"]);
        assert_eq!(node.exec_ok(&id, &["echo", "ran"]).await.trim(), "ran", "{name}");
    }
    node.remove_pod_and_check(&pod).await;
}

/// The AppArmor label of a process of the container: `self` (the exec'd `cat`) or `1`.
async fn label(node: &Node, id: &str, pid: &str) -> String {
    node.exec_ok(id, &["cat", &format!("/proc/{pid}/attr/current")]).await.trim().to_string()
}

/// With CAP_SYS_ADMIN (and no seccomp filter): whether a tmpfs mount succeeds.
async fn can_mount(node: &Node, id: &str) -> bool {
    let r = node.exec(id, &["sh", "-c", "mkdir -p /m && mount -t tmpfs none /m"]).await.unwrap();
    r.exit_code == 0
}

fn with_sys_admin(mut sc: LinuxContainerSecurityContext) -> LinuxContainerSecurityContext {
    sc.capabilities =
        Some(Capability { add_capabilities: vec!["SYS_ADMIN".into()], ..Default::default() });
    sc
}

async fn runtime_default_confines(node: Node) {
    let logs = tempfile::tempdir().unwrap();
    let pod = node.run_pod("aa-default", logs.path()).await;
    let sleep = ["sleep", "1000"];
    let confined = "berth-default (enforce)";
    for (name, sc) in [
        ("unset", LinuxContainerSecurityContext::default()),
        ("default-field", field(ProfileType::RuntimeDefault, "")),
        ("default-string", legacy("runtime/default")),
        // The field wins over the string.
        ("both", {
            let mut sc = field(ProfileType::RuntimeDefault, "");
            #[allow(deprecated)]
            {
                sc.apparmor_profile = "unconfined".into();
            }
            sc
        }),
    ] {
        let id = node.run(&pod, busybox_with(name, &sleep, with_sys_admin(sc))).await;
        assert_eq!(spec_of(&node, &id)["process"]["apparmorProfile"], "berth-default", "{name}");
        assert_eq!(label(&node, &id, "1").await, confined, "{name}: the container's process");
        assert_eq!(label(&node, &id, "self").await, confined, "{name}: an exec'd process");
        assert!(!can_mount(&node, &id).await, "{name}: berth-default denies mount");
    }
    for (name, sc, privileged) in [
        ("unconfined-field", field(ProfileType::Unconfined, ""), false),
        ("unconfined-string", legacy("unconfined"), false),
        ("privileged", LinuxContainerSecurityContext::default(), true),
    ] {
        let mut sc = with_sys_admin(sc);
        sc.privileged = privileged;
        let id = node.run(&pod, busybox_with(name, &sleep, sc)).await;
        assert_eq!(label(&node, &id, "1").await, "unconfined", "{name}");
        assert_eq!(label(&node, &id, "self").await, "unconfined", "{name}");
        assert!(can_mount(&node, &id).await, "{name}: unconfined, mount is up to the caps");
    }
    node.remove_pod_and_check(&pod).await;
}

#[tokio::test]
#[ignore = "needs a host with AppArmor (the VM lane)"]
async fn runtime_default_is_berth_default_and_unconfined_is_not_confined() {
    assert!(apparmor_on(), "this test needs AppArmor");
    runtime_default_confines(Node::start().await).await;
}

#[tokio::test]
#[ignore = "needs a host with AppArmor (the VM lane)"]
async fn runc_applies_the_same_profiles() {
    assert!(apparmor_on(), "this test needs AppArmor");
    runtime_default_confines(Node::start_runc().await).await;
}

/// A profile loaded for the test from `text`, removed when dropped.
struct Loaded {
    file: tempfile::NamedTempFile,
}

impl Loaded {
    fn new(text: &str) -> Self {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        let out = Command::new("apparmor_parser").arg("-Kr").arg(file.path()).output().unwrap();
        assert!(out.status.success(), "apparmor_parser: {}", String::from_utf8_lossy(&out.stderr));
        Loaded { file }
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        let _ = Command::new("apparmor_parser").arg("-R").arg(self.file.path()).status();
    }
}

#[tokio::test]
#[ignore = "needs a host with AppArmor (the VM lane)"]
async fn a_loaded_localhost_profile_blocks_what_it_denies_also_in_exec() {
    assert!(apparmor_on(), "this test needs AppArmor");
    let name = "berth-test-deny-tmp-write";
    let _profile = Loaded::new(&format!(
        "profile {name} flags=(attach_disconnected,mediate_deleted) {{\n  file,\n  network,\n  \
         capability,\n  signal,\n  ptrace,\n  deny /tmp/** w,\n}}\n"
    ));
    let node = Node::start().await;
    let logs = tempfile::tempdir().unwrap();
    let pod = node.run_pod("aa-localhost", logs.path()).await;
    // The container itself tries the write before it sleeps; its log says how it went.
    let script = "touch /tmp/by-init && echo init-wrote || echo init-denied; sleep 1000";
    for (c, sc) in [
        ("field", field(ProfileType::Localhost, name)),
        ("string", legacy(&format!("localhost/{name}"))),
    ] {
        let id = node.run(&pod, busybox_with(c, &["sh", "-c", script], sc)).await;
        assert_eq!(spec_of(&node, &id)["process"]["apparmorProfile"], name, "{c}");
        let enforced = format!("{name} (enforce)");
        assert_eq!(label(&node, &id, "1").await, enforced, "{c}");
        assert_eq!(label(&node, &id, "self").await, enforced, "{c}: exec");
        let w = node.exec(&id, &["sh", "-c", "echo x > /tmp/by-exec"]).await.unwrap();
        assert_ne!(w.exit_code, 0, "{c}: the exec wrote to /tmp");
        let stderr = String::from_utf8_lossy(&w.stderr);
        assert!(stderr.contains("Permission denied"), "{c}: {stderr}");
        // What the profile does not deny still works.
        node.exec_ok(&id, &["sh", "-c", "echo x > /dev/null && ls /tmp"]).await;
        let log = logs.path().join(format!("{c}.log"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("init-") {
                assert!(text.contains("init-denied"), "{c}: {text}");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{c}: no output in {}", log.display());
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    node.remove_pod_and_check(&pod).await;
}
