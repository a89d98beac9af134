//! Ready-made images for the tests. Each function documents what a test can
//! expect to find in the container.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::OnceLock;

use super::image::{Image, ImageConfig, ImageIndex, ManifestFormat, Platform, Platform as P};
use super::layer::{Compression, Layer, LayerBuilder};

/// Debian's static busybox, the one binary every fixture image runs.
pub const BUSYBOX: &str = "/bin/busybox";
pub const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh
www-data:x:33:33:www-data:/var/www:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
";
// www-data is also in `users`, so supplementary groups from /etc/group can be tested.
const GROUP: &str = "root:x:0:
www-data:x:33:
users:x:100:www-data
nogroup:x:65534:
";

/// The applets this busybox provides (`busybox --list`).
pub fn busybox_applets() -> Vec<String> {
    let out = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .unwrap_or_else(|e| panic!("run {BUSYBOX} --list: {e} (install busybox-static)"));
    assert!(out.status.success(), "{BUSYBOX} --list failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .map(str::to_string)
        .collect()
}

/// The uncompressed busybox root filesystem tar, built once per test process.
///
/// `/bin/busybox` plus a hard link in `/bin` for every applet (as the official
/// busybox image does), `/etc/passwd` and `/etc/group` with root, www-data (33)
/// and nobody (65534), `/tmp` (1777), `/root` (700), `/var/www` owned by
/// www-data, and empty `/dev`, `/proc`, `/sys`, `/etc`, `/home`.
pub fn busybox_tar() -> &'static [u8] {
    static TAR: OnceLock<Vec<u8>> = OnceLock::new();
    TAR.get_or_init(|| {
        let binary = std::fs::read(BUSYBOX).unwrap_or_else(|e| panic!("read {BUSYBOX}: {e}"));
        let mut b = LayerBuilder::new();
        for d in ["bin", "dev", "etc", "home", "proc", "sys", "usr", "var"] {
            b.dir(d, 0o755);
        }
        b.dir("usr/bin", 0o755)
            .dir("usr/sbin", 0o755)
            .dir("root", 0o700)
            .dir("tmp", 0o1777)
            .dir("var/tmp", 0o1777)
            .dir_owned("var/www", 0o755, 33, 33)
            .file("etc/passwd", 0o644, PASSWD.as_bytes())
            .file("etc/group", 0o644, GROUP.as_bytes())
            .file("etc/hostname", 0o644, b"busybox\n")
            .file("bin/busybox", 0o755, &binary);
        for applet in busybox_applets() {
            b.hardlink(&format!("bin/{applet}"), "bin/busybox");
        }
        b.finish()
    })
}

