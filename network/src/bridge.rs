//! The bridge and the per-pod veth pairs, over rtnetlink.
//!
//! Layout for one pod:
//!
//! ```text
//!  host netns                                  pod netns (pinned)
//!  berth0 (gateway/prefix) ── vethXXXXXXXX ═══ eth0 (pod ip/prefix, default via gateway)
//!                                              lo (up)
//! ```
//!
//! The host end is named `veth` + 8 hex digits of a hash of the pod id (15 characters at
//! most, the kernel's limit) and carries the alias `berth:<pod id>`, so start-up
//! reconciliation can tell which pod a veth belongs to. The peer is created directly in
//! the pod's namespace under the name `eth0` (the veth `newlink` request carries the
//! peer's namespace), so it never exists in the host namespace under a temporary name and
//! nothing is left to rename or move if a later step fails.
//!
//! # Sysctls and bridge options
//!
//! * `net.ipv4.ip_forward = 1` (host): pods reach anything beyond the bridge, and hostPort
//!   traffic arriving on other interfaces reaches pods, only if the host routes between
//!   interfaces. This is host-wide, as on every container host.
//! * `net.ipv4.conf.<bridge>.route_localnet = 1`: hostPort connections to `127.0.0.1`
//!   are DNATed to a pod address and leave through the bridge with source `127.0.0.1`;
//!   the kernel refuses to route a loopback source out of a non-loopback device unless
//!   this is set on that device. (The firewall then masquerades them to the gateway.)
//! * bridge option `nf_call_iptables` on (per bridge, not the host-wide
//!   `net.bridge.bridge-nf-call-iptables`): frames bridged between two pods pass the IPv4
//!   netfilter hooks, so a Service address DNATed by kube-proxy to a pod on the same bridge
//!   is un-DNATed on the way back.
//! * port option `hairpin` on every pod port: with the above, a pod that reaches itself
//!   through a Service gets the frame back out of its own port.
//! * the bridge gets a fixed MAC derived from its name: otherwise a Linux bridge takes the
//!   lowest MAC of its ports and changes it as pods come and go, which breaks the ARP
//!   entries pods hold for the gateway.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth,
    RouteMessageBuilder,
};

use crate::error::{NetworkError, Result};
use crate::netns;

/// Name of the pod's interface inside its namespace.
pub const POD_IFNAME: &str = "eth0";
/// Prefix of the alias put on host veth ends: `berth:<pod id>`.
pub const VETH_ALIAS_PREFIX: &str = "berth:";
/// Linux's limit on interface names (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// 32-bit FNV-1a: stable across builds and platforms, unlike `DefaultHasher`.
fn fnv1a(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in data {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The host-side veth name of a pod: `veth` + 8 hex digits of a hash of the pod id.
pub fn veth_name(pod_id: &str) -> String {
    format!("veth{:08x}", fnv1a(pod_id.as_bytes()))
}

/// Checks an interface name: 1–15 bytes, no `/`, whitespace, `:` or NUL, not `.`/`..`.
pub fn validate_ifname(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.len() > MAX_IFNAME_LEN
        || name == "."
        || name == ".."
        || name.bytes().any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace());
    if bad {
        return Err(NetworkError::InvalidArgument(format!(
            "interface name {name:?} must be 1-15 characters without '/', ':' or spaces"
        )));
    }
    Ok(())
}

/// The negative errno in a netlink error, if that is what it is.
pub(crate) fn netlink_errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| -c.get()),
        _ => None,
    }
}

/// Collects a netlink dump, retrying while the kernel answers EBUSY: a socket can run one
/// dump at a time, and one handle may be shared by concurrent tasks.
pub(crate) async fn dump<T, S, F>(
    what: &str,
    mut request: F,
) -> Result<std::result::Result<Vec<T>, rtnetlink::Error>>
where
    F: FnMut() -> S,
    S: futures::Stream<Item = std::result::Result<T, rtnetlink::Error>>,
{
    let mut attempt = 0u32;
    loop {
        match within(|| what.to_string(), request().try_collect::<Vec<T>>()).await? {
            Err(e) if netlink_errno(&e) == Some(libc::EBUSY) && attempt < 200 => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(u64::from(attempt.min(20))))
                    .await;
            }
            other => return Ok(other),
        }
    }
}

