//! Images: references, registries, pulling and the image store.

pub mod manifest;
pub mod pull;
pub mod record;
pub mod reference;
pub mod registry;
pub mod service;

pub use service::{ImageError, ImageSettings, Images};