/// The busybox base layer with the given compression (compressed once per
/// test process: in debug builds compression dominates image building).
pub fn busybox_layer(compression: Compression) -> Layer {
    static LAYERS: [OnceLock<Layer>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let slot = match compression {
        Compression::None => &LAYERS[0],
        Compression::Gzip => &LAYERS[1],
        Compression::Zstd => &LAYERS[2],
    };
    slot.get_or_init(|| {
        Layer::from_tar(busybox_tar(), compression, "berth fixture: busybox rootfs")
            .expect("compress busybox layer")
    })
    .clone()
}

/// busybox: one gzip layer, OCI manifest, Cmd `["sh"]`, Env PATH.
pub fn busybox() -> Image {
    busybox_with(ManifestFormat::Oci, Compression::Gzip)
}

/// busybox with another manifest format or layer compression.
pub fn busybox_with(format: ManifestFormat, compression: Compression) -> Image {
    let mut image = Image::new().format(format).layer(busybox_layer(compression));
    image.config = ImageConfig {
        env: vec![PATH_ENV.into()],
        cmd: Some(vec!["sh".into()]),
        ..Default::default()
    };
    image
}

/// busybox with zstd layers (the base, and one adding `/etc/zstd` = `"zstd\n"`).
pub fn zstd_image() -> Image {
    busybox_with(ManifestFormat::Oci, Compression::Zstd).layer_with(
        Compression::Zstd,
        "berth fixture: zstd marker",
        |b| {
            b.file("etc/zstd", 0o644, b"zstd\n");
        },
    )
}

/// busybox running as `user` (`www-data`, `1234:5678`, `nobody`…).
pub fn user_image(user: &str) -> Image {
    let mut image = busybox();
    image.config.user = Some(user.to_string());
    image
}

/// busybox whose config sets everything CRI uses:
/// Env `PATH`, `GREETING=hello`, `EMPTY=`; Entrypoint `["/bin/sh", "-c"]`;
/// Cmd `["echo $GREETING from $(pwd)"]`; WorkingDir `/work` (not in any layer:
/// the runtime must create it); StopSignal `SIGUSR1`; Volumes `/data`, `/cache`;
/// ExposedPorts `80/tcp`; label `org.berth.fixture=configured`.
pub fn configured_image() -> Image {
    let mut image = busybox();
    image.config = ImageConfig {
        env: vec![PATH_ENV.into(), "GREETING=hello".into(), "EMPTY=".into()],
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
        cmd: Some(vec!["echo $GREETING from $(pwd)".into()]),
        working_dir: Some("/work".into()),
        user: None,
        stop_signal: Some("SIGUSR1".into()),
        volumes: vec!["/data".into(), "/cache".into()],
        exposed_ports: vec!["80/tcp".into()],
        labels: BTreeMap::from([("org.berth.fixture".into(), "configured".into())]),
    };
    image
}

/// busybox plus two layers exercising whiteouts. In the container:
/// - `/data/keep` = `"keep\n"`, `/data/changed` = `"new\n"` (was `"old\n"`);
/// - `/data/gone` and the directory `/data/gonedir` (with `/data/gonedir/f`)
///   were deleted by `.wh.` whiteouts;
/// - `/opaque` was made opaque (`.wh..wh..opq`) and holds only `new`, not the
///   lower layer's `old` nor `sub/old2`;
/// - `/etc/hostname` deleted (whiteout of a base-layer file).
pub fn whiteout_image() -> Image {
    busybox()
        .layer_with(Compression::Gzip, "berth fixture: files", |b| {
            b.dir("data", 0o755)
                .file("data/keep", 0o644, b"keep\n")
                .file("data/gone", 0o644, b"gone\n")
                .file("data/changed", 0o644, b"old\n")
                .dir("data/gonedir", 0o755)
                .file("data/gonedir/f", 0o644, b"f\n")
                .dir("opaque", 0o755)
                .file("opaque/old", 0o644, b"old\n")
                .dir("opaque/sub", 0o755)
                .file("opaque/sub/old2", 0o644, b"old2\n");
        })
        .layer_with(Compression::Gzip, "berth fixture: deletions", |b| {
            b.whiteout("data/gone")
                .whiteout("data/gonedir")
                .file("data/changed", 0o644, b"new\n")
                .whiteout("etc/hostname")
                .dir("opaque", 0o755)
                .opaque("opaque")
                .file("opaque/new", 0o644, b"new\n");
        })
}

/// The platforms [`multi_platform_index`] lists, in index order.
///
/// The host platform comes last (after amd64 when the host is amd64 too), so a
/// client that simply takes the first entry picks the wrong image.
pub fn index_platforms() -> Vec<Platform> {
    let host = P::host();
    let mut list: Vec<Platform> = [
        P::new("arm", Some("v7")),
        P::new("arm64", None),
        P::new("amd64", None),
        P::new("s390x", None),
        P::new("ppc64le", None),
    ]
    .into_iter()
    .filter(|p| *p != host)
    .collect();
    list.push(host);
    list
}

/// An index over [`index_platforms`]. Every member has `/etc/berth-platform`
/// containing e.g. `"linux/arm64\n"`, Env `BERTH_PLATFORM=linux/arm64` and
/// label `org.berth.platform`. Only the host's member also has the busybox
/// layer (the others are a single tiny layer), so only it can run; its
/// `/etc/berth-platform` is the host's `Platform::to_os_arch()`.
pub fn multi_platform_index(format: ManifestFormat) -> ImageIndex {
    let host = P::host();
    let images = index_platforms()
        .into_iter()
        .map(|p| {
            let name = p.to_os_arch();
            let mut image = if p == host {
                busybox_with(format, Compression::Gzip)
            } else {
                Image::new().format(format)
            };
            image =
                image.platform(p).layer_with(Compression::Gzip, "berth fixture: platform", |b| {
                    b.dir("etc", 0o755).file(
                        "etc/berth-platform",
                        0o644,
                        format!("{name}\n").as_bytes(),
                    );
                });
            image.config.env = vec![PATH_ENV.into(), format!("BERTH_PLATFORM={name}")];
            image.config.cmd = Some(vec!["cat".into(), "/etc/berth-platform".into()]);
            image.config.labels.insert("org.berth.platform".into(), name.clone());
            image
        })
        .collect();
    ImageIndex { format, images }
}
