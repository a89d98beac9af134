//! Why a layer could not be unpacked, with the entry it was about.

use std::io;
use std::path::PathBuf;

use crate::snapshot::expansion::ExpansionError;

/// Why a layer could not be unpacked. Entry paths are shown as they appear in the archive.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("opening layer directory {}: {source}", path.display())]
    Dest { path: PathBuf, source: io::Error },
    #[error("reading layer tar after entry {after:?}: {source}")]
    Read { after: String, source: io::Error },
    #[error(
        "layer tar has more than {limit} bytes of metadata before the entry following \
         {after:?}; refusing it as a metadata bomb"
    )]
    MetadataTooLarge { after: String, limit: u64 },
    #[error("layer entry {path:?}: {reason}")]
    Rejected { path: String, reason: String },
    #[error("layer entry {path:?}: layer content exceeds the limit of {limit} bytes")]
    TooManyBytes { path: String, limit: u64 },
    #[error("layer entry {path:?}: layer has more than the limit of {limit} entries")]
    TooManyEntries { path: String, limit: u64 },
    #[error("layer entry {path:?}: {op}: {source}")]
    Io { path: String, op: String, source: io::Error },
    #[error(transparent)]
    Expansion(ExpansionError),
}

impl UnpackError {
    /// The archive entry the error is about, if it is about one.
    pub fn entry_path(&self) -> Option<&str> {
        match self {
            UnpackError::Rejected { path, .. }
            | UnpackError::TooManyBytes { path, .. }
            | UnpackError::TooManyEntries { path, .. }
            | UnpackError::Io { path, .. } => Some(path),
            _ => None,
        }
    }
}

pub(super) fn rejected(path: &str, reason: impl Into<String>) -> UnpackError {
    UnpackError::Rejected { path: path.to_owned(), reason: reason.into() }
}

pub(super) fn io_err(
    path: &str,
    op: impl Into<String>,
    source: impl Into<io::Error>,
) -> UnpackError {
    UnpackError::Io { path: path.to_owned(), op: op.into(), source: source.into() }
}
