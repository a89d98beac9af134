//! The files a pod's containers will see as `/etc/hostname`, `/etc/resolv.conf` and
//! `/etc/hosts`.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use super::pod_spec::DnsConfig;

/// `/etc/resolv.conf` from the CRI DNS config.
pub fn resolv_conf(dns: &DnsConfig) -> String {
    let mut out = String::new();
    if !dns.searches.is_empty() {
        let _ = writeln!(out, "search {}", dns.searches.join(" "));
    }
    for server in &dns.servers {
        let _ = writeln!(out, "nameserver {server}");
    }
    if !dns.options.is_empty() {
        let _ = writeln!(out, "options {}", dns.options.join(" "));
    }
    out
}

/// `/etc/hosts` of a pod with its own network: loopback entries and, when the pod has an
/// address, that address with the pod's host name.
pub fn hosts(hostname: &str, ip: Option<Ipv4Addr>) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    if let (Some(ip), false) = (ip, hostname.is_empty()) {
        let _ = writeln!(out, "{ip}\t{hostname}");
    }
    out
}

/// The host's current host name.
pub fn host_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_rendering() {
        let dns = DnsConfig {
            servers: vec!["10.96.0.10".into(), "1.1.1.1".into()],
            searches: vec!["default.svc.cluster.local".into(), "svc.cluster.local".into()],
            options: vec!["ndots:5".into(), "edns0".into()],
        };
        assert_eq!(
            resolv_conf(&dns),
            "search default.svc.cluster.local svc.cluster.local\n\
             nameserver 10.96.0.10\nnameserver 1.1.1.1\noptions ndots:5 edns0\n"
        );
        assert_eq!(resolv_conf(&DnsConfig::default()), "");
        let only = DnsConfig { servers: vec!["8.8.8.8".into()], ..Default::default() };
        assert_eq!(resolv_conf(&only), "nameserver 8.8.8.8\n");
    }

    #[test]
    fn hosts_rendering() {
        let h = hosts("web-0", Some(Ipv4Addr::new(10, 88, 0, 2)));
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(h.ends_with("10.88.0.2\tweb-0\n"), "{h}");
        let h = hosts("web-0", None);
        assert!(!h.contains("web-0"));
    }
}
