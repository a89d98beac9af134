//! Containers: records, the CRI → OCI spec translation, user resolution, and the service
//! that drives them through the pod's shim.

pub mod checkpoint;
pub mod container_spec;
pub mod devices;
pub mod exits;
pub mod image_volumes;
mod pod_shims;
pub mod record;
pub mod runtime_spec;
pub mod service;
pub mod streams;
pub mod user;

pub use container_spec::{
    ContainerMetadata, ContainerResources, ContainerSpec, DeviceSpec, EnvVar, MountSpec,
    ProfileRequest, Propagation, SecuritySpec,
};
pub use service::{ContainerError, Containers, Observed};
