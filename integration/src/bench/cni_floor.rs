//! `cni-floor`: what the CNI plugins themselves cost, with no runtime in between. The
//! conf dir's network (the file berth's CNI mode would pick, read by berth's own code)
//! is run as a runtime runs it: ADD of every plugin in order on a fresh network
//! namespace, each given the previous one's result as `prevResult`, then DEL in reverse
//! with the final result, through berth's plugin invocation (the CNI_* environment, the
//! config on stdin). Creating and removing the namespace are not timed.

use crate::bench::stats::Summary;
use berth_network::cni::config::{self, NetworkList};
use berth_network::cni::invoke::{self, Command, Invocation};
use berth_network::cni::request::{self, PodRequest};
use berth_network::netns::{self, NetnsDir};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The interface name the plugins are asked to make, as for a pod.
const IFNAME: &str = "eth0";

pub struct Options {
    pub conf_dir: PathBuf,
    /// Where plugin binaries are looked up, in order (`CNI_PATH`).
    pub bin_dirs: Vec<PathBuf>,
    pub runs: usize,
    /// What `usePodCidr` in the config stands for (the kubelet's pod CIDR).
    pub pod_cidr: Option<String>,
    pub plugin_timeout: Duration,
}

/// The network the runs use, for the report.
pub struct Network {
    pub file: PathBuf,
    pub name: String,
    pub plugins: Vec<String>,
}

/// ADD and DEL of the whole list, then of each plugin, over `runs` runs.
pub async fn run(opts: &Options) -> anyhow::Result<(Network, Vec<Summary>)> {
    let (list, binaries) = load(opts)?;
    let network = Network {
        file: list.file.clone(),
        name: list.name.clone(),
        plugins: list.plugin_types().iter().map(|s| s.to_string()).collect(),
    };
    // Pins in a directory of this run's own, gone with it whatever happens.
    let pins = PinDir::new()?;
    let cni_path = std::env::join_paths(&opts.bin_dirs)?.to_string_lossy().into_owned();
    let n = list.plugins.len();
    let (mut add, mut del) = (Vec::new(), Vec::new());
    let (mut add_each, mut del_each) = (vec![Vec::new(); n], vec![Vec::new(); n]);
    for i in 0..opts.runs {
        let id = format!("berth-bench-cni-{}-{i}", std::process::id());
        let ns = pins.create(&id)?;
        let result = attach_detach(&list, &binaries, &id, &ns, &cni_path, opts).await;
        let removed = netns::remove(&ns);
        let times = result?;
        removed?;
        add.push(times.add);
        del.push(times.del);
        for (k, d) in times.add_each.into_iter().enumerate() {
            add_each[k].push(d);
        }
        for (k, d) in times.del_each.into_iter().enumerate() {
            del_each[k].push(d);
        }
    }
    let mut rows = vec![Summary::of("CNI ADD", &add), Summary::of("CNI DEL", &del)];
    if n > 1 {
        for (ty, s) in network.plugins.iter().zip(&add_each) {
            rows.push(Summary::of(&format!("ADD {ty}"), s));
        }
        for (ty, s) in network.plugins.iter().zip(&del_each) {
            rows.push(Summary::of(&format!("DEL {ty}"), s));
        }
    }
    Ok((network, rows))
}

