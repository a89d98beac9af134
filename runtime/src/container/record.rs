//! What the metadata store keeps about containers.

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
}

impl Record for ContainerRecord {
    const TABLE: &'static str = "containers";
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    pub container_path: String,
    pub host_path: String,
    pub readonly: bool,
    pub propagation: i32,
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
