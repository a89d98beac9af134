//! Crash points for the crash-consistency tests: `BERTH_CRASH_AT=name[,name…]` in
//! berthd's environment makes it SIGKILL itself when it reaches a named point, exactly as
//! a crash there would. Unset (always, in production), a point costs one atomic load.

use std::sync::OnceLock;

/// The environment variable naming the points to crash at.
pub const ENV: &str = "BERTH_CRASH_AT";

fn armed() -> &'static [String] {
    static ARMED: OnceLock<Vec<String>> = OnceLock::new();
    ARMED.get_or_init(|| {
        std::env::var(ENV)
            .map(|v| {
                v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
            })
            .unwrap_or_default()
    })
}

/// Dies here, by SIGKILL, if `name` is armed.
pub fn crash_point(name: &str) {
    if armed().iter().any(|a| a == name) {
        tracing::warn!(point = name, "crash point reached: killing berthd");
        // SAFETY: signalling ourselves.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}