/// How long one netlink request waits for the kernel's answer.
pub const NETLINK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Awaits a netlink request, or fails naming `what` when no answer comes in
/// [`NETLINK_TIMEOUT`]: an answer the kernel dropped (a receive buffer overrun under load)
/// would otherwise hang the call, and the pod set-up holding it, forever.
pub(crate) async fn within<T>(
    what: impl FnOnce() -> String,
    request: impl std::future::Future<Output = T>,
) -> Result<T> {
    within_for(NETLINK_TIMEOUT, what, request).await
}

async fn within_for<T>(
    limit: std::time::Duration,
    what: impl FnOnce() -> String,
    request: impl std::future::Future<Output = T>,
) -> Result<T> {
    tokio::time::timeout(limit, request).await.map_err(|_| NetworkError::Timeout(what(), limit))
}

/// Opens an rtnetlink connection in the calling thread's namespace and spawns its task on
/// the current tokio runtime.
pub fn connect() -> Result<Handle> {
    let (mut conn, handle, _) =
        rtnetlink::new_connection().map_err(|e| NetworkError::io("open rtnetlink socket", e))?;
    crate::netlink::enlarge_receive_buffer(conn.socket_mut());
    tokio::spawn(conn);
    Ok(handle)
}

/// The link called `name`, if there is one.
pub async fn find_link(handle: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    validate_ifname(name)?;
    let mut links = handle.link().get().match_name(name).execute();
    match within(|| format!("look up link {name}"), links.try_next()).await? {
        Ok(link) => Ok(link),
        Err(e) if netlink_errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(NetworkError::netlink(format!("look up link {name}"), e)),
    }
}

pub(crate) async fn link_index(handle: &Handle, name: &str) -> Result<u32> {
    find_link(handle, name)
        .await?
        .map(|l| l.header.index)
        .ok_or_else(|| NetworkError::NotFound(format!("link {name}")))
}

/// Deletes the link called `name`; `Ok(false)` if there was none.
pub async fn delete_link(handle: &Handle, name: &str) -> Result<bool> {
    let Some(link) = find_link(handle, name).await? else {
        return Ok(false);
    };
    let del = handle.link().del(link.header.index).execute();
    match within(|| format!("delete link {name}"), del).await? {
        Ok(()) => Ok(true),
        // Went away in between (e.g. its netns peer was destroyed).
        Err(e) if netlink_errno(&e) == Some(libc::ENODEV) => Ok(false),
        Err(e) => Err(NetworkError::netlink(format!("delete link {name}"), e)),
    }
}

/// Deletes the link with `index` (named `name`, for errors); gone already is fine.
pub async fn delete_link_index(handle: &Handle, index: u32, name: &str) -> Result<()> {
    let del = handle.link().del(index).execute();
    match within(|| format!("delete link {name}"), del).await? {
        Ok(()) => Ok(()),
        Err(e) if netlink_errno(&e) == Some(libc::ENODEV) => Ok(()),
        Err(e) => Err(NetworkError::netlink(format!("delete link {name}"), e)),
    }
}

/// A locally administered unicast MAC derived from the bridge name.
fn bridge_mac(name: &str) -> Vec<u8> {
    let h = fnv1a(name.as_bytes()).to_be_bytes();
    let h2 = fnv1a(&h).to_be_bytes();
    vec![0x02, h[0], h[1], h[2], h[3], h2[0]]
}

