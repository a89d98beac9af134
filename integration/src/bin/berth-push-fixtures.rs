//! Pushes the test images to a registry, for trying berth by hand (crictl pull) and for
//! benchmarks: `berth-push-fixtures http://127.0.0.1:5000`.

use berth_integration::oci_image::{images, RegistryClient};

fn main() -> anyhow::Result<()> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "http://127.0.0.1:5000".into());
    let client = RegistryClient::new(&url, None, None)?;
    for (repo, tag, image) in [
        ("library/busybox", "latest", images::busybox()),
        ("e2e-test-images/busybox", "1.29-2", images::busybox()),
        ("library/whiteout", "latest", images::whiteout_image()),
        ("library/zstd", "latest", images::zstd_image()),
    ] {
        let pushed = image.push(&client, repo, tag)?;
        println!("{} {}", pushed.reference, pushed.manifest_digest);
    }
    Ok(())
}
