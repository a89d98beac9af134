//! CNI plugin mode through a real berthd with Debian's reference plugins (/usr/lib/cni):
//! readiness that follows the conf dir, pod-to-pod traffic, hostPorts through portmap,
//! DEL on stop and after a restart from the result cache, and failing plugins that leave
//! nothing behind. Each test has its own conf dir, bridge, subnet and host-local data dir,
//! and checks it leaked nothing (netns pins, veths, leases, cache files, iptables rules).

use berth_integration::leaks::{in_netns, NetEnv};
use berth_integration::pods::{busybox, Node};
use berth_integration::{Berthd, Options};
use berth_proto::*;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tonic::Code;

const PLUGINS: &str = "/usr/lib/cni";

/// One test's CNI set-up: a bridge/subnet/cgroup root from [`NetEnv`] (whose drop deletes
/// the bridge the CNI bridge plugin made), an empty conf dir, a host-local data dir and a
/// bin dir for test plugins (searched before the Debian ones).
struct Cni {
    bridge: String,
    subnet: String,
    x: u8,
    conf_dir: TempDir,
    data_dir: TempDir,
    bin_dir: TempDir,
    /// The network's name (also host-local's lease directory under `data_dir`).
    name: String,
}

impl Cni {
    fn new(env: &NetEnv) -> Self {
        assert!(
            Path::new(PLUGINS).join("bridge").exists(),
            "the CNI plugins are not installed (apt-get install containernetworking-plugins)"
        );
        let name = format!("berthtest-{}", env.x);
        let tmp = |p: &str| tempfile::Builder::new().prefix(p).tempdir().unwrap();
        Cni {
            bridge: env.bridge.clone(),
            subnet: env.subnet.clone(),
            x: env.x,
            conf_dir: tmp("berth-cni-conf-"),
            data_dir: tmp("berth-cni-data-"),
            bin_dir: tmp("berth-cni-bin-"),
            name,
        }
    }

    /// The `[network]` section for berthd.
    fn network_toml(&self, timeout_secs: u64) -> String {
        format!(
            "[network]\nmode = \"cni\"\nconf_dir = \"{}\"\nbin_dirs = [\"{}\", \"{PLUGINS}\"]\n\
             plugin_timeout_secs = {timeout_secs}\n",
            self.conf_dir.path().display(),
            self.bin_dir.path().display()
        )
    }

    async fn berthd(&self, timeout_secs: u64) -> Berthd {
        Berthd::start_with(Options {
            config: Some(self.network_toml(timeout_secs)),
            ..Default::default()
        })
        .await
    }

    /// bridge (+host-local, optionally with an IPv6 range), then `extra` plugins.
    fn conflist(&self, extra: &[serde_json::Value], ipv6: bool) -> String {
        let mut ranges = vec![serde_json::json!([{ "subnet": self.subnet }])];
        if ipv6 {
            ranges.push(serde_json::json!([{ "subnet": format!("fd00:be:{:x}::/64", self.x) }]));
        }
        let mut plugins = vec![serde_json::json!({
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": true,
            "ipam": {
                "type": "host-local",
                "ranges": ranges,
                "routes": [{ "dst": "0.0.0.0/0" }],
                "dataDir": self.data_dir.path(),
            }
        })];
        plugins.extend(extra.iter().cloned());
        serde_json::json!({ "cniVersion": "0.4.0", "name": self.name, "plugins": plugins })
            .to_string()
    }

