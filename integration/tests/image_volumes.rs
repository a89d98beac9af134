//! Image volumes (CRI `Mount.image`, KEP-4639) through a real berthd: an image pulled
//! from the loopback registry, mounted read-only into a busybox container, whole or one
//! sub-path, kept from RemoveImage while mounted, surviving a berthd crash, and gone
//! without a trace with its container.

use berth_integration::oci_image::images::whiteout_image;
use berth_integration::oci_image::{Compression, Image};
use berth_integration::pods::{self, Node};
use berth_proto::*;

/// An image of one layer (its view is a read-only bind of the layer):
/// `/data/hello`, `/data/sub/inner`, `/data/sub/deeper/x`, `/top`, and `/data/link`, a
/// symlink to `/data/sub` (absolute: it must resolve inside the image).
fn content_image() -> Image {
    Image::new().layer_with(Compression::Gzip, "berth fixture: image volume content", |b| {
        b.dir("data", 0o755)
            .file("data/hello", 0o644, b"hello from the image\n")
            .dir("data/sub", 0o755)
            .file("data/sub/inner", 0o644, b"inner\n")
            .dir("data/sub/deeper", 0o755)
            .file("data/sub/deeper/x", 0o644, b"x\n")
            .symlink("data/link", "/data/sub")
            .file("top", 0o644, b"top\n");
    })
}

