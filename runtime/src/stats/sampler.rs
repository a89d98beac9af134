//! CPU rate from successive samples: `usage_nano_cores` is the CPU time used between two
//! readings divided by the wall time between them.

use std::collections::HashMap;
use std::sync::Mutex;

/// Below this window a rate is too noisy to keep as the next baseline.
const MIN_WINDOW_NS: i64 = 1_000_000_000;
/// Bound on remembered cgroups; the oldest are forgotten past it.
const MAX_ENTRIES: usize = 16_384;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sample {
    at_ns: i64,
    usage_ns: u64,
}

/// The previous CPU sample of each container and pod, by key.
#[derive(Debug, Default)]
pub struct Sampler {
    prev: Mutex<HashMap<String, Sample>>,
}

impl Sampler {
    /// Whether `key` has a baseline to compute a rate from.
    pub fn has(&self, key: &str) -> bool {
        self.prev.lock().unwrap_or_else(|e| e.into_inner()).contains_key(key)
    }

    /// Records a reading and returns the rate since the baseline (`None` without one).
    /// The baseline moves forward only once it is a second old, so callers polling
    /// rapidly (crictl next to the kubelet) still get a rate over a useful window.
    pub fn rate(&self, key: &str, at_ns: i64, usage_ns: u64) -> Option<u64> {
        let mut prev = self.prev.lock().unwrap_or_else(|e| e.into_inner());
        let now = Sample { at_ns, usage_ns };
        let Some(old) = prev.get(key).copied() else {
            if prev.len() >= MAX_ENTRIES {
                if let Some(k) = prev.iter().min_by_key(|(_, s)| s.at_ns).map(|(k, _)| k.clone()) {
                    prev.remove(&k);
                }
            }
            prev.insert(key.to_string(), now);
            return None;
        };
        let window = at_ns - old.at_ns;
        if window <= 0 || usage_ns < old.usage_ns {
            // A new cgroup under an old name (usage went back): start again.
            prev.insert(key.to_string(), now);
            return None;
        }
        if window >= MIN_WINDOW_NS {
            prev.insert(key.to_string(), now);
        }
        let used = (usage_ns - old.usage_ns) as u128;
        Some((used * 1_000_000_000 / window as u128) as u64)
    }

    /// Forgets every key `keep` rejects (containers and pods that are gone).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.prev.lock().unwrap_or_else(|e| e.into_inner()).retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_over_the_window() {
        let s = Sampler::default();
        assert_eq!(s.rate("c", 0, 0), None);
        // Half a core over half a second; the baseline stays (window < 1 s).
        assert_eq!(s.rate("c", 500_000_000, 250_000_000), Some(500_000_000));
        // One core from the baseline over two seconds; the baseline moves.
        assert_eq!(s.rate("c", 2_000_000_000, 2_000_000_000), Some(1_000_000_000));
        assert_eq!(s.rate("c", 3_000_000_000, 2_000_000_000), Some(0));
        // Usage going back: a new cgroup, no rate yet.
        assert_eq!(s.rate("c", 4_000_000_000, 10), None);
        s.retain(|k| k != "c");
        assert!(!s.has("c"));
    }
}
