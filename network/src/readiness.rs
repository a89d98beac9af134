//! The pod network's readiness, as the CRI `NetworkReady` condition reports it.

/// Whether pods can be given a network right now, as the CRI `NetworkReady` condition
/// reports it to the kubelet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    NotReady { reason: String, message: String },
}

impl Readiness {
    /// A `NotReady` with the given reason and message.
    pub fn not_ready(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Readiness::NotReady { reason: reason.into(), message: message.into() }
    }

    /// Whether this is `Ready`.
    pub fn is_ready(&self) -> bool {
        matches!(self, Readiness::Ready)
    }
}
