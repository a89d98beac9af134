//! Power cuts: the VM lane (`integration/vm/powercut.sh`) runs `work_until_the_power_is_cut`
//! in a guest, kills QEMU while pulls, pod starts and container creates are under way,
//! boots the guest again and runs `after_the_power_cut_everything_listed_works`. Every
//! image, pod and container berthd lists then must work, a listed image's files must be
//! exactly what was pushed, and removing it all must leave nothing behind.
//!
//! Both need a guest of their own and `BERTH_POWERCUT_DIR` (berthd's directory, on the
//! guest's disk, short enough for the shims' socket paths): they are ignored elsewhere,
//! and fail at once without it.

use berth_integration::leaks::NetEnv;
use berth_integration::oci_image::big::{big_layer_digests, push_big_image, BigImageSpec};
use berth_integration::oci_image::{images, Compression};
use berth_integration::pods::{busybox, Node};
use berth_integration::registry::{Registry, RegistryOptions};
use berth_integration::{Berthd, Options};
use berth_proto::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The marker the lane's host waits for before it cuts the power.
const UNDER_WAY: &str = "powercut: work under way";
/// Images with random (incompressible) layers, pulled again and again during the cut.
const BIG_IMAGES: u64 = 4;

fn dir() -> PathBuf {
    std::env::var_os("BERTH_POWERCUT_DIR")
        .map(PathBuf::from)
        .expect("BERTH_POWERCUT_DIR: berthd's directory on a disk that survives the power cut")
}

fn spec(n: u64) -> BigImageSpec {
    BigImageSpec { compression: Compression::None, ..BigImageSpec::new(100 + n, 3, 12) }
}

/// The same network names in both phases: the pods' records name them.
fn env() -> NetEnv {
    NetEnv::fixed(200, "pcut")
}

async fn node(registry: Registry) -> Node {
    let env = env();
    let config = format!(
        "{}\n[registry.mirrors.\"docker.io\"]\nendpoints = [\"{}\"]\n",
        env.config_toml(),
        registry.url()
    );
    let options = Options { config: Some(config), dir: Some(dir()), ..Default::default() };
    let berthd = Berthd::start_with(options).await;
    Node { env, registry, berthd, handler: String::new() }
}

fn image(name: &str) -> Option<ImageSpec> {
    Some(ImageSpec { image: name.into(), ..Default::default() })
}

#[tokio::test]
#[ignore = "needs a guest whose power the VM lane cuts: integration/vm/powercut.sh"]
async fn work_until_the_power_is_cut() {
    let _ = std::fs::remove_dir_all(dir());
    let registry = Registry::start(RegistryOptions::default());
    images::busybox().push(&registry.client(), "library/busybox", "latest").unwrap();
    for n in 0..BIG_IMAGES {
        push_big_image(&registry.client(), &format!("library/big{n}"), "latest", &spec(n)).unwrap();
    }
    let node = node(registry).await;
    node.berthd
        .image()
        .pull_image(PullImageRequest { image: image("busybox"), ..Default::default() })
        .await
        .unwrap();
    let logs = dir().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    println!("{UNDER_WAY}");

    // Pulls: each big image in turn, removed and pulled again, so layers are always being
    // written, renamed into place and recorded.
    let mut img = node.berthd.image();
    let pulls = async move {
        for round in 0u64.. {
            let name = format!("big{}", round % BIG_IMAGES);
            if round >= BIG_IMAGES {
                let _ = img.remove_image(RemoveImageRequest { image: image(&name) }).await;
            }
            let r = img.pull_image(PullImageRequest { image: image(&name), ..Default::default() });
            println!("powercut: pulled {name}: {}", r.await.is_ok());
        }
    };
    // Pods with containers, some stopped and removed again.
    let pods = async {
        let mut rt = node.berthd.runtime();
        for i in 0u64.. {
            let pod = node.run_pod(&format!("p{i}"), &logs).await;
            let c = node.create(&pod, busybox("c", &["sleep", "100000"])).await.unwrap();
            rt.start_container(StartContainerRequest { container_id: c }).await.unwrap();
            let mut big = busybox("big", &["sleep", "100000"]);
            big.image = image(&format!("big{}", i % BIG_IMAGES));
            let made = node.create(&pod, big).await.is_ok();
            println!("powercut: pod {i} with a busybox container, big container: {made}");
            if i % 3 == 2 {
                rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod.clone() })
                    .await
                    .unwrap();
                rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod })
                    .await
                    .unwrap();
            }
        }
    };
    let deadline = berth_integration::scaled(Duration::from_secs(120));
    tokio::select! {
        _ = pulls => {}
        _ = pods => {}
        _ = tokio::time::sleep(deadline) => {}
    }
    panic!("no power cut came within {deadline:?}");
}

