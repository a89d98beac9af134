//! What a pod brings to the plugins: `CNI_ARGS`, the `runtimeConfig` of the capabilities a
//! plugin declares, and each plugin's stdin as libcni builds it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::firewall::{PortMapping, Protocol};

/// The pod's DNS config (CRI `DNSConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dns {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// One pod, as the CNI plugins see it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodRequest {
    /// The sandbox id: `CNI_CONTAINERID` and `K8S_POD_INFRA_CONTAINER_ID`.
    pub pod_id: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The pinned network namespace.
    pub netns: PathBuf,
    /// hostPorts (the `portMappings` capability).
    pub port_mappings: Vec<PortMapping>,
    /// The `dns` capability.
    pub dns: Option<Dns>,
    /// Pod annotations: `kubernetes.io/ingress-bandwidth` / `egress-bandwidth` become the
    /// `bandwidth` capability.
    pub annotations: BTreeMap<String, String>,
}

/// The annotations the kubelet's bandwidth shaping uses.
pub const INGRESS_BANDWIDTH: &str = "kubernetes.io/ingress-bandwidth";
pub const EGRESS_BANDWIDTH: &str = "kubernetes.io/egress-bandwidth";

impl PodRequest {
    /// `CNI_ARGS` as (key, value) pairs, in the order the kubelet's runtimes send them.
    pub fn cni_args(&self) -> Vec<(String, String)> {
        vec![
            ("IgnoreUnknown".into(), "1".into()),
            ("K8S_POD_NAMESPACE".into(), self.namespace.clone()),
            ("K8S_POD_NAME".into(), self.name.clone()),
            ("K8S_POD_INFRA_CONTAINER_ID".into(), self.pod_id.clone()),
            ("K8S_POD_UID".into(), self.uid.clone()),
        ]
    }

    /// The values of the capabilities berth can fill, by capability name. A plugin gets
    /// those it declares in its `capabilities`.
    pub fn capability_args(&self) -> Result<Map<String, Value>, String> {
        let mut caps = Map::new();
        if !self.port_mappings.is_empty() {
            let maps: Vec<Value> = self.port_mappings.iter().map(port_mapping_json).collect();
            caps.insert("portMappings".into(), Value::Array(maps));
        }
        if let Some(dns) = &self.dns {
            caps.insert(
                "dns".into(),
                serde_json::json!({
                    "servers": dns.servers,
                    "searches": dns.searches,
                    "options": dns.options,
                }),
            );
        }
        let rate = |key: &str| -> Result<Option<u64>, String> {
            self.annotations
                .get(key)
                .map(|v| parse_bandwidth(v).map_err(|e| format!("annotation {key}: {e}")))
                .transpose()
        };
        let (ingress, egress) = (rate(INGRESS_BANDWIDTH)?, rate(EGRESS_BANDWIDTH)?);
        if ingress.is_some() || egress.is_some() {
            // As the kubelet's runtimes do: the burst is not configurable per pod.
            let mut bw = Map::new();
            if let Some(r) = ingress {
                bw.insert("ingressRate".into(), r.into());
                bw.insert("ingressBurst".into(), i32::MAX.into());
            }
            if let Some(r) = egress {
                bw.insert("egressRate".into(), r.into());
                bw.insert("egressBurst".into(), i32::MAX.into());
            }
            caps.insert("bandwidth".into(), Value::Object(bw));
        }
        Ok(caps)
    }
}

/// `CNI_ARGS`' text form: `K=V;K=V`.
pub fn cni_args_string(args: &[(String, String)]) -> String {
    args.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(";")
}

fn port_mapping_json(m: &PortMapping) -> Value {
    let protocol = match m.protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    };
    serde_json::json!({
        "hostPort": m.host_port,
        "containerPort": m.container_port,
        "protocol": protocol,
        "hostIP": m.host_ip.map(|ip| ip.to_string()).unwrap_or_default(),
    })
}

