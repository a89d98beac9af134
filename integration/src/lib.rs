//! End-to-end test support for berth: a real `berthd` started as root on temporary
//! directories, and the fixtures tests pull images from.

pub mod bench;
pub mod berthd;
pub mod leak_checks;
pub mod leaks;
pub mod oci_image;
pub mod otlp;
pub mod pods;
pub mod registry;
pub mod streaming;
pub mod time_scale;
pub mod tls;

pub use berthd::{Berthd, Options};
pub use time_scale::scaled;
