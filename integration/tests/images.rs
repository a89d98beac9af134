//! The ImageService through a real berthd, pulling from a real registry on loopback
//! through registry mirrors, as a node configured for a local mirror would.

use berth_integration::oci_image::images;
use berth_integration::oci_image::{
    sha256_digest, Compression, Image, Layer, ManifestFormat, Platform,
};
use berth_integration::registry::{BlobFault, Registry, RegistryOptions};
use berth_integration::{Berthd, Options};
use berth_proto::*;
use std::path::{Path, PathBuf};
use tonic::Code;

/// berthd with `docker.io` and `registry.k8s.io` mirrored to `registry`, plus `extra`
/// config lines.
async fn berthd_for(registry: &Registry, extra: &str) -> Berthd {
    let url = registry.url();
    let config = format!(
        "[registry.mirrors.\"docker.io\"]\nendpoints = [\"{url}\"]\n\
         [registry.mirrors.\"registry.k8s.io\"]\nendpoints = [\"{url}\"]\n{extra}"
    );
    Berthd::start_with(Options { config: Some(config), ..Default::default() }).await
}

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec { image: image.into(), ..Default::default() })
}

async fn pull(berthd: &Berthd, image: &str) -> Result<String, tonic::Status> {
    berthd
        .image()
        .pull_image(PullImageRequest { image: spec(image), ..Default::default() })
        .await
        .map(|r| r.into_inner().image_ref)
}

async fn status(berthd: &Berthd, image: &str) -> Option<berth_proto::Image> {
    berthd
        .image()
        .image_status(ImageStatusRequest { image: spec(image), verbose: false })
        .await
        .unwrap()
        .into_inner()
        .image
}

async fn list(berthd: &Berthd) -> Vec<berth_proto::Image> {
    berthd.image().list_images(ListImagesRequest::default()).await.unwrap().into_inner().images
}

async fn remove(berthd: &Berthd, image: &str) {
    berthd.image().remove_image(RemoveImageRequest { image: spec(image) }).await.unwrap();
}

/// Directories of unpacked layers berthd keeps.
fn layer_dirs(berthd: &Berthd) -> Vec<PathBuf> {
    let dir = berthd.root_dir().join("snapshots/layers");
    let mut out: Vec<_> =
        std::fs::read_dir(dir).map(|d| d.map(|e| e.unwrap().path()).collect()).unwrap_or_default();
    out.sort();
    out
}

