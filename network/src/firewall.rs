//! Masquerade and hostPort DNAT in an nftables table owned entirely by berth.
//!
//! Everything lives in one `ip` family table (default `berth`; configurable, which tests
//! use to run side by side). berth never touches rules outside it, and anything inside it
//! may be rewritten by berth at any time. Changes are nf_tables netlink batches sent by
//! berthd itself ([`crate::nft`]), so each change is one atomic transaction: it applies
//! entirely or not at all. No `nft` binary is needed (operators may still use `nft list
//! ruleset`: the rules and comments read as if `nft` had written them).
//!
//! ```text
//! table ip berth {
//!   chain prerouting  { type nat hook prerouting priority -100; }  # hostPort DNAT (per pod)
//!   chain output      { type nat hook output priority -100; }      # same, for local clients
//!   chain postrouting { type nat hook postrouting priority 100; }  # masquerade (base only)
//! }
//! ```
//!
//! * `postrouting` belongs to [`Firewall::ensure_base`], which flushes and rewrites it:
//!   egress masquerade for traffic from the subnet to anywhere outside it; masquerade of
//!   `127.0.0.0/8` sources leaving through the bridge (hostPort via localhost, together
//!   with `route_localnet`, see [`crate::bridge`]); and masquerade of DNATed traffic from
//!   the subnet to the subnet (a pod reaching a hostPort that leads back to a pod on the
//!   same bridge — hairpin — would otherwise get a reply straight from the other pod's
//!   address and drop it).
//! * `prerouting` and `output` hold per-pod rules only. Every one carries the comment
//!   `berth:pod=<pod id>|<proto>/<host ip>:<host port>` (nft's comment format: the rule's
//!   userdata); [`Firewall::remove_pod`] lists the table, finds that pod's rules by the pod
//!   id in their comment and deletes them by handle in one transaction. The same listing
//!   lets [`Firewall::add_port_mappings`] refuse a host port another pod already holds
//!   (`AlreadyExists`).
//!
//! A hostPort without a host IP matches any local address (`fib daddr type local`, which
//! includes 127.0.0.1); with one it matches that address only.
//!
//! Note: this table does not open the host's filter policy. A host whose `forward` chain
//! (in another table, e.g. iptables' FORWARD with policy DROP) drops traffic will drop pod
//! traffic too: a drop verdict in any table is final.
//!
//! Why netlink through `netlink-packet-netfilter` (issue 20 item 3, issue 18 item 5):
//! piping scripts to `nft -f -` cost a process spawn per change (StopPodSandbox spent
//! most of its ~30-40 ms there) and failed on machines without the `nft` binary. Of the
//! crates made for nftables over netlink: `rustables` is GPL-3.0-or-later (berth is
//! Apache-2.0), needs bindgen and libclang to build, and has no `fib` expression;
//! `nftnl`/`mnl` bind the C libnftnl (GPL-2.0-or-later) and libmnl, and `nftnl` has neither
//! `fib` nor rule userdata (comments). `netlink-packet-netfilter` (MIT, rust-netlink, the
//! family of the `netlink-sys`/`netlink-packet-core`/`rtnetlink` crates berth already
//! uses) has the nf_tables messages, batch framing, typed rule attributes (userdata
//! included) and a generic form for the expressions it has no types for (`fib`, `nat`,
//! `masq`, `ct`), in pure Rust; [`crate::nft`] is the thin layer on it.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::bridge::validate_ifname;
use crate::error::{validate_pod_id, NetworkError, Result};
use crate::nft::socket::Netlink;
use crate::nft::{Batch, Expr, Header, ListedRule, MetaLoad, NatHook, Op};

/// The default table name.
pub const DEFAULT_TABLE: &str = "berth";
/// Comment prefix of per-pod rules. The whole comment is
/// `berth:pod=<pod id>|<proto>/<host ip or 0.0.0.0>:<host port>`: the pod id finds a pod's
/// rules exactly (`|` cannot occur in a pod id), the rest detects hostPort conflicts
/// between pods without parsing rule expressions.
pub const POD_COMMENT_PREFIX: &str = "berth:pod=";

