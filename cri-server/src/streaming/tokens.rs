//! Single-use, expiring tokens: the path of each URL the streaming RPCs hand out.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;

pub struct Tokens<T> {
    ttl: Duration,
    entries: Mutex<HashMap<String, (T, Instant)>>,
}

/// Tokens that may wait at once; beyond that the oldest are dropped (a client that asks
/// for URLs and never uses them cannot grow the table without bound).
const MAX_ENTRIES: usize = 4096;

impl<T> Tokens<T> {
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, entries: Mutex::new(HashMap::new()) }
    }

    /// Keeps `value` under a new token; returns the token.
    pub fn insert(&self, value: T) -> std::io::Result<String> {
        let mut raw = [0u8; 16];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut raw)?;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, (_, expires)| *expires > now);
        if entries.len() >= MAX_ENTRIES {
            if let Some(oldest) =
                entries.iter().min_by_key(|(_, (_, e))| *e).map(|(k, _)| k.clone())
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(token.clone(), (value, now + self.ttl));
        Ok(token)
    }

    /// The value of a live token, which is then used up.
    pub fn take(&self, token: &str) -> Option<T> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (value, expires) = entries.remove(token)?;
        (expires > Instant::now()).then_some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_single_use_and_expire() {
        let t = Tokens::new(Duration::from_millis(50));
        let a = t.insert(1).unwrap();
        let b = t.insert(2).unwrap();
        assert_ne!(a, b);
        assert_eq!(t.take(&a), Some(1));
        assert_eq!(t.take(&a), None);
        assert_eq!(t.take("nope"), None);
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(t.take(&b), None);
    }
}