fn blobs(berthd: &Berthd) -> usize {
    std::fs::read_dir(berthd.root_dir().join("content/blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Nothing half-made: no unpack or download in progress left behind.
fn assert_no_partial_state(berthd: &Berthd) {
    for dir in ["snapshots/tmp", "content/ingest"] {
        let path = berthd.root_dir().join(dir);
        let left: Vec<_> = std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()).collect();
        assert!(left.is_empty(), "left in {}: {left:?}", path.display());
    }
}

#[tokio::test]
async fn pull_by_short_name_tag_and_digest_through_a_mirror() {
    let registry = Registry::start(RegistryOptions::default());
    let pushed = images::busybox().push(&registry.client(), "library/busybox", "latest").unwrap();
    let berthd = berthd_for(&registry, "").await;

    let image_ref = pull(&berthd, "busybox").await.unwrap();
    assert_eq!(image_ref, pushed.image_id());

    let image = status(&berthd, "busybox").await.expect("pulled image has a status");
    assert_eq!(image.id, pushed.image_id());
    assert_eq!(image.repo_tags, ["docker.io/library/busybox:latest"]);
    assert_eq!(
        image.repo_digests,
        [format!("docker.io/library/busybox@{}", pushed.manifest_digest)]
    );
    assert_eq!(image.size, pushed.layers_size() + pushed.config.len() as u64);
    // Every way of naming it finds the same image.
    for name in [
        "busybox:latest",
        "docker.io/library/busybox",
        pushed.image_id(),
        pushed.image_id().trim_start_matches("sha256:"),
        &format!("busybox@{}", pushed.manifest_digest),
    ] {
        assert_eq!(status(&berthd, name).await.map(|i| i.id), Some(image.id.clone()), "{name}");
    }

    // By digest, through the mirror of another registry, with its path kept.
    let k8s =
        images::busybox().push(&registry.client(), "e2e-test-images/busybox", "1.29-2").unwrap();
    let by_digest = format!("registry.k8s.io/e2e-test-images/busybox@{}", k8s.manifest_digest);
    assert_eq!(pull(&berthd, &by_digest).await.unwrap(), k8s.image_id());
    assert!(status(&berthd, &by_digest).await.is_some());

    let all = list(&berthd).await;
    assert_eq!(all.len(), 1, "same config, one image: {all:?}");
    assert!(all[0]
        .repo_digests
        .iter()
        .any(|d| d.starts_with("registry.k8s.io/e2e-test-images/busybox@")));

    // The filter narrows the list.
    let filtered = berthd
        .image()
        .list_images(ListImagesRequest { filter: Some(ImageFilter { image: spec("busybox") }) })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(filtered.len(), 1);
    let none = berthd
        .image()
        .list_images(ListImagesRequest { filter: Some(ImageFilter { image: spec("nothere") }) })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert!(none.is_empty());
    assert_no_partial_state(&berthd);
}

#[tokio::test]
async fn absent_images_and_bad_names() {
    let registry = Registry::start(RegistryOptions::default());
    let berthd = berthd_for(&registry, "").await;
    assert_eq!(status(&berthd, "busybox").await, None);
    // Removing what is not there succeeds.
    remove(&berthd, "busybox").await;

    let err = pull(&berthd, "Not A Valid//Ref").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("image.image"), "{err:?}");
    let err = berthd.image().pull_image(PullImageRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // Absent from the registry: a clear error naming the image.
    let err = pull(&berthd, "doesnotexist").await.unwrap_err();
    assert!(err.message().contains("docker.io/library/doesnotexist:latest"), "{err:?}");
    assert!(list(&berthd).await.is_empty());
    assert_no_partial_state(&berthd);
}

#[tokio::test]
async fn pulls_share_downloads_and_repeat_pulls_fetch_nothing() {
    let registry = Registry::start(RegistryOptions::default());
    let pushed = images::whiteout_image().push(&registry.client(), "library/multi", "v1").unwrap();
    let berthd = berthd_for(&registry, "").await;

    let pulls = (0..8).map(|_| {
        let berthd = &berthd;
        async move { pull(berthd, "multi:v1").await }
    });
    for result in futures::future::join_all(pulls).await {
        assert_eq!(result.unwrap(), pushed.image_id());
    }
    for layer in &pushed.layers {
        assert_eq!(
            registry.blob_get_count(&layer.digest),
            1,
            "layer {} fetched more than once",
            layer.digest
        );
    }
    assert_eq!(layer_dirs(&berthd).len(), pushed.layers.len());

    pull(&berthd, "multi:v1").await.unwrap();
    for layer in &pushed.layers {
        assert_eq!(registry.blob_get_count(&layer.digest), 1);
    }
    assert_eq!(list(&berthd).await.len(), 1);
}

#[tokio::test]
async fn whiteouts_become_overlay_whiteouts() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let registry = Registry::start(RegistryOptions::default());
    images::whiteout_image().push(&registry.client(), "library/wh", "latest").unwrap();
    let berthd = berthd_for(&registry, "").await;
    pull(&berthd, "wh").await.unwrap();

    let dirs = layer_dirs(&berthd);
    let top = dirs
        .iter()
        .map(|d| d.join("fs"))
        .find(|d| d.join("opaque/new").exists())
        .expect("top layer");
    let gone = std::fs::symlink_metadata(top.join("data/gone")).unwrap();
    assert!(gone.file_type().is_char_device() && gone.rdev() == 0, "whiteout is a 0/0 char device");
    assert!(std::fs::symlink_metadata(top.join("data/gonedir"))
        .unwrap()
        .file_type()
        .is_char_device());
    let opaque = xattr(&top.join("opaque"), "trusted.overlay.opaque");
    assert_eq!(opaque.as_deref(), Some(&b"y"[..]));
    assert!(!top.join(".wh..wh..opq").exists() && !top.join("data/.wh.gone").exists());
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 64];
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| buf[..len as usize].to_vec())
}