/// The first config file of the conf dir, as berth picks it, with `usePodCidr`
/// substituted, and its plugins' binaries.
fn load(opts: &Options) -> anyhow::Result<(NetworkList, Vec<PathBuf>)> {
    anyhow::ensure!(!opts.bin_dirs.is_empty(), "--bin-dir: at least one directory is needed");
    let list = config::load_dir(&opts.conf_dir).map_err(|e| anyhow::anyhow!("--conf-dir: {e}"))?;
    let mut json = list.to_json();
    let cidr = opts.pod_cidr.clone().unwrap_or_default();
    request::substitute_pod_cidr(&mut json, &cidr)
        .map_err(|e| anyhow::anyhow!("{}: {e} (give it with --pod-cidr)", list.file.display()))?;
    let Value::Object(obj) = json else { unreachable!("to_json is an object") };
    let list = NetworkList::from_list(&list.file, obj).map_err(|e| anyhow::anyhow!(e))?;
    let binaries = list
        .plugin_types()
        .into_iter()
        .map(|ty| {
            config::find_plugin(&opts.bin_dirs, ty).ok_or_else(|| {
                anyhow::anyhow!(
                    "CNI plugin {ty:?} of {} not found in --bin-dir {}",
                    list.file.display(),
                    opts.bin_dirs
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((list, binaries))
}

struct Times {
    add: Duration,
    del: Duration,
    add_each: Vec<Duration>,
    del_each: Vec<Duration>,
}

/// ADD then DEL on `ns`. A failed ADD is undone by DEL of the whole list (as berth does),
/// so a failing run leaves no attachment behind.
async fn attach_detach(
    list: &NetworkList,
    binaries: &[PathBuf],
    id: &str,
    ns: &Path,
    cni_path: &str,
    opts: &Options,
) -> anyhow::Result<Times> {
    let pod = PodRequest {
        pod_id: id.into(),
        namespace: "berth-bench".into(),
        name: id.into(),
        uid: id.into(),
        netns: ns.to_path_buf(),
        ..Default::default()
    };
    let caps = pod.capability_args().map_err(|e| anyhow::anyhow!(e))?;
    let args = request::cni_args_string(&pod.cni_args());
    let netns = ns.display().to_string();
    // The runtime's part, not timed: berth brings the pod's loopback up in CNI mode.
    berth_network::bridge::loopback_up(ns).await?;
    let add_inv = Invocation {
        command: Command::Add,
        container_id: id,
        netns: &netns,
        ifname: IFNAME,
        args: &args,
        path: cni_path,
    };
    let del_inv = Invocation { command: Command::Del, ..add_inv.clone() };

    let mut prev: Option<Value> = None;
    let mut add_each = Vec::new();
    let began = Instant::now();
    for (plugin, binary) in list.plugins.iter().zip(binaries) {
        let stdin =
            request::plugin_stdin(&list.name, &list.cni_version, plugin, prev.as_ref(), &caps);
        let t = Instant::now();
        let out = call(binary, &add_inv, &stdin, opts.plugin_timeout).await.and_then(|bytes| {
            serde_json::from_slice::<Value>(&bytes)
                .map_err(|e| format!("printed no JSON result: {e}"))
        });
        match out {
            Ok(result) => {
                add_each.push(t.elapsed());
                prev = Some(result);
            }
            Err(why) => {
                let _ = del_list(list, binaries, &del_inv, prev.as_ref(), &caps, opts).await;
                anyhow::bail!("CNI plugin {} ({}) ADD failed: {why}", ty(plugin), binary.display());
            }
        }
    }
    let add = began.elapsed();
    let began = Instant::now();
    let del_each = del_list(list, binaries, &del_inv, prev.as_ref(), &caps, opts)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let del = began.elapsed();
    Ok(Times { add, del, add_each, del_each })
}

/// DEL of every plugin in reverse order with `result` as `prevResult` (CNI 0.4.0 on);
/// every plugin is called. Returns each plugin's time in list order, or the first error.
async fn del_list(
    list: &NetworkList,
    binaries: &[PathBuf],
    inv: &Invocation<'_>,
    result: Option<&Value>,
    caps: &Map<String, Value>,
    opts: &Options,
) -> Result<Vec<Duration>, String> {
    let with_result = config::parse_version(&list.cni_version).is_some_and(|v| v >= (0, 4, 0));
    let prev = result.filter(|_| with_result);
    let mut each = vec![Duration::ZERO; list.plugins.len()];
    let mut first = None;
    for (k, (plugin, binary)) in list.plugins.iter().zip(binaries).enumerate().rev() {
        let stdin = request::plugin_stdin(&list.name, &list.cni_version, plugin, prev, caps);
        let t = Instant::now();
        match call(binary, inv, &stdin, opts.plugin_timeout).await {
            Ok(_) => each[k] = t.elapsed(),
            Err(why) => {
                first.get_or_insert(format!(
                    "CNI plugin {} ({}) DEL failed: {why}",
                    ty(plugin),
                    binary.display()
                ));
            }
        }
    }
    first.map_or(Ok(each), Err)
}

async fn call(
    binary: &Path,
    inv: &Invocation<'_>,
    stdin: &Value,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let bytes = serde_json::to_vec(stdin).map_err(|e| e.to_string())?;
    invoke::run(binary, inv, &bytes, timeout).await.map_err(|e| e.to_string())
}

fn ty(plugin: &Map<String, Value>) -> &str {
    plugin.get("type").and_then(Value::as_str).unwrap_or("?")
}

/// A temporary directory under `/run` holding this run's namespace pins (a shared
/// mount of its own, as berth's): on drop every pin is detached, then the directory.
struct PinDir {
    dir: NetnsDir,
    _tmp: tempfile::TempDir,
}

impl PinDir {
    fn new() -> anyhow::Result<Self> {
        let tmp = tempfile::Builder::new().prefix("berth-bench-netns-").tempdir_in("/run")?;
        let dir = NetnsDir::new(tmp.path())?;
        Ok(PinDir { dir, _tmp: tmp })
    }

    fn create(&self, name: &str) -> anyhow::Result<PathBuf> {
        Ok(self.dir.create(name)?)
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        for name in self.dir.list().unwrap_or_default() {
            let _ = self.dir.remove(&name);
        }
        let _ = self.dir.unmount();
    }
}
