//! Root test of the CNI facade with Debian's reference plugins (/usr/lib/cni): ADD, CHECK
//! (which the CRI has no call for), DEL from the cache, and leftovers.

mod common;

use std::path::Path;
use std::time::Duration;

use berth_network::cni::{Cni, CniSettings, PodRequest};
use berth_network::{netns, NetworkError};
use common::Env;

const PLUGINS: &str = "/usr/lib/cni";

fn conflist(env: &Env, name: &str, version: &str, data: &Path) -> String {
    serde_json::json!({
        "cniVersion": version,
        "name": name,
        "plugins": [{
            "type": "bridge",
            "bridge": env.config.bridge,
            "isGateway": true,
            "ipam": {"type": "host-local", "subnet": env.config.subnet.to_string(), "dataDir": data},
        }],
    })
    .to_string()
}

#[tokio::test]
async fn add_check_del_with_the_reference_plugins() {
    require_root!();
    if !Path::new(PLUGINS).join("bridge").exists() {
        panic!("apt-get install containernetworking-plugins");
    }
    let env = Env::new();
    let conf = env.tmp.path().join("net.d");
    let data = env.tmp.path().join("ipam");
    std::fs::create_dir_all(&conf).unwrap();
    let cni = Cni::new(CniSettings {
        conf_dir: conf.clone(),
        bin_dirs: vec![PLUGINS.into()],
        plugin_timeout: Duration::from_secs(30),
        cache_dir: env.tmp.path().join("cache"),
    })
    .unwrap();
    let name = format!("cnit{}", env.x);
    std::fs::write(conf.join("10.conflist"), conflist(&env, &name, "1.0.0", &data)).unwrap();
    assert!(cni.readiness().is_ready(), "{:?}", cni.readiness());

    let pod_id = env.pod_id();
    let pin = env.pin(&pod_id);
    let req = PodRequest {
        pod_id: pod_id.clone(),
        namespace: "default".into(),
        name: "p".into(),
        uid: "u".into(),
        netns: pin.clone(),
        ..Default::default()
    };
    let got = cni.add(&req).await.unwrap();
    assert_eq!(got.ips.len(), 1);
    assert!(env
        .config
        .subnet
        .contains(&got.ips[0].addr().to_string().parse::<std::net::Ipv4Addr>().unwrap()));
    assert_eq!(cni.cached_pods().unwrap(), [(pod_id.clone(), pin.clone())]);

    // CHECK passes on what ADD made, and fails naming the plugin once eth0 is gone.
    cni.check(&pod_id, &pin).await.unwrap();
    let st = netns::run_in(&pin, || {
        std::process::Command::new("ip").args(["link", "del", "eth0"]).status().unwrap()
    })
    .unwrap();
    assert!(st.success());
    let err = cni.check(&pod_id, &pin).await.unwrap_err().to_string();
    assert!(err.contains("CNI plugin bridge CHECK"), "{err}");

    // The config goes away; DEL still works from the cache, and again (nothing to do).
    std::fs::remove_file(conf.join("10.conflist")).unwrap();
    assert!(!cni.readiness().is_ready());
    cni.del(&req).await.unwrap();
    assert!(cni.cached_pods().unwrap().is_empty());
    let leases: Vec<_> = std::fs::read_dir(data.join(&name))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<std::net::IpAddr>().is_ok())
        .collect();
    assert!(leases.is_empty(), "{leases:?}");
    cni.del(&req).await.unwrap();
    assert!(matches!(cni.check(&pod_id, &pin).await, Err(NetworkError::NotFound(_))));

    // CHECK needs 0.4.0 or later.
    std::fs::write(conf.join("10.conflist"), conflist(&env, &name, "0.3.1", &data)).unwrap();
    cni.add(&req).await.unwrap();
    let err = cni.check(&pod_id, &pin).await.unwrap_err();
    assert!(matches!(err, NetworkError::InvalidArgument(_)), "{err}");
    cni.del(&req).await.unwrap();
    assert!(cni.cached_pods().unwrap().is_empty());
    env.dir.remove(&pod_id).unwrap();
    let _ = std::process::Command::new("ip").args(["link", "del", &env.config.bridge]).status();
}

#[tokio::test]
async fn failed_add_rolls_back_by_itself() {
    require_root!();
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let conf = env.tmp.path().join("net.d");
    let bin = env.tmp.path().join("bin");
    let data = env.tmp.path().join("ipam");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    let fail = bin.join("fail");
    std::fs::write(
        &fail,
        "#!/bin/sh\ncat >/dev/null\n[ \"$CNI_COMMAND\" = ADD ] || exit 0\necho '{\"code\":7,\"msg\":\"nope\"}'\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fail, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cni = Cni::new(CniSettings {
        conf_dir: conf.clone(),
        bin_dirs: vec![bin, PLUGINS.into()],
        plugin_timeout: Duration::from_secs(30),
        cache_dir: env.tmp.path().join("cache"),
    })
    .unwrap();
    let name = format!("cnif{}", env.x);
    let mut list: serde_json::Value =
        serde_json::from_str(&conflist(&env, &name, "1.0.0", &data)).unwrap();
    list["plugins"].as_array_mut().unwrap().push(serde_json::json!({"type": "fail"}));
    std::fs::write(conf.join("10.conflist"), list.to_string()).unwrap();
    let pod_id = env.pod_id();
    let pin = env.pin(&pod_id);
    let req = PodRequest { pod_id: pod_id.clone(), netns: pin.clone(), ..Default::default() };
    let err = cni.add(&req).await.unwrap_err().to_string();
    assert!(err.contains("CNI plugin fail") && err.contains("nope (CNI error code 7)"), "{err}");
    // The bridge plugin's ADD was undone by the facade's DEL: no lease, no eth0, no cache.
    let leases: Vec<_> = std::fs::read_dir(data.join(&name))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().parse::<std::net::IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default();
    assert!(leases.is_empty(), "{leases:?}");
    // (sysfs shows the mounter's namespace: ask `ip` in the pod's.)
    let has_eth0 = netns::run_in(&pin, || {
        let mut st = std::process::Command::new("ip");
        st.args(["link", "show", "eth0"]);
        st.stderr(std::process::Stdio::null()).stdout(std::process::Stdio::null());
        st.status().unwrap().success()
    })
    .unwrap();
    assert!(!has_eth0, "eth0 left in the pod");
    assert!(cni.cached_pods().unwrap().is_empty());
    env.dir.remove(&pod_id).unwrap();
    let _ = std::process::Command::new("ip").args(["link", "del", &env.config.bridge]).status();
}
