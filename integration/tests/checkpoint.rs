//! CheckpointContainer through a real berthd, as the kubelet's checkpoint API calls it.
//!
//! The refusals run anywhere. Checkpoints need CRIU that passes `criu check`: they are
//! `#[ignore]`d here (this development host's kernel fails CRIU 3.17's check, and CRIU is
//! not installed) and run in the VM lane's Debian guest (run-lane-tests.sh passes
//! `--include-ignored`), with the native executor and with runc, and there once more
//! with berthd on the systemd cgroup driver.

use berth_integration::pods::{busybox, Node};
use berth_proto::*;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use tonic::Code;

async fn checkpoint(
    node: &Node,
    id: &str,
    location: &str,
    timeout: i64,
) -> Result<(), tonic::Status> {
    node.berthd
        .runtime()
        .checkpoint_container(CheckpointContainerRequest {
            container_id: id.into(),
            location: location.into(),
            timeout,
        })
        .await
        .map(|_| ())
}

async fn refused(node: &Node, id: &str, location: &str, timeout: i64, code: Code) -> String {
    let err = checkpoint(node, id, location, timeout).await.unwrap_err();
    assert_eq!(err.code(), code, "{id:?} {location:?}: {err:?}");
    err.message().to_string()
}

async fn remove_container(node: &Node, id: &str) {
    let mut rt = node.berthd.runtime();
    rt.stop_container(StopContainerRequest { container_id: id.into(), timeout: 0 }).await.unwrap();
    rt.remove_container(RemoveContainerRequest { container_id: id.into() }).await.unwrap();
}

#[tokio::test]
async fn bad_checkpoint_requests_are_refused_naming_the_field_and_write_nothing() {
    let node = Node::start().await;
    let logs = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let pod = node.run_pod("ckpt-refused", logs.path()).await;
    // Created, never started.
    let id = node.create(&pod, busybox("idle", &["sleep", "3600"])).await.unwrap();
    let good = out.path().join("c.tar");
    let good = good.to_str().unwrap();

    let m = refused(&node, &id, "", 0, Code::InvalidArgument).await;
    assert!(m.starts_with("location"), "{m}");
    let m = refused(&node, &id, "c.tar", 0, Code::InvalidArgument).await;
    assert!(m.starts_with("location") && m.contains("absolute"), "{m}");
    let m = refused(&node, &id, "/nonexistent-berth-dir/c.tar", 0, Code::InvalidArgument).await;
    assert!(m.starts_with("location") && m.contains("does not exist"), "{m}");
    let m = refused(&node, &id, out.path().to_str().unwrap(), 0, Code::InvalidArgument).await;
    assert!(m.starts_with("location") && m.contains("directory"), "{m}");
    let m = refused(&node, "", good, 0, Code::InvalidArgument).await;
    assert!(m.starts_with("container_id"), "{m}");
    let m = refused(&node, &id, good, -1, Code::InvalidArgument).await;
    assert!(m.starts_with("timeout"), "{m}");
    refused(&node, "no-such-container", good, 0, Code::NotFound).await;
    let m = refused(&node, &id, good, 0, Code::FailedPrecondition).await;
    assert!(m.contains("not running"), "{m}");

    let left: Vec<_> = std::fs::read_dir(out.path()).unwrap().collect();
    assert!(left.is_empty(), "a refused checkpoint wrote {left:?}");
    remove_container(&node, &id).await;
    node.remove_pod_and_check(&pod).await;
}

#[tokio::test]
async fn a_runc_container_that_is_not_running_is_refused() {
    let node = Node::start_runc().await;
    let logs = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let pod = node.run_pod("ckpt-created", logs.path()).await;
    let id = node.create(&pod, busybox("idle", &["sleep", "3600"])).await.unwrap();
    let location = out.path().join("c.tar");
    let m = refused(&node, &id, location.to_str().unwrap(), 0, Code::FailedPrecondition).await;
    assert!(m.contains("not running"), "{m}");
    assert!(std::fs::read_dir(out.path()).unwrap().next().is_none());
    remove_container(&node, &id).await;
    node.remove_pod_and_check(&pod).await;
}

