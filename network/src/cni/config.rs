//! CNI network configuration: finding and parsing the config file in the conf dir, and
//! noticing when that directory changes.
//!
//! As libcni does it: the files ending `.conflist`, `.conf` or `.json` are sorted by name
//! and the first one is the pod network. A `.conflist` is a plugin list; a `.conf` (or
//! `.json` without `plugins`) is one plugin, used as a list of one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde_json::{Map, Value};

/// File name extensions libcni loads.
pub const EXTENSIONS: [&str; 3] = ["conflist", "conf", "json"];

/// A loaded plugin list.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkList {
    /// The file it came from.
    pub file: PathBuf,
    pub name: String,
    pub cni_version: String,
    /// Each plugin's own config object (with its `type`).
    pub plugins: Vec<Map<String, Value>>,
    /// `disableCheck` of the list.
    pub disable_check: bool,
}

impl NetworkList {
    /// Parses a config file's bytes; `file`'s extension says whether it is a list.
    pub fn parse(file: &Path, bytes: &[u8]) -> Result<Self, String> {
        let shown = file.display();
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| format!("{shown}: invalid JSON: {e}"))?;
        let Value::Object(obj) = value else {
            return Err(format!("{shown}: not a JSON object"));
        };
        let is_list = file.extension().is_some_and(|e| e == "conflist")
            || (obj.contains_key("plugins") && !obj.contains_key("type"));
        let list = if is_list { obj } else { wrap_single(obj) };
        Self::from_list(file, list)
    }

    /// A list from its JSON object (as cached: `{cniVersion, name, plugins}`).
    pub fn from_list(file: &Path, list: Map<String, Value>) -> Result<Self, String> {
        let shown = file.display();
        let name = match list.get("name") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(format!("{shown}: `name` is missing or not a non-empty string")),
        };
        let cni_version = match list.get("cniVersion") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(format!("{shown}: `cniVersion` is missing or not a string")),
        };
        parse_version(&cni_version)
            .ok_or_else(|| format!("{shown}: cniVersion {cni_version:?} is not a version"))?;
        let Some(Value::Array(items)) = list.get("plugins") else {
            return Err(format!("{shown}: `plugins` is missing or not a list"));
        };
        if items.is_empty() {
            return Err(format!("{shown}: `plugins` is empty"));
        }
        let mut plugins = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let Value::Object(p) = item else {
                return Err(format!("{shown}: plugins[{i}] is not an object"));
            };
            match p.get("type") {
                Some(Value::String(t)) if valid_type(t) => {}
                _ => {
                    return Err(format!(
                        "{shown}: plugins[{i}].type is missing or not a plain file name"
                    ))
                }
            }
            plugins.push(p.clone());
        }
        let disable_check = matches!(list.get("disableCheck"), Some(Value::Bool(true)));
        Ok(NetworkList { file: file.to_path_buf(), name, cni_version, plugins, disable_check })
    }

    /// The plugins' types, in order.
    pub fn plugin_types(&self) -> Vec<&str> {
        self.plugins.iter().filter_map(|p| p.get("type").and_then(Value::as_str)).collect()
    }

    /// The list as JSON (`{cniVersion, name, disableCheck, plugins}`), as it is cached.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "cniVersion": self.cni_version,
            "name": self.name,
            "disableCheck": self.disable_check,
            "plugins": self.plugins,
        })
    }
}

/// A single-plugin `.conf` as a list of one (its `name` and `cniVersion` become the
/// list's).
fn wrap_single(conf: Map<String, Value>) -> Map<String, Value> {
    let mut list = Map::new();
    for key in ["name", "cniVersion"] {
        if let Some(v) = conf.get(key) {
            list.insert(key.into(), v.clone());
        }
    }
    list.insert("plugins".into(), Value::Array(vec![Value::Object(conf)]));
    list
}

/// A plugin type names a binary in a bin dir: no path separators, no `..`.
fn valid_type(t: &str) -> bool {
    !t.is_empty() && !t.contains('/') && t != "." && t != ".." && !t.contains('\0')
}

/// `major.minor.patch` (missing parts are 0).
pub fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let mut parts = v.split('.').map(|p| p.parse::<u32>());
    let major = parts.next()?.ok()?;
    let minor = parts.next().transpose().ok()?.unwrap_or(0);
    let patch = parts.next().transpose().ok()?.unwrap_or(0);
    if parts.next().is_some() {
        return None;
    }
    Some((major, minor, patch))
}

/// The config files of `dir` in the order libcni tries them.
pub fn config_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().and_then(|e| e.to_str()).is_some_and(|e| EXTENSIONS.contains(&e)))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Loads the pod network from `dir`: the first config file. The error is a sentence for
/// the NetworkReady condition's message.
pub fn load_dir(dir: &Path) -> Result<NetworkList, String> {
    let files = match config_files(dir) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "no CNI network config in {} (the directory does not exist)",
                dir.display()
            ))
        }
        Err(e) => return Err(format!("cannot read CNI conf dir {}: {e}", dir.display())),
    };
    let Some(first) = files.first() else {
        return Err(format!("no CNI network config in {}", dir.display()));
    };
    let bytes =
        std::fs::read(first).map_err(|e| format!("cannot read {}: {e}", first.display()))?;
    NetworkList::parse(first, &bytes)
}

