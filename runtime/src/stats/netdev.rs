//! A pod's network counters, read inside its network namespace.
//!
//! `/proc/thread-self/net/dev` shows the interfaces of the reading thread's network
//! namespace, so a short-lived thread enters the pod's pinned netns (a pod may have no
//! process whose `/proc/<pid>/net/dev` could be read) and reads it there; tokio workers
//! never change namespace.

use std::path::Path;

/// The interface the pod network gives every pod.
pub const DEFAULT_INTERFACE: &str = berth_network::bridge::POD_IFNAME;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceStats {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// The interfaces of the network namespace pinned at `netns`, loopback left out.
pub async fn read(netns: &Path) -> Result<Vec<InterfaceStats>, String> {
    berth_network::netns::run_in_async(netns, || {
        std::fs::read_to_string("/proc/thread-self/net/dev").map(|t| parse(&t))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("read /proc/net/dev in {}: {e}", netns.display()))
}

/// Parses `/proc/net/dev` (two header lines, then `name: rx[8] tx[8]`).
pub fn parse(text: &str) -> Vec<InterfaceStats> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let name = name.trim();
            let v: Vec<u64> = rest.split_whitespace().filter_map(|n| n.parse().ok()).collect();
            if name == "lo" || v.len() < 16 {
                return None;
            }
            Some(InterfaceStats {
                name: name.to_string(),
                rx_bytes: v[0],
                rx_packets: v[1],
                rx_errors: v[2],
                rx_dropped: v[3],
                tx_bytes: v[8],
                tx_packets: v[9],
                tx_errors: v[10],
                tx_dropped: v[11],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_dev() {
        let text = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0
  eth0:    5000      40    1    2    0     0          0         0     3000      30    3    4    0     0       0          0
";
        let got = parse(text);
        assert_eq!(got.len(), 1);
        let e = &got[0];
        assert_eq!(e.name, "eth0");
        assert_eq!((e.rx_bytes, e.rx_packets, e.rx_errors, e.rx_dropped), (5000, 40, 1, 2));
        assert_eq!((e.tx_bytes, e.tx_packets, e.tx_errors, e.tx_dropped), (3000, 30, 3, 4));
    }
}
