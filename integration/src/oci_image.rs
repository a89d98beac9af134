//! OCI / Docker schema2 images built in Rust and pushed to a test registry.
//!
//! An [`Image`] is a platform, a config and a list of [`Layer`]s; pushing it
//! uploads the layers and the config, then `PUT`s the manifest under a tag. An
//! [`ImageIndex`] groups images of several platforms. JSON is produced with
//! `serde_json`'s sorted maps, so the same image always has the same digest.
//! Ready-made images are in [`images`].
//!
//! ```no_run
//! use berth_integration::oci_image::{images, Layer};
//! use berth_integration::registry::{BlobFault, Registry, RegistryOptions};
//!
//! let reg = Registry::start(RegistryOptions::default().tls().basic_auth("u", "p"));
//! let client = reg.client(); // trusts reg.ca_pem_path(), sends the credentials
//! let busybox = images::busybox().push(&client, "library/busybox", "latest").unwrap();
//! // berthd pulls busybox.reference = "127.0.0.1:PORT/library/busybox:latest"
//! let layer = &busybox.layers[0].digest;
//! assert_eq!(reg.blob_get_count(layer), 0);
//!
//! // A hostile or corrupt layer: push any bytes with any media type...
//! let hostile = Layer::raw(b"not a tar".to_vec(), "application/vnd.oci.image.layer.v1.tar", None);
//! let bad = images::busybox().layer(hostile).push(&client, "bad/image", "1").unwrap();
//! // ...or serve a pushed blob corrupted (the registry itself never would).
//! reg.set_blob_fault(&bad.layers[0].digest, BlobFault::Corrupt);
//! ```

pub mod big;
pub mod client;
mod image;
pub mod images;
pub mod layer;
mod media;

pub use client::{HttpResponse, RegistryClient, UploadMode};
pub use image::*;
pub use layer::{sha256_digest, Compression, Layer, LayerBuilder};
pub use media::*;