/// The first directory of `bin_dirs` holding an executable file named `plugin_type`.
pub fn find_plugin(bin_dirs: &[PathBuf], plugin_type: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if !valid_type(plugin_type) {
        return None;
    }
    bin_dirs.iter().map(|d| d.join(plugin_type)).find(|p| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// What identifies the directory's contents cheaply: the directory's mtime, and each
/// config file's name, mtime and size.
type Fingerprint = (Option<SystemTime>, Vec<(PathBuf, Option<SystemTime>, u64)>);

/// A load of the directory: the list, or why there is none.
type Loaded = Arc<Result<NetworkList, String>>;

fn fingerprint(dir: &Path) -> Fingerprint {
    let dir_mtime = std::fs::metadata(dir).and_then(|m| m.modified()).ok();
    let files = config_files(dir)
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            let m = std::fs::metadata(&p).ok();
            let mtime = m.as_ref().and_then(|m| m.modified().ok());
            let len = m.map(|m| m.len()).unwrap_or(0);
            (p, mtime, len)
        })
        .collect();
    (dir_mtime, files)
}

/// The conf dir, re-read whenever its listing or a config file changes (checked on each
/// use: one `readdir` and a `stat` per config file), so a config dropped in after start
/// is picked up without a restart.
#[derive(Debug)]
pub struct ConfigWatch {
    dir: PathBuf,
    last: Mutex<Option<(Fingerprint, Loaded)>>,
}

impl ConfigWatch {
    pub fn new(dir: PathBuf) -> Self {
        ConfigWatch { dir, last: Mutex::new(None) }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current config, or why there is none.
    pub fn current(&self) -> Loaded {
        let now = fingerprint(&self.dir);
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, loaded)) = last.as_ref() {
            if *seen == now {
                return loaded.clone();
            }
        }
        let loaded = Arc::new(load_dir(&self.dir));
        match loaded.as_ref() {
            Ok(list) => {
                tracing::info!(file = %list.file.display(), network = %list.name, plugins = ?list.plugin_types(), "CNI config loaded")
            }
            Err(e) => tracing::info!(error = %e, "no usable CNI config"),
        }
        *last = Some((now, loaded.clone()));
        loaded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn first_file_in_lexical_order_wins() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "20-b.conflist",
            r#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"bridge"}]}"#,
        );
        write(
            d.path(),
            "10-a.conflist",
            r#"{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"ptp"},{"type":"portmap"}]}"#,
        );
        write(d.path(), "00-ignored.txt", "not a config");
        let list = load_dir(d.path()).unwrap();
        assert_eq!(list.name, "a");
        assert_eq!(list.plugin_types(), ["ptp", "portmap"]);
        assert_eq!(list.file, d.path().join("10-a.conflist"));
    }

    #[test]
    fn single_conf_is_wrapped_as_a_list() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "10-net.conf",
            r#"{"cniVersion":"0.4.0","name":"one","type":"bridge","bridge":"cni0"}"#,
        );
        let list = load_dir(d.path()).unwrap();
        assert_eq!(list.name, "one");
        assert_eq!(list.cni_version, "0.4.0");
        assert_eq!(list.plugins.len(), 1);
        assert_eq!(list.plugins[0]["bridge"], "cni0");
        assert_eq!(list.to_json()["plugins"][0]["type"], "bridge");
    }

    #[test]
    fn bad_configs_say_why() {
        let d = tempfile::tempdir().unwrap();
        let err = load_dir(d.path()).unwrap_err();
        assert!(err.contains("no CNI network config in"), "{err}");
        let err = load_dir(&d.path().join("missing")).unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
        write(d.path(), "10-bad.conflist", "{ nope");
        let err = load_dir(d.path()).unwrap_err();
        assert!(err.contains("10-bad.conflist") && err.contains("invalid JSON"), "{err}");
        for (text, what) in [
            (r#"{"cniVersion":"1.0.0","plugins":[{"type":"x"}]}"#, "`name`"),
            (r#"{"name":"n","plugins":[{"type":"x"}]}"#, "`cniVersion`"),
            (r#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#, "empty"),
            (r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"../x"}]}"#, "plugins[0].type"),
            (r#"{"cniVersion":"x.y","name":"n","plugins":[{"type":"x"}]}"#, "not a version"),
        ] {
            write(d.path(), "10-bad.conflist", text);
            let err = load_dir(d.path()).unwrap_err();
            assert!(err.contains(what), "{text}: {err}");
        }
    }

    #[test]
    fn watch_picks_up_changes() {
        let d = tempfile::tempdir().unwrap();
        let w = ConfigWatch::new(d.path().to_path_buf());
        assert!(w.current().is_err());
        write(
            d.path(),
            "10-a.conflist",
            r#"{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"bridge"}]}"#,
        );
        assert_eq!(w.current().as_ref().as_ref().unwrap().name, "a");
        write(d.path(), "05-b.conf", r#"{"cniVersion":"1.0.0","name":"b","type":"ptp"}"#);
        assert_eq!(w.current().as_ref().as_ref().unwrap().name, "b");
        std::fs::remove_file(d.path().join("05-b.conf")).unwrap();
        std::fs::remove_file(d.path().join("10-a.conflist")).unwrap();
        assert!(w.current().is_err());
    }

    #[test]
    fn plugins_are_found_in_bin_dirs() {
        use std::os::unix::fs::PermissionsExt;
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let dirs = vec![a.path().to_path_buf(), b.path().to_path_buf()];
        write(b.path(), "bridge", "#!/bin/sh\n");
        assert_eq!(find_plugin(&dirs, "bridge"), None, "not executable");
        std::fs::set_permissions(b.path().join("bridge"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        assert_eq!(find_plugin(&dirs, "bridge"), Some(b.path().join("bridge")));
        assert_eq!(find_plugin(&dirs, "../bridge"), None);
        assert_eq!(find_plugin(&dirs, "portmap"), None);
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("0.3.1"), Some((0, 3, 1)));
        assert_eq!(parse_version("1.0"), Some((1, 0, 0)));
        assert_eq!(parse_version("1.x"), None);
    }
}
