//! berth's domain: images, snapshots, sandboxes, containers, shims and cgroups.
//!
//! Nothing here knows about gRPC; `berth-cri-server` validates requests, calls into this
//! crate and maps its errors onto status codes. The pod side takes a domain `PodSpec`
//! built in `berth-cri-server`; the container side still takes the CRI's own message
//! types (`berth_proto`'s plain prost structs: `ContainerConfig`, resources, security
//! profiles), read field by field where the OCI spec is built (`container::runtime_spec`)
//! and validated with the CRI's field paths — a domain `ContainerSpec` in their place is
//! still to come.

pub mod apparmor;
pub mod cgroupfs;
pub mod clock;
pub mod container;
pub mod content;
pub mod digest;
pub mod error;
pub mod events;
pub mod executor;
pub mod failpoint;
pub mod ids;
pub mod image;
pub mod layout;
pub mod locks;
pub mod metadata;
pub mod mount_api;
pub mod mount_table;
pub mod oci_defaults;
pub mod sandbox;
pub mod selinux;
pub mod shim;
pub mod snapshot;
pub mod state_lock;
pub mod stats;
pub mod systemd;
pub mod traced;

pub use layout::Layout;
pub use state_lock::StateLock;
