//! The runtime's errors, by what the caller should do about them: each kind becomes one
//! gRPC code at the CRI edge, so the sandbox and container services share one type.

use crate::metadata::MetadataError;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unimplemented(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("{0}")]
    Internal(String),
}

impl From<MetadataError> for RuntimeError {
    fn from(e: MetadataError) -> Self {
        RuntimeError::Internal(e.to_string())
    }
}

/// An internal error from anything printable.
pub fn internal(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Internal(e.to_string())
}
