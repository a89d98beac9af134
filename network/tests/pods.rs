//! Root integration tests: real namespaces, bridges, veths and nftables tables, each test
//! with names of its own, and each checking that it leaked nothing.

mod common;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};

use berth_network::bridge::{self, POD_IFNAME};
use berth_network::{
    netns, IpAllocator, Ipam, Network, NetworkError, PortMapping, Protocol, Readiness,
};
use common::Env;

fn ns_inode_here() -> u64 {
    std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
}

#[test]
fn netns_pin_run_and_remove() {
    require_root!();
    let env = Env::new();
    let host_ns = ns_inode_here();
    let a = env.dir.create("a").unwrap();
    let b = env.dir.create("b").unwrap();
    assert!(netns::is_netns(&a));
    let ino_a = netns::run_in(&a, ns_inode_here).unwrap();
    let ino_b = netns::run_in(&b, ns_inode_here).unwrap();
    assert_ne!(ino_a, host_ns);
    assert_ne!(ino_a, ino_b);
    // The pin is the namespace itself, and running inside it twice lands in the same one.
    assert_eq!(std::fs::metadata(&a).unwrap().ino(), ino_a);
    assert_eq!(netns::run_in(&a, ns_inode_here).unwrap(), ino_a);
    // The caller never moved.
    assert_eq!(ns_inode_here(), host_ns);

    assert!(matches!(env.dir.create("a"), Err(NetworkError::AlreadyExists(_))));
    assert!(matches!(env.dir.create("../x"), Err(NetworkError::InvalidArgument(_))));
    assert!(matches!(
        netns::run_in(&env.dir.path().join("nope"), || ()),
        Err(NetworkError::NotFound(_))
    ));

    // The directory is a mount point of its own, shared, in a peer group of its own.
    let dir = env.dir.path().to_string_lossy().into_owned();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(dir.as_str()))
        .expect("netns dir is a mount point");
    assert!(line.contains(" shared:"), "{line}");
    // Setting it up again keeps it (no second mount on top).
    netns::NetnsDir::new(env.dir.path()).unwrap();
    assert_eq!(common::mounts_under(env.dir.path()).len(), 3);

    env.dir.remove("a").unwrap();
    env.dir.remove("a").unwrap(); // idempotent
    env.dir.remove("b").unwrap();
    assert!(!a.exists() && !b.exists());
    env.dir.unmount().unwrap();
    env.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_in_async_returns_the_closure_result() {
    require_root!();
    let env = Env::new();
    let p = env.dir.create("x").unwrap();
    let ino = netns::run_in_async(&p, ns_inode_here).await.unwrap();
    assert_eq!(ino, std::fs::metadata(&p).unwrap().ino());
    env.dir.remove("x").unwrap();
    env.dir.unmount().unwrap();
    env.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pods_talk_through_the_bridge() {
    require_root!();
    let env = Env::new();
    let net = env.network();
    let (id1, id2) = (env.pod_id(), env.pod_id());
    let (ns1, ns2) = (env.pin(&id1), env.pin(&id2));

    assert!(!net.readiness().await.is_ready());
    let p1 = net.setup_pod(&id1, &ns1, &[]).await.unwrap();
    let p2 = net.setup_pod(&id2, &ns2, &[]).await.unwrap();
    assert_eq!(net.readiness().await, Readiness::Ready);
    assert_eq!(p1.gateway, env.gateway());
    assert_eq!(p1.prefix, 24);
    assert_ne!(p1.ip, p2.ip);
    assert!(env.config.subnet.contains(&p1.ip) && env.config.subnet.contains(&p2.ip));
    assert_eq!(p1.veth, bridge::veth_name(&id1));

    // Host side: bridge up with the gateway address; veth up, attached, aliased.
    let h = net.netlink();
    let br = bridge::link_state(h, &env.config.bridge).await.unwrap().unwrap();
    assert!(br.up);
    assert_eq!(br.ipv4, vec![(env.gateway(), 24)]);
    let v1 = bridge::link_state(h, &p1.veth).await.unwrap().unwrap();
    assert!(v1.up);
    // MTU follows the uplink (the interface of the default route) on bridge and veths.
    let mtu = net.mtu().await.unwrap();
    if let Some(uplink) = bridge::uplink_mtu(h).await.unwrap() {
        assert_eq!(mtu, uplink);
    }
    assert_eq!(p1.mtu, mtu);
    assert_eq!(br.mtu, Some(mtu));
    assert_eq!(v1.mtu, Some(mtu));
    let mut veths = net.pod_veths().await.unwrap();
    veths.retain(|(_, pod)| pod == &id1 || pod == &id2);
    let mut want = vec![(p1.veth.clone(), id1.clone()), (p2.veth.clone(), id2.clone())];
    want.sort();
    assert_eq!(veths, want);
    let mut pins = vec![id1.clone(), id2.clone()];
    pins.sort();
    assert_eq!(env.dir.list().unwrap(), pins);
    assert_eq!(v1.controller, Some(br.index));
    assert_eq!(v1.alias.as_deref(), Some(format!("berth:{id1}").as_str()));
    assert_eq!(
        std::fs::read_to_string(format!(
            "/proc/sys/net/ipv4/conf/{}/route_localnet",
            env.config.bridge
        ))
        .unwrap()
        .trim(),
        "1"
    );
    assert_eq!(std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap().trim(), "1");

    // Pod side, through netlink inside the namespace.
    for (ns, p) in [(&ns1, &p1), (&ns2, &p2)] {
        let ph = netns::netlink_in(ns).unwrap();
        let eth0 = bridge::link_state(&ph, POD_IFNAME).await.unwrap().unwrap();
        assert!(eth0.up);
        assert_eq!(eth0.mtu, Some(mtu));
        assert_eq!(eth0.ipv4, vec![(p.ip, 24)]);
        let lo = bridge::link_state(&ph, "lo").await.unwrap().unwrap();
        assert!(lo.up);
        assert_eq!(bridge::default_gateway(&ph).await.unwrap(), Some(env.gateway()));
        // Only lo and eth0 in there: the peer never had another name.
        let names = netns::run_in(ns, common::link_names).unwrap();
        let mut names = names;
        names.sort();
        assert_eq!(names, vec!["eth0".to_string(), "lo".to_string()]);
    }

    // TCP from pod 2 to pod 1 across the bridge, and from the host to pod 1.
    let listener = common::listen_in(&ns1, 7777);
    let to = SocketAddr::V4(SocketAddrV4::new(p1.ip, 7777));
    let (peer, got) = common::round_trip(&listener, Some(&ns2), to, "hello from pod 2");
    assert_eq!(got, "hello from pod 2");
    assert_eq!(peer.ip(), p2.ip);
    let (peer, got) = common::round_trip(&listener, None, to, "hello from host");
    assert_eq!(got, "hello from host");
    assert_eq!(peer.ip(), env.gateway());
    // Pod 1's own loopback works.
    let lo = SocketAddr::from((Ipv4Addr::LOCALHOST, 7777));
    let (_, got) = common::round_trip(&listener, Some(&ns1), lo, "loopback");
    assert_eq!(got, "loopback");
    drop(listener);

    net.teardown_pod(&id1).await.unwrap();
    net.teardown_pod(&id2).await.unwrap();
    net.teardown_pod(&id2).await.unwrap(); // idempotent

    // The veths go in the background; settling a pod waits for that.
    net.settle_pod(&id1).await.unwrap();
    net.settle_pod(&id2).await.unwrap();
    assert!(bridge::find_link(h, &p1.veth).await.unwrap().is_none());
    for id in [&id1, &id2] {
        env.dir.remove(id).unwrap();
    }
    net.destroy().await.unwrap();
    net.destroy().await.unwrap(); // idempotent
    env.dir.unmount().unwrap();
    env.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_ports_reach_the_pod() {
    require_root!();
    let env = Env::new();
    let net = env.network();
    let (id1, id2) = (env.pod_id(), env.pod_id());
    let (ns1, ns2) = (env.pin(&id1), env.pin(&id2));
    let hp = env.host_port(1);
    let hp_udp = env.host_port(2);
    let mappings =
        [PortMapping::new(Protocol::Tcp, hp, 8080), PortMapping::new(Protocol::Udp, hp_udp, 5353)];
    let p1 = net.setup_pod(&id1, &ns1, &mappings).await.unwrap();
    let _p2 = net.setup_pod(&id2, &ns2, &[]).await.unwrap();
    // Two DNAT rules (prerouting + output) per mapping, all tagged with the pod id.
    assert_eq!(net.firewall().pod_rules(&id1).await.unwrap().len(), 4);
    assert_eq!(net.firewall().pods().await.unwrap(), vec![id1.clone()]);
    // Setting the same mappings again replaces rather than duplicates.
    net.firewall().add_port_mappings(&id1, p1.ip, &mappings).await.unwrap();
    assert_eq!(net.firewall().pod_rules(&id1).await.unwrap().len(), 4);

    // A third pod asking for the same host port is refused, and leaves nothing behind.
    let id3 = env.pod_id();
    let ns3 = env.pin(&id3);
    let err =
        net.setup_pod(&id3, &ns3, &[PortMapping::new(Protocol::Tcp, hp, 80)]).await.unwrap_err();
    assert!(matches!(err, NetworkError::AlreadyExists(_)), "{err}");
    assert!(bridge::find_link(net.netlink(), &bridge::veth_name(&id3)).await.unwrap().is_none());
    env.dir.remove(&id3).unwrap();

    let listener = common::listen_in(&ns1, 8080);
    // From the host via localhost (output chain + route_localnet + masquerade).
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, hp));
    let (peer, got) = common::round_trip(&listener, None, local, "via localhost");
    assert_eq!(got, "via localhost");
    assert_eq!(peer.ip(), env.gateway());
    // From the host via the gateway address (a local address).
    let gw = SocketAddr::from((env.gateway(), hp));
    let (_, got) = common::round_trip(&listener, None, gw, "via gateway");
    assert_eq!(got, "via gateway");
    // From the other pod via the host's address (prerouting + hairpin masquerade).
    let (peer, got) = common::round_trip(&listener, Some(&ns2), gw, "hairpin");
    assert_eq!(got, "hairpin");
    assert_eq!(peer.ip(), env.gateway());
    // A pod reaching its own hostPort.
    let (_, got) = common::round_trip(&listener, Some(&ns1), gw, "self");
    assert_eq!(got, "self");

    // UDP from the host via localhost.
    let sock =
        netns::run_in(&ns1, || std::net::UdpSocket::bind(("0.0.0.0", 5353))).unwrap().unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    let client = std::net::UdpSocket::bind(("127.0.0.1", 0)).unwrap();
    client.send_to(b"udp!", (Ipv4Addr::LOCALHOST, hp_udp)).unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = sock.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"udp!");
    drop(listener);

    net.teardown_pod(&id1).await.unwrap();
    assert!(net.firewall().pod_rules(&id1).await.unwrap().is_empty());
    net.firewall().remove_pod(&id1).await.unwrap(); // idempotent
    net.teardown_pod(&id2).await.unwrap();
    for id in [&id1, &id2] {
        net.settle_pod(id).await.unwrap();
        env.dir.remove(id).unwrap();
    }
    net.destroy().await.unwrap();
    env.dir.unmount().unwrap();
    env.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_pod_only_removes_that_pods_rules() {
    require_root!();
    let env = Env::new();
    let net = env.network();
    let fw = net.firewall();
    fw.ensure_base().await.unwrap();
    let ip = |n: u8| Ipv4Addr::new(10, 250, env.x, n);
    // Pod ids where one is a prefix of the other must not be confused.
    fw.add_port_mappings("abc", ip(5), &[PortMapping::new(Protocol::Tcp, env.host_port(3), 80)])
        .await
        .unwrap();
    fw.add_port_mappings("abcd", ip(6), &[PortMapping::new(Protocol::Tcp, env.host_port(4), 80)])
        .await
        .unwrap();
    // A host port another pod holds is refused, also "any" against a specific address.
    let taken = fw
        .add_port_mappings("other", ip(7), &[PortMapping::new(Protocol::Tcp, env.host_port(4), 81)])
        .await
        .unwrap_err();
    assert!(matches!(taken, NetworkError::AlreadyExists(_)), "{taken}");
    assert!(taken.to_string().contains("abcd"), "{taken}");
    let specific = PortMapping {
        host_ip: Some(Ipv4Addr::LOCALHOST),
        ..PortMapping::new(Protocol::Tcp, env.host_port(3), 81)
    };
    assert!(matches!(
        fw.add_port_mappings("other", ip(7), &[specific]).await,
        Err(NetworkError::AlreadyExists(_))
    ));
    // Same port, other protocol: fine.
    fw.add_port_mappings("other", ip(7), &[PortMapping::new(Protocol::Udp, env.host_port(4), 81)])
        .await
        .unwrap();
    assert_eq!(fw.pods().await.unwrap(), vec!["abc", "abcd", "other"]);
    fw.remove_pod("other").await.unwrap();
    fw.remove_pod("abc").await.unwrap();
    assert!(fw.pod_rules("abc").await.unwrap().is_empty());
    assert_eq!(fw.pod_rules("abcd").await.unwrap().len(), 2);
    assert!(fw.add_port_mappings("x", Ipv4Addr::new(192, 0, 2, 1), &[]).await.is_err());
    fw.ensure_base().await.unwrap(); // keeps pod rules
    assert_eq!(fw.pod_rules("abcd").await.unwrap().len(), 2);
    fw.remove_all().await.unwrap();
    fw.remove_all().await.unwrap();
    fw.remove_pod("abcd").await.unwrap(); // no table: fine
    assert!(!fw.table_exists().await.unwrap());
    env.dir.unmount().unwrap();
    env.assert_no_leaks();
}

