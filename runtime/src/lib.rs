//! berth's domain: images, snapshots, sandboxes, containers, shims and cgroups.
//!
//! Nothing here knows about gRPC or the CRI's messages: `berth-cri-server` turns a
//! request into a domain type (`sandbox::PodSpec`, `container::ContainerSpec`,
//! `container::ContainerResources`), decoding the CRI's enums and deprecated fields on the
//! way, calls into this crate and maps its errors onto status codes. Errors still name
//! fields by their CRI path (`config.mounts[1].host_path`): that is what the user wrote.

pub mod apparmor;
pub mod cgroup_migration;
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
pub mod security_profile;
pub mod selinux;
pub mod shim;
pub mod snapshot;
pub mod state_lock;
pub mod stats;
pub mod systemd;
pub mod traced;

pub use layout::Layout;
pub use state_lock::StateLock;
