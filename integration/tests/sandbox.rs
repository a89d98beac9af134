//! Pod sandboxes through a real berthd: namespaces, files, cgroups, the bridge network,
//! hostPorts, failure atomicity, concurrency and restarts. Every test checks it leaked
//! nothing.

use berth_integration::leaks::{in_netns, in_ns, NetEnv};
use berth_proto::*;
use nix::sched::CloneFlags;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;
use tonic::Code;

fn pod(env: &NetEnv, name: &str) -> PodSandboxConfig {
    let mut config = env.pod_config(name, std::path::Path::new(&format!("/var/log/pods/{name}")));
    config.labels = HashMap::from([("app".into(), name.into())]);
    config
}

fn run_req(config: PodSandboxConfig) -> RunPodSandboxRequest {
    RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() }
}

async fn status(b: &berth_integration::Berthd, id: &str) -> (PodSandboxStatus, serde_json::Value) {
    let r = b
        .runtime()
        .pod_sandbox_status(PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: true })
        .await
        .unwrap()
        .into_inner();
    let info = serde_json::from_str(&r.info["info"]).unwrap();
    (r.status.unwrap(), info)
}

fn path_of(info: &serde_json::Value, key: &str) -> PathBuf {
    PathBuf::from(info[key].as_str().unwrap_or_else(|| panic!("{key} in {info}")))
}

async fn remove(b: &berth_integration::Berthd, id: &str) {
    let mut rt = b.runtime();
    rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id.into() }).await.unwrap();
    rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id.into() }).await.unwrap();
}

/// A TCP listener inside `netns` that answers each connection with `reply` and the
/// peer's address; returns its port.
fn serve_in(netns: Option<PathBuf>, addr: SocketAddr, reply: &'static str) -> u16 {
    let listener = match &netns {
        Some(ns) => in_netns(ns, move || TcpListener::bind(addr).unwrap()),
        None => TcpListener::bind(addr).unwrap(),
    };
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut s = stream;
            let peer = s.peer_addr().unwrap();
            let _ = write!(s, "{reply} {}", peer.ip());
        }
    });
    port
}

