//! Containers: records, the CRI → OCI spec translation, user resolution, and the service
//! that drives them through the pod's shim.

pub mod checkpoint;
pub mod devices;
pub mod exits;
pub mod image_volumes;
mod pod_shims;
pub mod record;
pub mod runtime_spec;
pub mod service;
pub mod streams;
pub mod user;

pub use service::{ContainerError, Containers, Observed};