    fn write_conf(&self, file: &str, text: &str) {
        // Written aside and renamed in: berthd never sees half a file.
        let tmp = self.conf_dir.path().join(".tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.conf_dir.path().join(file)).unwrap();
    }

    /// A shell script plugin in the test bin dir.
    fn plugin(&self, name: &str, body: &str) {
        let p = self.bin_dir.path().join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// host-local's leases: the files named by an IP in its data dir.
    fn leases(&self) -> Vec<String> {
        let dir = self.data_dir.path().join(&self.name);
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.parse::<IpAddr>().is_ok())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn cache_files(b: &Berthd) -> Vec<PathBuf> {
        std::fs::read_dir(b.root_dir().join("cni/results"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    /// Nothing of the test's pods left: mounts, netns pins, veths, cached attachments
    /// (the "leases" crictl info counts), cgroups, pod dirs (the shared helper); and
    /// host-local leases, cache files.
    async fn assert_no_leaks(&self, env: &NetEnv, b: &Berthd) {
        env.assert_no_leaks(b).await;
        assert!(self.leases().is_empty(), "host-local leases left: {:?}", self.leases());
        assert!(Self::cache_files(b).is_empty(), "cache left: {:?}", Self::cache_files(b));
    }
}

fn run_req(config: PodSandboxConfig) -> RunPodSandboxRequest {
    RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() }
}

fn pod(env: &NetEnv, name: &str) -> PodSandboxConfig {
    env.pod_config(name, Path::new(&format!("/var/log/pods/{name}")))
}

async fn network_condition(b: &Berthd) -> RuntimeCondition {
    let s = b.runtime().status(StatusRequest { verbose: false }).await.unwrap().into_inner();
    s.status.unwrap().conditions.into_iter().find(|c| c.r#type == "NetworkReady").unwrap()
}

async fn network_info(b: &Berthd) -> serde_json::Value {
    let s = b.runtime().status(StatusRequest { verbose: true }).await.unwrap().into_inner();
    serde_json::from_str(&s.info["network"]).unwrap()
}

async fn status(b: &Berthd, id: &str) -> (PodSandboxStatus, serde_json::Value) {
    let r = b
        .runtime()
        .pod_sandbox_status(PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: true })
        .await
        .unwrap()
        .into_inner();
    (r.status.unwrap(), serde_json::from_str(&r.info["info"]).unwrap())
}

fn netns_of(info: &serde_json::Value) -> PathBuf {
    PathBuf::from(info["netnsPath"].as_str().unwrap())
}

async fn stop_and_remove(b: &Berthd, id: &str) {
    let mut rt = b.runtime();
    rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id.into() }).await.unwrap();
    rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id.into() }).await.unwrap();
}

fn serve_in(netns: &Path, addr: SocketAddr, reply: &'static str) {
    let listener = in_netns(netns, move || TcpListener::bind(addr).unwrap());
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let peer = s.peer_addr().unwrap();
            let _ = write!(s, "{reply} {}", peer.ip());
        }
    });
}

