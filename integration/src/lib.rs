//! placeholder
pub mod oci_image;
pub mod registry;
pub mod tls;
