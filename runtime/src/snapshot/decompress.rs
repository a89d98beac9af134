//! Choosing a layer decompressor from the layer's OCI/Docker media type.

use std::io::{self, Read};

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression a layer media type implies, or `None` if it is not a layer type we
    /// know. Media-type parameters (`; foo=bar`) are ignored.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        let essence = media_type.split(';').next().unwrap_or("").trim();
        let compression = match essence {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Compression::None,
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Compression::Gzip,
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Compression::Zstd,
            _ => return None,
        };
        Some(compression)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecompressError {
    #[error(
        "unsupported layer media type {0:?}: expected an OCI or Docker layer tar, \
         uncompressed, gzip or zstd"
    )]
    UnsupportedMediaType(String),
    #[error("starting the zstd decoder: {0}")]
    Zstd(#[source] io::Error),
}

/// Wraps `reader` (the layer blob as fetched) in the decoder its media type calls for,
/// giving the tar stream that [`super::unpack::unpack_layer`] reads.
///
/// Gzip accepts multi-member streams (as `pigz` writes). zstd keeps the library's default
/// window limit (128 MiB), so a frame cannot make the decoder allocate more than that.
pub fn decompress<R: Read + Send + 'static>(
    media_type: &str,
    reader: R,
) -> Result<Box<dyn Read + Send>, DecompressError> {
    match Compression::from_media_type(media_type) {
        Some(Compression::None) => Ok(Box::new(reader)),
        Some(Compression::Gzip) => Ok(Box::new(flate2::read::MultiGzDecoder::new(reader))),
        Some(Compression::Zstd) => {
            Ok(Box::new(zstd::stream::read::Decoder::new(reader).map_err(DecompressError::Zstd)?))
        }
        None => Err(DecompressError::UnsupportedMediaType(media_type.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        let cases = [
            ("application/vnd.oci.image.layer.v1.tar", Some(Compression::None)),
            ("application/vnd.oci.image.layer.v1.tar+gzip", Some(Compression::Gzip)),
            ("application/vnd.oci.image.layer.v1.tar+zstd", Some(Compression::Zstd)),
            ("application/vnd.docker.image.rootfs.diff.tar.gzip", Some(Compression::Gzip)),
            ("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", Some(Compression::Gzip)),
            ("application/vnd.oci.image.layer.v1.tar+gzip; x=y", Some(Compression::Gzip)),
            ("application/vnd.oci.image.layer.v1.tar+bzip2", None),
            ("application/vnd.oci.image.config.v1+json", None),
            ("", None),
        ];
        for (media_type, want) in cases {
            assert_eq!(Compression::from_media_type(media_type), want, "{media_type}");
        }
        let err = decompress("application/x-rar", io::empty()).err().unwrap();
        assert!(err.to_string().contains("application/x-rar"), "{err}");
    }

    #[test]
    fn round_trips() {
        use std::io::Write;
        let data = b"layer bytes ".repeat(1000);

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&data[..], 3).unwrap();

        for (media_type, blob) in [
            ("application/vnd.oci.image.layer.v1.tar", data.clone()),
            ("application/vnd.oci.image.layer.v1.tar+gzip", gz.clone()),
            ("application/vnd.docker.image.rootfs.diff.tar.gzip", gz),
            ("application/vnd.oci.image.layer.v1.tar+zstd", zst),
        ] {
            let mut out = Vec::new();
            decompress(media_type, io::Cursor::new(blob)).unwrap().read_to_end(&mut out).unwrap();
            assert_eq!(out, data, "{media_type}");
        }
    }
}