/// berth writes its table over netlink, but operators (and the integration tests' leak
/// checks) read it with `nft`: the rules must read as if `nft` had added them, and rules
/// `nft` adds with a pod comment must count as that pod's. Needs the `nft` binary (a test
/// dependency only); skipped without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nft_reads_the_rules_as_its_own() {
    require_root!();
    if std::process::Command::new("nft").arg("--version").output().is_err() {
        eprintln!("skipped: no nft binary");
        return;
    }
    let env = Env::new();
    let net = env.network();
    let fw = net.firewall();
    fw.ensure_base().await.unwrap();
    let (t, s, br) = (&env.config.nft_table, env.config.subnet, &env.config.bridge);
    let pod_ip = Ipv4Addr::new(10, 250, env.x, 5);
    let (hp1, hp2, hp3) = (env.host_port(5), env.host_port(6), env.host_port(7));
    let mappings = [
        PortMapping::new(Protocol::Tcp, hp1, 80),
        PortMapping {
            host_ip: Some(Ipv4Addr::new(192, 0, 2, 1)),
            ..PortMapping::new(Protocol::Udp, hp2, 53)
        },
        PortMapping::new(Protocol::Sctp, hp3, 9000),
    ];
    fw.add_port_mappings("pod1", pod_ip, &mappings).await.unwrap();
    let nft = |args: &[&str]| {
        let out = std::process::Command::new("nft").args(args).output().unwrap();
        assert!(out.status.success(), "nft {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let listing = nft(&["list", "table", "ip", t]);
    let lines: Vec<&str> = listing.lines().map(str::trim).collect();
    let want = [
        "chain prerouting {".to_string(),
        "type nat hook prerouting priority dstnat; policy accept;".into(),
        format!("fib daddr type local tcp dport {hp1} dnat to {pod_ip}:80 comment \"berth:pod=pod1|tcp/0.0.0.0:{hp1}\""),
        format!("ip daddr 192.0.2.1 udp dport {hp2} dnat to {pod_ip}:53 comment \"berth:pod=pod1|udp/192.0.2.1:{hp2}\""),
        format!("fib daddr type local sctp dport {hp3} dnat to {pod_ip}:9000 comment \"berth:pod=pod1|sctp/0.0.0.0:{hp3}\""),
        "chain output {".into(),
        "type nat hook output priority -100; policy accept;".into(),
        format!("fib daddr type local tcp dport {hp1} dnat to {pod_ip}:80 comment \"berth:pod=pod1|tcp/0.0.0.0:{hp1}\""),
        format!("ip daddr 192.0.2.1 udp dport {hp2} dnat to {pod_ip}:53 comment \"berth:pod=pod1|udp/192.0.2.1:{hp2}\""),
        format!("fib daddr type local sctp dport {hp3} dnat to {pod_ip}:9000 comment \"berth:pod=pod1|sctp/0.0.0.0:{hp3}\""),
        "chain postrouting {".into(),
        "type nat hook postrouting priority srcnat; policy accept;".into(),
        format!("ip saddr {s} ip daddr != {s} masquerade comment \"berth:egress\""),
        format!("oifname \"{br}\" ip saddr 127.0.0.0/8 masquerade comment \"berth:localhost\""),
        format!("ip saddr {s} ip daddr {s} ct status dnat masquerade comment \"berth:hairpin\""),
    ];
    let got: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| !l.is_empty() && *l != "}" && !l.starts_with("table "))
        .collect();
    assert_eq!(got, want, "{listing}");

    // What nft prints, nft loads again: into a table of another name, the same listing.
    let copy = format!("{t}_copy");
    let script = listing.replacen(&format!("table ip {t} "), &format!("table ip {copy} "), 1);
    let mut child = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), script.as_bytes()).unwrap();
    let loaded = child.wait().unwrap().success();
    let copied = nft(&["list", "table", "ip", &copy]);
    nft(&["delete", "table", "ip", &copy]);
    assert!(loaded, "nft -f of its own listing failed:\n{script}");
    assert_eq!(copied.replacen(&copy, t, 1), listing);

    // A rule nft adds with a pod comment is that pod's: listed, held and removed.
    let hp4 = env.host_port(8);
    nft(&[
        "add",
        "rule",
        "ip",
        t,
        "prerouting",
        "tcp",
        "dport",
        &hp4.to_string(),
        "dnat",
        "to",
        &format!("{pod_ip}:81"),
        "comment",
        &format!("\"berth:pod=pod2|tcp/0.0.0.0:{hp4}\""),
    ]);
    assert_eq!(fw.pods().await.unwrap(), ["pod1", "pod2"]);
    let err = fw
        .add_port_mappings("pod3", pod_ip, &[PortMapping::new(Protocol::Tcp, hp4, 80)])
        .await
        .unwrap_err();
    assert!(matches!(err, NetworkError::AlreadyExists(_)), "{err}");
    fw.remove_pod("pod2").await.unwrap();
    fw.remove_pod("pod1").await.unwrap();
    assert!(fw.pods().await.unwrap().is_empty());
    let listing = nft(&["list", "table", "ip", t]);
    assert!(!listing.contains("berth:pod="), "{listing}");
    assert!(listing.contains("berth:hairpin"), "{listing}");

    net.destroy().await.unwrap();
    env.dir.unmount().unwrap();
    env.assert_no_leaks();
}