/// Transport protocol of a port mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    /// The IP protocol number.
    fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    /// The protocol named in lowercase (`tcp`, `udp`, `sctp`), as nftables and CNI do.
    pub fn from_name(name: &str) -> Option<Protocol> {
        [Protocol::Tcp, Protocol::Udp, Protocol::Sctp].into_iter().find(|p| p.nft() == name)
    }
}

/// One hostPort: traffic to `host_ip:host_port` (any local address when `host_ip` is
/// `None` or `0.0.0.0`) is forwarded to `pod_ip:container_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortMapping {
    pub protocol: Protocol,
    pub host_port: u16,
    pub container_port: u16,
    pub host_ip: Option<Ipv4Addr>,
}

impl PortMapping {
    /// A mapping on every local address.
    pub fn new(protocol: Protocol, host_port: u16, container_port: u16) -> Self {
        PortMapping { protocol, host_port, container_port, host_ip: None }
    }

    /// `<proto>/<host ip>:<host port>`, with `0.0.0.0` for any address.
    fn key(&self) -> String {
        format!(
            "{}/{}:{}",
            self.protocol.nft(),
            self.specific_host_ip().unwrap_or(Ipv4Addr::UNSPECIFIED),
            self.host_port
        )
    }

    /// Whether two mappings claim the same host port (same protocol and port, and the
    /// same host IP or either on every address).
    fn conflicts_with(&self, other: &PortMapping) -> bool {
        self.protocol == other.protocol
            && self.host_port == other.host_port
            && match (self.specific_host_ip(), other.specific_host_ip()) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }

    /// Parses [`PortMapping::key`] back (container port unknown, set to 0).
    fn from_key(key: &str) -> Option<PortMapping> {
        let (proto, rest) = key.split_once('/')?;
        let (ip, port) = rest.rsplit_once(':')?;
        let protocol = Protocol::from_name(proto)?;
        Some(PortMapping {
            protocol,
            host_port: port.parse().ok()?,
            container_port: 0,
            host_ip: Some(ip.parse().ok()?),
        })
    }

    /// The host IP, with `0.0.0.0` meaning "any".
    fn specific_host_ip(&self) -> Option<Ipv4Addr> {
        self.host_ip.filter(|ip| !ip.is_unspecified())
    }
}

/// The nftables side of the bridge network.
#[derive(Debug)]
pub struct Firewall {
    table: String,
    subnet: Ipv4Net,
    bridge: String,
    /// Serialises list-then-change sequences within this process.
    lock: tokio::sync::Mutex<()>,
    /// The netlink socket all of it goes through.
    netlink: Netlink,
}

