//! Sandbox and container ids.

use std::io::Read;

/// A new id: 64 random hex digits, the shape the kubelet and crictl expect (they print
/// its first 13).
pub fn new_id() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex::encode(bytes))
}
