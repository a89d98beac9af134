//! The one error type of berth-network.
//!
//! Variants are chosen so that `berth-cri-server` can map them onto gRPC codes without
//! looking at messages: `InvalidArgument`, `AlreadyExists`, `NotFound`, `Exhausted`
//! (resource exhausted) and the rest (internal).

use std::io;

use crate::ipam::IpamError;

/// Errors from pod networking.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// A caller-supplied value (pod id, port, path, …) is not acceptable.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The thing to create is already there (a netns pin, a veth of another pod).
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// Something required is missing (a netns pin, a link).
    #[error("not found: {0}")]
    NotFound(String),
    /// IP address management failed (subnet full, bad lease, …).
    #[error(transparent)]
    Ipam(#[from] IpamError),
    /// A system call or file operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// A netlink request failed.
    #[error("{context}: {source}")]
    Netlink {
        context: String,
        #[source]
        source: rtnetlink::Error,
    },
    /// The kernel did not answer a netlink request in time.
    #[error("{0}: no answer from the kernel within {1:?} (netlink)")]
    Timeout(String, std::time::Duration),
    /// The pod network cannot take pods now (CNI mode: no usable config, a plugin
    /// binary missing).
    #[error("the pod network is not ready: {0}")]
    NotReady(String),
    /// A CNI plugin failed (the message names the plugin and the command).
    #[error("{0}")]
    Plugin(String),
    /// Applying or reading the nftables ruleset failed.
    #[error("nftables: {0}")]
    Firewall(String),
}

impl NetworkError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        NetworkError::Io { context: context.into(), source }
    }

    pub(crate) fn errno(context: impl Into<String>, errno: nix::errno::Errno) -> Self {
        NetworkError::Io { context: context.into(), source: io::Error::from(errno) }
    }

    pub(crate) fn netlink(context: impl Into<String>, source: rtnetlink::Error) -> Self {
        NetworkError::Netlink { context: context.into(), source }
    }
}

/// Result alias for this crate.
pub type Result<T, E = NetworkError> = std::result::Result<T, E>;

/// Checks a pod id before it is used in a file name, an interface alias or an nftables
/// comment: 1–128 characters from `[A-Za-z0-9_.-]`, not `.` or `..`. CRI sandbox ids are
/// 64 hex digits, so this only rejects what would be unsafe to splice anywhere.
pub fn validate_pod_id(pod_id: &str) -> Result<()> {
    let ok_chars =
        pod_id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if pod_id.is_empty() || pod_id.len() > 128 || !ok_chars || pod_id == "." || pod_id == ".." {
        return Err(NetworkError::InvalidArgument(format!(
            "pod id {pod_id:?} must be 1-128 characters of [A-Za-z0-9_.-]"
        )));
    }
    Ok(())
}