#[tokio::test]
async fn index_resolves_to_this_platform_and_zstd_and_docker_formats_pull() {
    let registry = Registry::start(RegistryOptions::default());
    let client = registry.client();
    let index = images::multi_platform_index(ManifestFormat::Oci)
        .push(&client, "library/multi-arch", "v1")
        .unwrap();
    let docker = images::multi_platform_index(ManifestFormat::Docker)
        .push(&client, "library/multi-arch-docker", "v1")
        .unwrap();
    let zstd = images::zstd_image().push(&client, "library/zstd", "v1").unwrap();
    let berthd = berthd_for(&registry, "").await;

    let host = Platform::host();
    assert_eq!(
        pull(&berthd, "multi-arch:v1").await.unwrap(),
        index.for_platform(&host).unwrap().image_id()
    );
    assert_eq!(
        pull(&berthd, "multi-arch-docker:v1").await.unwrap(),
        docker.for_platform(&host).unwrap().image_id()
    );
    // Only the chosen platform's layers were fetched.
    for member in index.images.iter().filter(|m| m.platform != host) {
        for layer in &member.layers {
            assert_eq!(
                registry.blob_get_count(&layer.digest),
                0,
                "fetched a layer of {:?}",
                member.platform
            );
        }
    }
    // The index digest names the image.
    let by_index = format!("docker.io/library/multi-arch@{}", index.digest);
    assert!(status(&berthd, &by_index).await.is_some(), "{by_index}");

    assert_eq!(pull(&berthd, "zstd:v1").await.unwrap(), zstd.image_id());
}

#[tokio::test]
async fn image_user_becomes_uid_or_username() {
    let registry = Registry::start(RegistryOptions::default());
    images::user_image("www-data").push(&registry.client(), "library/named", "v1").unwrap();
    images::user_image("1234:5678").push(&registry.client(), "library/numeric", "v1").unwrap();
    let berthd = berthd_for(&registry, "").await;
    pull(&berthd, "named:v1").await.unwrap();
    pull(&berthd, "numeric:v1").await.unwrap();
    let named = status(&berthd, "named:v1").await.unwrap();
    assert_eq!((named.uid, named.username.as_str()), (None, "www-data"));
    let numeric = status(&berthd, "numeric:v1").await.unwrap();
    assert_eq!((numeric.uid.map(|u| u.value), numeric.username.as_str()), (Some(1234), ""));
}

#[tokio::test]
async fn corrupt_blob_fails_the_pull_and_leaves_nothing() {
    let registry = Registry::start(RegistryOptions::default());
    let pushed = images::busybox().push(&registry.client(), "library/busybox", "latest").unwrap();
    registry.set_blob_fault(&pushed.layers[0].digest, BlobFault::Corrupt);
    let berthd = berthd_for(&registry, "").await;

    let err = pull(&berthd, "busybox").await.unwrap_err();
    assert!(err.message().contains(&pushed.layers[0].digest), "{err:?}");
    assert!(err.message().contains("digest"), "{err:?}");
    assert!(list(&berthd).await.is_empty());
    assert!(layer_dirs(&berthd).is_empty(), "{:?}", layer_dirs(&berthd));
    assert_eq!(blobs(&berthd), 0);
    assert_no_partial_state(&berthd);

    // Once the registry serves the right bytes, the same pull works.
    registry.clear_blob_fault(&pushed.layers[0].digest);
    assert_eq!(pull(&berthd, "busybox").await.unwrap(), pushed.image_id());
}

#[tokio::test]
async fn truncated_blob_fails_the_pull() {
    let registry = Registry::start(RegistryOptions::default());
    let pushed = images::busybox().push(&registry.client(), "library/busybox", "latest").unwrap();
    registry.set_blob_fault(&pushed.layers[0].digest, BlobFault::Truncate);
    let berthd = berthd_for(&registry, "").await;
    let err = pull(&berthd, "busybox").await.unwrap_err();
    assert!(err.message().contains(&pushed.layers[0].digest), "{err:?}");
    assert!(layer_dirs(&berthd).is_empty());
    assert_no_partial_state(&berthd);
}