fn fetch(to: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[tokio::test]
async fn pod_lifecycle_files_status_and_filters() {
    let env = NetEnv::new();
    let b = env.berthd().await;
    let mut rt = b.runtime();

    let mut config = pod(&env, "web");
    config.dns_config = Some(DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["default.svc.cluster.local".into(), "svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    config.annotations = HashMap::from([("a".into(), "b".into())]);
    let linux = config.linux.as_mut().unwrap();
    linux.sysctls = HashMap::from([
        ("kernel.shmmni".into(), "2048".into()),
        ("net.ipv4.ip_unprivileged_port_start".into(), "79".into()),
    ]);
    let id = rt.run_pod_sandbox(run_req(config.clone())).await.unwrap().into_inner().pod_sandbox_id;
    assert_eq!(id.len(), 64);
    assert!(id.bytes().all(|c| c.is_ascii_hexdigit()));

    // The kubelet's retry (the same request) gets the same pod; a different request
    // under the same name is refused, naming the holder.
    let again = rt.run_pod_sandbox(run_req(config.clone())).await.unwrap().into_inner();
    assert_eq!(again.pod_sandbox_id, id);
    let mut other = config.clone();
    other.labels.insert("other".into(), "request".into());
    let err = rt.run_pod_sandbox(run_req(other)).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert!(err.message().contains("web_default_uid-web_0") && err.message().contains(&id));

    let (st, info) = status(&b, &id).await;
    assert_eq!(st.id, id);
    assert_eq!(st.metadata, config.metadata);
    assert_eq!(st.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(st.labels, config.labels);
    assert_eq!(st.annotations, config.annotations);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    assert!((now.as_nanos() as i64 - st.created_at).abs() < 60_000_000_000, "created_at in ns");
    let ip: Ipv4Addr = st.network.as_ref().unwrap().ip.parse().unwrap();
    assert_eq!(ip.octets()[..3], [10, 252, env.x]);
    let opts = st.linux.unwrap().namespaces.unwrap().options.unwrap();
    assert_eq!(opts.network, NamespaceMode::Pod as i32);
    assert_eq!(info["runtimeHandler"], "");
    assert!(info["pid"].is_null());
    assert_eq!(opts.pid, NamespaceMode::Pod as i32);
    assert!(info["pidNamespace"].as_str().unwrap().contains("shim"), "{info}");

    // Files and namespaces.
    let read = |k: &str| std::fs::read_to_string(path_of(&info, k)).unwrap();
    assert_eq!(read("hostnamePath"), "web\n");
    assert_eq!(
        read("resolvConfPath"),
        "search default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
    );
    assert!(read("hostsPath").contains(&format!("{ip}\tweb\n")), "{}", read("hostsPath"));
    let uts = path_of(&info, "utsNamespace");
    let hostname = in_ns(&uts, CloneFlags::CLONE_NEWUTS, || nix::unistd::gethostname().unwrap());
    assert_eq!(hostname, "web");
    let ipc = path_of(&info, "ipcNamespace");
    let shmmni = in_ns(&ipc, CloneFlags::CLONE_NEWIPC, || {
        std::fs::read_to_string("/proc/sys/kernel/shmmni").unwrap()
    });
    assert_eq!(shmmni.trim(), "2048");
    assert_ne!(std::fs::read_to_string("/proc/sys/kernel/shmmni").unwrap().trim(), "2048");
    let netns = path_of(&info, "netnsPath");
    let start = in_netns(&netns, || {
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap()
    });
    assert_eq!(start.trim(), "79");
    let shm = path_of(&info, "shm");
    assert!(berth_integration::leaks::mounts_under(&shm).contains(&shm.display().to_string()));
    // The pod cgroup exists on every hierarchy: the one of a cgroup v2 host, or each v1
    // one and the v2 tree of a hybrid host.
    let cgroups = env.cgroups();
    let v2_only = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    assert!(if v2_only { cgroups.len() == 1 } else { cgroups.len() >= 2 }, "{cgroups:?}");
    for c in &cgroups {
        let pod_cgroup = if berth_integration::leaks::systemd_driver() {
            c.clone() // the pod's slice itself
        } else {
            c.join("web")
        };
        assert!(pod_cgroup.is_dir(), "{}", c.display());
    }

    // A second pod, then filters.
    let id2 =
        rt.run_pod_sandbox(run_req(pod(&env, "db"))).await.unwrap().into_inner().pod_sandbox_id;
    let list = |f: Option<PodSandboxFilter>| {
        let mut rt = b.runtime();
        async move {
            let mut ids: Vec<String> = rt
                .list_pod_sandbox(ListPodSandboxRequest { filter: f })
                .await
                .unwrap()
                .into_inner()
                .items
                .into_iter()
                .map(|p| p.id)
                .collect();
            ids.sort();
            ids
        }
    };
    let mut both = vec![id.clone(), id2.clone()];
    both.sort();
    assert_eq!(list(None).await, both);
    let by_prefix = PodSandboxFilter { id: id2[..12].into(), ..Default::default() };
    assert_eq!(list(Some(by_prefix)).await, std::slice::from_ref(&id2));
    let by_label = PodSandboxFilter {
        label_selector: HashMap::from([("app".into(), "web".into())]),
        ..Default::default()
    };
    assert_eq!(list(Some(by_label)).await, std::slice::from_ref(&id));

    // Stop: NOTREADY, network reclaimed, idempotent.
    rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await.unwrap();
    rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await.unwrap();
    let (st, info) = status(&b, &id).await;
    assert_eq!(st.state, PodSandboxState::SandboxNotready as i32);
    assert_eq!(st.network.unwrap().ip, "");
    assert!(!netns.exists(), "netns pin kept after stop");
    assert!(info["veth"].is_null());
    let ready = PodSandboxFilter {
        state: Some(PodSandboxStateValue { state: PodSandboxState::SandboxReady as i32 }),
        ..Default::default()
    };
    assert_eq!(list(Some(ready)).await, std::slice::from_ref(&id2));

    // Remove: idempotent; the name is free again; status is NotFound.
    for _ in 0..2 {
        rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id.clone() })
            .await
            .unwrap();
    }
    let err = rt
        .pod_sandbox_status(PodSandboxStatusRequest { pod_sandbox_id: id.clone(), verbose: false })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // Removing a READY pod stops it first.
    rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id2.clone() }).await.unwrap();
    env.assert_no_leaks(&b).await;
}

