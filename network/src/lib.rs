//! Pod networking for berth.
//!
//! Owns network namespaces, the `berth0` bridge with its IPAM and port mappings, and the
//! CNI plugin mode. Knows nothing of gRPC: `berth-cri-server` translates.

/// Whether pods can be given a network right now, as the CRI `NetworkReady` condition
/// reports it to the kubelet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    NotReady { reason: String, message: String },
}

/// The readiness of the default (bridge) network.
///
/// The bridge network is not built yet, so the honest answer is "not ready": the kubelet
/// then keeps non-host-network pods pending instead of starting them without a network.
pub fn readiness() -> Readiness {
    Readiness::NotReady {
        reason: "NetworkPluginNotReady".into(),
        message: "berth's bridge network (berth0) is not implemented yet".into(),
    }
}