#[tokio::test]
#[ignore = "needs a guest whose power the VM lane cut: integration/vm/powercut.sh"]
async fn after_the_power_cut_everything_listed_works() {
    assert!(dir().join("root").is_dir(), "no berthd directory from before the power cut");
    let registry = Registry::start(RegistryOptions::default());
    let node = node(registry).await;
    let mut rt = node.berthd.runtime();
    let mut img = node.berthd.image();

    // Every image listed is whole: a container from it runs, and sees exactly the files
    // that were pushed.
    let listed = img.list_images(ListImagesRequest::default()).await.unwrap().into_inner().images;
    println!("powercut: {} images listed after the cut", listed.len());
    assert!(listed.iter().any(|i| i.repo_tags.iter().any(|t| t.contains("busybox"))));
    let logs = tempfile::tempdir().unwrap();
    let check = node.run_pod("check", logs.path()).await;
    for (i, image) in listed.iter().enumerate() {
        let tag = image.repo_tags.first().cloned().unwrap_or_default();
        let mut cfg = busybox(&format!("c{i}"), &["sleep", "100000"]);
        cfg.image = Some(ImageSpec { image: image.id.clone(), ..Default::default() });
        let id = node.run(&check, cfg).await;
        let n = (0..BIG_IMAGES).find(|n| tag.contains(&format!("big{n}:")));
        if let Some(n) = n {
            for layer in 0..3 {
                for (path, digest) in big_layer_digests(&spec(n), layer) {
                    let out = node.exec_ok(&id, &["sha256sum", &format!("/{path}")]).await;
                    let want = digest.trim_start_matches("sha256:");
                    assert!(out.starts_with(want), "{tag}: /{path} is {out}, pushed {want}");
                }
            }
        } else {
            node.exec_ok(&id, &["true"]).await;
        }
        println!("powercut: image {tag} is whole");
    }

    // Every pod and container listed answers its status and goes away.
    let containers =
        rt.list_containers(ListContainersRequest::default()).await.unwrap().into_inner();
    for c in &containers.containers {
        let status = rt
            .container_status(ContainerStatusRequest { container_id: c.id.clone(), verbose: false })
            .await
            .unwrap()
            .into_inner();
        assert!(status.status.is_some(), "{}", c.id);
        rt.remove_container(RemoveContainerRequest { container_id: c.id.clone() }).await.unwrap();
    }
    let pods = rt.list_pod_sandbox(ListPodSandboxRequest::default()).await.unwrap().into_inner();
    println!(
        "powercut: {} pods and {} containers listed after the cut",
        pods.items.len(),
        containers.containers.len()
    );
    for p in &pods.items {
        rt.pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: p.id.clone(),
            verbose: false,
        })
        .await
        .unwrap();
        rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: p.id.clone() }).await.unwrap();
        rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: p.id.clone() })
            .await
            .unwrap();
    }
    for image in &listed {
        img.remove_image(RemoveImageRequest {
            image: Some(ImageSpec { image: image.id.clone(), ..Default::default() }),
        })
        .await
        .unwrap();
    }

    // Nothing is left: no leases, veths, rules, cgroups or mounts (but berthd's own of its
    // pods directory), no layer, snapshot or unfinished unpack on disk.
    node.env.assert_no_leaks(&node.berthd).await;
    let root = node.berthd.root_dir();
    for sub in ["snapshots/layers", "snapshots/containers", "snapshots/tmp"] {
        let left = entries(&root.join(sub));
        assert!(left.is_empty(), "left in {sub}: {left:?}");
    }
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default()
}