#[tokio::test]
async fn two_pods_reach_each_other_the_host_and_the_outside() {
    let env = NetEnv::new();
    let b = env.berthd().await;
    let mut rt = b.runtime();
    let a = rt.run_pod_sandbox(run_req(pod(&env, "a"))).await.unwrap().into_inner().pod_sandbox_id;
    let c = rt.run_pod_sandbox(run_req(pod(&env, "c"))).await.unwrap().into_inner().pod_sandbox_id;
    let (sa, ia) = status(&b, &a).await;
    let (sc, ic) = status(&b, &c).await;
    let ip_a: Ipv4Addr = sa.network.unwrap().ip.parse().unwrap();
    let ip_c: Ipv4Addr = sc.network.unwrap().ip.parse().unwrap();
    assert_ne!(ip_a, ip_c);
    let (ns_a, ns_c) = (path_of(&ia, "netnsPath"), path_of(&ic, "netnsPath"));

    // a -> c, directly over the bridge (source is a's own address).
    let port = serve_in(Some(ns_c.clone()), "0.0.0.0:0".parse().unwrap(), "c");
    let got = in_netns(&ns_a, || fetch(SocketAddr::from((ip_c, port)))).unwrap();
    assert_eq!(got, format!("c {ip_a}"));
    // host -> pod and pod -> host (the bridge address).
    assert_eq!(fetch(SocketAddr::from((ip_c, port))).unwrap(), format!("c {}", env.gateway()));
    let host_port = serve_in(None, SocketAddr::from((env.gateway(), 0)), "host");
    let got = in_netns(&ns_a, || fetch(SocketAddr::from((env.gateway(), host_port)))).unwrap();
    assert_eq!(got, format!("host {ip_a}"));

    // Outside the subnet: a namespace behind a veth of the host; pods are masqueraded.
    let outside = Outside::new(env.x);
    let out_port = serve_in(Some(outside.netns()), "0.0.0.0:0".parse().unwrap(), "outside");
    let got = in_netns(&ns_a, || fetch(SocketAddr::from((outside.far, out_port)))).unwrap();
    assert_eq!(got, format!("outside {}", outside.near), "not masqueraded");
    drop(outside);

    remove(&b, &a).await;
    remove(&b, &c).await;
    env.assert_no_leaks(&b).await;
}

/// A network namespace `bo<x>` with a veth to the host: host side 192.168.<x>.1/30 ("near"),
/// namespace side .2 ("far"). Deleted on drop.
struct Outside {
    name: String,
    near: Ipv4Addr,
    far: Ipv4Addr,
}