/// Makes sure the bridge `name` exists, is up and has `gateway/prefix`, and sets the
/// sysctls described in the module documentation. Returns the bridge's interface index.
/// Idempotent, and safe against a concurrent creator.
///
/// `mtu` is applied when the bridge is created (an existing bridge keeps its MTU): set
/// explicitly, a bridge keeps it instead of following its ports.
pub async fn ensure_bridge(
    handle: &Handle,
    name: &str,
    gateway: Ipv4Addr,
    prefix: u8,
    mtu: u32,
) -> Result<u32> {
    validate_ifname(name)?;
    let index = match find_link(handle, name).await? {
        Some(link) => {
            let is_bridge = link.attributes.iter().any(|a| {
                matches!(a, LinkAttribute::LinkInfo(infos)
                    if infos.iter().any(|i| matches!(i,
                        netlink_packet_route::link::LinkInfo::Kind(
                            netlink_packet_route::link::InfoKind::Bridge))))
            });
            if !is_bridge {
                return Err(NetworkError::AlreadyExists(format!(
                    "link {name} exists and is not a bridge"
                )));
            }
            link.header.index
        }
        None => {
            let msg = LinkBridge::new(name)
                .nf_call_iptables(true)
                .address(bridge_mac(name))
                .mtu(mtu)
                .build();
            match within(|| format!("create bridge {name}"), handle.link().add(msg).execute())
                .await?
            {
                Ok(()) => {}
                Err(e) if netlink_errno(&e) == Some(libc::EEXIST) => {}
                Err(e) => return Err(NetworkError::netlink(format!("create bridge {name}"), e)),
            }
            link_index(handle, name).await?
        }
    };

    // The gateway address; EEXIST means it is there already. (Adding rather than listing
    // first keeps this path free of netlink dumps, which the kernel allows only one at a
    // time per socket.)
    let add = handle.address().add(index, IpAddr::V4(gateway), prefix).execute();
    match within(|| format!("add {gateway}/{prefix} to {name}"), add).await? {
        Ok(()) => {}
        Err(e) if netlink_errno(&e) == Some(libc::EEXIST) => {}
        Err(e) => {
            return Err(NetworkError::netlink(format!("add {gateway}/{prefix} to {name}"), e))
        }
    }

    let up = handle.link().set(LinkUnspec::new_with_index(index).up().build()).execute();
    within(|| format!("set {name} up"), up)
        .await?
        .map_err(|e| NetworkError::netlink(format!("set {name} up"), e))?;

    write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
    write_sysctl(&format!("/proc/sys/net/ipv4/conf/{name}/route_localnet"), "1")?;
    Ok(index)
}

/// Writes a sysctl of the calling thread's network namespace, skipping the write when the
/// value is already set (so a read-only /proc/sys is fine when nothing needs changing).
pub fn write_sysctl(path: &str, value: &str) -> Result<()> {
    if let Ok(current) = std::fs::read_to_string(path) {
        if current.trim() == value {
            return Ok(());
        }
    }
    std::fs::write(path, value).map_err(|e| NetworkError::io(format!("write {value} to {path}"), e))
}

/// What a pod's interface should look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodAddress {
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    /// MTU of both ends of the veth pair.
    pub mtu: u32,
}

/// Creates the veth pair of a pod: `host_name` in the host namespace, attached to the
/// bridge with index `bridge_index`, hairpin on, up, aliased `berth:<pod_id>`; its peer
/// `eth0` directly inside the namespace pinned at `netns_path`. Then configures the pod
/// side (see [`configure_pod_side`]). On failure the pair is deleted again.
pub async fn create_pod_veth(
    handle: &Handle,
    bridge_index: u32,
    host_name: &str,
    pod_id: &str,
    netns_path: &Path,
    addr: PodAddress,
) -> Result<()> {
    validate_ifname(host_name)?;
    let ns = std::fs::File::open(netns_path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            NetworkError::NotFound(format!("netns {}", netns_path.display()))
        }
        _ => NetworkError::io(format!("open netns {}", netns_path.display()), e),
    })?;
    if !netns::is_netns(netns_path) {
        return Err(NetworkError::InvalidArgument(format!(
            "{} is not a network namespace",
            netns_path.display()
        )));
    }
    create_veth_into(handle, host_name, &ns, Some(bridge_index), addr.mtu).await?;
    drop(ns);

    let result = async {
        let index = link_index(handle, host_name).await?;
        let up = handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .alias(format!("{VETH_ALIAS_PREFIX}{pod_id}"))
                    .up()
                    .build(),
            )
            .execute();
        within(|| format!("set {host_name} up"), up)
            .await?
            .map_err(|e| NetworkError::netlink(format!("set {host_name} up"), e))?;
        set_hairpin(handle, index, host_name).await?;
        configure_pod_side(netns_path, addr).await
    }
    .await;
    if result.is_err() {
        if let Err(e) = delete_link(handle, host_name).await {
            tracing::warn!(veth = host_name, error = %e, "could not delete veth after failed setup");
        }
    }
    result
}

