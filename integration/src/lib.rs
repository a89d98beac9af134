//! End-to-end test support for berth: a real `berthd` started as root on temporary
//! directories, and the fixtures tests pull images from.

pub mod bench;
pub mod berthd;
pub mod leaks;
pub mod oci_image;
pub mod otlp;
pub mod pods;
pub mod registry;
pub mod streaming;
pub mod tls;

pub use berthd::{Berthd, Options};

/// `d` stretched by `BERTH_TEST_TIME_SCALE` (default 1): the VM lane runs the tests in a
/// guest under emulation, where everything takes tens of times longer, and sets it. A
/// deadline is how long a test waits before it calls a hang a hang; scaling it never
/// lets a wrong answer pass.
pub fn scaled(d: std::time::Duration) -> std::time::Duration {
    let scale = std::env::var("BERTH_TEST_TIME_SCALE")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .filter(|s| *s > 0)
        .unwrap_or(1);
    d * scale
}