fn fetch(to: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Every line of `iptables-save` (v4 and v6).
fn iptables_lines() -> Vec<String> {
    let mut out = Vec::new();
    for cmd in ["iptables-save", "ip6tables-save"] {
        let o = std::process::Command::new(cmd).output().expect("run iptables-save");
        out.extend(String::from_utf8_lossy(&o.stdout).lines().map(str::to_string));
    }
    out
}

/// portmap keeps shared chains (`CNI-HOSTPORT-*`, and jumps to them from the nat base
/// chains) for every pod and never removes them, as under containerd. A test that runs
/// it holds this guard: one such test at a time, and when it ends the host gets back
/// what it had: the chains and jumps go, and the `nat` tables iptables made for them
/// if there were none before.
struct PortmapHost {
    _one: tokio::sync::MutexGuard<'static, ()>,
    had_chains: bool,
    had_tables: [bool; 2],
}

static PORTMAP: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const NAT_TABLES: [(&str, &str); 2] = [("iptables", "ip"), ("ip6tables", "ip6")];

impl PortmapHost {
    async fn take() -> Self {
        let one = PORTMAP.lock().await;
        let had_tables = NAT_TABLES.map(|(_, family)| {
            std::process::Command::new("nft")
                .args(["list", "table", family, "nat"])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        let had_chains = iptables_lines().iter().any(|l| l.contains("CNI-HOSTPORT"));
        PortmapHost { _one: one, had_chains, had_tables }
    }
}

impl Drop for PortmapHost {
    fn drop(&mut self) {
        if self.had_chains {
            return;
        }
        let run = |cmd: String| {
            let _ = std::process::Command::new("sh").arg("-c").arg(cmd).status();
        };
        for ((tool, family), had_table) in NAT_TABLES.into_iter().zip(self.had_tables) {
            let save =
                std::process::Command::new(format!("{tool}-save")).args(["-t", "nat"]).output();
            let text =
                save.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
            // Jumps from the base chains first, then the chains themselves.
            for rule in text.lines().filter(|l| l.starts_with("-A ") && l.contains("CNI-HOSTPORT"))
            {
                if !rule["-A ".len()..].starts_with("CNI-HOSTPORT") {
                    run(format!("{tool} -t nat -D {}", &rule["-A ".len()..]));
                }
            }
            for chain in text.lines().filter_map(|l| l.strip_prefix(':')) {
                let name = chain.split_whitespace().next().unwrap_or_default();
                if name.starts_with("CNI-HOSTPORT") {
                    run(format!("{tool} -t nat -F {name}; {tool} -t nat -X {name}"));
                }
            }
            if !had_table {
                run(format!("nft delete table {family} nat"));
            }
        }
    }
}

fn veth_on(bridge: &str) -> Vec<String> {
    std::fs::read_dir(format!("/sys/class/net/{bridge}/brif"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn network_ready_follows_the_conf_dir_without_restart() {
    let env = NetEnv::new();
    let cni = Cni::new(&env);
    let b = cni.berthd(60).await;

    let c = network_condition(&b).await;
    assert!(!c.status);
    assert_eq!(c.reason, "NetworkPluginNotReady");
    let dir = cni.conf_dir.path().display().to_string();
    assert!(c.message.contains("no CNI network config in") && c.message.contains(&dir), "{c:?}");
    let info = network_info(&b).await;
    assert_eq!(info["mode"], "cni");
    // CNI mode makes no bridge of its own (the plugin makes one when a pod runs).
    assert!(!Path::new("/sys/class/net").join(&env.bridge).exists());

    // A pod cannot get a network now: the call fails cleanly.
    let err = b.runtime().run_pod_sandbox(run_req(pod(&env, "early"))).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("no CNI network config"), "{err:?}");

    // Unparsable, then a plugin that is not installed: not ready, saying why.
    cni.write_conf("10-net.conflist", "{ not json");
    let c = network_condition(&b).await;
    assert!(
        !c.status && c.message.contains("10-net.conflist") && c.message.contains("JSON"),
        "{c:?}"
    );
    cni.write_conf(
        "10-net.conflist",
        &cni.conflist(&[serde_json::json!({"type": "no-such-plugin"})], false),
    );
    let c = network_condition(&b).await;
    assert!(!c.status && c.message.contains("\"no-such-plugin\""), "{c:?}");

    // A good config dropped in: ready, and crictl info says what it runs.
    cni.write_conf("10-net.conflist", &cni.conflist(&[], false));
    let c = network_condition(&b).await;
    assert!(c.status, "{c:?}");
    let info = network_info(&b).await;
    assert_eq!(info["network"], cni.name.as_str());
    assert_eq!(info["plugins"], serde_json::json!(["bridge"]));
    assert!(info["configFile"].as_str().unwrap().ends_with("10-net.conflist"), "{info}");
    // A file sorting first takes over.
    cni.write_conf(
        "05-other.conf",
        "{\"cniVersion\":\"0.4.0\",\"name\":\"other\",\"type\":\"loopback\"}",
    );
    assert_eq!(network_info(&b).await["network"], "other");
    std::fs::remove_file(cni.conf_dir.path().join("05-other.conf")).unwrap();

    let id = b.runtime().run_pod_sandbox(run_req(pod(&env, "late"))).await.unwrap();
    stop_and_remove(&b, &id.into_inner().pod_sandbox_id).await;
    cni.assert_no_leaks(&env, &b).await;
}

#[tokio::test]
async fn two_pods_with_busybox_reach_each_other() {
    let env = NetEnv::new();
    let cni = Cni::new(&env);
    cni.write_conf(
        "10-net.conflist",
        &cni.conflist(&[serde_json::json!({"type": "loopback"})], true),
    );
    let node = Node::start_on(env, &cni.network_toml(60), "").await;
    let env = &node.env;
    let logs = tempfile::tempdir().unwrap();

    let a = node.run_pod(&format!("a{}", env.x), logs.path()).await;
    let c = node.run_pod(&format!("c{}", env.x), logs.path()).await;
    let (sa, ia) = status(&node.berthd, &a).await;
    let (sc, _) = status(&node.berthd, &c).await;
    let na = sa.network.unwrap();
    let ip_a: Ipv4Addr = na.ip.parse().expect("primary IP is IPv4");
    assert_eq!(ip_a.octets()[..3], [10, 252, env.x], "from the conflist's subnet");
    // host-local's IPv6 range: an additional IP.
    assert_eq!(na.additional_ips.len(), 1, "{na:?}");
    let v6: IpAddr = na.additional_ips[0].ip.parse().unwrap();
    assert!(v6.is_ipv6() && na.additional_ips[0].ip.starts_with("fd00:be:"), "{v6}");
    assert_eq!(cni.leases().len(), 4, "two pods, v4 + v6 each: {:?}", cni.leases());
    let ip_c = sc.network.unwrap().ip;
    assert_ne!(ip_a.to_string(), ip_c);
    // berth brought lo up itself.
    let lo_up = in_netns(&netns_of(&ia), || {
        std::fs::read_to_string("/sys/class/net/lo/operstate").unwrap_or_default()
    });
    assert_ne!(lo_up.trim(), "down");

    let server = node
        .run(
            &a,
            busybox(
                "web",
                &["sh", "-c", "mkdir -p /tmp/w && echo hello-from-a > /tmp/w/index.html && exec httpd -f -p 8080 -h /tmp/w"],
            ),
        )
        .await;
    let client = node.run(&c, busybox("client", &["sleep", "300"])).await;
    // busybox's wget crashes in these static images (glibc NSS); nc speaks HTTP/1.0.
    let request = format!("printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc {ip_a} 8080");
    let deadline = Instant::now() + Duration::from_secs(10);
    let got = loop {
        let r = node.exec(&client, &["sh", "-c", &request]).await.unwrap();
        let out = String::from_utf8_lossy(&r.stdout).into_owned();
        if r.exit_code == 0 && out.contains("200 OK") {
            break out;
        }
        assert!(Instant::now() < deadline, "{request}: {r:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(got.trim_end().ends_with("hello-from-a"), "{got}");
    let _ = server;

    stop_and_remove(&node.berthd, &a).await;
    // Checks no shim is left, then the shared leak checks.
    node.remove_pod_and_check(&c).await;
    assert!(cni.leases().is_empty(), "leases left: {:?}", cni.leases());
    assert!(Cni::cache_files(&node.berthd).is_empty());
}

#[tokio::test]
async fn host_port_through_portmap() {
    let host = PortmapHost::take().await;
    let env = NetEnv::new();
    let cni = Cni::new(&env);
    cni.write_conf(
        "10-net.conflist",
        &cni.conflist(
            &[serde_json::json!({"type": "portmap", "capabilities": {"portMappings": true}})],
            false,
        ),
    );
    let b = cni.berthd(60).await;
    let before = iptables_lines();
    let host_port = env.host_port(1);
    let mut config = pod(&env, "hp");
    config.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 8080,
        host_port: host_port as i32,
        host_ip: String::new(),
    }];
    let id =
        b.runtime().run_pod_sandbox(run_req(config)).await.unwrap().into_inner().pod_sandbox_id;
    let (_, info) = status(&b, &id).await;
    // portmap's chains carry the pod id in their comments.
    assert!(iptables_lines().iter().any(|l| l.contains(&id)), "no portmap rules for the pod");
    serve_in(&netns_of(&info), "0.0.0.0:8080".parse().unwrap(), "pod");
    let got = fetch(SocketAddr::from((env.gateway(), host_port))).unwrap();
    assert!(got.starts_with("pod "), "{got}");

    stop_and_remove(&b, &id).await;
    assert!(fetch(SocketAddr::from((env.gateway(), host_port))).is_err());
    let after = iptables_lines();
    let ours: Vec<&String> = after.iter().filter(|l| l.contains(&id)).collect();
    assert!(ours.is_empty(), "portmap rules left: {ours:?}");
    cni.assert_no_leaks(&env, &b).await;
    // portmap's shared chains (and the nat tables made for them) go with the test: the
    // host has no chain it did not have before.
    drop(host);
    let chain = |l: &String| l.split_whitespace().next().unwrap_or_default().to_string();
    let had: Vec<String> = before.iter().filter(|l| l.starts_with(':')).map(chain).collect();
    let new_chains: Vec<String> = iptables_lines()
        .iter()
        .filter(|l| l.starts_with(':'))
        .map(chain)
        .filter(|c| !had.contains(c))
        .collect();
    assert!(new_chains.is_empty(), "iptables chains left: {new_chains:?}");
}

#[tokio::test]
async fn del_on_stop_and_from_the_cache_after_a_restart() {
    let _host = PortmapHost::take().await;
    let env = NetEnv::new();
    let cni = Cni::new(&env);
    cni.write_conf(
        "10-net.conflist",
        &cni.conflist(
            &[serde_json::json!({"type": "portmap", "capabilities": {"portMappings": true}})],
            false,
        ),
    );
    let mut b = cni.berthd(60).await;

    // Stop: DEL runs (lease, veth, cache gone), the netns pin is gone.
    let id = b.runtime().run_pod_sandbox(run_req(pod(&env, "one"))).await.unwrap();
    let id = id.into_inner().pod_sandbox_id;
    let (st, info) = status(&b, &id).await;
    let ip = st.network.unwrap().ip;
    assert_eq!(cni.leases(), std::slice::from_ref(&ip));
    assert_eq!(veth_on(&env.bridge).len(), 1);
    let cache = Cni::cache_files(&b);
    assert_eq!(cache, [b.root_dir().join(format!("cni/results/{}-{id}-eth0", cni.name))]);
    let cached: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cache[0]).unwrap()).unwrap();
    assert_eq!(cached["config"]["name"], cni.name.as_str());
    assert!(cached["result"]["ips"][0]["address"].as_str().unwrap().starts_with(&ip));
    assert_eq!(network_info(&b).await["leases"], 1);
    b.runtime()
        .stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id.clone() })
        .await
        .unwrap();
    assert!(cni.leases().is_empty(), "lease kept after stop: {:?}", cni.leases());
    assert!(veth_on(&env.bridge).is_empty(), "veth kept after stop");
    assert!(Cni::cache_files(&b).is_empty());
    assert!(!netns_of(&info).exists());
    // Stop again: nothing cached, nothing to do, success.
    b.runtime()
        .stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id.clone() })
        .await
        .unwrap();
    b.runtime().remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id }).await.unwrap();

    // A pod outliving berthd, whose config is removed meanwhile: DEL from the cache.
    let mut config = pod(&env, "two");
    config.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 80,
        host_port: env.host_port(2) as i32,
        host_ip: String::new(),
    }];
    let id =
        b.runtime().run_pod_sandbox(run_req(config)).await.unwrap().into_inner().pod_sandbox_id;
    assert_eq!(cni.leases().len(), 1);
    b.stop().await;
    std::fs::remove_file(cni.conf_dir.path().join("10-net.conflist")).unwrap();
    b.restart().await;
    let c = network_condition(&b).await;
    assert!(!c.status, "no config any more: {c:?}");
    let (st, _) = status(&b, &id).await;
    assert_eq!(st.state, PodSandboxState::SandboxReady as i32, "the pod survived the restart");
    assert_eq!(cni.leases().len(), 1);
    b.runtime()
        .stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id.clone() })
        .await
        .unwrap();
    assert!(cni.leases().is_empty(), "DEL from the cache did not release: {:?}", cni.leases());
    assert!(veth_on(&env.bridge).is_empty());
    let ours: Vec<String> = iptables_lines().into_iter().filter(|l| l.contains(&id)).collect();
    assert!(ours.is_empty(), "portmap rules left: {ours:?}");
    b.runtime().remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id }).await.unwrap();
    cni.assert_no_leaks(&env, &b).await;
}

