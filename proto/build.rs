//! Compiles the CRI wire contract (`cri-api/runtime/v1/api.proto`, upstream and
//! unmodified) into prost types and tonic server/client code.
//!
//! protox parses the proto in Rust, so building needs no `protoc` (Debian 12's is too old
//! for the `debug_redact` option the 1.36 proto uses).

use prost::Message;

fn main() {
    let proto = "cri-api/runtime/v1/api.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["cri-api"]).expect("parse the CRI api.proto");
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    std::fs::write(out.join("cri_descriptor.bin"), fds.encode_to_vec())
        .expect("write the CRI descriptor set");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)
        .expect("generate the CRI types and services");
}