/// An allocator that counts live leases, to see rollback release them.
struct Counting(Mutex<Ipam>);

impl IpAllocator for Counting {
    fn allocate(&self, pod_id: &str) -> berth_network::Result<Ipv4Addr> {
        self.0.allocate(pod_id)
    }
    fn release(&self, pod_id: &str) -> berth_network::Result<()> {
        self.0.release(pod_id)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_setup_leaves_nothing_behind() {
    require_root!();
    let env = Env::new();
    let alloc = Arc::new(Counting(Mutex::new(Ipam::new(env.config.subnet).unwrap())));
    let net = Network::new(env.config.clone(), alloc.clone()).unwrap();
    let leases = || alloc.0.lock().unwrap().leases();

    // 1. No such netns: fails after the IP was allocated, before any veth.
    let id = env.pod_id();
    let missing = env.dir.path().join(&id);
    let err = net.setup_pod(&id, &missing, &[]).await.unwrap_err();
    assert!(matches!(err, NetworkError::NotFound(_)), "{err}");
    assert!(leases().is_empty());
    assert!(bridge::find_link(net.netlink(), &bridge::veth_name(&id)).await.unwrap().is_none());

    // 2. Not a netns at all.
    let plain = env.tmp.path().join("plain");
    std::fs::write(&plain, b"").unwrap();
    assert!(matches!(net.setup_pod(&id, &plain, &[]).await, Err(NetworkError::InvalidArgument(_))));
    assert!(leases().is_empty());

    // 3. The firewall step fails after the veth exists: the table vanished behind the
    //    network's back (it believes the base is in place).
    let ns = env.pin(&id);
    net.ensure().await.unwrap();
    net.firewall().remove_all().await.unwrap();
    let err = net
        .setup_pod(&id, &ns, &[PortMapping::new(Protocol::Tcp, env.host_port(5), 80)])
        .await
        .unwrap_err();
    assert!(matches!(err, NetworkError::Firewall(_)), "{err}");
    assert!(leases().is_empty());
    assert!(bridge::find_link(net.netlink(), &bridge::veth_name(&id)).await.unwrap().is_none());
    // The pod's namespace is back to just lo (the peer went with the veth).
    assert_eq!(netns::run_in(&ns, common::link_names).unwrap(), vec!["lo".to_string()]);

    // 4. Bad input is refused before anything happens.
    assert!(matches!(
        net.setup_pod("bad/id", &ns, &[]).await,
        Err(NetworkError::InvalidArgument(_))
    ));
    assert!(matches!(
        net.setup_pod(&id, &ns, &[PortMapping::new(Protocol::Tcp, 0, 80)]).await,
        Err(NetworkError::InvalidArgument(_))
    ));

    // 5. A second setup of a live pod is refused without disturbing the first.
    let p = net.setup_pod(&id, &ns, &[]).await.unwrap();
    assert!(matches!(net.setup_pod(&id, &ns, &[]).await, Err(NetworkError::AlreadyExists(_))));
    assert_eq!(leases(), vec![(id.clone(), p.ip)]);
    assert!(bridge::find_link(net.netlink(), &p.veth).await.unwrap().is_some());

    net.teardown_pod(&id).await.unwrap();
    assert!(leases().is_empty());
    net.settle_pod(&id).await.unwrap();
    env.dir.remove(&id).unwrap();
    net.destroy().await.unwrap();
    env.dir.unmount().unwrap();
    env.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_netns_takes_the_veth_with_it() {
    require_root!();
    let mut env = Env::new();
    env.config.mtu = Some(1280);
    let net = env.network();
    let id = env.pod_id();
    let ns = env.pin(&id);
    let p = net.setup_pod(&id, &ns, &[]).await.unwrap();
    assert_eq!(p.mtu, 1280);
    let ph = netns::netlink_in(&ns).unwrap();
    let eth0 = bridge::link_state(&ph, POD_IFNAME).await.unwrap().unwrap();
    assert_eq!(eth0.mtu, Some(1280));
    drop(ph);
    // Drop the pin first (a crashed or out-of-order teardown): the namespace dies and
    // the kernel deletes the pair; teardown must still succeed.
    env.dir.remove(&id).unwrap();
    for _ in 0..100 {
        if bridge::find_link(net.netlink(), &p.veth).await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    net.teardown_pod(&id).await.unwrap();
    net.settle_pod(&id).await.unwrap();
    assert!(bridge::find_link(net.netlink(), &p.veth).await.unwrap().is_none());
    net.destroy().await.unwrap();
    env.dir.unmount().unwrap();
    env.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_setups_get_distinct_addresses() {
    require_root!();
    let env = Env::new();
    let net = Arc::new(env.network());
    let ids: Vec<String> = (0..6).map(|_| env.pod_id()).collect();
    let pins: Vec<_> = ids.iter().map(|id| env.pin(id)).collect();
    // All at once, including the first creation of the bridge and table.
    let results = futures::future::join_all(ids.iter().zip(&pins).map(|(id, ns)| {
        let net = net.clone();
        let (id, ns) = (id.clone(), ns.clone());
        tokio::spawn(async move { net.setup_pod(&id, &ns, &[]).await })
    }))
    .await;
    let pods: Vec<_> = results.into_iter().map(|r| r.unwrap().unwrap()).collect();
    let mut ips: Vec<_> = pods.iter().map(|p| p.ip).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), ids.len());
    // The last pod can reach the first.
    let listener = common::listen_in(&pins[0], 7000);
    let to = SocketAddr::from((pods[0].ip, 7000));
    let (_, got) = common::round_trip(&listener, Some(&pins[5]), to, "hi");
    assert_eq!(got, "hi");
    drop(listener);
    futures::future::join_all(ids.iter().map(|id| net.teardown_pod(id)))
        .await
        .into_iter()
        .for_each(|r| r.unwrap());
    for id in &ids {
        net.settle_pod(id).await.unwrap();
        env.dir.remove(id).unwrap();
    }
    net.destroy().await.unwrap();
    env.dir.unmount().unwrap();
    env.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_cleans_up_an_abandoned_test() {
    require_root!();
    // Set everything up, then drop the Env without tearing down, as a failing test would.
    let (config, root, pods) = {
        let env = Env::new();
        let net = env.network();
        let id = env.pod_id();
        let ns = env.pin(&id);
        net.setup_pod(&id, &ns, &[PortMapping::new(Protocol::Tcp, env.host_port(6), 80)])
            .await
            .unwrap();
        assert!(common::nft_table_exists(&env.config.nft_table));
        let pods = env.pods.lock().unwrap().clone();
        (env.config.clone(), env.tmp.path().to_path_buf(), pods)
    };
    let links = common::link_names();
    assert!(!links.contains(&config.bridge));
    for pod in pods {
        assert!(!links.contains(&bridge::veth_name(&pod)));
    }
    assert!(common::mounts_under(&root).is_empty());
    assert!(!common::nft_table_exists(&config.nft_table));
    assert!(!root.exists());
}

/// The pin directory's propagation: a mount namespace copied from ours after the directory
/// was set up sees pins made later, and loses them when they are removed — so a copy held
/// by some other process never keeps a pod's namespace alive.
#[test]
fn pins_propagate_to_copied_mount_namespaces_and_so_do_removals() {
    require_root!();
    let env = Env::new();
    let dir = env.dir.path().to_path_buf();
    let (to_child, child_rx) = std::sync::mpsc::channel::<&'static str>();
    let (to_parent, parent_rx) = std::sync::mpsc::channel::<Vec<String>>();
    let child = std::thread::spawn(move || {
        // A thread of our own in a copy of the mount namespace.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
        let names = |dir: &std::path::Path| -> Vec<String> {
            let d = dir.to_string_lossy().into_owned();
            std::fs::read_to_string("/proc/thread-self/mountinfo")
                .unwrap()
                .lines()
                .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
                .filter(|m| m.starts_with(&format!("{d}/")))
                .collect()
        };
        while let Ok(msg) = child_rx.recv() {
            if msg == "stop" {
                break;
            }
            to_parent.send(names(&dir)).unwrap();
        }
    });
    let ask = || {
        to_child.send("look").unwrap();
        parent_rx.recv().unwrap()
    };
    assert!(ask().is_empty());
    let pin = env.dir.create("p").unwrap();
    assert_eq!(ask(), vec![pin.to_string_lossy().into_owned()]);
    env.dir.remove("p").unwrap();
    assert!(ask().is_empty());
    to_child.send("stop").unwrap();
    child.join().unwrap();
    env.dir.unmount().unwrap();
    env.assert_no_leaks();
}

/// The host-side index of `eth0`'s peer, in the namespace pinned at `ns`.
fn eth0_peer_index(ns: &std::path::Path) -> u32 {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(["ip", "-o", "link", "show", POD_IFNAME])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let peer = line.split("eth0@if").nth(1).unwrap_or_else(|| panic!("eth0 in {line:?}"));
    peer.split(':').next().unwrap().parse().unwrap()
}

async fn link_by_index_exists(net: &Network, index: u32) -> bool {
    use futures::TryStreamExt;
    let mut links = net.netlink().link().get().match_index(index).execute();
    links.try_next().await.map(|l| l.is_some()).unwrap_or(false)
}

/// Pins the pod network `net` made ahead for `id` (waiting for it to be made).
async fn pin_made_ahead(net: &Arc<Network>, id: &str, at: &std::path::Path) {
    for _ in 0..250 {
        if net.pin_warm(id, at).unwrap() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("no pod network was made ahead");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_network_made_ahead_is_adopted_or_let_go() {
    require_root!();
    let env = Env::new();
    let net = Arc::new(env.network());
    net.ensure().await.unwrap();
    net.warm_up(std::time::Duration::ZERO);

    // Adopted: the pod's pin is the namespace made ahead, its veth joins the bridge under
    // the pod's name, and the pod answers on its address.
    let id = env.pod_id();
    let ns = env.dir.path().join(&id);
    pin_made_ahead(&net, &id, &ns).await;
    assert!(netns::is_netns(&ns));
    let made_ahead = eth0_peer_index(&ns);
    let p = net.setup_pod(&id, &ns, &[]).await.unwrap();
    let veth = bridge::find_link(net.netlink(), &p.veth).await.unwrap().expect("the pod's veth");
    assert_eq!(veth.header.index, made_ahead, "the pair made ahead, renamed");
    let listener = common::listen_in(&ns, 7000);
    let (_, got) = common::round_trip(&listener, None, SocketAddr::from((p.ip, 7000)), "hi");
    assert_eq!(got, "hi");
    drop(listener);

    // Let go (the next pod's start failed before its network): unpinned, the pair is gone.
    let failed = env.pod_id();
    let failed_ns = env.dir.path().join(&failed);
    pin_made_ahead(&net, &failed, &failed_ns).await;
    let host_end = eth0_peer_index(&failed_ns);
    assert!(link_by_index_exists(&net, host_end).await);
    net.release_warm(&failed);
    env.dir.remove(&failed).unwrap();
    for _ in 0..100 {
        if !link_by_index_exists(&net, host_end).await {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!link_by_index_exists(&net, host_end).await, "a released pair outlived its pin");

    net.teardown_pod(&id).await.unwrap();
    net.settle_pod(&id).await.unwrap();
    env.dir.remove(&id).unwrap();
    net.destroy().await.unwrap();
    env.dir.unmount().unwrap();
    env.assert_no_leaks();
}