/// A Kubernetes quantity as bits per second: `10M`, `1Gi`, `500k`, `1000`.
pub fn parse_bandwidth(q: &str) -> Result<u64, String> {
    let q = q.trim();
    let split = q.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let num: f64 = num.parse().map_err(|_| format!("{q:?} is not a quantity"))?;
    let mult: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(format!("{q:?} has an unknown unit {suffix:?}")),
    };
    let bits = num * mult;
    if !(1.0..=1e15).contains(&bits) {
        return Err(format!("{q:?} is out of range"));
    }
    Ok(bits as u64)
}

/// A plugin's stdin: its own config with the list's `name` and `cniVersion`, the previous
/// plugin's result as `prevResult`, and `runtimeConfig` holding the capabilities it
/// declares (`"capabilities": {"portMappings": true}`) that berth has values for.
pub fn plugin_stdin(
    list_name: &str,
    cni_version: &str,
    plugin: &Map<String, Value>,
    prev_result: Option<&Value>,
    capability_args: &Map<String, Value>,
) -> Value {
    let mut conf = plugin.clone();
    conf.insert("name".into(), list_name.into());
    conf.insert("cniVersion".into(), cni_version.into());
    match prev_result {
        Some(prev) => {
            conf.insert("prevResult".into(), prev.clone());
        }
        None => {
            conf.remove("prevResult");
        }
    }
    if let Some(Value::Object(declared)) = plugin.get("capabilities") {
        let mut rc = match conf.remove("runtimeConfig") {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        for (cap, on) in declared {
            if on == &Value::Bool(true) {
                if let Some(v) = capability_args.get(cap) {
                    rc.insert(cap.clone(), v.clone());
                }
            }
        }
        if !rc.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(rc));
        }
    }
    Value::Object(conf)
}

/// The placeholders CRI-O's and containerd's templates use for the node's pod CIDR.
pub const POD_CIDR_PLACEHOLDER: &str = "usePodCidr";
pub const POD_CIDR_V6_PLACEHOLDER: &str = "usePodCidrIPv6";

/// Replaces every string value `usePodCidr` (`usePodCidrIPv6`) in `value` with the first
/// IPv4 (IPv6) CIDR of `pod_cidr` (the kubelet's comma-separated list; for `usePodCidr`
/// the first CIDR of either family when there is no IPv4 one). Returns how many were
/// replaced; a placeholder without a CIDR to put there is an error.
pub fn substitute_pod_cidr(value: &mut Value, pod_cidr: &str) -> Result<usize, String> {
    let cidrs: Vec<&str> = pod_cidr.split(',').map(str::trim).filter(|c| !c.is_empty()).collect();
    let v4 = cidrs.iter().find(|c| !c.contains(':')).or(cidrs.first()).copied();
    let v6 = cidrs.iter().find(|c| c.contains(':')).copied();
    let mut count = 0;
    let mut missing = None;
    walk_strings(value, &mut |s| {
        let with = match s.as_str() {
            POD_CIDR_PLACEHOLDER => v4,
            POD_CIDR_V6_PLACEHOLDER => v6,
            _ => return,
        };
        match with {
            Some(c) => {
                *s = c.to_string();
                count += 1;
            }
            None => missing = Some(s.clone()),
        }
    });
    match missing {
        Some(p) => Err(format!(
            "the CNI config uses {p:?} but the kubelet has not set a pod CIDR of that family \
             (UpdateRuntimeConfig)"
        )),
        None => Ok(count),
    }
}