impl Outside {
    fn new(x: u8) -> Self {
        let name = format!("bo{x}-{}", std::process::id());
        let host_if = format!("bo{x}h");
        let ns_if = format!("bo{x}n");
        let near = Ipv4Addr::new(192, 168, x, 1);
        let far = Ipv4Addr::new(192, 168, x, 2);
        let o = Outside { name: name.clone(), near, far };
        let ip = |args: &[&str]| {
            let st = std::process::Command::new("ip").args(args).status().unwrap();
            assert!(st.success(), "ip {args:?}");
        };
        ip(&["netns", "add", &name]);
        ip(&["link", "add", &host_if, "type", "veth", "peer", "name", &ns_if, "netns", &name]);
        ip(&["addr", "add", &format!("{near}/30"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&["-n", &name, "addr", "add", &format!("{far}/30"), "dev", &ns_if]);
        ip(&["-n", &name, "link", "set", &ns_if, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        o
    }

    fn netns(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair with it.
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

#[tokio::test]
async fn host_port_reaches_a_listener_in_the_pod() {
    let env = NetEnv::new();
    let b = env.berthd().await;
    let mut rt = b.runtime();
    let host_port = env.host_port(1);
    let mut config = pod(&env, "hp");
    config.port_mappings = vec![
        PortMapping {
            protocol: Protocol::Tcp as i32,
            container_port: 8080,
            host_port: host_port as i32,
            host_ip: String::new(),
        },
        // A container port without a hostPort: no mapping.
        PortMapping {
            protocol: Protocol::Tcp as i32,
            container_port: 9090,
            host_port: 0,
            host_ip: String::new(),
        },
    ];
    let id = rt.run_pod_sandbox(run_req(config)).await.unwrap().into_inner().pod_sandbox_id;
    let (st, info) = status(&b, &id).await;
    let ip: Ipv4Addr = st.network.unwrap().ip.parse().unwrap();
    assert_eq!(info["portMappings"].as_array().unwrap().len(), 1);
    assert_eq!(env.pod_rules().len(), 2, "prerouting + output rule: {:?}", env.pod_rules());
    serve_in(Some(path_of(&info, "netnsPath")), "0.0.0.0:8080".parse().unwrap(), "pod");
    let got = fetch(SocketAddr::from((env.gateway(), host_port))).unwrap();
    assert!(got.starts_with("pod "), "{got}");
    let _ = ip;
    remove(&b, &id).await;
    assert!(env.pod_rules().is_empty());
    assert!(fetch(SocketAddr::from((env.gateway(), host_port))).is_err());
    env.assert_no_leaks(&b).await;
}

#[tokio::test]
async fn host_network_pod_shares_the_host_netns() {
    let env = NetEnv::new();
    let b = env.berthd().await;
    let mut rt = b.runtime();
    let s = rt.status(StatusRequest { verbose: false }).await.unwrap().into_inner();
    let net = s.status.unwrap().conditions.into_iter().find(|c| c.r#type == "NetworkReady");
    assert!(net.unwrap().status, "the bridge is set up at start-up");
    let mut config = pod(&env, "hostnet");
    config.linux.as_mut().unwrap().security_context = Some(LinuxSandboxSecurityContext {
        namespace_options: Some(NamespaceOption {
            network: NamespaceMode::Node as i32,
            pid: NamespaceMode::Container as i32,
            ipc: NamespaceMode::Node as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = rt.run_pod_sandbox(run_req(config)).await.unwrap().into_inner().pod_sandbox_id;
    let (st, info) = status(&b, &id).await;
    assert_eq!(st.network.unwrap().ip, "");
    let opts = st.linux.unwrap().namespaces.unwrap().options.unwrap();
    assert_eq!(opts.network, NamespaceMode::Node as i32);
    assert_eq!(opts.ipc, NamespaceMode::Node as i32);
    assert!(info["netnsPath"].is_null() && info["utsNamespace"].is_null());
    assert_eq!(info["shm"], "/dev/shm");
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert_eq!(
        std::fs::read_to_string(path_of(&info, "hostnamePath")).unwrap(),
        format!("{host}\n")
    );
    assert!(env.bridge_ports().is_empty());
    assert_eq!(env.leases(&b).await, 0);
    remove(&b, &id).await;
    env.assert_no_leaks(&b).await;
}

/// Network namespaces `pid` holds open (by inode), but the one it runs in.
fn held_netns(pid: u32) -> Vec<(u64, PathBuf)> {
    let own = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    let mut held = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        let Ok(target) = std::fs::read_link(fd.path()) else { continue };
        let t = target.to_string_lossy();
        if t.starts_with("net:[") && target != own {
            let inode = t.trim_start_matches("net:[").trim_end_matches(']').parse().unwrap();
            held.push((inode, fd.path()));
        }
    }
    held
}

/// Waits until `pid` holds exactly one network namespace other than those in `but`.
async fn one_held_netns(pid: u32, but: &[u64]) -> (u64, PathBuf) {
    let deadline =
        std::time::Instant::now() + berth_integration::time_scale::scaled(Duration::from_secs(5));
    loop {
        let held: Vec<_> =
            held_netns(pid).into_iter().filter(|(inode, _)| !but.contains(inode)).collect();
        if held.len() == 1 {
            return held.into_iter().next().unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "berthd holds {held:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The host-side index of `eth0`'s peer, in the namespace at `ns`.
fn eth0_peer_index(ns: &std::path::Path) -> u32 {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(["ip", "-o", "link", "show", "eth0"])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let peer = line.split("eth0@if").nth(1).unwrap_or_else(|| panic!("eth0 in {line:?}"));
    peer.split(':').next().unwrap().parse().unwrap()
}

fn host_link_exists(index: u32) -> bool {
    let out = std::process::Command::new("ip").args(["-o", "link", "show"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().any(|l| l.starts_with(&format!("{index}:")))
}

#[tokio::test]
async fn a_pod_adopts_the_network_made_ahead_and_none_outlives_berthd() {
    let env = NetEnv::new();
    let mut b = env.berthd().await;
    let pid = b.pid().unwrap();
    // berthd makes a pod network ahead once its bridge is up: a namespace it holds open,
    // with eth0 inside, its peer on the host not yet on the bridge.
    let (ahead, _) = one_held_netns(pid, &[]).await;
    assert!(env.bridge_ports().is_empty(), "{:?}", env.bridge_ports());
    let mut rt = b.runtime();
    let id =
        rt.run_pod_sandbox(run_req(pod(&env, "ahead"))).await.unwrap().into_inner().pod_sandbox_id;
    let (st, info) = status(&b, &id).await;
    let netns = path_of(&info, "netnsPath");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&netns).unwrap().ino(), ahead, "the pod's is the one made ahead");
    // Adopted: on the bridge under the pod's veth name, addressed, reachable.
    let ports = env.bridge_ports();
    assert_eq!(ports.len(), 1, "{ports:?}");
    assert!(!ports[0].starts_with("bwarm"), "{ports:?}");
    let ip: Ipv4Addr = st.network.unwrap().ip.parse().unwrap();
    let port = serve_in(Some(netns.clone()), "0.0.0.0:0".parse().unwrap(), "pod");
    let got = fetch(SocketAddr::from((ip, port))).unwrap();
    assert!(got.starts_with("pod "), "{got}");
    // The next one is made; it ends with berthd, its veth with it.
    let (next, next_fd) = one_held_netns(pid, &[ahead]).await;
    assert_ne!(next, ahead);
    let host_end = eth0_peer_index(&next_fd);
    assert!(host_link_exists(host_end));
    remove(&b, &id).await;
    env.assert_no_leaks(&b).await;
    b.stop().await;
    let deadline =
        std::time::Instant::now() + berth_integration::time_scale::scaled(Duration::from_secs(2));
    while host_link_exists(host_end) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!host_link_exists(host_end), "the veth made ahead outlived berthd");
}

#[tokio::test]
async fn fifty_pods_concurrently_without_ip_collision() {
    let env = NetEnv::new();
    let b = env.berthd().await;
    let started = std::time::Instant::now();
    let runs =
        (0..50).map(|i| {
            let mut rt = b.runtime();
            let config = pod(&env, &format!("p{i}"));
            async move {
                rt.run_pod_sandbox(run_req(config)).await.map(|r| r.into_inner().pod_sandbox_id)
            }
        });
    let ids: Vec<String> =
        futures::future::join_all(runs).await.into_iter().map(Result::unwrap).collect();
    eprintln!("50 concurrent RunPodSandbox: {:?}", started.elapsed());
    let mut ips = std::collections::HashSet::new();
    for id in &ids {
        let (st, _) = status(&b, id).await;
        assert!(ips.insert(st.network.unwrap().ip), "IP handed out twice");
    }
    assert_eq!(env.leases(&b).await, 50);
    assert_eq!(env.bridge_ports().len(), 50);
    let removes = ids.iter().map(|id| {
        let mut rt = b.runtime();
        let id = id.clone();
        async move { rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id }).await }
    });
    for r in futures::future::join_all(removes).await {
        r.unwrap();
    }
    env.assert_no_leaks(&b).await;
}

#[tokio::test]
async fn failed_runs_leave_nothing() {
    let env = NetEnv::with_prefix(30); // one pod address
    let b = env.berthd().await;
    let mut rt = b.runtime();

    // Refused by validation, naming the field.
    let mut bad = pod(&env, "bad");
    bad.linux.as_mut().unwrap().sysctls = HashMap::from([("vm.swappiness".into(), "1".into())]);
    let err = rt.run_pod_sandbox(run_req(bad)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("vm.swappiness"), "{err:?}");
    let err = rt.run_pod_sandbox(run_req(PodSandboxConfig::default())).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("config.metadata"), "{err:?}");
    let mut rel = pod(&env, "rel");
    rel.log_directory = "relative".into();
    let err = rt.run_pod_sandbox(run_req(rel)).await.unwrap_err();
    assert!(err.message().contains("config.log_directory"), "{err:?}");

    // Fails late (after the network is set up): a namespaced sysctl that does not exist.
    let mut late = pod(&env, "late");
    late.linux.as_mut().unwrap().sysctls =
        HashMap::from([("net.ipv4.no_such_sysctl".into(), "1".into())]);
    let err = rt.run_pod_sandbox(run_req(late.clone())).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("net.ipv4.no_such_sysctl"), "{err:?}");
    env.assert_no_leaks(&b).await;
    // And its name was released with everything else.
    late.linux.as_mut().unwrap().sysctls.clear();
    let first = rt.run_pod_sandbox(run_req(late)).await.unwrap().into_inner().pod_sandbox_id;

    // The /30 has one address: the second pod finds the pool exhausted.
    let err = rt.run_pod_sandbox(run_req(pod(&env, "second"))).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("no free IPv4 address"), "{err:?}");
    let list = rt.list_pod_sandbox(ListPodSandboxRequest::default()).await.unwrap().into_inner();
    assert_eq!(list.items.len(), 1);
    assert_eq!(env.leases(&b).await, 1);
    assert_eq!(env.cgroups().iter().filter(|c| c.join("second").exists()).count(), 0);

    remove(&b, &first).await;
    env.assert_no_leaks(&b).await;
}

#[tokio::test]
async fn concurrent_retries_of_run_pod_sandbox_make_one_pod() {
    let env = NetEnv::new();
    let b = env.berthd().await;
    let config = pod(&env, "retried");
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let mut rt = b.runtime();
            let req = run_req(config.clone());
            tokio::spawn(async move { rt.run_pod_sandbox(req).await.map(|r| r.into_inner()) })
        })
        .collect();
    let mut ids = Vec::new();
    for c in calls {
        ids.push(c.await.unwrap().unwrap().pod_sandbox_id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let list = b.runtime().list_pod_sandbox(ListPodSandboxRequest::default()).await.unwrap();
    assert_eq!(list.into_inner().items.len(), 1);
    let mut rt = b.runtime();
    rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: ids[0].clone() }).await.unwrap();
    // A stopped pod keeps its name: the kubelet makes a new attempt instead.
    let err = rt.run_pod_sandbox(run_req(config)).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    remove(&b, &ids[0]).await;
    env.assert_no_leaks(&b).await;
}

#[tokio::test]
async fn a_crash_at_any_step_of_run_pod_sandbox_leaves_nothing_after_restart() {
    let env = NetEnv::new();
    for point in ["sandbox.recorded", "sandbox.netns", "sandbox.cgroup", "sandbox.network"] {
        let mut b = berth_integration::Berthd::start_with(berth_integration::Options {
            config: Some(env.config_toml()),
            env: vec![("BERTH_CRASH_AT".into(), point.into())],
            ..Default::default()
        })
        .await;
        let mut config = pod(&env, "crashy");
        config.port_mappings = vec![PortMapping {
            protocol: Protocol::Tcp as i32,
            container_port: 80,
            host_port: 18080,
            ..Default::default()
        }];
        let err = b.runtime().run_pod_sandbox(run_req(config.clone())).await.unwrap_err();
        // The connection breaks mid-call (Unknown or Unavailable, depending on timing).
        assert!(
            matches!(err.code(), Code::Unavailable | Code::Unknown),
            "{point}: berthd should have died: {err:?}"
        );
        b.kill();
        b.set_env(vec![]);
        b.restart().await;
        let mut rt = b.runtime();
        let list = rt.list_pod_sandbox(ListPodSandboxRequest::default()).await.unwrap();
        assert!(list.into_inner().items.is_empty(), "{point}: a half-made pod is listed");
        env.assert_no_leaks(&b).await;
        // The name is free again and the pod runs.
        let id = rt.run_pod_sandbox(run_req(config)).await.unwrap().into_inner().pod_sandbox_id;
        remove(&b, &id).await;
        env.assert_no_leaks(&b).await;
    }
}

#[tokio::test]
async fn restart_keeps_pods_and_reboot_makes_them_notready_and_cleans() {
    let env = NetEnv::new();
    let mut b = env.berthd().await;
    let mut rt = b.runtime();
    let mut config = pod(&env, "keep");
    config.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 80,
        host_port: env.host_port(2) as i32,
        host_ip: String::new(),
    }];
    let a = rt.run_pod_sandbox(run_req(config)).await.unwrap().into_inner().pod_sandbox_id;
    let c =
        rt.run_pod_sandbox(run_req(pod(&env, "other"))).await.unwrap().into_inner().pod_sandbox_id;
    let (before, _) = status(&b, &a).await;

    b.stop().await;
    b.restart().await;
    let (after, _) = status(&b, &a).await;
    assert_eq!(after, before, "a restart changes nothing");
    assert_eq!(env.leases(&b).await, 2);

    // A "reboot": berthd down, the pods' shims (started with them) and every mount of the
    // volatile state gone, the state emptied.
    b.stop().await;
    for pid in berth_integration::leak_checks::shim_pids(&b) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let state = b.state_dir();
    let mut mounts = berth_integration::leaks::mounts_under(&state);
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH).unwrap();
    }
    std::fs::remove_dir_all(&state).unwrap();
    b.restart().await;
    let mut rt = b.runtime();
    for id in [&a, &c] {
        let (st, _) = status(&b, id).await;
        assert_eq!(st.state, PodSandboxState::SandboxNotready as i32);
        assert_eq!(st.network.unwrap().ip, "");
    }
    let list = rt.list_pod_sandbox(ListPodSandboxRequest::default()).await.unwrap().into_inner();
    assert_eq!(list.items.len(), 2);
    assert!(env.pod_rules().is_empty(), "{:?}", env.pod_rules());
    assert_eq!(env.leases(&b).await, 0);
    assert!(env.cgroups().iter().all(|c| !c.join("keep").exists()));
    remove(&b, &a).await;
    remove(&b, &c).await;
    env.assert_no_leaks(&b).await;
}