/// A node with busybox, `content` (one layer) and `layered` (busybox plus two layers of
/// whiteouts: its view is an overlay) pulled; returns their ids as PullImage gave them.
async fn node_with_volume_images(node: Node) -> (Node, String, String) {
    let client = node.registry.client();
    content_image().push(&client, "library/content", "1").unwrap();
    whiteout_image().push(&client, "library/layered", "1").unwrap();
    let mut ids = Vec::new();
    for name in ["content:1", "layered:1"] {
        let r = node
            .berthd
            .image()
            .pull_image(PullImageRequest {
                image: Some(ImageSpec { image: name.into(), ..Default::default() }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        ids.push(r.image_ref);
    }
    let layered = ids.pop().unwrap();
    (node, ids.pop().unwrap(), layered)
}

/// A mount of `image` (as the kubelet sends it: the id PullImage returned, host path
/// empty, not marked read-only) at `at`.
fn image_mount(at: &str, image: &str, sub_path: &str) -> Mount {
    Mount {
        container_path: at.into(),
        image: Some(ImageSpec { image: image.into(), ..Default::default() }),
        image_sub_path: sub_path.into(),
        ..Default::default()
    }
}

fn with_mounts(name: &str, mounts: Vec<Mount>) -> ContainerConfig {
    ContainerConfig { mounts, ..pods::busybox(name, &["sleep", "1000"]) }
}

async fn remove_image(node: &Node, image: &str) -> Result<(), tonic::Status> {
    node.berthd
        .image()
        .remove_image(RemoveImageRequest {
            image: Some(ImageSpec { image: image.into(), ..Default::default() }),
        })
        .await
        .map(drop)
}

/// Whether each image is reported pinned, by id.
async fn pinned(node: &Node) -> Vec<(String, bool)> {
    let listed = node.berthd.image().list_images(ListImagesRequest::default()).await.unwrap();
    let mut out: Vec<_> =
        listed.into_inner().images.into_iter().map(|i| (i.id, i.pinned)).collect();
    out.sort();
    out
}

/// A container's exec that must fail; returns its stderr.
async fn exec_fails(node: &Node, id: &str, cmd: &[&str]) -> String {
    let r = node.exec(id, cmd).await.unwrap();
    assert_ne!(r.exit_code, 0, "{cmd:?} succeeded");
    String::from_utf8_lossy(&r.stderr).into_owned()
}

async fn an_image_volume_is_read_only_kept_while_mounted_and_survives_a_restart(node: Node) {
    let (mut node, content, layered) = node_with_volume_images(node).await;
    let logs = tempfile::tempdir().unwrap();
    let pod_id = node.run_pod("imagevol", logs.path()).await;
    let mounts = vec![
        image_mount("/vol", &content, ""),
        image_mount("/sub", &content, "data/sub"),
        image_mount("/linked", &content, "data/link"),
        image_mount("/layered", &layered, ""),
    ];
    let id = node.run(&pod_id, with_mounts("reader", mounts)).await;

    assert_eq!(node.exec_ok(&id, &["cat", "/vol/data/hello"]).await, "hello from the image\n");
    assert_eq!(node.exec_ok(&id, &["cat", "/vol/top"]).await, "top\n");
    // The sub-path alone, and through a symlink resolved inside the image.
    assert_eq!(node.exec_ok(&id, &["ls", "/sub"]).await, "deeper\ninner\n");
    assert_eq!(node.exec_ok(&id, &["ls", "/linked"]).await, "deeper\ninner\n");
    assert_eq!(node.exec_ok(&id, &["cat", "/sub/deeper/x"]).await, "x\n");
    // Every layer of a layered image, its whiteouts applied.
    assert_eq!(node.exec_ok(&id, &["cat", "/layered/data/keep"]).await, "keep\n");
    assert_eq!(node.exec_ok(&id, &["cat", "/layered/data/changed"]).await, "new\n");
    assert!(node.exec_ok(&id, &["ls", "/layered/bin"]).await.contains("busybox"));
    exec_fails(&node, &id, &["test", "-e", "/layered/data/gone"]).await;
    exec_fails(&node, &id, &["ls", "/layered/opaque/old"]).await;
    // Read-only, though the request did not ask for it.
    for path in ["/vol/new", "/vol/data/hello", "/sub/new", "/layered/new", "/layered/data/keep"] {
        let err = exec_fails(&node, &id, &["sh", "-c", &format!("echo x > {path}")]).await;
        assert!(err.contains("Read-only file system"), "writing {path}: {err}");
    }
    let err = exec_fails(&node, &id, &["rm", "/vol/top"]).await;
    assert!(err.contains("Read-only file system"), "{err}");
    // The container's own rootfs stays writable.
    node.exec_ok(&id, &["sh", "-c", "echo x > /written"]).await;

    let status = node.status(&id).await;
    let mounted: Vec<_> = status.mounts.iter().filter(|m| m.image.is_some()).collect();
    assert_eq!(mounted.len(), 4, "{:?}", status.mounts);
    let sub = mounted.iter().find(|m| m.container_path == "/sub").unwrap();
    assert_eq!(sub.image.as_ref().unwrap().image, content);
    assert!(sub.image.as_ref().unwrap().image_ref.contains("content@sha256:"), "{sub:?}");
    assert_eq!(sub.image_sub_path, "data/sub");
    assert!(mounted.iter().all(|m| m.readonly), "{mounted:?}");

    // In use: pinned for the kubelet's image GC, and RemoveImage refuses it.
    let busybox_id = busybox_id(&node).await;
    let mut want =
        vec![(busybox_id.clone(), false), (content.clone(), true), (layered.clone(), true)];
    want.sort();
    assert_eq!(pinned(&node).await, want);
    for image in [&content, &layered, &"content:1".to_string()] {
        let err = remove_image(&node, image).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{image}: {err:?}");
        assert!(err.message().contains(&id), "{err:?}");
    }

    // berthd dies and comes back: the running container keeps its volumes, and they
    // still count as in use.
    node.berthd.kill();
    node.berthd.restart().await;
    assert_eq!(node.status(&id).await.state, ContainerState::ContainerRunning as i32);
    assert_eq!(node.exec_ok(&id, &["cat", "/vol/data/hello"]).await, "hello from the image\n");
    assert_eq!(node.exec_ok(&id, &["cat", "/layered/data/keep"]).await, "keep\n");
    let err = remove_image(&node, &content).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "after a restart: {err:?}");
    assert_eq!(pinned(&node).await, want);

    // Once the container is gone, so is everything its volumes held.
    node.berthd
        .runtime()
        .remove_container(RemoveContainerRequest { container_id: id.clone() })
        .await
        .unwrap();
    assert_eq!(
        pinned(&node).await.iter().filter(|(_, p)| *p).count(),
        0,
        "still pinned after the container went"
    );
    remove_image(&node, &content).await.unwrap();
    remove_image(&node, &layered).await.unwrap();
    assert_eq!(pinned(&node).await, [(busybox_id, false)]);
    // busybox's own layer is all that is left (layered shares it).
    let layers = std::fs::read_dir(node.berthd.root_dir().join("snapshots/layers")).unwrap();
    assert_eq!(layers.count(), 1, "the volumes' layers outlived their images");
    node.remove_pod_and_check(&pod_id).await;
}

async fn busybox_id(node: &Node) -> String {
    node.berthd
        .image()
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec { image: "busybox".into(), ..Default::default() }),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .image
        .unwrap()
        .id
}

/// Nothing of a refused or crashed create is left: no container, bundle, writable layer
/// or mount, and the image is free to go.
fn assert_nothing_left(node: &Node, what: &str) {
    let bundles: Vec<_> = std::fs::read_dir(node.berthd.state_dir().join("containers"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(bundles.is_empty(), "{what}: bundles left: {bundles:?}");
    let snapshots = node.berthd.root_dir().join("snapshots/containers");
    let left = std::fs::read_dir(&snapshots).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "{what}: writable layers left");
    let pods = node.berthd.state_dir().join("pods");
    let mounts: Vec<_> = berth_integration::leaks::mounts_under(&node.berthd.root_dir())
        .into_iter()
        .chain(berth_integration::leaks::mounts_under(&node.berthd.state_dir()))
        .filter(|m| !std::path::Path::new(m).starts_with(&pods))
        .collect();
    assert!(mounts.is_empty(), "{what}: mounts left: {mounts:?}");
}

#[tokio::test]
async fn bad_image_mounts_are_refused_naming_the_field_and_leave_nothing() {
    let (node, content, _) = node_with_volume_images(Node::start().await).await;
    let logs = tempfile::tempdir().unwrap();
    let pod_id = node.run_pod("badvol", logs.path()).await;
    let absent = format!("sha256:{}", "0".repeat(64));
    let cases: Vec<(Mount, tonic::Code, &str)> = vec![
        (image_mount("/v", &absent, ""), tonic::Code::NotFound, "config.mounts[1].image"),
        (
            image_mount("/v", "docker.io/library/never-pulled:1", ""),
            tonic::Code::NotFound,
            "config.mounts[1].image",
        ),
        (image_mount("/v", "Not A Reference", ""), tonic::Code::InvalidArgument, "mounts[1].image"),
        (image_mount("/v", "", ""), tonic::Code::InvalidArgument, "config.mounts[1].image.image"),
        (
            image_mount("/v", &content, "../etc"),
            tonic::Code::InvalidArgument,
            "config.mounts[1].image_sub_path",
        ),
        (
            image_mount("/v", &content, "/data"),
            tonic::Code::InvalidArgument,
            "config.mounts[1].image_sub_path",
        ),
        (
            image_mount("/v", &content, "data/../data"),
            tonic::Code::InvalidArgument,
            "config.mounts[1].image_sub_path",
        ),
        // Well-formed, but not in the image: found out only once the view is mounted.
        (
            image_mount("/v", &content, "data/nope"),
            tonic::Code::InvalidArgument,
            "config.mounts[1].image_sub_path",
        ),
        (
            image_mount("/v", &content, "top/x"),
            tonic::Code::InvalidArgument,
            "config.mounts[1].image_sub_path",
        ),
        (
            Mount { host_path: "/tmp".into(), ..image_mount("/v", &content, "") },
            tonic::Code::InvalidArgument,
            "config.mounts[1].host_path",
        ),
        (
            Mount {
                propagation: MountPropagation::PropagationBidirectional as i32,
                ..image_mount("/v", &content, "")
            },
            tonic::Code::InvalidArgument,
            "config.mounts[1].propagation",
        ),
        (
            Mount {
                container_path: "/v".into(),
                host_path: "/tmp".into(),
                image_sub_path: "data".into(),
                ..Default::default()
            },
            tonic::Code::InvalidArgument,
            "config.mounts[1].image_sub_path",
        ),
    ];
    for (bad, code, field) in cases {
        let what = format!("{bad:?}");
        // A good image mount first: a failure on the second must take the first down too.
        let mounts = vec![image_mount("/ok", &content, "data"), bad];
        let err = node.create(&pod_id, with_mounts("bad", mounts)).await.unwrap_err();
        assert_eq!(err.code(), code, "{what}: {err:?}");
        assert!(err.message().contains(field), "{what}: {err:?} does not name {field}");
        assert!(node.list_containers().await.is_empty(), "{what}: a container was left");
        assert_nothing_left(&node, &what);
        assert!(
            pinned(&node).await.iter().all(|(_, p)| !p),
            "{what}: an image is still held by a refused create"
        );
    }
    // The name is free again, and a good request with it works.
    let id =
        node.run(&pod_id, with_mounts("bad", vec![image_mount("/ok", &content, "data")])).await;
    assert_eq!(node.exec_ok(&id, &["cat", "/ok/hello"]).await, "hello from the image\n");
    node.remove_pod_and_check(&pod_id).await;
    remove_image(&node, &content).await.unwrap();
}

#[tokio::test]
async fn a_crash_while_creating_a_container_with_image_volumes_leaves_nothing() {
    let (mut node, content, layered) = node_with_volume_images(Node::start().await).await;
    let logs = tempfile::tempdir().unwrap();
    let pod_id = node.run_pod("crashvol", logs.path()).await;
    let mounts = || vec![image_mount("/vol", &content, ""), image_mount("/lay", &layered, "data")];
    // Both points come after the views are mounted.
    for point in ["container.rootfs", "container.created"] {
        node.create_crashing_at(point, &pod_id, with_mounts("svc", mounts())).await;
        assert!(node.list_containers().await.is_empty(), "{point}");
        assert_nothing_left(&node, point);
        assert!(pinned(&node).await.iter().all(|(_, p)| !p), "{point}: images still held");
        // The kubelet's retry succeeds.
        let id = node.run(&pod_id, with_mounts("svc", mounts())).await;
        assert_eq!(node.exec_ok(&id, &["cat", "/lay/keep"]).await, "keep\n");
        node.remove_container(&id).await;
    }
    node.remove_pod_and_check(&pod_id).await;
    remove_image(&node, &content).await.unwrap();
    remove_image(&node, &layered).await.unwrap();
}

// The volume test runs with the native executor and with runc as the pod's handler.
mod native {
    #[tokio::test]
    async fn an_image_volume_is_read_only_kept_while_mounted_and_survives_a_restart() {
        super::an_image_volume_is_read_only_kept_while_mounted_and_survives_a_restart(
            super::Node::start().await,
        )
        .await
    }
}

mod runc {
    #[tokio::test]
    async fn an_image_volume_is_read_only_kept_while_mounted_and_survives_a_restart() {
        super::an_image_volume_is_read_only_kept_while_mounted_and_survives_a_restart(
            super::Node::start_runc().await,
        )
        .await
    }
}
