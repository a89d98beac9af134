//! Images: references, registries, pulling and the image store.

pub mod manifest;
pub mod record;
pub mod reference;
pub mod registry;
