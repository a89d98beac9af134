//! The result a plugin list returns (CNI spec "Result", versions 0.1.0 to 1.0.0) and the
//! pod addresses in it.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, Deserialize, Default)]
struct Interface {
    #[serde(default)]
    name: String,
    #[serde(default)]
    sandbox: String,
}

#[derive(Debug, Clone, Deserialize)]
struct IpConfig {
    address: String,
    #[serde(default)]
    interface: Option<usize>,
}

/// 0.1.0/0.2.0 results: `ip4` / `ip6` with one address each.
#[derive(Debug, Clone, Deserialize)]
struct LegacyIp {
    ip: String,
}

#[derive(Debug, Clone, Deserialize, Default)]
struct Result {
    #[serde(default)]
    interfaces: Vec<Interface>,
    #[serde(default)]
    ips: Vec<IpConfig>,
    #[serde(default)]
    ip4: Option<LegacyIp>,
    #[serde(default)]
    ip6: Option<LegacyIp>,
}

/// The pod's addresses (with prefix) in `result`: those on the container's `ifname`
/// (an interface with that name and a sandbox) when any are, else every address the
/// result lists. IPv4 first, then IPv6, each in the result's order, as the primary
/// address the kubelet shows is the first.
pub fn pod_ips(result: &Value, ifname: &str) -> std::result::Result<Vec<IpNet>, String> {
    let r: Result =
        serde_json::from_value(result.clone()).map_err(|e| format!("malformed CNI result: {e}"))?;
    let parse = |a: &str| -> std::result::Result<IpNet, String> {
        a.parse::<IpNet>()
            .or_else(|_| a.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| format!("CNI result address {a:?} is not an IP address"))
    };
    let mut all = Vec::new();
    let mut on_if = Vec::new();
    for ip in &r.ips {
        let net = parse(&ip.address)?;
        let pod_side = ip
            .interface
            .and_then(|i| r.interfaces.get(i))
            .is_some_and(|i| i.name == ifname && !i.sandbox.is_empty());
        if pod_side {
            on_if.push(net);
        }
        all.push(net);
    }
    for legacy in [&r.ip4, &r.ip6].into_iter().flatten() {
        all.push(parse(&legacy.ip)?);
    }
    let mut out = if on_if.is_empty() { all } else { on_if };
    out.sort_by_key(|n| matches!(n, IpNet::V6(_)));
    out.dedup();
    Ok(out)
}

/// The result's `cniVersion`, if it says.
pub fn version(result: &Value) -> Option<&str> {
    result.get("cniVersion").and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ips(v: Value) -> Vec<String> {
        pod_ips(&v, "eth0").unwrap().iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn v1_result_with_v4_and_v6_on_eth0() {
        let r = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni0", "mac": "aa:bb:cc:dd:ee:ff"},
                {"name": "veth1234", "mac": "aa:bb:cc:dd:ee:00"},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:01", "sandbox": "/run/berth/pods/x/ns/net"}
            ],
            "ips": [
                {"address": "fd00:10::5/64", "gateway": "fd00:10::1", "interface": 2},
                {"address": "10.22.0.5/16", "gateway": "10.22.0.1", "interface": 2},
                {"address": "10.22.0.1/16", "interface": 0}
            ],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {}
        });
        assert_eq!(ips(r.clone()), ["10.22.0.5/16", "fd00:10::5/64"]);
        assert_eq!(version(&r), Some("1.0.0"));
    }

    #[test]
    fn v03_and_v04_results() {
        // 0.3.x / 0.4.0 carry `version` on each IP.
        let r = json!({
            "cniVersion": "0.3.1",
            "interfaces": [{"name": "eth0", "sandbox": "/proc/1/ns/net"}],
            "ips": [{"version": "4", "address": "10.1.2.3/24", "gateway": "10.1.2.1", "interface": 0}]
        });
        assert_eq!(ips(r), ["10.1.2.3/24"]);
        let r = json!({
            "cniVersion": "0.4.0",
            "ips": [{"version": "6", "address": "2001:db8::2/64"}, {"version": "4", "address": "192.168.1.2/24"}]
        });
        assert_eq!(ips(r), ["192.168.1.2/24", "2001:db8::2/64"], "no interfaces: every address");
    }

    #[test]
    fn legacy_and_bad_results() {
        let r =
            json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.2/8"}, "ip6": {"ip": "fd00::2/8"}});
        assert_eq!(ips(r), ["10.0.0.2/8", "fd00::2/8"]);
        assert!(pod_ips(&json!({"ips": [{"address": "nope"}]}), "eth0").is_err());
        assert!(pod_ips(&json!({"ips": "x"}), "eth0").is_err());
        assert!(ips(json!({"cniVersion": "1.0.0"})).is_empty());
    }
}