/// A tar whose entries are written byte by byte, so names no tar library would write
/// (`..`, absolute paths) can be made.
fn raw_tar(entries: &[(&str, u8, &[u8], &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, data, link) in entries {
        let mut header = tar::Header::new_old();
        {
            let old = header.as_old_mut();
            old.name[..name.len()].copy_from_slice(name.as_bytes());
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(data.len() as u64);
        header.set_entry_type(tar::EntryType::new(*kind));
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

#[tokio::test]
async fn hostile_layers_are_refused_and_write_nothing_outside() {
    let registry = Registry::start(RegistryOptions::default());
    let berthd = berthd_for(&registry, "").await;
    // Targets an escape would hit: next to the layer store, and an absolute path.
    let sentinel_dir = berthd.root_dir().join("snapshots");
    let outside = std::env::temp_dir().join(format!("berth-escape-{}", std::process::id()));
    std::fs::create_dir_all(&outside).unwrap();
    // (case, tar, the entry the error must name)
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("dotdot", raw_tar(&[("../../../../escaped", b'0', b"pwned", "")]), "../../../../escaped"),
        (
            "symlink-then-write",
            raw_tar(&[
                ("link", b'2', b"", outside.to_str().unwrap()),
                ("link/escaped", b'0', b"pwned", ""),
            ]),
            "link/escaped",
        ),
        ("hardlink-outside", raw_tar(&[("hl", b'1', b"", "../../../../../etc/passwd")]), "hl"),
    ];
    for (name, tar, entry) in cases {
        let layer = Layer::raw(tar, "application/vnd.oci.image.layer.v1.tar", None);
        let repo = format!("library/hostile-{name}");
        Image::new().layer(layer).push(&registry.client(), &repo, "v1").unwrap();
        let err = pull(&berthd, &format!("hostile-{name}:v1")).await.unwrap_err();
        assert!(err.message().contains(&format!("layer entry \"{entry}\"")), "{name}: {err:?}");
        assert!(list(&berthd).await.is_empty(), "{name}");
        assert!(layer_dirs(&berthd).is_empty(), "{name}");
        assert_no_partial_state(&berthd);
    }
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "something was written outside");
    for dir in [&sentinel_dir, &berthd.root_dir(), &std::env::temp_dir(), Path::new("/")] {
        assert!(!dir.join("escaped").exists(), "escaped into {}", dir.display());
    }
    let passwd = std::fs::metadata("/etc/passwd").unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::nlink(&passwd), 1, "/etc/passwd was hard-linked");
    std::fs::remove_dir_all(&outside).unwrap();
}

#[tokio::test]
async fn a_layer_bomb_is_refused() {
    let registry = Registry::start(RegistryOptions::default());
    let big = vec![0u8; 4 << 20];
    let tar = raw_tar(&[("big", b'0', &big, "")]);
    let layer = Layer::from_tar(&tar, Compression::Gzip, "bomb").unwrap();
    Image::new().layer(layer).push(&registry.client(), "library/bomb", "v1").unwrap();
    let berthd = berthd_for(&registry, "[image]\nmax_layer_bytes = 1048576\n").await;
    let err = pull(&berthd, "bomb:v1").await.unwrap_err();
    assert!(err.message().contains("limit"), "{err:?}");
    assert!(layer_dirs(&berthd).is_empty());
    assert_no_partial_state(&berthd);
}

/// A gzip layer of one file of `size` zeros, compressed hard (a real bomb is): about
/// 1000x smaller than what it unpacks to.
fn zeros_bomb(size: usize) -> Layer {
    use std::io::Write;
    let tar = raw_tar(&[("zeros", b'0', &vec![0u8; size], "")]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&tar).unwrap();
    let media_type = "application/vnd.oci.image.layer.v1.tar+gzip";
    Layer::raw(gz.finish().unwrap(), media_type, Some(sha256_digest(&tar)))
}

#[tokio::test]
async fn a_decompression_bomb_is_refused_and_leaves_nothing() {
    let registry = Registry::start(RegistryOptions::default());
    let bomb = zeros_bomb(64 << 20);
    assert!(bomb.blob.len() < 256 << 10, "{}", bomb.blob.len());
    let pushed = Image::new().layer(bomb).push(&registry.client(), "library/zbomb", "v1").unwrap();
    images::busybox().push(&registry.client(), "library/busybox", "latest").unwrap();
    // The default ratio (100x), past a floor small enough to keep the test fast.
    let berthd = berthd_for(&registry, "[image]\nexpansion_floor_bytes = 1048576\n").await;

    let err = pull(&berthd, "zbomb:v1").await.unwrap_err();
    assert_eq!(err.code(), Code::Unknown, "{err:?}");
    let layer = &pushed.layers[0].digest;
    assert!(
        err.message().contains(&format!("layer {layer}: unpacks to more than 100x")),
        "{err:?}"
    );
    assert!(list(&berthd).await.is_empty());
    assert!(status(&berthd, "zbomb:v1").await.is_none());
    assert!(layer_dirs(&berthd).is_empty(), "{:?}", layer_dirs(&berthd));
    assert_eq!(blobs(&berthd), 0, "manifest or config of a refused image kept");
    assert_no_partial_state(&berthd);

    // A real image, past the same floor, compresses far less and still pulls.
    pull(&berthd, "busybox").await.unwrap();
    assert_eq!(list(&berthd).await.len(), 1);
    drop(berthd);

    // A filesystem that cannot keep min_free_bytes free refuses even a small layer.
    let berthd = berthd_for(&registry, "[image]\nmin_free_bytes = 9223372036854775807\n").await;
    let err = pull(&berthd, "busybox").await.unwrap_err();
    assert!(err.message().contains("image.min_free_bytes"), "{err:?}");
    assert!(err.message().contains("layer sha256:"), "{err:?}");
    assert!(list(&berthd).await.is_empty());
    assert!(layer_dirs(&berthd).is_empty());
    assert_no_partial_state(&berthd);
}

#[tokio::test]
async fn remove_by_tag_deletes_the_image_and_its_layers() {
    let registry = Registry::start(RegistryOptions::default());
    images::busybox().push(&registry.client(), "library/busybox", "latest").unwrap();
    let other = images::whiteout_image().push(&registry.client(), "library/wh", "latest").unwrap();
    let berthd = berthd_for(&registry, "").await;
    pull(&berthd, "busybox").await.unwrap();
    pull(&berthd, "wh").await.unwrap();
    // The whiteout image shares busybox's base layer.
    assert_eq!(layer_dirs(&berthd).len(), other.layers.len());

    remove(&berthd, "docker.io/library/wh:latest").await;
    assert_eq!(status(&berthd, "wh").await, None);
    assert!(status(&berthd, "busybox").await.is_some());
    assert_eq!(layer_dirs(&berthd).len(), 1, "the shared base layer stays");

    remove(&berthd, "busybox").await;
    assert!(list(&berthd).await.is_empty());
    assert!(layer_dirs(&berthd).is_empty());
    assert_eq!(blobs(&berthd), 0);
    remove(&berthd, "busybox").await;
}

#[tokio::test]
async fn images_survive_a_restart_and_fs_info_counts_them() {
    let registry = Registry::start(RegistryOptions::default());
    let pushed = images::busybox().push(&registry.client(), "library/busybox", "latest").unwrap();
    let mut berthd = berthd_for(&registry, "").await;
    let before = berthd.image().image_fs_info(ImageFsInfoRequest {}).await.unwrap().into_inner();
    pull(&berthd, "busybox").await.unwrap();
    let after = berthd.image().image_fs_info(ImageFsInfoRequest {}).await.unwrap().into_inner();
    let used = |r: &ImageFsInfoResponse| r.image_filesystems[0].used_bytes.as_ref().unwrap().value;
    let inodes =
        |r: &ImageFsInfoResponse| r.image_filesystems[0].inodes_used.as_ref().unwrap().value;
    // busybox is a ~1 MiB static binary plus its applet links.
    assert!(used(&after) >= used(&before) + 500_000, "{} -> {}", used(&before), used(&after));
    // Applets are hard links to one binary: few inodes, but more than before.
    assert!(inodes(&after) > inodes(&before) + 5, "{} -> {}", inodes(&before), inodes(&after));
    let mountpoint = &after.image_filesystems[0].fs_id.as_ref().unwrap().mountpoint;
    assert!(Path::new(mountpoint).is_dir(), "{mountpoint}");

    berthd.stop().await;
    berthd.restart().await;
    assert_eq!(status(&berthd, "busybox").await.map(|i| i.id).as_deref(), Some(pushed.image_id()));
    assert_eq!(layer_dirs(&berthd).len(), 1);
}

#[tokio::test]
async fn tls_and_basic_auth() {
    let registry = Registry::start(RegistryOptions::default().tls().basic_auth("berth", "s3cret"));
    let pushed = images::busybox().push(&registry.client(), "library/busybox", "latest").unwrap();
    let ca = registry.ca_pem_path().unwrap().display().to_string();
    let host = registry.addr();
    let trusted = format!("[registry.hosts.\"{host}\"]\nca_file = \"{ca}\"\n");
    let auth = |user: &str, password: &str| PullImageRequest {
        image: spec("busybox"),
        auth: Some(AuthConfig {
            username: user.into(),
            password: password.into(),
            ..Default::default()
        }),
        ..Default::default()
    };

    // Without the CA the TLS handshake fails, and the error says so.
    let untrusting = berthd_for(&registry, "").await;
    let err = untrusting.image().pull_image(auth("berth", "s3cret")).await.unwrap_err();
    assert!(err.message().to_lowercase().contains("certificate"), "{err:?}");
    drop(untrusting);

    let berthd = berthd_for(&registry, &trusted).await;
    let err = pull(&berthd, "busybox").await.unwrap_err();
    let lower = err.message().to_lowercase();
    assert!(
        lower.contains("401") || lower.contains("unauthorized") || lower.contains("auth"),
        "{err:?}"
    );
    let err = berthd.image().pull_image(auth("berth", "wrong")).await.unwrap_err();
    assert!(!err.message().contains("wrong"), "the password leaked into the error: {err:?}");
    let image_ref =
        berthd.image().pull_image(auth("berth", "s3cret")).await.unwrap().into_inner().image_ref;
    assert_eq!(image_ref, pushed.image_id());
}

#[tokio::test]
async fn credentials_file_is_used_when_the_pull_brings_none() {
    use base64::Engine as _;
    let registry = Registry::start(RegistryOptions::default().basic_auth("berth", "s3cret"));
    let pushed = images::busybox().push(&registry.client(), "library/busybox", "latest").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let auth_file = dir.path().join("config.json");
    let token = base64::engine::general_purpose::STANDARD.encode("berth:s3cret");
    let auths = serde_json::json!({"auths": {registry.addr(): {"auth": token}}});
    std::fs::write(&auth_file, auths.to_string()).unwrap();
    let berthd =
        berthd_for(&registry, &format!("[registry]\nauth_file = \"{}\"\n", auth_file.display()))
            .await;
    assert_eq!(pull(&berthd, "busybox").await.unwrap(), pushed.image_id());
}

#[tokio::test]
async fn bearer_token_challenge_is_answered_with_the_pull_credentials() {
    let registry = Registry::start(RegistryOptions::default().token_auth("berth", "s3cret"));
    let pushed =
        images::busybox().push(&registry.backend_client(), "library/busybox", "latest").unwrap();
    let berthd = berthd_for(&registry, "").await;
    let with = |user: &str, password: &str| PullImageRequest {
        image: spec("busybox"),
        auth: Some(AuthConfig {
            username: user.into(),
            password: password.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    // Anonymous: the token endpoint refuses, and so does the pull.
    let err = pull(&berthd, "busybox").await.unwrap_err();
    assert!(status(&berthd, "busybox").await.is_none(), "{err:?}");
    let err = berthd.image().pull_image(with("berth", "wrong")).await.unwrap_err();
    assert!(!err.message().contains("wrong"), "the password leaked into the error: {err:?}");
    let image_ref =
        berthd.image().pull_image(with("berth", "s3cret")).await.unwrap().into_inner().image_ref;
    assert_eq!(image_ref, pushed.image_id());
    assert!(
        registry.token_scopes().iter().any(|s| s == "repository:library/busybox:pull"),
        "{:?}",
        registry.token_scopes()
    );
    // Every blob came through with a token: none was refused once one was issued.
    let refused_after_token = registry
        .requests()
        .iter()
        .skip_while(|r| r.path != "/token" || r.status != 200)
        .filter(|r| r.path.contains("/blobs/") && r.status == 401)
        .count();
    assert_eq!(refused_after_token, 0, "{:?}", registry.requests());
}

#[tokio::test]
async fn a_stalled_download_is_aborted() {
    let registry = Registry::start(RegistryOptions::default());
    let pushed = images::busybox().push(&registry.client(), "library/busybox", "latest").unwrap();
    registry.set_blob_fault(
        &pushed.layers[0].digest,
        BlobFault::Delay(std::time::Duration::from_secs(30)),
    );
    let berthd = berthd_for(&registry, "[image]\npull_progress_timeout_secs = 1\n").await;
    let started = std::time::Instant::now();
    let err = pull(&berthd, "busybox").await.unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "took {:?}", started.elapsed());
    assert!(err.message().contains("no data received"), "{err:?}");
    assert!(layer_dirs(&berthd).is_empty());
    assert_no_partial_state(&berthd);
}

#[tokio::test]
async fn a_crash_mid_pull_leaves_nothing_half_listed() {
    let registry = Registry::start(RegistryOptions::default());
    let pushed = images::whiteout_image().push(&registry.client(), "library/wh", "latest").unwrap();
    // The last layer hangs, so the others are unpacked when berthd dies.
    let last = &pushed.layers.last().unwrap().digest;
    registry.set_blob_fault(last, BlobFault::Delay(std::time::Duration::from_secs(30)));
    let mut berthd = berthd_for(&registry, "").await;
    let puller = {
        let mut image = berthd.image();
        tokio::spawn(async move {
            image.pull_image(PullImageRequest { image: spec("wh"), ..Default::default() }).await
        })
    };
    // Wait until the other layers are on disk, then crash.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while layer_dirs(&berthd).len() < pushed.layers.len() - 1 {
        assert!(std::time::Instant::now() < deadline, "layers never arrived");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    berthd.kill();
    assert!(puller.await.unwrap().is_err());
    berthd.restart().await;
    assert!(list(&berthd).await.is_empty(), "a half-pulled image is listed");
    assert!(layer_dirs(&berthd).is_empty(), "orphaned layers kept: {:?}", layer_dirs(&berthd));
    assert_eq!(blobs(&berthd), 0);
    assert_no_partial_state(&berthd);
    registry.clear_blob_fault(last);
    assert_eq!(pull(&berthd, "wh").await.unwrap(), pushed.image_id());
}

/// A tmpfs of `size` over berthd's snapshot directory (where layers are unpacked),
/// with the directories berthd expects in it; unmounted on drop.
struct FullDisk(PathBuf);

impl FullDisk {
    fn over_snapshots(berthd: &Berthd, size: &str) -> FullDisk {
        let dir = berthd.root_dir().join("snapshots");
        let opts = format!("size={size},mode=0700");
        nix::mount::mount(
            Some("tmpfs"),
            &dir,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(opts.as_str()),
        )
        .unwrap();
        for sub in ["layers", "tmp", "containers"] {
            std::fs::create_dir(dir.join(sub)).unwrap();
        }
        FullDisk(dir)
    }
}

impl Drop for FullDisk {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[tokio::test]
async fn a_full_disk_fails_the_pull_cleanly_and_a_pull_that_fits_still_works() {
    use berth_integration::oci_image::big::{push_big_image, BigImageSpec};
    let registry = Registry::start(RegistryOptions::default());
    images::busybox().push(&registry.client(), "library/busybox", "latest").unwrap();
    let big =
        push_big_image(&registry.client(), "library/big", "3x12", &BigImageSpec::new(7, 3, 12))
            .unwrap();
    // No free-space floor: this is about what a write that fails with ENOSPC leaves.
    let berthd = berthd_for(&registry, "[image]\nmin_free_bytes = 0\n").await;
    let disk = FullDisk::over_snapshots(&berthd, "6m");

    // 12 MiB of layers onto 6 MiB: the error says why, and nothing of it stays.
    let err = pull(&berthd, "big:3x12").await.unwrap_err();
    assert!(err.message().contains("No space left on device"), "{err:?}");
    assert!(layer_dirs(&berthd).is_empty(), "{:?}", layer_dirs(&berthd));
    assert_no_partial_state(&berthd);
    let status = berthd
        .image()
        .image_status(ImageStatusRequest { image: spec("big:3x12"), verbose: false })
        .await
        .unwrap()
        .into_inner();
    assert!(status.image.is_none(), "a failed pull is listed: {:?}", big.image_id());

    // The node keeps working: an image that fits pulls on the same disk.
    pull(&berthd, "busybox").await.unwrap();
    assert_eq!(layer_dirs(&berthd).len(), 1);
    drop(berthd);
    drop(disk);
}
