//! Images: references, pulling and the image store.

pub mod reference;
