//! The wall clock as the CRI and the log format carry it: unix nanoseconds in an `i64`.

/// Wall-clock now in unix nanoseconds; 0 on a clock set before 1970, which no caller
/// can do better with than the epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}