impl Firewall {
    /// A firewall for `subnet` behind `bridge`, in the table `table` (family `ip`).
    /// `table` must be 1–64 characters of `[A-Za-z0-9_-]`, starting with a letter.
    pub fn new(table: &str, subnet: Ipv4Net, bridge: &str) -> Result<Self> {
        let ok = !table.is_empty()
            && table.len() <= 64
            && table.starts_with(|c: char| c.is_ascii_alphabetic())
            && table.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return Err(NetworkError::InvalidArgument(format!(
                "nftables table name {table:?} must be 1-64 characters of [A-Za-z0-9_-], starting with a letter"
            )));
        }
        validate_ifname(bridge)?;
        Ok(Firewall {
            table: table.to_string(),
            subnet: subnet.trunc(),
            bridge: bridge.to_string(),
            lock: tokio::sync::Mutex::new(()),
            netlink: Netlink::default(),
        })
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The transaction [`Firewall::ensure_base`] applies; in nft's words:
    ///
    /// ```text
    /// add table ip T
    /// add chain ip T prerouting { type nat hook prerouting priority -100; policy accept; }
    /// add chain ip T output { type nat hook output priority -100; policy accept; }
    /// add chain ip T postrouting { type nat hook postrouting priority 100; policy accept; }
    /// flush chain ip T postrouting
    /// add rule ip T postrouting ip saddr S ip daddr != S masquerade comment "berth:egress"
    /// add rule ip T postrouting oifname "B" ip saddr 127.0.0.0/8 masquerade comment "berth:localhost"
    /// add rule ip T postrouting ip saddr S ip daddr S ct status dnat masquerade comment "berth:hairpin"
    /// ```
    fn base_batch(&self) -> Batch<'_> {
        let s = self.subnet;
        let mut batch = Batch::new(&self.table);
        batch.push(Op::AddTable);
        for (name, hook, priority) in [
            ("prerouting", NatHook::Prerouting, -100),
            ("output", NatHook::Output, -100),
            ("postrouting", NatHook::Postrouting, 100),
        ] {
            batch.push(Op::AddNatChain { name, hook, priority });
        }
        batch.push(Op::FlushChain { chain: "postrouting" });
        let masquerade = |parts: Vec<Vec<Expr>>, comment: &str| Op::AddRule {
            chain: "postrouting",
            exprs: parts.into_iter().flatten().chain([Expr::Masquerade]).collect(),
            comment: comment.to_string(),
        };
        let localhost: Ipv4Net = "127.0.0.0/8".parse().expect("valid prefix");
        batch.push(masquerade(vec![ip_saddr(s, true), ip_daddr(s, false)], "berth:egress"));
        batch.push(masquerade(
            vec![oifname_is(&self.bridge), ip_saddr(localhost, true)],
            "berth:localhost",
        ));
        batch.push(masquerade(
            vec![ip_saddr(s, true), ip_daddr(s, true), ct_status_dnat()],
            "berth:hairpin",
        ));
        batch
    }

    /// Creates the table and its chains if missing and (re)writes the masquerade rules.
    /// Idempotent; per-pod rules are kept.
    pub async fn ensure_base(&self) -> Result<()> {
        let _g = self.lock.lock().await;
        self.apply(&self.base_batch()).await
    }

    /// The `add rule` ops for a pod's mappings (no validation of the pod id); in nft's
    /// words, per mapping and for each of `prerouting` and `output`:
    ///
    /// ```text
    /// add rule ip T CHAIN DEST PROTO dport HP dnat to POD_IP:CP comment "berth:pod=ID|KEY"
    /// ```
    ///
    /// where DEST is `fib daddr type local` or `ip daddr HOST_IP`.
    fn mapping_rules(&self, pod_id: &str, pod_ip: Ipv4Addr, mappings: &[PortMapping]) -> Vec<Op> {
        let mut ops = Vec::new();
        for m in mappings {
            let mut exprs = match m.specific_host_ip() {
                Some(ip) => ip_daddr(Ipv4Net::from(ip), true),
                None => vec![Expr::FibDaddrType, cmp_eq(RTN_LOCAL.to_ne_bytes())],
            };
            exprs.extend([
                Expr::Meta(MetaLoad::L4Proto),
                cmp_eq([m.protocol.number()]),
                Expr::Payload { header: Header::Transport, offset: 2, len: 2 },
                cmp_eq(m.host_port.to_be_bytes()),
                Expr::Immediate { reg: 1, data: pod_ip.octets().to_vec() },
                Expr::Immediate { reg: 2, data: m.container_port.to_be_bytes().to_vec() },
                Expr::Dnat,
            ]);
            let comment = format!("{POD_COMMENT_PREFIX}{pod_id}|{}", m.key());
            for chain in ["prerouting", "output"] {
                ops.push(Op::AddRule { chain, exprs: exprs.clone(), comment: comment.clone() });
            }
        }
        ops
    }

    /// Validates mappings: ports non-zero, and no two mappings for one protocol, host IP
    /// and host port.
    pub fn validate_mappings(mappings: &[PortMapping]) -> Result<()> {
        let mut seen = Vec::new();
        for m in mappings {
            if m.host_port == 0 || m.container_port == 0 {
                return Err(NetworkError::InvalidArgument(format!(
                    "port mapping {m:?}: host and container ports must be 1-65535"
                )));
            }
            if seen.iter().any(|s: &PortMapping| s.conflicts_with(m)) {
                return Err(NetworkError::InvalidArgument(format!(
                    "host port {} is mapped twice",
                    m.key()
                )));
            }
            seen.push(*m);
        }
        Ok(())
    }

    /// Sets the hostPort mappings of a pod: in one transaction, any rules the pod already
    /// had are removed and one DNAT rule per mapping is added to `prerouting` and `output`.
    /// Calling it again with the same arguments leaves the same rules. The base table must
    /// exist ([`Firewall::ensure_base`]).
    pub async fn add_port_mappings(
        &self,
        pod_id: &str,
        pod_ip: Ipv4Addr,
        mappings: &[PortMapping],
    ) -> Result<()> {
        validate_pod_id(pod_id)?;
        Self::validate_mappings(mappings)?;
        if !self.subnet.contains(&pod_ip) {
            return Err(NetworkError::InvalidArgument(format!(
                "pod ip {pod_ip} is not in {}",
                self.subnet
            )));
        }
        let _g = self.lock.lock().await;
        let rules = self.rules().await?;
        for (_, _, comment) in &rules {
            let Some((other, key)) = comment.as_deref().and_then(parse_comment) else {
                continue;
            };
            let Some(taken) = key.and_then(PortMapping::from_key) else {
                continue;
            };
            if other == pod_id {
                continue;
            }
            if let Some(m) = mappings.iter().find(|m| m.conflicts_with(&taken)) {
                return Err(NetworkError::AlreadyExists(format!(
                    "host port {} is already mapped by pod {other}",
                    m.key()
                )));
            }
        }
        let mut batch = self.delete_batch(&pod_handles(&rules, pod_id));
        for op in self.mapping_rules(pod_id, pod_ip, mappings) {
            batch.push(op);
        }
        self.apply(&batch).await
    }

    /// Removes every rule of a pod. Succeeds if there are none, or no table.
    pub async fn remove_pod(&self, pod_id: &str) -> Result<()> {
        validate_pod_id(pod_id)?;
        let _g = self.lock.lock().await;
        let handles = self.pod_rule_handles(pod_id).await?;
        self.apply(&self.delete_batch(&handles)).await
    }

    /// Deletes the whole table. Succeeds if it does not exist.
    pub async fn remove_all(&self) -> Result<()> {
        let _g = self.lock.lock().await;
        // `add` first makes the `delete` valid whether or not the table exists.
        let mut batch = Batch::new(&self.table);
        batch.push(Op::AddTable);
        batch.push(Op::DeleteTable);
        self.apply(&batch).await
    }

    /// Whether the table exists.
    pub async fn table_exists(&self) -> Result<bool> {
        self.netlink.table_exists(&self.table).await
    }

    /// The (chain, handle) of every rule of a pod.
    pub async fn pod_rules(&self, pod_id: &str) -> Result<Vec<(String, u64)>> {
        validate_pod_id(pod_id)?;
        self.pod_rule_handles(pod_id).await
    }

    /// Pod ids that have rules in the table (for start-up reconciliation).
    pub async fn pods(&self) -> Result<Vec<String>> {
        let mut pods: Vec<String> = self
            .rules()
            .await?
            .into_iter()
            .filter_map(|(_, _, c)| parse_comment(c.as_deref()?).map(|(pod, _)| pod.to_string()))
            .collect();
        pods.sort();
        pods.dedup();
        Ok(pods)
    }

    fn delete_batch(&self, handles: &[(String, u64)]) -> Batch<'_> {
        let mut batch = Batch::new(&self.table);
        for (chain, handle) in handles {
            batch.push(Op::DeleteRule { chain: chain.clone(), handle: *handle });
        }
        batch
    }

    async fn pod_rule_handles(&self, pod_id: &str) -> Result<Vec<(String, u64)>> {
        Ok(pod_handles(&self.rules().await?, pod_id))
    }

    /// Every rule of the table as (chain, handle, comment); empty if there is no table.
    async fn rules(&self) -> Result<Vec<ListedRule>> {
        self.netlink.list_rules(&self.table).await
    }

    /// Commits `batch` (nothing to do if it is empty).
    async fn apply(&self, batch: &Batch<'_>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        if tracing::enabled!(tracing::Level::DEBUG) {
            let ops: Vec<String> = batch.ops().iter().map(ToString::to_string).collect();
            tracing::debug!(table = %self.table, ?ops, "applying nftables transaction");
        }
        self.netlink.commit(batch).await
    }
}