#[tokio::test]
async fn failing_or_hanging_plugins_fail_the_pod_and_leave_nothing() {
    let env = NetEnv::new();
    let cni = Cni::new(&env);
    cni.plugin(
        "berth-test-fail",
        r#"cat > /dev/null
if [ "$CNI_COMMAND" = ADD ]; then
  echo '{"cniVersion":"0.4.0","code":11,"msg":"test plugin refuses","details":"by design"}'
  exit 1
fi
echo '{}'"#,
    );
    cni.plugin(
        "berth-test-hang",
        r#"cat > /dev/null
if [ "$CNI_COMMAND" = ADD ]; then sleep 60; fi
echo '{}'"#,
    );
    // The failing plugin comes after bridge: bridge's veth and lease must be undone.
    cni.write_conf(
        "10-net.conflist",
        &cni.conflist(&[serde_json::json!({"type": "berth-test-fail"})], false),
    );
    let b = cni.berthd(2).await;
    assert!(network_condition(&b).await.status);

    let err = b.runtime().run_pod_sandbox(run_req(pod(&env, "bad"))).await.unwrap_err();
    let msg = err.message();
    assert!(
        msg.contains("berth-test-fail")
            && msg.contains("ADD")
            && msg.contains("test plugin refuses"),
        "{err:?}"
    );
    assert!(msg.contains("code 11"), "{err:?}");
    let pods = b.runtime().list_pod_sandbox(ListPodSandboxRequest::default()).await.unwrap();
    assert!(pods.into_inner().items.is_empty(), "a failed pod is listed");
    cni.assert_no_leaks(&env, &b).await;

    // A plugin that hangs is killed at the timeout, and the call names it.
    cni.write_conf(
        "10-net.conflist",
        &cni.conflist(&[serde_json::json!({"type": "berth-test-hang"})], false),
    );
    let started = Instant::now();
    let err = b.runtime().run_pod_sandbox(run_req(pod(&env, "slow"))).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    assert!(
        err.message().contains("berth-test-hang") && err.message().contains("timeout of 2s"),
        "{err:?}"
    );
    cni.assert_no_leaks(&env, &b).await;
    // The killed plugin (and its sleep) are gone.
    let hung: Vec<_> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("berth-test-hang"))
        .collect();
    assert!(hung.is_empty(), "plugin still running: {hung:?}");
}
