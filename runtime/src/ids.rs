//! Sandbox and container ids: new ones, and the full one a prefix names.

use std::io::Read;

use crate::error::RuntimeError;

/// A new id: 64 random hex digits, the shape the kubelet and crictl expect (they print
/// its first 13).
pub fn new_id() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// The full id that `wanted` names among `ids`, so a person at `crictl` can type the
/// first few digits of one, as `crictl ps` prints them. One behaviour for pods and
/// containers:
///
/// * an id that exists is itself, even when it is also a prefix of a longer one;
/// * else the only id it is a prefix of;
/// * `Ok(None)` when it names none: the caller answers NotFound, or succeeds where the
///   CRI asks a call to be idempotent (Stop*, Remove* on what is gone);
/// * InvalidArgument when it is empty (`field` named as required), or when it is a
///   prefix of several ids: acting on any of them, or quietly on none, would be a guess
///   (containerd too fails the call rather than pick one). The person retries with more
///   digits; the kubelet always sends full ids.
pub fn resolve<'a>(
    field: &str,
    wanted: &str,
    ids: impl IntoIterator<Item = &'a str>,
) -> Result<Option<String>, RuntimeError> {
    if wanted.is_empty() {
        return Err(RuntimeError::InvalidArgument(format!("{field}: required")));
    }
    let mut found: Option<&str> = None;
    let mut ambiguous = false;
    for id in ids {
        if id == wanted {
            return Ok(Some(id.to_string()));
        }
        if id.starts_with(wanted) {
            ambiguous |= found.is_some();
            found = Some(id);
        }
    }
    if ambiguous {
        return Err(RuntimeError::InvalidArgument(format!(
            "{field}: {wanted:?} is the start of more than one id; give more of it"
        )));
    }
    Ok(found.map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve_in(wanted: &str, ids: &[&str]) -> Result<Option<String>, RuntimeError> {
        resolve("container_id", wanted, ids.iter().copied())
    }

    #[test]
    fn new_ids_are_64_hex_digits_and_differ() {
        let (a, b) = (new_id().unwrap(), new_id().unwrap());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn exact_id_or_unique_prefix() {
        let ids = ["abc123", "abd456", "xyz"];
        assert_eq!(resolve_in("abc123", &ids).unwrap().as_deref(), Some("abc123"));
        assert_eq!(resolve_in("abc", &ids).unwrap().as_deref(), Some("abc123"));
        assert_eq!(resolve_in("x", &ids).unwrap().as_deref(), Some("xyz"));
    }

    #[test]
    fn unknown_is_none() {
        assert_eq!(resolve_in("q", &["abc123", "xyz"]).unwrap(), None);
        assert_eq!(resolve_in("abc1234", &["abc123"]).unwrap(), None);
        assert_eq!(resolve_in("q", &[]).unwrap(), None);
    }

    #[test]
    fn ambiguous_prefix_is_invalid_argument() {
        let err = resolve_in("ab", &["abc123", "abd456"]).unwrap_err();
        match err {
            RuntimeError::InvalidArgument(m) => {
                assert!(m.starts_with("container_id: \"ab\""), "{m}")
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn an_exact_id_wins_over_longer_ids_it_prefixes_wherever_it_is_listed() {
        assert_eq!(resolve_in("ab", &["ab", "abc"]).unwrap().as_deref(), Some("ab"));
        assert_eq!(resolve_in("ab", &["abc", "abd", "ab"]).unwrap().as_deref(), Some("ab"));
    }

    #[test]
    fn empty_is_invalid_argument_naming_the_field() {
        match resolve("pod_sandbox_id", "", ["abc"]) {
            Err(RuntimeError::InvalidArgument(m)) => assert_eq!(m, "pod_sandbox_id: required"),
            r => panic!("{r:?}"),
        }
    }
}
