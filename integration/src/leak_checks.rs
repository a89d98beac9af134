//! What a test checks against its running berthd: that nothing of its pods is left
//! (mounts, veths, rules, leases, cgroups, pod directories, shims), and the berthd's live
//! shims.

use std::fs;
use std::path::Path;

use crate::berthd::{Berthd, Options};
use crate::leaks::{mounts_under, NetEnv};

impl NetEnv {
    /// Starts berthd with this network.
    pub async fn berthd(&self) -> Berthd {
        Berthd::start_with(Options { config: Some(self.config_toml()), ..Default::default() }).await
    }

    /// Asserts nothing of the test's pods is left: no mounts under berthd's directories
    /// but the pods directory itself, no veths on the bridge, no pod rules, no leases, no
    /// cgroups.
    pub async fn assert_no_leaks(&self, berthd: &Berthd) {
        let state = berthd.state_dir();
        let pods_dir = state.join("pods");
        let mounts: Vec<String> = mounts_under(berthd.root_dir().parent().unwrap())
            .into_iter()
            .filter(|m| Path::new(m) != pods_dir)
            .collect();
        assert!(mounts.is_empty(), "mounts leaked: {mounts:?}");
        // The kernel deletes a veth whose namespace died a little later.
        let mut ports = self.bridge_ports();
        let deadline = std::time::Instant::now()
            + crate::time_scale::scaled(std::time::Duration::from_secs(2));
        while std::time::Instant::now() < deadline {
            if ports.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            ports = self.bridge_ports();
        }
        assert!(ports.is_empty(), "veths leaked on {}: {ports:?}", self.bridge);
        let rules = self.pod_rules();
        assert!(rules.is_empty(), "nft rules leaked: {rules:?}");
        assert_eq!(self.leases(berthd).await, 0, "IP leases leaked");
        let cgroups = self.cgroups();
        assert!(cgroups.is_empty(), "cgroups leaked: {cgroups:?}");
        let pins: Vec<_> = fs::read_dir(&pods_dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(pins.is_empty(), "pod directories leaked: {pins:?}");
        // A shim removes its socket just before it exits.
        let deadline = std::time::Instant::now()
            + crate::time_scale::scaled(std::time::Duration::from_secs(2));
        while shim_processes(berthd) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(shim_processes(berthd), 0, "shims outlived their pods");
        let shim_dirs: Vec<_> = fs::read_dir(state.join("shims"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(shim_dirs.is_empty(), "shim directories leaked: {shim_dirs:?}");
    }

    /// IP leases berthd holds (from `Status` verbose info).
    pub async fn leases(&self, berthd: &Berthd) -> u64 {
        let s = berthd
            .runtime()
            .status(berth_proto::StatusRequest { verbose: true })
            .await
            .expect("status")
            .into_inner();
        let net: serde_json::Value = serde_json::from_str(&s.info["network"]).expect("json");
        net["leases"].as_u64().expect("lease count")
    }
}

/// How many shims of `berthd` live. Only the shims themselves: a shim's forks (a created
/// container waiting for its start, the pod's init) carry its command line too, but their
/// parent is a shim.
pub fn shim_processes(berthd: &Berthd) -> usize {
    shim_pids(berthd).len()
}

/// The pids of `berthd`'s live shims ([`shim_processes`]).
pub fn shim_pids(berthd: &Berthd) -> Vec<i32> {
    let state = berthd.state_dir().display().to_string();
    let is_shim = |pid: &str| {
        fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .is_ok_and(|c| c.contains("berth-shim") && c.contains(&state))
    };
    let parent = |pid: &str| {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // After the command name in parentheses: state, then the parent's pid.
        stat.rsplit_once(')')?.1.split_whitespace().nth(1).map(str::to_string)
    };
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| is_shim(pid) && !parent(pid).is_some_and(|pp| is_shim(&pp)))
        .filter_map(|pid| pid.parse().ok())
        .collect()
}
