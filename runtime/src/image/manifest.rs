//! Manifests as registries serve them: OCI image manifests and indexes, Docker schema2
//! manifests and manifest lists, and choosing the node's platform from an index.

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// What berth asks registries for, in order of preference.
pub const ACCEPTED: &[&str] = &[OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];

/// A parsed manifest document.
#[derive(Debug)]
pub enum Manifest {
    Index(Box<ImageIndex>),
    Image(Box<ImageManifest>),
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("unsupported manifest media type {0:?} (berth pulls OCI and Docker schema2 images)")]
    UnsupportedMediaType(String),
    #[error("malformed {kind}: {message}")]
    Malformed { kind: &'static str, message: String },
    #[error("no image for {wanted} in the index (it has: {available})")]
    NoMatchingPlatform { wanted: String, available: String },
}

impl Manifest {
    /// Parses `bytes` served with `content_type`. The `mediaType` field of the document,
    /// when present, wins over the header: some registries serve every manifest as
    /// `application/json`.
    pub fn parse(bytes: &[u8], content_type: &str) -> Result<Self, ManifestError> {
        #[derive(serde::Deserialize)]
        struct Probe {
            #[serde(rename = "mediaType")]
            media_type: Option<String>,
            #[serde(rename = "schemaVersion")]
            schema_version: Option<u32>,
            manifests: Option<serde_json::Value>,
        }
        let probe: Probe = serde_json::from_slice(bytes)
            .map_err(|e| ManifestError::Malformed { kind: "manifest", message: e.to_string() })?;
        if probe.schema_version != Some(2) {
            return Err(ManifestError::UnsupportedMediaType(format!(
                "schemaVersion {:?}",
                probe.schema_version
            )));
        }
        let media_type = probe.media_type.unwrap_or_else(|| {
            // OCI documents may omit mediaType; tell them apart by shape.
            if probe.manifests.is_some() {
                OCI_INDEX.into()
            } else {
                content_type.into()
            }
        });
        match media_type.as_str() {
            OCI_INDEX | DOCKER_LIST => {
                serde_json::from_slice(bytes).map(Manifest::Index).map_err(|e| {
                    ManifestError::Malformed { kind: "image index", message: e.to_string() }
                })
            }
            OCI_MANIFEST | DOCKER_MANIFEST => {
                serde_json::from_slice(bytes).map(Manifest::Image).map_err(|e| {
                    ManifestError::Malformed { kind: "image manifest", message: e.to_string() }
                })
            }
            // A bare `application/json` with no mediaType and no manifests is an image.
            "application/json" | "" => {
                serde_json::from_slice(bytes).map(Manifest::Image).map_err(|e| {
                    ManifestError::Malformed { kind: "image manifest", message: e.to_string() }
                })
            }
            other => Err(ManifestError::UnsupportedMediaType(other.into())),
        }
    }
}

/// The platform images are chosen for: this node's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlatform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl NodePlatform {
    pub fn current() -> Self {
        // Go's GOARCH names, which image indexes use.
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Self {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: variant.map(Into::into),
        }
    }

    /// Picks the manifest for this platform. A matching variant is preferred; an entry
    /// without a variant is accepted (arm64 images rarely state `v8`).
    pub fn select<'a>(&self, index: &'a ImageIndex) -> Result<&'a Descriptor, ManifestError> {
        let mut fallback = None;
        for d in index.manifests() {
            let Some(p) = d.platform() else { continue };
            if p.os().to_string() != self.os || p.architecture().to_string() != self.architecture {
                continue;
            }
            match (p.variant(), &self.variant) {
                (Some(v), Some(want)) if v == want => return Ok(d),
                (None, _) | (Some(_), None) => {
                    fallback.get_or_insert(d);
                }
                _ => {}
            }
        }
        fallback.ok_or_else(|| ManifestError::NoMatchingPlatform {
            wanted: self.to_string(),
            available: index
                .manifests()
                .iter()
                .filter_map(|d| d.platform().as_ref())
                .map(|p| format!("{}/{}", p.os(), p.architecture()))
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

impl std::fmt::Display for NodePlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn index(entries: &[(&str, &str, Option<&str>, &str)]) -> Vec<u8> {
        let manifests: Vec<_> = entries
            .iter()
            .map(|(os, arch, variant, digest)| {
                let mut platform = serde_json::json!({"os": os, "architecture": arch});
                if let Some(v) = variant {
                    platform["variant"] = (*v).into();
                }
                serde_json::json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": 100, "platform": platform})
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}))
            .unwrap()
    }

    #[test]
    fn picks_the_node_platform() {
        let bytes = index(&[("linux", "arm64", Some("v8"), D1), ("linux", "amd64", None, D2)]);
        let Manifest::Index(idx) = Manifest::parse(&bytes, OCI_INDEX).unwrap() else { panic!() };
        let amd = NodePlatform { os: "linux".into(), architecture: "amd64".into(), variant: None };
        assert_eq!(amd.select(&idx).unwrap().digest().to_string(), D2);
        let arm = NodePlatform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: Some("v8".into()),
        };
        assert_eq!(arm.select(&idx).unwrap().digest().to_string(), D1);
        let s390 = NodePlatform { os: "linux".into(), architecture: "s390x".into(), variant: None };
        let err = s390.select(&idx).unwrap_err().to_string();
        assert!(err.contains("linux/amd64") && err.contains("linux/s390x"), "{err}");
    }

    #[test]
    fn docker_and_oci_manifests_parse() {
        for mt in [DOCKER_MANIFEST, OCI_MANIFEST] {
            let doc = serde_json::json!({
                "schemaVersion": 2, "mediaType": mt,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": D1, "size": 10},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": D2, "size": 20}]
            });
            let m =
                Manifest::parse(&serde_json::to_vec(&doc).unwrap(), "application/json").unwrap();
            let Manifest::Image(m) = m else { panic!("{mt} parsed as index") };
            assert_eq!(m.layers().len(), 1);
        }
    }

    #[test]
    fn rejects_schema1_and_garbage() {
        assert!(Manifest::parse(br#"{"schemaVersion": 1, "fsLayers": []}"#, "").is_err());
        assert!(Manifest::parse(b"not json", "").is_err());
        let weird = br#"{"schemaVersion": 2, "mediaType": "application/x-weird"}"#;
        assert!(matches!(Manifest::parse(weird, ""), Err(ManifestError::UnsupportedMediaType(_))));
    }
}
