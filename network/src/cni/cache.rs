//! The result cache, as libcni keeps one: after a successful ADD, the plugin list used,
//! the arguments and the final result are written to `<dir>/<network>-<pod id>-<ifname>`,
//! so DEL and CHECK work with what ADD was given even after the config changed or went
//! away, or berthd restarted.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{NetworkError, Result};

pub const KIND: &str = "berth-cni-cache-v1";

/// One cached attachment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheEntry {
    pub kind: String,
    pub container_id: String,
    pub if_name: String,
    pub network_name: String,
    /// The config file the list came from (for `crictl info`, logs).
    pub config_file: PathBuf,
    /// The pinned netns the pod was added in.
    #[serde(default)]
    pub netns: PathBuf,
    /// The plugin list, as it was run (pod CIDR placeholders replaced).
    pub config: Value,
    pub cni_args: Vec<(String, String)>,
    pub capability_args: Map<String, Value>,
    /// The final result of ADD.
    pub result: Value,
}

/// The cache directory.
#[derive(Debug, Clone)]
pub struct ResultCache {
    dir: PathBuf,
}

impl ResultCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ResultCache { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<dir>/<network>-<pod id>-<ifname>`.
    pub fn path(&self, network: &str, pod_id: &str, ifname: &str) -> PathBuf {
        self.dir.join(format!("{network}-{pod_id}-{ifname}"))
    }

    /// Writes `entry` atomically (temporary file, fsync, rename).
    pub fn write(&self, entry: &CacheEntry) -> Result<PathBuf> {
        let io = |what: &str, e| NetworkError::io(format!("CNI cache: {what}"), e);
        if entry.network_name.contains('/') || entry.network_name.starts_with('.') {
            return Err(NetworkError::InvalidArgument(format!(
                "CNI network name {:?} cannot name a cache file",
                entry.network_name
            )));
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| io("create directory", e))?;
        let path = self.path(&entry.network_name, &entry.container_id, &entry.if_name);
        let tmp = path.with_extension("tmp");
        let bytes = serde_json::to_vec(entry).map_err(|e| io("encode", e.into()))?;
        let mut f = std::fs::File::create(&tmp).map_err(|e| io("create", e))?;
        f.write_all(&bytes).and_then(|()| f.sync_all()).map_err(|e| io("write", e))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io("rename", e)
        })?;
        Ok(path)
    }

    /// The entries of `pod_id` on `ifname` (normally one; more if the network was renamed
    /// between ADDs), with their paths.
    pub fn find(&self, pod_id: &str, ifname: &str) -> Result<Vec<(PathBuf, CacheEntry)>> {
        let suffix = format!("-{pod_id}-{ifname}");
        let mut out = Vec::new();
        for (path, entry) in self.entries()? {
            let named =
                path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(&suffix));
            if named && entry.container_id == pod_id && entry.if_name == ifname {
                out.push((path, entry));
            }
        }
        Ok(out)
    }

    /// Every readable entry. Unreadable or foreign files are skipped with a warning.
    pub fn entries(&self) -> Result<Vec<(PathBuf, CacheEntry)>> {
        let dir = match std::fs::read_dir(&self.dir) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(NetworkError::io(format!("read {}", self.dir.display()), e)),
        };
        let mut out = Vec::new();
        for e in dir.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "tmp") {
                continue;
            }
            match std::fs::read(&path).map(|b| serde_json::from_slice::<CacheEntry>(&b)) {
                Ok(Ok(entry)) if entry.kind == KIND => out.push((path, entry)),
                Ok(Ok(_)) | Ok(Err(_)) => {
                    tracing::warn!(path = %path.display(), "not a berth CNI cache entry; ignored")
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read CNI cache entry")
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Removes one entry; a missing one is fine.
    pub fn remove(&self, path: &Path) -> Result<()> {
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(NetworkError::io(format!("remove {}", path.display()), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(pod: &str) -> CacheEntry {
        CacheEntry {
            kind: KIND.into(),
            container_id: pod.into(),
            if_name: "eth0".into(),
            network_name: "mynet".into(),
            config_file: "/etc/cni/net.d/10-mynet.conflist".into(),
            netns: "/run/berth/pods/p/ns/net".into(),
            config: json!({"cniVersion": "1.0.0", "name": "mynet", "plugins": [{"type": "bridge"}]}),
            cni_args: vec![("K8S_POD_NAME".into(), "web".into())],
            capability_args: Map::new(),
            result: json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24"}]}),
        }
    }

    #[test]
    fn round_trip_find_remove() {
        let d = tempfile::tempdir().unwrap();
        let cache = ResultCache::new(d.path().join("results"));
        assert!(cache.find("pod-a", "eth0").unwrap().is_empty(), "no directory yet");
        let path = cache.write(&entry("pod-a")).unwrap();
        assert_eq!(path, d.path().join("results/mynet-pod-a-eth0"));
        cache.write(&entry("a")).unwrap();
        std::fs::write(d.path().join("results/junk"), "{}").unwrap();
        let found = cache.find("pod-a", "eth0").unwrap();
        assert_eq!(found.len(), 1, "pod `a` shares the suffix but not the id");
        assert_eq!(found[0].1, entry("pod-a"));
        let leftovers: Vec<_> = std::fs::read_dir(d.path().join("results"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "tmp"))
            .collect();
        assert!(leftovers.is_empty());
        cache.remove(&path).unwrap();
        cache.remove(&path).unwrap();
        assert!(cache.find("pod-a", "eth0").unwrap().is_empty());
        assert_eq!(cache.entries().unwrap().len(), 1);
    }

    #[test]
    fn network_name_must_be_a_file_name() {
        let d = tempfile::tempdir().unwrap();
        let mut e = entry("p");
        e.network_name = "../x".into();
        assert!(ResultCache::new(d.path()).write(&e).is_err());
    }
}
