//! Tests of the test fixtures themselves: the registry and the image builder.

use std::path::Path;

use berth_integration::oci_image::big::{push_big_image, BigImageSpec};
use berth_integration::oci_image::images;
use berth_integration::oci_image::layer::decompress;
use berth_integration::oci_image::*;
use berth_integration::registry::{BlobFault, Registry, RegistryOptions};
use serde_json::Value;

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("valid JSON")
}

/// Paths and link targets in a layer tar.
fn entries(tar: &[u8]) -> Vec<(String, Option<String>)> {
    let mut a = tar::Archive::new(tar);
    a.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let link = e.link_name().unwrap().map(|l| l.display().to_string());
            (e.path().unwrap().display().to_string(), link)
        })
        .collect()
}

fn assert_gone(pid: u32, dir: &Path) {
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "registry {pid} still running");
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn busybox_push_and_read_back() {
    let reg = Registry::start(RegistryOptions::default());
    let client = reg.client();
    let pushed = images::busybox().push(&client, "library/busybox", "latest").unwrap();
    assert_eq!(pushed.reference, format!("{}/library/busybox:latest", reg.addr()));

    let resp = client.get_manifest("library/busybox", "latest").unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some(MEDIA_OCI_MANIFEST));
    assert_eq!(resp.header("docker-content-digest"), Some(pushed.manifest_digest.as_str()));
    assert_eq!(sha256_digest(&resp.body), pushed.manifest_digest);
    assert_eq!(resp.body, pushed.manifest);

    let manifest = json(&resp.body);
    assert_eq!(manifest["config"]["digest"], pushed.config_digest.as_str());
    let config = client.get_blob("library/busybox", &pushed.config_digest).unwrap();
    assert_eq!(sha256_digest(&config), pushed.config_digest);
    let config = json(&config);
    assert_eq!(config["architecture"], Platform::host().architecture.as_str());
    assert_eq!(config["os"], "linux");
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["sh"]));
    assert!(config["config"]["Env"][0].as_str().unwrap().starts_with("PATH="));

    let layer = &pushed.layers[0];
    assert_eq!(manifest["layers"][0]["digest"], layer.digest.as_str());
    assert_eq!(
        config["rootfs"]["diff_ids"][0],
        layer.diff_id.as_str(),
        "diff_id is the uncompressed digest"
    );
    let blob = client.get_blob("library/busybox", &layer.digest).unwrap();
    assert_eq!(blob.len() as u64, layer.size);
    let tar = decompress(&blob, Compression::Gzip).unwrap();
    assert_eq!(sha256_digest(&tar), layer.diff_id);
    let entries = entries(&tar);
    for want in ["bin/sh", "bin/ls", "bin/sleep"] {
        let link = entries.iter().find(|(p, _)| p == want);
        assert_eq!(
            link.and_then(|(_, l)| l.as_deref()),
            Some("bin/busybox"),
            "{want} is a hard link to busybox"
        );
    }
    assert!(entries.iter().any(|(p, _)| p == "etc/passwd"));
    assert!(entries.iter().any(|(p, _)| p == "tmp/"));

    // Same input, same digests: image IDs are stable across pushes.
    let again = images::busybox().push(&client, "other/busybox", "v1").unwrap();
    assert_eq!(again.manifest_digest, pushed.manifest_digest);
    assert_eq!(again.image_id(), pushed.image_id());

    let (pid, dir) = (reg.pid(), reg.storage_dir());
    drop(reg);
    assert_gone(pid, dir.parent().unwrap());
}

#[test]
fn tls_and_basic_auth() {
    let reg = Registry::start(RegistryOptions::default().tls().basic_auth("alice", "s3cret"));
    assert!(reg.url().starts_with("https://127.0.0.1:"));
    let ca = reg.ca_pem_path().expect("a CA").to_path_buf();
    assert!(std::fs::read_to_string(&ca).unwrap().contains("BEGIN CERTIFICATE"));

    let anonymous = reg.anonymous_client().get("/v2/", None).unwrap();
    assert_eq!(anonymous.status, 401);
    assert!(anonymous.header("www-authenticate").unwrap().starts_with("Basic"));

    let wrong = RegistryClient::new(&reg.url(), Some(("alice", "nope")), Some(&ca)).unwrap();
    assert_eq!(wrong.get("/v2/", None).unwrap().status, 401);

    let client = reg.client();
    assert_eq!(client.get("/v2/", None).unwrap().status, 200);

    // Without the CA the TLS handshake fails.
    let untrusting = RegistryClient::new(&reg.url(), Some(("alice", "s3cret")), None).unwrap();
    assert!(untrusting.get("/v2/", None).is_err());

    let pushed = images::busybox().push(&client, "secure/busybox", "1").unwrap();
    let resp = client.get_manifest("secure/busybox", "1").unwrap();
    assert_eq!(sha256_digest(&resp.body), pushed.manifest_digest);
    let resp = reg.anonymous_client().get_manifest("secure/busybox", "1").unwrap();
    assert_eq!(resp.status, 401);

    let (pid, dir) = (reg.pid(), reg.storage_dir());
    drop(reg);
    assert_gone(pid, dir.parent().unwrap());
}