/// Creates a veth pair: `host_name` here (on the bridge `controller`, if given), its peer
/// `eth0` in the namespace `ns`, both with `mtu`. `AlreadyExists` if either name is taken.
pub(crate) async fn create_veth_into(
    handle: &Handle,
    host_name: &str,
    ns: &std::fs::File,
    controller: Option<u32>,
    mtu: u32,
) -> Result<()> {
    let peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(POD_IFNAME)
        .setns_by_fd(ns.as_raw_fd())
        .mtu(mtu)
        .build();
    let mut veth =
        LinkVeth::new(host_name, POD_IFNAME).set_info_data(InfoData::Veth(InfoVeth::Peer(peer)));
    if let Some(index) = controller {
        veth = veth.controller(index);
    }
    let msg = veth.mtu(mtu).build();
    match within(|| format!("create veth {host_name}"), handle.link().add(msg).execute()).await? {
        Ok(()) => Ok(()),
        Err(e) if netlink_errno(&e) == Some(libc::EEXIST) => Err(NetworkError::AlreadyExists(
            format!("veth {host_name} (or {POD_IFNAME} in the pod's namespace)"),
        )),
        Err(e) => Err(NetworkError::netlink(format!("create veth {host_name}"), e)),
    }
}

/// Makes the host end `index` of a pair made ahead pod `pod_id`'s: renamed `name`, on the
/// bridge, with the pod's alias and up (one request: the kernel renames before it raises),
/// then in hairpin mode.
pub(crate) async fn adopt_host_end(
    handle: &Handle,
    index: u32,
    name: &str,
    bridge_index: u32,
    pod_id: &str,
) -> Result<()> {
    validate_ifname(name)?;
    let set = handle
        .link()
        .set(
            LinkUnspec::new_with_index(index)
                .name(name.to_string())
                .controller(bridge_index)
                .alias(format!("{VETH_ALIAS_PREFIX}{pod_id}"))
                .up()
                .build(),
        )
        .execute();
    match within(|| format!("rename {name}, attach it and set it up"), set).await? {
        Ok(()) => {}
        Err(e) if netlink_errno(&e) == Some(libc::EEXIST) => {
            return Err(NetworkError::AlreadyExists(format!("veth {name}")))
        }
        Err(e) => {
            return Err(NetworkError::netlink(format!("rename {name}, attach it and set it up"), e))
        }
    }
    set_hairpin(handle, index, name).await
}

async fn set_hairpin(handle: &Handle, index: u32, name: &str) -> Result<()> {
    let hairpin =
        handle.link().set_port(LinkBridgePort::new(index).hairpin(true).build()).execute();
    within(|| format!("set hairpin on {name}"), hairpin)
        .await?
        .map_err(|e| NetworkError::netlink(format!("set hairpin on {name}"), e))
}

/// Sets link `index` (`name`, for errors) up.
pub(crate) async fn set_up(handle: &Handle, index: u32, name: &str) -> Result<()> {
    let up = handle.link().set(LinkUnspec::new_with_index(index).up().build()).execute();
    within(|| format!("set {name} up in pod netns"), up)
        .await?
        .map_err(|e| NetworkError::netlink(format!("set {name} up in pod netns"), e))
}

