//! What the metadata store keeps about containers.

use super::container_spec::{ContainerResources, ContainerSpec, MountSpec, Propagation};
use crate::digest::Digest;
use crate::metadata::Record;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub pod_id: String,
    pub name: String,
    pub attempt: u32,
    /// The image as the request named it, and what it resolved to.
    pub image: String,
    pub image_id: Digest,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// As given (relative to the pod's log directory), and resolved.
    pub log_path: String,
    pub log_file: Option<PathBuf>,
    pub mounts: Vec<MountRecord>,
    pub tty: bool,
    pub stdin: bool,
    pub stdin_once: bool,
    /// Nanoseconds since the epoch.
    pub created_at: i64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// The resources asked for at create, or by the last UpdateContainerResources.
    #[serde(default)]
    pub resources: Option<ContainerResources>,
    /// CreateContainer has not finished: hidden from CRI, removed at start-up.
    #[serde(default)]
    pub creating: bool,
    /// [`request_fingerprint`] of the create request: tells a kubelet's retry (same
    /// request) from a conflicting create under the same name.
    #[serde(default)]
    pub request: String,
    /// How it ended, once berthd has seen it end: kept here, under the persistent root,
    /// because the shim's own exit record lives in the volatile state a reboot wipes.
    #[serde(default)]
    pub exit: Option<crate::shim::ExitRecord>,
    /// The digest reference (`repo@sha256:…`) of the image it was created from, or the
    /// image id when the image has none; empty in records from before it was kept.
    #[serde(default)]
    pub image_ref: String,
    /// Who the first process runs as; `None` in records from before it was kept.
    #[serde(default)]
    pub user: Option<UserRecord>,
    /// The request's stop signal (a number); 0: the image's, else SIGTERM.
    #[serde(default)]
    pub stop_signal: i32,
}

/// The identity the container's first process really has.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UserRecord {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, the primary group among them.
    pub supplemental_groups: Vec<u32>,
}

/// A digest of what a CreateContainer request asks for, independent of map ordering.
pub fn request_fingerprint(c: &ContainerSpec) -> String {
    let pairs = |m: &BTreeMap<String, String>| {
        m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>()
    };
    let text = serde_json::json!({
        "image": c.image,
        "command": c.command,
        "args": c.args,
        "working_dir": c.working_dir,
        "envs": c.envs.iter().map(|e| format!("{}={}", e.key, String::from_utf8_lossy(&e.value))).collect::<Vec<_>>(),
        "mounts": c.mounts.iter().map(mount_fingerprint).collect::<Vec<_>>(),
        "labels": pairs(&c.labels),
        "annotations": pairs(&c.annotations),
        "log_path": c.log_path,
        "tty": c.tty,
        "stdin": c.stdin,
    });
    crate::digest::Digest::of(text.to_string().as_bytes()).to_string()
}

/// One mount of a create request, as [`request_fingerprint`] compares it; a mount
/// without an image reads as it did before image volumes were handled.
fn mount_fingerprint(m: &MountSpec) -> String {
    let propagation = i32::from(m.propagation);
    let plain = format!("{}:{}:{}:{propagation}", m.host_path, m.container_path, m.readonly);
    match &m.image {
        Some(image) => format!("{plain}:image={image}:{}", m.image_sub_path),
        None => plain,
    }
}

impl Record for ContainerRecord {
    const TABLE: &'static str = "containers";
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    pub container_path: String,
    pub host_path: String,
    pub readonly: bool,
    pub propagation: Propagation,
    /// Set for an image volume, whose host path is its view.
    #[serde(default)]
    pub image: Option<ImageMountRecord>,
}

/// The image an image volume mounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageMountRecord {
    /// As the request named it (the kubelet sends the id PullImage gave it).
    pub image: String,
    /// Its digest reference, as ContainerStatus.image_ref reports a container's image.
    pub image_ref: String,
    pub sub_path: String,
}

/// `pod id / name / attempt` → container id: one container per name and attempt in a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerName {
    pub container_id: String,
}

impl Record for ContainerName {
    const TABLE: &'static str = "container_names";
}

pub fn name_key(pod_id: &str, name: &str, attempt: u32) -> String {
    format!("{pod_id}/{name}/{attempt}")
}
