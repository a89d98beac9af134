//! How a pod's set-up reaches the pod's shim, which the containers service owns.
//!
//! RunPodSandbox starts the shim early, next to the namespaces and the network, so that
//! the pod's first CreateContainer does not pay for a fork+exec and the shim's start-up.

use std::sync::Arc;

pub trait PodShims: Send + Sync {
    /// Starts the shim of `pod_id` in the background, not waiting for it. If that start
    /// fails, the pod's first container starts the shim itself and reports why not.
    fn start_early(self: Arc<Self>, pod_id: &str);
    /// The pod's set-up failed: its shim is stopped (after a start under way) and its
    /// directory removed. Blocking.
    fn discard(&self, pod_id: &str);
}