/// Inside the pod namespace: `eth0` gets `ip/prefix` and goes up, `lo` goes up, and the
/// default route points at the gateway.
pub async fn configure_pod_side(netns_path: &Path, addr: PodAddress) -> Result<()> {
    let handle = netns::netlink_in(netns_path)?;
    let eth0 = link_index(&handle, POD_IFNAME).await?;
    for (name, index) in [(POD_IFNAME, eth0), ("lo", link_index(&handle, "lo").await?)] {
        set_up(&handle, index, name).await?;
    }
    address_pod_side(&handle, eth0, addr).await
}

/// `eth0` (`index`, up) gets `ip/prefix`, and the default route points at the gateway.
pub(crate) async fn address_pod_side(handle: &Handle, eth0: u32, addr: PodAddress) -> Result<()> {
    let add = handle.address().add(eth0, IpAddr::V4(addr.ip), addr.prefix).execute();
    match within(|| format!("add {}/{} to {POD_IFNAME}", addr.ip, addr.prefix), add).await? {
        Ok(()) => {}
        Err(e) if netlink_errno(&e) == Some(libc::EEXIST) => {}
        Err(e) => {
            return Err(NetworkError::netlink(
                format!("add {}/{} to {POD_IFNAME}", addr.ip, addr.prefix),
                e,
            ))
        }
    }
    let route =
        RouteMessageBuilder::<Ipv4Addr>::new().gateway(addr.gateway).output_interface(eth0).build();
    match within(|| "add default route".into(), handle.route().add(route).execute()).await? {
        Ok(()) => Ok(()),
        Err(e) if netlink_errno(&e) == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(NetworkError::netlink(format!("add default route via {}", addr.gateway), e)),
    }
}

/// What is configured on an interface, as read back over netlink (for checks and stats).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub index: u32,
    pub up: bool,
    pub mtu: Option<u32>,
    pub controller: Option<u32>,
    pub alias: Option<String>,
    pub ipv4: Vec<(Ipv4Addr, u8)>,
}

/// The alias (`IFLA_IFALIAS`) of a link, if it has one.
pub fn alias_of(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfAlias(alias) => Some(alias.as_str()),
        _ => None,
    })
}

/// Reads the state of the link `name` through `handle`.
pub async fn link_state(handle: &Handle, name: &str) -> Result<Option<LinkState>> {
    let Some(link) = find_link(handle, name).await? else {
        return Ok(None);
    };
    let index = link.header.index;
    let mut state = LinkState {
        index,
        up: link.header.flags.contains(LinkFlags::Up),
        mtu: None,
        controller: None,
        alias: None,
        ipv4: Vec::new(),
    };
    for attr in &link.attributes {
        match attr {
            LinkAttribute::Controller(c) => state.controller = Some(*c),
            LinkAttribute::IfAlias(a) => state.alias = Some(a.clone()),
            LinkAttribute::Mtu(m) => state.mtu = Some(*m),
            _ => {}
        }
    }
    let addrs = dump(&format!("list addresses of {name}"), || {
        handle.address().get().set_link_index_filter(index).execute()
    })
    .await?
    .map_err(|e| NetworkError::netlink(format!("list addresses of {name}"), e))?;
    for a in addrs {
        for attr in &a.attributes {
            if let AddressAttribute::Local(IpAddr::V4(v)) = attr {
                state.ipv4.push((*v, a.header.prefix_len));
            }
        }
    }
    Ok(Some(state))
}

/// The MTU of the interface that holds the IPv4 default route, if there is one: the
/// uplink pods' traffic leaves through, so pods should not send larger packets.
pub async fn uplink_mtu(handle: &Handle) -> Result<Option<u32>> {
    let routes = dump("list routes", || {
        handle.route().get(RouteMessageBuilder::<Ipv4Addr>::new().build()).execute()
    })
    .await?
    .map_err(|e| NetworkError::netlink("list routes", e))?;
    let oif = routes
        .iter()
        .filter(|r| r.header.destination_prefix_length == 0)
        .flat_map(|r| r.attributes.iter())
        .find_map(|a| match a {
            RouteAttribute::Oif(i) => Some(*i),
            _ => None,
        });
    let Some(oif) = oif else {
        return Ok(None);
    };
    let mut links = handle.link().get().match_index(oif).execute();
    let link = within(|| format!("look up link {oif}"), links.try_next())
        .await?
        .map_err(|e| NetworkError::netlink(format!("look up link {oif}"), e))?;
    Ok(link.and_then(|l| {
        l.attributes.iter().find_map(|a| match a {
            LinkAttribute::Mtu(m) => Some(*m),
            _ => None,
        })
    }))
}

