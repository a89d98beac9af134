//! Pods with their own user namespace (`hostUsers: false`) through a real berthd: root
//! inside is an unprivileged id outside, the rootfs and idmapped volumes show the right
//! owners without chowning image layers, and capabilities stop at the pod's namespaces.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use berth_integration::pods::{busybox, busybox_with, Node};
use berth_integration::streaming::{read_until, SpdyClient};
use berth_proto::*;
use std::time::Duration;

/// Container root is this host uid/gid (well above anything the host uses).
const HOST_ROOT: u32 = 300_000;
const LENGTH: u32 = 65_536;

fn mapping() -> Vec<IdMapping> {
    vec![IdMapping { container_id: 0, host_id: HOST_ROOT, length: LENGTH }]
}

fn userns_pod(node: &Node, name: &str, logs: &Path, pid: NamespaceMode) -> PodSandboxConfig {
    let mut config = node.pod_config(name, logs);
    let linux = config.linux.get_or_insert_with(Default::default);
    linux.security_context = Some(LinuxSandboxSecurityContext {
        namespace_options: Some(NamespaceOption {
            pid: pid as i32,
            userns_options: Some(UserNamespace {
                mode: NamespaceMode::Pod as i32,
                uids: mapping(),
                gids: mapping(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    config
}

fn with_caps(caps: &[&str], pid: NamespaceMode) -> LinuxContainerSecurityContext {
    LinuxContainerSecurityContext {
        capabilities: Some(Capability {
            add_capabilities: caps.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        }),
        namespace_options: Some(NamespaceOption { pid: pid as i32, ..Default::default() }),
        ..Default::default()
    }
}

fn host_hostname() -> String {
    nix::unistd::gethostname().unwrap().to_string_lossy().into_owned()
}

#[tokio::test]
async fn pod_root_is_an_unprivileged_host_id_with_shifted_files() {
    let node = Node::start().await;
    let logs = tempfile::tempdir().unwrap();
    for pid in [NamespaceMode::Container, NamespaceMode::Pod] {
        let name = format!("userns-{}", pid.as_str_name().to_lowercase());
        let pod = node.run_pod_with(userns_pod(&node, &name, logs.path(), pid)).await;

        // The status says what the pod got.
        let status = node
            .berthd
            .runtime()
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: pod.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        let userns = status.linux.unwrap().namespaces.unwrap().options.unwrap();
        let userns = userns.userns_options.unwrap();
        assert_eq!(userns.mode, NamespaceMode::Pod as i32);
        assert_eq!(userns.uids, mapping());

        // A host directory owned by root, bound plainly and idmapped.
        let vol = tempfile::tempdir().unwrap();
        std::fs::set_permissions(vol.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let bind = |to: &str, mapped: bool| Mount {
            container_path: to.into(),
            host_path: vol.path().display().to_string(),
            uid_mappings: if mapped { mapping() } else { Vec::new() },
            gid_mappings: if mapped { mapping() } else { Vec::new() },
            ..Default::default()
        };
        let mut config =
            busybox_with("c", &["sleep", "1000"], with_caps(&["SYS_ADMIN", "MKNOD"], pid));
        config.mounts = vec![bind("/plain", false), bind("/mapped", true)];
        let id = node.run(&pod, config).await;

        // Root inside, HOST_ROOT outside.
        assert_eq!(node.exec_ok(&id, &["id", "-u"]).await.trim(), "0");
        let uid_map = node.exec_ok(&id, &["cat", "/proc/self/uid_map"]).await;
        let fields: Vec<&str> = uid_map.split_whitespace().collect();
        assert_eq!(fields, ["0", &HOST_ROOT.to_string(), &LENGTH.to_string()], "{uid_map:?}");
        let host_pid = node.status(&id).await;
        assert_eq!(host_pid.state, ContainerState::ContainerRunning as i32);
        let ps =
            std::process::Command::new("ps").args(["-o", "uid=", "-C", "sleep"]).output().unwrap();
        let uids = String::from_utf8_lossy(&ps.stdout);
        assert!(
            uids.split_whitespace().any(|u| u == HOST_ROOT.to_string()),
            "no sleep runs as host uid {HOST_ROOT}: {uids:?}"
        );

        if pid == NamespaceMode::Pod {
            // The pod's init is its root too, not an unmapped `nobody`.
            assert_eq!(node.exec_ok(&id, &["stat", "-c", "%u", "/proc/1"]).await.trim(), "0");
        }

        // The image's files are root's inside; a file the container makes lands in its
        // writable layer owned by the mapped host ids.
        assert_eq!(node.exec_ok(&id, &["stat", "-c", "%u:%g", "/bin"]).await.trim(), "0:0");
        node.exec_ok(&id, &["touch", "/created"]).await;
        let upper = node.berthd.root_dir().join("snapshots/containers").join(&id).join("upper");
        let made = std::fs::metadata(upper.join("created")).unwrap();
        assert_eq!((made.uid(), made.gid()), (HOST_ROOT, HOST_ROOT));
        // ... and the shared layers were not chowned.
        let layers = node.berthd.root_dir().join("snapshots");
        let bin = walk_find(&layers, "busybox").expect("busybox in a layer");
        assert_eq!(std::fs::metadata(&bin).unwrap().uid(), 0, "{}", bin.display());

        // The root-owned volume: nobody inside unless idmapped, then root; a file made
        // through the idmapped mount is root's on the host.
        assert_eq!(node.exec_ok(&id, &["stat", "-c", "%u", "/plain"]).await.trim(), "65534");
        assert_eq!(node.exec_ok(&id, &["stat", "-c", "%u", "/mapped"]).await.trim(), "0");
        let denied = node.exec(&id, &["touch", "/plain/x"]).await.unwrap();
        assert_ne!(denied.exit_code, 0, "container root wrote into a host root directory");
        node.exec_ok(&id, &["touch", "/mapped/y"]).await;
        assert_eq!(std::fs::metadata(vol.path().join("y")).unwrap().uid(), 0);

        // An exec's terminal (made by berthd in the container's devpts) is its root's.
        let url = node
            .berthd
            .runtime()
            .exec(ExecRequest {
                container_id: id.clone(),
                cmd: ["sh", "-c", "read go; stat -c owner=%u $(tty)"].map(String::from).to_vec(),
                stdin: true,
                stdout: true,
                stderr: false,
                tty: true,
            })
            .await
            .unwrap()
            .into_inner()
            .url;
        let mut s = SpdyClient::connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
        let (_, mut err) = s.open(&[("streamtype", "error")]);
        let (stdin, _) = s.open(&[("streamtype", "stdin")]);
        let (_, mut out) = s.open(&[("streamtype", "stdout")]);
        let (resize, _) = s.open(&[("streamtype", "resize")]);
        s.write(resize, br#"{"Width":80,"Height":24}"#);
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.write(stdin, b"go\r");
        let text = read_until(&mut out, "owner=0", Duration::from_secs(10)).await;
        let status = read_until(&mut err, "}", Duration::from_secs(1)).await;
        assert!(text.contains("owner=0"), "{text:?} {status:?}");
        drop(s);

        // Capabilities are the pod's: its host name changes, the host's does not; a
        // device node (CAP_MKNOD, in the default set, counts only in the host's user
        // namespace) is refused. (This machine's kernel has no module loading to try.)
        let before = host_hostname();
        node.exec_ok(&id, &["hostname", "renamed"]).await;
        assert_eq!(node.exec_ok(&id, &["hostname"]).await.trim(), "renamed");
        assert_eq!(host_hostname(), before);
        let r = node.exec(&id, &["mknod", "/tmp/null", "c", "1", "3"]).await.unwrap();
        let err = String::from_utf8_lossy(&r.stderr).to_string();
        assert_ne!(r.exit_code, 0, "mknod worked in a pod user namespace");
        assert!(err.contains("not permitted"), "mknod: {err:?}");

        node.remove_pod_and_check(&pod).await;
        assert!(!upper.exists(), "writable layer left");
    }
}

fn walk_find(dir: &Path, name: &str) -> Option<std::path::PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        let t = e.file_type().ok()?;
        if t.is_file() && e.file_name() == name {
            return Some(p);
        }
        if t.is_dir() && !t.is_symlink() {
            if let Some(found) = walk_find(&p, name) {
                return Some(found);
            }
        }
    }
    None
}

/// RunPodSandbox refuses `config` with InvalidArgument naming `field`.
async fn refused(node: &Node, config: PodSandboxConfig, field: &str) {
    let req = RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() };
    let err = node.berthd.runtime().run_pod_sandbox(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains(field), "{err:?} does not name {field}");
}

#[tokio::test]
async fn bad_user_namespace_requests_are_refused_and_leave_nothing() {
    let node = Node::start().await;
    let logs = tempfile::tempdir().unwrap();
    // Host network with a pod user namespace.
    let mut config = userns_pod(&node, "hostnet", logs.path(), NamespaceMode::Container);
    let ns = config.linux.as_mut().unwrap().security_context.as_mut().unwrap();
    ns.namespace_options.as_mut().unwrap().network = NamespaceMode::Node as i32;
    refused(&node, config, "namespace_options.network").await;

    // A mapping that leaves container root unmapped.
    let mut config = userns_pod(&node, "unmapped", logs.path(), NamespaceMode::Container);
    let ns = config.linux.as_mut().unwrap().security_context.as_mut().unwrap();
    let u = ns.namespace_options.as_mut().unwrap().userns_options.as_mut().unwrap();
    u.uids[0].container_id = 1;
    refused(&node, config, "userns_options.uids[0].container_id").await;

    let pods =
        node.berthd.runtime().list_pod_sandbox(ListPodSandboxRequest::default()).await.unwrap();
    assert!(pods.into_inner().items.is_empty(), "a refused pod was recorded");

    // An idmapped volume in a pod without a user namespace.
    let pod = node.run_pod("plain", logs.path()).await;
    let vol = tempfile::tempdir().unwrap();
    let mut config = busybox("c", &["sleep", "1000"]);
    config.mounts = vec![Mount {
        container_path: "/v".into(),
        host_path: vol.path().display().to_string(),
        uid_mappings: mapping(),
        gid_mappings: mapping(),
        ..Default::default()
    }];
    let err = node.create(&pod, config).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("mounts[0].uid_mappings"), "{err:?}");
    assert!(node.list_containers().await.is_empty());
    // Without a user namespace the same mknod the pod-userns test sees refused works: the
    // refusal there is the namespace's doing.
    let id = node.run(&pod, busybox("m", &["sleep", "1000"])).await;
    node.exec_ok(&id, &["mknod", "/tmp/null", "c", "1", "3"]).await;
    node.remove_pod_and_check(&pod).await;
}
