//! berthd as a daemon: it answers CRI on its socket, tells the truth about its readiness,
//! refuses bad configuration and a second instance, and stops cleanly.

use berth_integration::berthd::{berthd_bin, require_root};
use berth_integration::{Berthd, Options};
use berth_proto::*;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::process::Command;
use std::time::{Duration, Instant};
use tonic::Code;

#[tokio::test]
async fn version_names_berth_and_cri_v1() {
    let berthd = Berthd::start().await;
    let v = berthd.runtime().version(VersionRequest::default()).await.unwrap().into_inner();
    assert_eq!(v.runtime_name, "berth");
    assert_eq!(v.runtime_api_version, "v1");
    assert_eq!(v.runtime_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(v.version, "0.1.0");
}

#[tokio::test]
async fn status_reports_each_condition_with_reasons() {
    let berthd = Berthd::start().await;
    let s = berthd.runtime().status(StatusRequest { verbose: false }).await.unwrap().into_inner();
    assert!(s.info.is_empty(), "info must be empty unless verbose");
    let conditions = s.status.unwrap().conditions;
    let find = |t: &str| {
        conditions.iter().find(|c| c.r#type == t).unwrap_or_else(|| panic!("{t} missing"))
    };
    assert!(find("RuntimeReady").status);
    let network = find("NetworkReady");
    // The condition must either be true or say why not.
    if !network.status {
        assert!(!network.reason.is_empty() && !network.message.is_empty(), "{network:?}");
    }
}

#[tokio::test]
async fn runtime_ready_turns_false_when_state_is_unusable() {
    let berthd = Berthd::start().await;
    // Replace the root directory with a file: berthd can no longer write there.
    let root = berthd.root_dir();
    std::fs::remove_dir_all(&root).unwrap();
    std::fs::write(&root, b"not a dir").unwrap();
    let s = berthd.runtime().status(StatusRequest::default()).await.unwrap().into_inner();
    let runtime =
        s.status.unwrap().conditions.into_iter().find(|c| c.r#type == "RuntimeReady").unwrap();
    assert!(!runtime.status);
    assert!(runtime.message.contains(&root.display().to_string()), "{runtime:?}");
    std::fs::remove_file(&root).unwrap();
    std::fs::create_dir(&root).unwrap();
}

#[tokio::test]
async fn verbose_status_carries_the_effective_config() {
    let berthd = Berthd::start_with(Options {
        config: Some(
            "[registry.mirrors.\"registry.k8s.io\"]\nendpoints = [\"http://127.0.0.1:5000\"]\n"
                .into(),
        ),
        ..Default::default()
    })
    .await;
    let s = berthd.runtime().status(StatusRequest { verbose: true }).await.unwrap().into_inner();
    let config: serde_json::Value =
        serde_json::from_str(&s.info["config"]).expect("config is JSON");
    assert_eq!(config["socket"], berthd.socket().display().to_string());
    assert_eq!(
        config["registry"]["mirrors"]["registry.k8s.io"]["endpoints"][0],
        "http://127.0.0.1:5000"
    );
}

#[tokio::test]
async fn runtime_config_and_pod_cidr() {
    let berthd = Berthd::start().await;
    let mut rt = berthd.runtime();
    let cfg = rt.runtime_config(RuntimeConfigRequest {}).await.unwrap().into_inner();
    assert_eq!(cfg.linux.unwrap().cgroup_driver, CgroupDriver::Cgroupfs as i32);

    let update = |cidr: &str| UpdateRuntimeConfigRequest {
        runtime_config: Some(RuntimeConfig {
            network_config: Some(NetworkConfig { pod_cidr: cidr.into() }),
        }),
    };
    rt.update_runtime_config(update("10.244.1.0/24")).await.unwrap();
    let s = rt.status(StatusRequest { verbose: true }).await.unwrap().into_inner();
    let runtime: serde_json::Value = serde_json::from_str(&s.info["runtime"]).unwrap();
    assert_eq!(runtime["podCIDR"], "10.244.1.0/24");

    let err = rt.update_runtime_config(update("10.244.1.0/99")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("pod_cidr"), "{err:?}");
    // A refused update changes nothing.
    let s = rt.status(StatusRequest { verbose: true }).await.unwrap().into_inner();
    let runtime: serde_json::Value = serde_json::from_str(&s.info["runtime"]).unwrap();
    assert_eq!(runtime["podCIDR"], "10.244.1.0/24");
}

#[tokio::test]
async fn rpc_spans_are_logged_as_json() {
    let berthd = Berthd::start_with(Options {
        args: vec!["--log-format".into(), "json".into()],
        ..Default::default()
    })
    .await;
    let _ = berthd.runtime().checkpoint_container(CheckpointContainerRequest::default()).await;
    let _ = berthd.runtime().version(VersionRequest::default()).await;
    let log = berthd.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let failed = lines
        .iter()
        .find(|l| l["span"]["rpc"] == "CheckpointContainer")
        .unwrap_or_else(|| panic!("no CheckpointContainer span in:\n{log}"));
    assert_eq!(failed["message"], "failed");
    assert_eq!(failed["code"], "InvalidArgument");
    assert!(failed["elapsed_ms"].is_number());
    assert!(lines.iter().any(|l| l["span"]["rpc"] == "Version" && l["message"] == "ok"), "{log}");
}

#[tokio::test]
async fn socket_is_root_only_and_removed_on_sigterm() {
    let mut berthd = Berthd::start().await;
    let socket = berthd.socket();
    let meta = std::fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    let status = berthd.stop().await;
    assert!(status.success(), "berthd exited with {status:?}\n{}", berthd.log());
    assert!(!socket.exists(), "socket left behind after SIGTERM");
    assert!(berthd.log().contains("berthd stopped"));
}

#[tokio::test]
async fn stale_socket_is_replaced() {
    let mut berthd = Berthd::start().await;
    // A crash leaves the socket file behind.
    berthd.kill();
    assert!(berthd.socket().exists());
    berthd.restart().await;
    berthd.runtime().version(VersionRequest::default()).await.unwrap();
}

#[tokio::test]
async fn second_instance_on_the_same_state_is_refused() {
    let berthd = Berthd::start().await;
    let out = berthd.command().output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already running"), "{stderr}");
    // The first one is unharmed and still owns its socket.
    berthd.runtime().version(VersionRequest::default()).await.unwrap();
}

#[test]
fn default_config_round_trips() {
    let default = Command::new(berthd_bin()).args(["config", "default"]).output().unwrap();
    assert!(default.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &default.stdout).unwrap();
    let shown = Command::new(berthd_bin())
        .arg("--config")
        .arg(&path)
        .args(["config", "show"])
        .output()
        .unwrap();
    assert!(shown.status.success(), "{}", String::from_utf8_lossy(&shown.stderr));
    let parse =
        |b: &[u8]| -> toml::Table { toml::from_str(std::str::from_utf8(b).unwrap()).unwrap() };
    assert_eq!(parse(&default.stdout), parse(&shown.stdout));
    assert_eq!(parse(&shown.stdout)["socket"].as_str(), Some("/run/berth/berth.sock"));
}

#[test]
fn bad_config_is_refused_naming_the_key() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    for (text, key) in [
        ("sokcet = \"/x.sock\"\n", "sokcet"),
        ("[log]\nformat = \"yaml\"\n", "log.format"),
        (
            "[registry.mirrors.\"docker.io\"]\nendpoints = [\"ftp://x\"]\n",
            "registry.mirrors.\"docker.io\".endpoints",
        ),
    ] {
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        let started = Instant::now();
        let out = Command::new(berthd_bin())
            .arg("--config")
            .arg(&path)
            .arg("--root")
            .arg(dir.path().join("root"))
            .arg("--state")
            .arg(dir.path().join("state"))
            .arg("--socket")
            .arg(dir.path().join("s.sock"))
            .output()
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(!out.status.success(), "{text:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&format!("`{key}`")), "{text:?}: {stderr}");
        assert!(!dir.path().join("s.sock").exists(), "refused config must not start serving");
    }
}

/// grpc-go before 1.5x (crictl and critest 1.26, older kubelets) sends the unix socket's
/// path as `:authority`. The call must still be served (see proto/vendor/README.md).
#[tokio::test]
async fn authority_with_a_socket_path_is_accepted() {
    use std::io::{Read, Write};
    let berthd = Berthd::start().await;
    let socket = berthd.socket();
    let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();

    // HPACK "literal header field without indexing, new name", no Huffman coding.
    fn literal(block: &mut Vec<u8>, name: &str, value: &str) {
        block.push(0x00);
        block.push(name.len() as u8);
        block.extend_from_slice(name.as_bytes());
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
    }
    let mut headers = Vec::new();
    literal(&mut headers, ":method", "POST");
    literal(&mut headers, ":scheme", "http");
    literal(&mut headers, ":path", "/runtime.v1.RuntimeService/Version");
    literal(&mut headers, ":authority", &socket.display().to_string());
    literal(&mut headers, "content-type", "application/grpc");
    literal(&mut headers, "te", "trailers");
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    frame(&mut out, 0x4, 0, 0, &[]); // SETTINGS
    frame(&mut out, 0x1, 0x4, 1, &headers); // HEADERS, END_HEADERS
    frame(&mut out, 0x0, 0x1, 1, &[0, 0, 0, 0, 0]); // DATA: an empty VersionRequest, END_STREAM
    stream.write_all(&out).unwrap();

    // Read frames until the response HEADERS or a RST_STREAM for stream 1.
    let mut read_frame = || -> (u8, u32, Vec<u8>) {
        let mut head = [0u8; 9];
        stream.read_exact(&mut head).unwrap();
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).unwrap();
        (head[3], id, payload)
    };
    loop {
        let (kind, id, payload) = read_frame();
        match (kind, id) {
            (0x3, 1) => panic!("berthd reset the stream (error {:?})", payload),
            (0x1, 1) => break, // response HEADERS: the call was accepted
            (0x7, _) => panic!("berthd closed the connection (GOAWAY {payload:?})"),
            _ => continue,
        }
    }
}