/// The archive's entries, by name, with the bytes of the small ones.
fn entries(archive: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut ar = tar::Archive::new(std::fs::File::open(archive).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let mut data = Vec::new();
        if e.header().entry_type().is_file() {
            e.read_to_end(&mut data).unwrap();
        }
        out.insert(name, data);
    }
    out
}

fn tar_entries(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.tar");
    std::fs::write(&path, bytes).unwrap();
    entries(&path)
}

async fn pid_of(node: &Node, id: &str) -> i64 {
    let s = node
        .berthd
        .runtime()
        .container_status(ContainerStatusRequest { container_id: id.into(), verbose: true })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&s.info["info"]).unwrap();
    info["pid"].as_i64().unwrap()
}

async fn a_running_container_is_checkpointed_and_keeps_running(node: Node) {
    let logs = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let pod = node.run_pod("ckpt", logs.path()).await;
    // A file written and one of the image's deleted, then a loop that keeps state in
    // memory (its counter) and prints it.
    let script = "echo checkpoint-me > /written.txt; rm /etc/group; i=0; \
                  while true; do i=$((i+1)); echo $i; sleep 0.2; done";
    let id = node.run(&pod, busybox("counter", &["sh", "-c", script])).await;
    node.exec_ok(&id, &["test", "-f", "/written.txt"]).await;
    let pid = pid_of(&node, &id).await;

    let archive = out.path().join("checkpoint.tar");
    checkpoint(&node, &id, archive.to_str().unwrap(), 0).await.unwrap();

    let all = entries(&archive);
    for want in [
        "checkpoint/inventory.img",
        "checkpoint/pstree.img",
        "dump.log",
        "spec.dump",
        "config.dump",
        "rootfs-diff.tar",
        "deleted.files",
    ] {
        assert!(all.contains_key(want), "{want} not in the archive: {:?}", all.keys());
    }
    assert!(
        all.keys().any(|k| k.starts_with("checkpoint/pages-")),
        "no memory pages in the archive: {:?}",
        all.keys()
    );
    let config: serde_json::Value = serde_json::from_slice(&all["config.dump"]).unwrap();
    assert_eq!(config["id"], id.as_str());
    assert_eq!(config["name"], "counter");
    assert_eq!(config["rootfsImageName"], "busybox");
    let spec: serde_json::Value = serde_json::from_slice(&all["spec.dump"]).unwrap();
    assert_eq!(spec["process"]["args"][0], "sh", "{spec}");
    let diff = tar_entries(&all["rootfs-diff.tar"]);
    assert_eq!(diff.get("written.txt").map(Vec::as_slice), Some(&b"checkpoint-me\n"[..]));
    let deleted: Vec<String> = serde_json::from_slice(&all["deleted.files"]).unwrap();
    assert_eq!(deleted, ["etc/group"]);

    // Left running: the same process, still counting.
    let status = node.status(&id).await;
    assert_eq!(status.state, ContainerState::ContainerRunning as i32);
    assert_eq!(pid_of(&node, &id).await, pid);
    node.exec_ok(&id, &["true"]).await;
    // Nothing of the work left beside the archive.
    let left: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["checkpoint.tar"]);

    remove_container(&node, &id).await;
    node.remove_pod_and_check(&pod).await;
}

mod native {
    #[tokio::test]
    #[ignore = "needs CRIU passing `criu check` (the VM lane's guest)"]
    async fn a_running_container_is_checkpointed_and_keeps_running() {
        super::a_running_container_is_checkpointed_and_keeps_running(super::Node::start().await)
            .await
    }
}

mod runc {
    #[tokio::test]
    #[ignore = "needs CRIU passing `criu check` (the VM lane's guest)"]
    async fn a_running_container_is_checkpointed_and_keeps_running() {
        super::a_running_container_is_checkpointed_and_keeps_running(
            super::Node::start_runc().await,
        )
        .await
    }
}
