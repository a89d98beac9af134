//! How much longer the tests wait where everything is slower (the VM lane's emulated
//! guest).

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