#[test]
fn blob_counter_counts_gets_only() {
    let reg = Registry::start(RegistryOptions::default());
    let client = reg.client();
    let pushed = images::busybox().push(&client, "count/busybox", "latest").unwrap();
    let layer = pushed.layers[0].digest.clone();
    assert_eq!(reg.blob_get_count(&layer), 0, "pushing does not GET");

    client.get_blob("count/busybox", &layer).unwrap();
    assert_eq!(reg.blob_get_count(&layer), 1);
    client.get_blob("count/busybox", &layer).unwrap();
    assert!(client.blob_exists("count/busybox", &layer).unwrap());
    assert_eq!(reg.blob_get_count(&layer), 2, "HEAD is not counted");
    assert_eq!(reg.blob_get_count(&pushed.config_digest), 0);
    // A GET of a missing blob still counts: it is a request for that digest.
    let missing = sha256_digest(b"missing");
    assert_eq!(
        client.get(&format!("/v2/count/busybox/blobs/{missing}"), None).unwrap().status,
        404
    );
    assert_eq!(reg.blob_get_count(&missing), 1);

    reg.reset_requests();
    assert_eq!(reg.blob_get_count(&layer), 0);
}

#[test]
fn faults_and_corrupt_blobs() {
    let reg = Registry::start(RegistryOptions::default());
    let client = reg.client();
    let image = Image::new().layer_with(Compression::None, "faults", |b| {
        b.file("f", 0o644, &[7u8; 3000]);
    });
    let pushed = image.push(&client, "faults/img", "latest").unwrap();
    let digest = pushed.layers[0].digest.clone();
    let good = client.get_blob("faults/img", &digest).unwrap();

    reg.set_blob_fault(&digest, BlobFault::Corrupt);
    let bad = client.get_blob("faults/img", &digest).unwrap();
    assert_eq!(bad.len(), good.len());
    assert_ne!(sha256_digest(&bad), digest);

    reg.set_blob_fault(&digest, BlobFault::Replace(b"short".to_vec()));
    assert_eq!(client.get_blob("faults/img", &digest).unwrap(), b"short");

    reg.set_blob_fault(&digest, BlobFault::Truncate);
    assert!(client.get_blob("faults/img", &digest).is_err());

    reg.set_blob_fault(&digest, BlobFault::Status { code: 503, times: 1 });
    assert!(client.get_blob("faults/img", &digest).is_err());
    assert_eq!(client.get_blob("faults/img", &digest).unwrap(), good);

    reg.set_blob_fault(&digest, BlobFault::Delay(std::time::Duration::from_millis(200)));
    let t = std::time::Instant::now();
    client.get_blob("faults/img", &digest).unwrap();
    assert!(t.elapsed() >= std::time::Duration::from_millis(200));
    reg.clear_blob_fault(&digest);

    // The other way: rewrite the stored file behind the registry's back.
    reg.overwrite_stored_blob(&digest, b"tampered").unwrap();
    assert_eq!(client.get_blob("faults/img", &digest).unwrap(), b"tampered");

    // The registry itself refuses an upload whose digest does not match.
    assert!(client.upload_blob("faults/img", b"data", &sha256_digest(b"other")).is_err());
}