/// `RTN_LOCAL`: the route type `fib daddr type local` compares with.
const RTN_LOCAL: u32 = 2;

fn cmp_eq<const N: usize>(data: [u8; N]) -> Expr {
    Expr::Cmp { eq: true, data: data.to_vec() }
}

/// `ip saddr NET` (`eq`) or `ip saddr != NET`.
fn ip_saddr(net: Ipv4Net, eq: bool) -> Vec<Expr> {
    ip_prefix(12, net, eq)
}

/// `ip daddr NET` (`eq`) or `ip daddr != NET`.
fn ip_daddr(net: Ipv4Net, eq: bool) -> Vec<Expr> {
    ip_prefix(16, net, eq)
}

/// The address at `offset` of the IPv4 header in `net` (or not), encoded as nft encodes
/// it: a prefix of whole bytes loads and compares just those bytes; any other prefix
/// loads the address, masks it and compares.
fn ip_prefix(offset: u32, net: Ipv4Net, eq: bool) -> Vec<Expr> {
    let (addr, len) = (net.network().octets(), net.prefix_len());
    if len % 8 == 0 && len > 0 {
        let bytes = usize::from(len / 8);
        return vec![
            Expr::Payload { header: Header::Network, offset, len: u32::from(len / 8) },
            Expr::Cmp { eq, data: addr[..bytes].to_vec() },
        ];
    }
    vec![
        Expr::Payload { header: Header::Network, offset, len: 4 },
        Expr::Bitwise { mask: net.netmask().octets().to_vec(), xor: vec![0; 4] },
        Expr::Cmp { eq, data: addr.to_vec() },
    ]
}

