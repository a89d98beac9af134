//! Masquerade and hostPort DNAT in an nftables table owned entirely by berth.
//!
//! Everything lives in one `ip` family table (default `berth`; configurable, which tests
//! use to run side by side). berth never touches rules outside it, and anything inside it
//! may be rewritten by berth at any time. Changes are nftables scripts piped to
//! `nft -f -`, so each change is one atomic transaction: it applies entirely or not at all.
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
//!   `berth:pod=<pod id>|<proto>/<host ip>:<host port>`; [`Firewall::remove_pod`] lists
//!   the table, finds that pod's rules by the pod id in their comment and deletes them by
//!   handle in one transaction. The same listing lets [`Firewall::add_port_mappings`]
//!   refuse a host port another pod already holds (`AlreadyExists`).
//!
//! A hostPort without a host IP matches any local address (`fib daddr type local`, which
//! includes 127.0.0.1); with one it matches that address only.
//!
//! Note: this table does not open the host's filter policy. A host whose `forward` chain
//! (in another table, e.g. iptables' FORWARD with policy DROP) drops traffic will drop pod
//! traffic too: a drop verdict in any table is final.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;

use ipnet::Ipv4Net;
use tokio::io::AsyncWriteExt;

use crate::bridge::validate_ifname;
use crate::error::{validate_pod_id, NetworkError, Result};

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
    nft: PathBuf,
    /// Serialises list-then-delete sequences within this process.
    lock: tokio::sync::Mutex<()>,
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
            nft: PathBuf::from("nft"),
            lock: tokio::sync::Mutex::new(()),
        })
    }

    /// Uses another `nft` binary (default: `nft` from `PATH`).
    pub fn with_nft_binary(mut self, nft: impl Into<PathBuf>) -> Self {
        self.nft = nft.into();
        self
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The script [`Firewall::ensure_base`] applies.
    pub fn base_script(&self) -> String {
        let (t, s, br) = (&self.table, self.subnet, &self.bridge);
        format!(
            "add table ip {t}\n\
             add chain ip {t} prerouting {{ type nat hook prerouting priority -100; policy accept; }}\n\
             add chain ip {t} output {{ type nat hook output priority -100; policy accept; }}\n\
             add chain ip {t} postrouting {{ type nat hook postrouting priority 100; policy accept; }}\n\
             flush chain ip {t} postrouting\n\
             add rule ip {t} postrouting ip saddr {s} ip daddr != {s} masquerade comment \"berth:egress\"\n\
             add rule ip {t} postrouting oifname \"{br}\" ip saddr 127.0.0.0/8 masquerade comment \"berth:localhost\"\n\
             add rule ip {t} postrouting ip saddr {s} ip daddr {s} ct status dnat masquerade comment \"berth:hairpin\"\n"
        )
    }

    /// Creates the table and its chains if missing and (re)writes the masquerade rules.
    /// Idempotent; per-pod rules are kept.
    pub async fn ensure_base(&self) -> Result<()> {
        let _g = self.lock.lock().await;
        self.apply(&self.base_script()).await
    }

    /// The `add rule` lines for a pod's mappings (no validation of the pod id).
    fn mapping_rules(&self, pod_id: &str, pod_ip: Ipv4Addr, mappings: &[PortMapping]) -> String {
        let t = &self.table;
        let mut script = String::new();
        for m in mappings {
            let dest = match m.specific_host_ip() {
                Some(ip) => format!("ip daddr {ip}"),
                None => "fib daddr type local".to_string(),
            };
            for chain in ["prerouting", "output"] {
                let _ = writeln!(
                    script,
                    "add rule ip {t} {chain} {dest} {proto} dport {hp} dnat to {pod_ip}:{cp} comment \"{POD_COMMENT_PREFIX}{pod_id}|{key}\"",
                    proto = m.protocol.nft(),
                    hp = m.host_port,
                    cp = m.container_port,
                    key = m.key(),
                );
            }
        }
        script
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
        let mut script = self.delete_script(&pod_handles(&rules, pod_id));
        script.push_str(&self.mapping_rules(pod_id, pod_ip, mappings));
        if script.is_empty() {
            return Ok(());
        }
        self.apply(&script).await
    }

    /// Removes every rule of a pod. Succeeds if there are none, or no table.
    pub async fn remove_pod(&self, pod_id: &str) -> Result<()> {
        validate_pod_id(pod_id)?;
        let _g = self.lock.lock().await;
        let handles = self.pod_rule_handles(pod_id).await?;
        if handles.is_empty() {
            return Ok(());
        }
        self.apply(&self.delete_script(&handles)).await
    }

    /// Deletes the whole table. Succeeds if it does not exist.
    pub async fn remove_all(&self) -> Result<()> {
        let _g = self.lock.lock().await;
        // `add` first makes the `delete` valid whether or not the table exists.
        let t = &self.table;
        self.apply(&format!("add table ip {t}\ndelete table ip {t}\n")).await
    }

    /// Whether the table exists.
    pub async fn table_exists(&self) -> Result<bool> {
        Ok(self.list_table().await?.is_some())
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

    fn delete_script(&self, handles: &[(String, u64)]) -> String {
        let mut script = String::new();
        for (chain, handle) in handles {
            let _ = writeln!(script, "delete rule ip {} {chain} handle {handle}", self.table);
        }
        script
    }

    async fn pod_rule_handles(&self, pod_id: &str) -> Result<Vec<(String, u64)>> {
        Ok(pod_handles(&self.rules().await?, pod_id))
    }

    /// Every rule of the table as (chain, handle, comment); empty if there is no table.
    async fn rules(&self) -> Result<Vec<(String, u64, Option<String>)>> {
        let Some(json) = self.list_table().await? else {
            return Ok(Vec::new());
        };
        parse_rules(&json)
    }

    /// `nft -j -a list table`, or `None` if the table does not exist.
    async fn list_table(&self) -> Result<Option<String>> {
        let out = tokio::process::Command::new(&self.nft)
            .args(["-j", "-a", "list", "table", "ip", &self.table])
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| NetworkError::io(format!("run {}", self.nft.display()), e))?;
        if out.status.success() {
            return Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()));
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("No such file or directory") {
            return Ok(None);
        }
        Err(NetworkError::Firewall(format!("list table ip {}: {}", self.table, stderr.trim())))
    }

    /// Pipes `script` to `nft -f -`.
    async fn apply(&self, script: &str) -> Result<()> {
        tracing::debug!(table = %self.table, %script, "applying nftables script");
        let mut child = tokio::process::Command::new(&self.nft)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| NetworkError::io(format!("run {}", self.nft.display()), e))?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let write = stdin.write_all(script.as_bytes()).await;
        drop(stdin);
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| NetworkError::io(format!("wait for {}", self.nft.display()), e))?;
        if !out.status.success() {
            return Err(NetworkError::Firewall(format!(
                "nft -f failed ({}): {}\nscript:\n{script}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        write.map_err(|e| NetworkError::io("write nftables script", e))
    }
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

/// Extracts (chain, handle, comment) of every rule from `nft -j` output.
fn parse_rules(json: &str) -> Result<Vec<(String, u64, Option<String>)>> {
    let value: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| NetworkError::Firewall(format!("parse nft -j output: {e}")))?;
    let items = value
        .get("nftables")
        .and_then(|v| v.as_array())
        .ok_or_else(|| NetworkError::Firewall("nft -j output has no \"nftables\" array".into()))?;
    let mut rules = Vec::new();
    for item in items {
        let Some(rule) = item.get("rule") else {
            continue;
        };
        let chain = rule.get("chain").and_then(|c| c.as_str());
        let handle = rule.get("handle").and_then(|h| h.as_u64());
        if let (Some(chain), Some(handle)) = (chain, handle) {
            let comment = rule.get("comment").and_then(|c| c.as_str()).map(str::to_string);
            rules.push((chain.to_string(), handle, comment));
        }
    }
    Ok(rules)
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

    #[test]
    fn mapping_rules_cover_both_chains_and_host_ips() {
        let rules = fw().mapping_rules(
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
                    protocol: Protocol::Tcp,
                    host_port: 9000,
                    container_port: 9000,
                    host_ip: Some(Ipv4Addr::UNSPECIFIED),
                },
            ],
        );
        let want = "\
add rule ip berth prerouting fib daddr type local tcp dport 8080 dnat to 10.88.0.5:80 comment \"berth:pod=pod1|tcp/0.0.0.0:8080\"
add rule ip berth output fib daddr type local tcp dport 8080 dnat to 10.88.0.5:80 comment \"berth:pod=pod1|tcp/0.0.0.0:8080\"
add rule ip berth prerouting ip daddr 192.0.2.1 udp dport 5353 dnat to 10.88.0.5:53 comment \"berth:pod=pod1|udp/192.0.2.1:5353\"
add rule ip berth output ip daddr 192.0.2.1 udp dport 5353 dnat to 10.88.0.5:53 comment \"berth:pod=pod1|udp/192.0.2.1:5353\"
add rule ip berth prerouting fib daddr type local tcp dport 9000 dnat to 10.88.0.5:9000 comment \"berth:pod=pod1|tcp/0.0.0.0:9000\"
add rule ip berth output fib daddr type local tcp dport 9000 dnat to 10.88.0.5:9000 comment \"berth:pod=pod1|tcp/0.0.0.0:9000\"
";
        assert_eq!(rules, want);
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

    #[test]
    fn parse_rules_reads_handles_and_comments() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
            {"table": {"family": "ip", "name": "berth", "handle": 1}},
            {"chain": {"family": "ip", "table": "berth", "name": "prerouting", "handle": 1}},
            {"rule": {"family": "ip", "table": "berth", "chain": "prerouting", "handle": 7,
                      "comment": "berth:pod=a", "expr": []}},
            {"rule": {"family": "ip", "table": "berth", "chain": "postrouting", "handle": 9, "expr": []}}]}"#;
        assert_eq!(
            parse_rules(json).unwrap(),
            vec![
                ("prerouting".to_string(), 7, Some("berth:pod=a".to_string())),
                ("postrouting".to_string(), 9, None),
            ]
        );
        assert!(parse_rules("not json").is_err());
    }
}
