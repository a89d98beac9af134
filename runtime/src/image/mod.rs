pub mod manifest;
pub mod record;