/// `oifname "NAME"`: the name NUL padded to `IFNAMSIZ`, as nft compares it.
fn oifname_is(name: &str) -> Vec<Expr> {
    let mut data = name.as_bytes().to_vec();
    data.resize(16, 0);
    vec![Expr::Meta(MetaLoad::OifName), Expr::Cmp { eq: true, data }]
}

/// `ct status dnat`.
fn ct_status_dnat() -> Vec<Expr> {
    // IPS_DST_NAT (linux/netfilter/nf_conntrack_common.h); the status is in host order.
    const IPS_DST_NAT: u32 = 1 << 5;
    vec![
        Expr::CtStatus,
        Expr::Bitwise { mask: IPS_DST_NAT.to_ne_bytes().to_vec(), xor: vec![0; 4] },
        Expr::Cmp { eq: false, data: vec![0; 4] },
    ]
}

/// Splits a per-pod rule comment into the pod id and the mapping key (if any).
fn parse_comment(comment: &str) -> Option<(&str, Option<&str>)> {
    let rest = comment.strip_prefix(POD_COMMENT_PREFIX)?;
    Some(match rest.split_once('|') {
        Some((pod, key)) => (pod, Some(key)),
        None => (rest, None),
    })
}

/// The (chain, handle) of the rules of `pod_id` among `rules`.
fn pod_handles(rules: &[(String, u64, Option<String>)], pod_id: &str) -> Vec<(String, u64)> {
    rules
        .iter()
        .filter(|(_, _, c)| {
            c.as_deref().and_then(parse_comment).is_some_and(|(pod, _)| pod == pod_id)
        })
        .map(|(chain, handle, _)| (chain.clone(), *handle))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fw() -> Firewall {
        Firewall::new("berth", "10.88.0.0/16".parse().unwrap(), "berth0").unwrap()
    }

    #[test]
    fn table_names_are_checked() {
        let net: Ipv4Net = "10.0.0.0/24".parse().unwrap();
        for ok in ["berth", "bt-1234", "a_b"] {
            Firewall::new(ok, net, "br0").unwrap();
        }
        for bad in ["", "1abc", "a b", "a;b", "a\"b", &"x".repeat(65)] {
            assert!(Firewall::new(bad, net, "br0").is_err(), "{bad:?}");
        }
    }

    /// The DNAT rule's tail after the destination match, as `nft --debug=netlink` shows
    /// `PROTO dport HP dnat to 10.88.0.5:CP`.
    fn dnat_tail(proto: u8, hp: u16, cp: u16) -> Vec<Expr> {
        vec![
            Expr::Meta(MetaLoad::L4Proto),
            Expr::Cmp { eq: true, data: vec![proto] },
            Expr::Payload { header: Header::Transport, offset: 2, len: 2 },
            Expr::Cmp { eq: true, data: hp.to_be_bytes().to_vec() },
            Expr::Immediate { reg: 1, data: vec![10, 88, 0, 5] },
            Expr::Immediate { reg: 2, data: cp.to_be_bytes().to_vec() },
            Expr::Dnat,
        ]
    }

    #[test]
    fn mapping_rules_cover_both_chains_and_host_ips() {
        let ops = fw().mapping_rules(
            "pod1",
            "10.88.0.5".parse().unwrap(),
            &[
                PortMapping::new(Protocol::Tcp, 8080, 80),
                PortMapping {
                    protocol: Protocol::Udp,
                    host_port: 5353,
                    container_port: 53,
                    host_ip: Some("192.0.2.1".parse().unwrap()),
                },
                PortMapping {
                    protocol: Protocol::Sctp,
                    host_port: 9000,
                    container_port: 9000,
                    host_ip: Some(Ipv4Addr::UNSPECIFIED),
                },
            ],
        );
        let local =
            vec![Expr::FibDaddrType, Expr::Cmp { eq: true, data: 2u32.to_ne_bytes().to_vec() }];
        let on_ip = vec![
            Expr::Payload { header: Header::Network, offset: 16, len: 4 },
            Expr::Cmp { eq: true, data: vec![192, 0, 2, 1] },
        ];
        let rule = |chain, dest: &Vec<Expr>, tail: Vec<Expr>, comment: &str| Op::AddRule {
            chain,
            exprs: dest.iter().cloned().chain(tail).collect(),
            comment: comment.to_string(),
        };
        let mut want = Vec::new();
        for (dest, tail, comment) in [
            (&local, dnat_tail(6, 8080, 80), "berth:pod=pod1|tcp/0.0.0.0:8080"),
            (&on_ip, dnat_tail(17, 5353, 53), "berth:pod=pod1|udp/192.0.2.1:5353"),
            (&local, dnat_tail(132, 9000, 9000), "berth:pod=pod1|sctp/0.0.0.0:9000"),
        ] {
            for chain in ["prerouting", "output"] {
                want.push(rule(chain, dest, tail.clone(), comment));
            }
        }
        assert_eq!(ops, want);
    }

    #[test]
    fn base_rules_match_nfts_encoding() {
        let ops = fw().base_batch().ops().to_vec();
        assert_eq!(ops.len(), 8);
        assert_eq!(ops[0], Op::AddTable);
        assert_eq!(
            ops[1],
            Op::AddNatChain { name: "prerouting", hook: NatHook::Prerouting, priority: -100 }
        );
        assert_eq!(ops[4], Op::FlushChain { chain: "postrouting" });
        let exprs = |op: &Op| match op {
            Op::AddRule { chain: "postrouting", exprs, .. } => exprs.clone(),
            other => panic!("{other:?}"),
        };
        // `ip saddr 10.88.0.0/16 ip daddr != 10.88.0.0/16 masquerade`
        let net = |offset, eq| {
            [
                Expr::Payload { header: Header::Network, offset, len: 2 },
                Expr::Cmp { eq, data: vec![10, 88] },
            ]
        };
        let egress: Vec<Expr> =
            net(12, true).into_iter().chain(net(16, false)).chain([Expr::Masquerade]).collect();
        assert_eq!(exprs(&ops[5]), egress);
        // `oifname "berth0" ip saddr 127.0.0.0/8 masquerade`
        let mut name = b"berth0".to_vec();
        name.resize(16, 0);
        assert_eq!(
            exprs(&ops[6]),
            vec![
                Expr::Meta(MetaLoad::OifName),
                Expr::Cmp { eq: true, data: name },
                Expr::Payload { header: Header::Network, offset: 12, len: 1 },
                Expr::Cmp { eq: true, data: vec![127] },
                Expr::Masquerade,
            ]
        );
        // `... ct status dnat masquerade`
        let hairpin = exprs(&ops[7]);
        assert_eq!(
            hairpin[4..],
            [
                Expr::CtStatus,
                Expr::Bitwise { mask: 0x20u32.to_ne_bytes().to_vec(), xor: vec![0; 4] },
                Expr::Cmp { eq: false, data: vec![0; 4] },
                Expr::Masquerade,
            ]
        );
        let comments: Vec<&str> = ops[5..]
            .iter()
            .map(|op| match op {
                Op::AddRule { comment, .. } => comment.as_str(),
                _ => "",
            })
            .collect();
        assert_eq!(comments, ["berth:egress", "berth:localhost", "berth:hairpin"]);
    }

    #[test]
    fn prefixes_are_encoded_as_nft_does() {
        let p = |s: &str| s.parse::<Ipv4Net>().unwrap();
        let load = |len| Expr::Payload { header: Header::Network, offset: 12, len };
        // Whole bytes: just those bytes (nft: `payload load 3b`, `cmp eq`).
        assert_eq!(
            ip_saddr(p("10.88.1.0/24"), true),
            [load(3), Expr::Cmp { eq: true, data: vec![10, 88, 1] }]
        );
        assert_eq!(
            ip_saddr(p("10.88.1.1/32"), false),
            [load(4), Expr::Cmp { eq: false, data: vec![10, 88, 1, 1] }]
        );
        // Otherwise the address, masked (nft: `bitwise reg 1 = (reg 1 & 0x00f0ffff) ^ 0`).
        assert_eq!(
            ip_saddr(p("10.88.16.0/20"), true),
            [
                load(4),
                Expr::Bitwise { mask: vec![255, 255, 240, 0], xor: vec![0; 4] },
                Expr::Cmp { eq: true, data: vec![10, 88, 16, 0] },
            ]
        );
        assert_eq!(
            ip_saddr(p("0.0.0.0/0"), true),
            [
                load(4),
                Expr::Bitwise { mask: vec![0; 4], xor: vec![0; 4] },
                Expr::Cmp { eq: true, data: vec![0; 4] },
            ]
        );
    }

    #[test]
    fn mapping_validation() {
        let tcp = |hp, cp| PortMapping::new(Protocol::Tcp, hp, cp);
        Firewall::validate_mappings(&[tcp(80, 80), PortMapping::new(Protocol::Udp, 80, 80)])
            .unwrap();
        assert!(Firewall::validate_mappings(&[tcp(0, 80)]).is_err());
        assert!(Firewall::validate_mappings(&[tcp(80, 0)]).is_err());
        assert!(Firewall::validate_mappings(&[tcp(80, 80), tcp(80, 81)]).is_err());
        // 0.0.0.0 and "no host ip" are the same thing.
        let mut any = tcp(80, 81);
        any.host_ip = Some(Ipv4Addr::UNSPECIFIED);
        assert!(Firewall::validate_mappings(&[tcp(80, 80), any]).is_err());
        // "any" overlaps a specific address; two specific ones do not overlap.
        let on = |ip: &str, hp| PortMapping { host_ip: Some(ip.parse().unwrap()), ..tcp(hp, 80) };
        assert!(Firewall::validate_mappings(&[tcp(80, 80), on("192.0.2.1", 80)]).is_err());
        Firewall::validate_mappings(&[on("192.0.2.1", 80), on("192.0.2.2", 80)]).unwrap();
    }

    #[test]
    fn comments_round_trip() {
        let m = PortMapping {
            host_ip: Some("192.0.2.1".parse().unwrap()),
            ..PortMapping::new(Protocol::Sctp, 9, 10)
        };
        let back = PortMapping::from_key(&m.key()).unwrap();
        assert!(back.conflicts_with(&m));
        assert_eq!(back.host_ip, m.host_ip);
        assert_eq!(
            parse_comment("berth:pod=abc|tcp/0.0.0.0:80"),
            Some(("abc", Some("tcp/0.0.0.0:80")))
        );
        assert_eq!(parse_comment("berth:pod=abc"), Some(("abc", None)));
        assert_eq!(parse_comment("berth:egress"), None);
        let rules = vec![
            ("prerouting".to_string(), 1, Some("berth:pod=abc|tcp/0.0.0.0:80".to_string())),
            ("prerouting".to_string(), 2, Some("berth:pod=abcd|tcp/0.0.0.0:81".to_string())),
            ("postrouting".to_string(), 3, Some("berth:egress".to_string())),
            ("output".to_string(), 4, None),
        ];
        assert_eq!(pod_handles(&rules, "abc"), vec![("prerouting".to_string(), 1)]);
    }
}