fn walk_strings(value: &mut Value, f: &mut impl FnMut(&mut String)) {
    match value {
        Value::String(s) => f(s),
        Value::Array(a) => a.iter_mut().for_each(|v| walk_strings(v, f)),
        Value::Object(o) => o.values_mut().for_each(|v| walk_strings(v, f)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> PodRequest {
        PodRequest {
            pod_id: "abc123".into(),
            namespace: "default".into(),
            name: "web".into(),
            uid: "uid-1".into(),
            netns: "/run/berth/pods/abc123/ns/net".into(),
            port_mappings: vec![
                PortMapping::new(Protocol::Tcp, 8080, 80),
                PortMapping {
                    protocol: Protocol::Udp,
                    host_port: 5353,
                    container_port: 53,
                    host_ip: Some("127.0.0.1".parse().unwrap()),
                },
            ],
            dns: Some(Dns {
                servers: vec!["10.96.0.10".into()],
                searches: vec!["svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
            }),
            annotations: BTreeMap::from([(INGRESS_BANDWIDTH.into(), "10M".into())]),
        }
    }

    #[test]
    fn cni_args_carry_the_pod() {
        assert_eq!(
            cni_args_string(&pod().cni_args()),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;\
             K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=uid-1"
        );
    }

    #[test]
    fn runtime_config_has_only_declared_capabilities() {
        let caps = pod().capability_args().unwrap();
        let plugin = json!({"type": "portmap", "capabilities": {"portMappings": true, "dns": false}, "snat": true});
        let stdin = plugin_stdin(
            "net",
            "1.0.0",
            plugin.as_object().unwrap(),
            Some(&json!({"cniVersion": "1.0.0", "ips": []})),
            &caps,
        );
        assert_eq!(stdin["name"], "net");
        assert_eq!(stdin["cniVersion"], "1.0.0");
        assert_eq!(stdin["snat"], true);
        assert_eq!(stdin["prevResult"]["ips"], json!([]));
        assert_eq!(
            stdin["runtimeConfig"],
            json!({"portMappings": [
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""},
                {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"},
            ]})
        );

        let all =
            json!({"type": "x", "capabilities": {"dns": true, "bandwidth": true, "ips": true}});
        let stdin = plugin_stdin("net", "0.4.0", all.as_object().unwrap(), None, &caps);
        assert!(stdin.get("prevResult").is_none());
        assert_eq!(
            stdin["runtimeConfig"]["dns"],
            json!({"servers": ["10.96.0.10"], "searches": ["svc.cluster.local"], "options": ["ndots:5"]})
        );
        assert_eq!(stdin["runtimeConfig"]["bandwidth"]["ingressRate"], 10_000_000);
        assert!(stdin["runtimeConfig"]["bandwidth"].get("egressRate").is_none());
        assert!(stdin["runtimeConfig"].get("ips").is_none(), "no value for ips");

        let none = json!({"type": "bridge"});
        let stdin = plugin_stdin("net", "0.4.0", none.as_object().unwrap(), None, &caps);
        assert!(stdin.get("runtimeConfig").is_none());
    }

    #[test]
    fn bandwidth_quantities() {
        assert_eq!(parse_bandwidth("1000"), Ok(1000));
        assert_eq!(parse_bandwidth("10M"), Ok(10_000_000));
        assert_eq!(parse_bandwidth("1Gi"), Ok(1 << 30));
        assert!(parse_bandwidth("fast").is_err());
        assert!(parse_bandwidth("10X").is_err());
        let mut p = pod();
        p.annotations.insert(EGRESS_BANDWIDTH.into(), "lots".into());
        let err = p.capability_args().unwrap_err();
        assert!(err.contains(EGRESS_BANDWIDTH), "{err}");
    }

    #[test]
    fn pod_cidr_placeholders() {
        let mut v = json!({"ipam": {"type": "host-local", "ranges": [[{"subnet": "usePodCidr"}], [{"subnet": "usePodCidrIPv6"}]]}});
        assert_eq!(substitute_pod_cidr(&mut v, "10.244.1.0/24,fd00:1::/64"), Ok(2));
        assert_eq!(v["ipam"]["ranges"][0][0]["subnet"], "10.244.1.0/24");
        assert_eq!(v["ipam"]["ranges"][1][0]["subnet"], "fd00:1::/64");
        let mut v = json!({"subnet": "usePodCidr"});
        let err = substitute_pod_cidr(&mut v, "").unwrap_err();
        assert!(err.contains("usePodCidr") && err.contains("UpdateRuntimeConfig"), "{err}");
        let mut v = json!({"subnet": "10.0.0.0/8"});
        assert_eq!(substitute_pod_cidr(&mut v, ""), Ok(0));
    }
}