#[test]
fn image_variants_push() {
    let reg = Registry::start(RegistryOptions::default());
    let mut client = reg.client();

    let docker = images::busybox_with(ManifestFormat::Docker, Compression::Gzip)
        .push(&client, "v/docker", "latest")
        .unwrap();
    let resp = client.get_manifest("v/docker", "latest").unwrap();
    assert_eq!(resp.header("content-type"), Some(MEDIA_DOCKER_MANIFEST));
    assert_eq!(sha256_digest(&resp.body), docker.manifest_digest);

    let zstd = images::zstd_image().push(&client, "v/zstd", "latest").unwrap();
    assert!(zstd
        .layers
        .iter()
        .all(|l| l.media_type == "application/vnd.oci.image.layer.v1.tar+zstd"));
    let blob = client.get_blob("v/zstd", &zstd.layers[1].digest).unwrap();
    assert_eq!(&blob[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd magic");

    for user in ["www-data", "1234:5678"] {
        let p = images::user_image(user).push(&client, "v/user", &user.replace(':', "-")).unwrap();
        assert_eq!(json(&p.config)["config"]["User"], user);
    }

    let c = images::configured_image().push(&client, "v/config", "1").unwrap();
    let cfg = &json(&c.config)["config"];
    assert_eq!(cfg["WorkingDir"], "/work");
    assert_eq!(cfg["StopSignal"], "SIGUSR1");
    assert!(cfg["Volumes"]["/data"].is_object());

    let w = images::whiteout_image().push(&client, "v/whiteout", "1").unwrap();
    assert_eq!(w.layers.len(), 3);
    let top = client.get_blob("v/whiteout", &w.layers[2].digest).unwrap();
    let names: Vec<String> = entries(&decompress(&top, Compression::Gzip).unwrap())
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert!(names.contains(&"data/.wh.gone".to_string()));
    assert!(names.contains(&"opaque/.wh..wh..opq".to_string()));

    // Chunked uploads end in the same blob.
    client.upload_mode = UploadMode::Chunked(1000);
    let layer = Layer::raw(vec![1u8; 4096], "application/vnd.oci.image.layer.v1.tar", None);
    let chunked = Image::new().layer(layer.clone()).push(&client, "v/chunked", "1").unwrap();
    assert_eq!(chunked.layers[0].digest, layer.digest);
    assert_eq!(client.get_blob("v/chunked", &layer.digest).unwrap(), layer.blob);
}

#[test]
fn multi_platform_index() {
    let reg = Registry::start(RegistryOptions::default());
    let client = reg.client();
    for format in [ManifestFormat::Oci, ManifestFormat::Docker] {
        let tag = format!("{format:?}").to_lowercase();
        let pushed = images::multi_platform_index(format).push(&client, "v/multi", &tag).unwrap();
        let resp = client.get_manifest("v/multi", &tag).unwrap();
        assert_eq!(resp.header("content-type"), Some(format.index_media_type()));
        assert_eq!(sha256_digest(&resp.body), pushed.digest);
        let index = json(&resp.body);
        let manifests = index["manifests"].as_array().unwrap();
        assert!(manifests.len() >= 5);
        let host = Platform::host();
        let last = manifests.last().unwrap();
        assert_eq!(last["platform"]["architecture"], host.architecture.as_str());
        let member = pushed.for_platform(&host).unwrap();
        assert_eq!(last["digest"], member.manifest_digest.as_str());
        let m = client.get_manifest("v/multi", &member.manifest_digest).unwrap();
        assert_eq!(m.status, 200);
        assert_eq!(
            json(&member.config)["config"]["Labels"]["org.berth.platform"],
            host.to_os_arch()
        );
        // Members differ, so picking the wrong one is visible.
        let mut ids: Vec<_> = pushed.images.iter().map(|i| i.image_id()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), pushed.images.len());
    }
}

#[test]
fn big_image_is_deterministic() {
    let reg = Registry::start(RegistryOptions::default());
    let client = reg.client();
    let spec = BigImageSpec::new(42, 3, 2);
    let a = push_big_image(&client, "bench/big", "a", &spec).unwrap();
    let b = push_big_image(&client, "bench/big", "b", &spec).unwrap();
    assert_eq!(a.manifest_digest, b.manifest_digest);
    assert_eq!(a.layers.len(), 4, "busybox + 3 random layers");
    let random: u64 = a.layers[1..].iter().map(|l| l.size).sum();
    assert!(random > 2 * 1024 * 1024, "random data does not compress");
    let other = push_big_image(&client, "bench/big", "c", &BigImageSpec::new(43, 3, 2)).unwrap();
    assert_ne!(other.manifest_digest, a.manifest_digest);
}

#[tokio::test]
async fn usable_from_async_tests() {
    // Fixtures are synchronous but must not panic inside a tokio runtime.
    let reg = Registry::start(RegistryOptions::default());
    let client = reg.client();
    let pushed = images::busybox().push(&client, "async/busybox", "1").unwrap();
    assert_eq!(reg.blob_get_count(&pushed.layers[0].digest), 0);
    drop(client);
    drop(reg);
}

#[test]
fn basic_auth_over_plain_http() {
    let reg = Registry::start(RegistryOptions::default().basic_auth("bob", "pw"));
    assert!(reg.url().starts_with("http://"));
    assert!(reg.ca_pem_path().is_none());
    assert_eq!(reg.anonymous_client().get("/v2/", None).unwrap().status, 401);
    let pushed = images::busybox().push(&reg.client(), "plain/auth", "1").unwrap();
    let resp = reg.client().get_manifest("plain/auth", "1").unwrap();
    assert_eq!(sha256_digest(&resp.body), pushed.manifest_digest);
}

/// Proxy overhead on a big blob: `cargo test --release -- --ignored --nocapture proxy_throughput`.
#[test]
#[ignore]
fn proxy_throughput() {
    let reg = Registry::start(RegistryOptions::default());
    let client = reg.client();
    let mut spec = BigImageSpec::new(1, 1, 128);
    spec.busybox_base = false;
    let pushed = push_big_image(&client, "bench/one", "1", &spec).unwrap();
    let digest = &pushed.layers[0].digest;
    let direct =
        RegistryClient::new(&format!("http://{}", reg.backend_addr()), None, None).unwrap();
    for (name, c) in [("proxy", &client), ("direct", &direct)] {
        let t = std::time::Instant::now();
        let blob = c.get_blob("bench/one", digest).unwrap();
        let secs = t.elapsed().as_secs_f64();
        eprintln!("{name}: {:.0} MiB/s", blob.len() as f64 / secs / 1048576.0);
        assert_eq!(sha256_digest(&blob), *digest);
    }
}