/// Host veths carrying a berth alias, as (veth name, pod id): what start-up
/// reconciliation compares with the pods it knows.
pub async fn pod_veths(handle: &Handle) -> Result<Vec<(String, String)>> {
    let links = dump("list links", || handle.link().get().execute())
        .await?
        .map_err(|e| NetworkError::netlink("list links", e))?;
    let mut out = Vec::new();
    for link in links {
        let mut name = None;
        let mut pod = None;
        for attr in link.attributes {
            match attr {
                LinkAttribute::IfName(n) => name = Some(n),
                LinkAttribute::IfAlias(a) => {
                    pod = a.strip_prefix(VETH_ALIAS_PREFIX).map(str::to_string)
                }
                _ => {}
            }
        }
        if let (Some(name), Some(pod)) = (name, pod) {
            out.push((name, pod));
        }
    }
    out.sort();
    Ok(out)
}

/// The IPv4 default gateway of the main table seen through `handle`, if any.
pub async fn default_gateway(handle: &Handle) -> Result<Option<Ipv4Addr>> {
    let routes = dump("list routes", || {
        handle.route().get(RouteMessageBuilder::<Ipv4Addr>::new().build()).execute()
    })
    .await?
    .map_err(|e| NetworkError::netlink("list routes", e))?;
    for r in routes {
        if r.header.destination_prefix_length != 0 {
            continue;
        }
        for attr in &r.attributes {
            if let RouteAttribute::Gateway(RouteAddress::Inet(gw)) = attr {
                return Ok(Some(*gw));
            }
        }
    }
    Ok(None)
}

/// Inside the pod namespace at `netns_path`: brings `lo` up (CNI mode, where the plugins
/// configure `eth0` but not necessarily the loopback). Idempotent.
pub async fn loopback_up(netns_path: &Path) -> Result<()> {
    let handle = netns::netlink_in(netns_path)?;
    let lo = link_index(&handle, "lo").await?;
    let up = handle.link().set(LinkUnspec::new_with_index(lo).up().build()).execute();
    within(|| "set lo up in pod netns".into(), up)
        .await?
        .map_err(|e| NetworkError::netlink("set lo up in pod netns", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unanswered_request_fails_naming_itself() {
        let limit = std::time::Duration::from_millis(20);
        let lost = std::future::pending::<()>();
        let err = within_for(limit, || "create veth bv123".into(), lost).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "create veth bv123: no answer from the kernel within 20ms (netlink)"
        );
        assert_eq!(within_for(limit, || unreachable!(), async { 7 }).await.unwrap(), 7);
    }

    #[test]
    fn veth_names_fit_and_are_stable() {
        let a = veth_name("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
        assert_eq!(a.len(), 12);
        assert!(a.len() <= MAX_IFNAME_LEN);
        assert!(a.starts_with("veth"));
        assert_eq!(
            a,
            veth_name("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
        );
        assert_ne!(a, veth_name("another-pod"));
        validate_ifname(&a).unwrap();
    }

    #[test]
    fn ifname_validation() {
        for ok in ["berth0", "bt-1234abcd", "a", "123456789012345"] {
            validate_ifname(ok).unwrap();
        }
        for bad in ["", "1234567890123456", "a/b", "a b", "a:b", ".", ".."] {
            assert!(validate_ifname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bridge_mac_is_local_unicast() {
        let mac = bridge_mac("berth0");
        assert_eq!(mac.len(), 6);
        assert_eq!(mac[0] & 0x03, 0x02);
        assert_eq!(mac, bridge_mac("berth0"));
    }
}
