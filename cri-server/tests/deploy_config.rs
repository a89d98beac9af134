//! deploy/config.toml is what the Debian package installs as /etc/berth/config.toml (a
//! conffile) and what it says of itself: berthd accepts it, and its values are berthd's
//! embedded defaults, so a node with the package's file runs as one without it.

use berth_cri_server::config::Config;
use std::path::Path;

#[test]
fn the_packaged_config_file_is_accepted_and_holds_the_embedded_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config.toml");
    let text = std::fs::read_to_string(&path).expect("deploy/config.toml");
    let config = Config::parse(&text, &path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config, Config::default(), "deploy/config.toml differs from berthd's defaults");
}
