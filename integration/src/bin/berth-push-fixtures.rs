//! Pushes the test images to a registry, for trying berth by hand (`crictl pull`) and
//! for benchmarks.
//!
//!     berth-push-fixtures [URL]                      busybox and friends
//!     berth-push-fixtures [URL] --big LAYERS MIB     library/big:<LAYERS>x<MIB>, random data

use berth_integration::oci_image::big::{push_big_image, BigImageSpec};
use berth_integration::oci_image::{images, RegistryClient};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = args
        .first()
        .filter(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:5000".into());
    let client = RegistryClient::new(&url, None, None)?;
    if let Some(i) = args.iter().position(|a| a == "--big") {
        let layers: usize = args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or(5);
        let mib: u64 = args.get(i + 2).and_then(|v| v.parse().ok()).unwrap_or(200);
        let spec = BigImageSpec::new(1, layers, mib);
        let pushed = push_big_image(&client, "library/big", &format!("{layers}x{mib}"), &spec)?;
        println!(
            "{} {} ({} bytes)",
            pushed.reference,
            pushed.manifest_digest,
            pushed.layers_size()
        );
        return Ok(());
    }
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
