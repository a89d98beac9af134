//! Domain errors as gRPC status codes.

use berth_runtime::error::RuntimeError;
use berth_runtime::image::ImageError;
use tonic::Status;

pub fn image(e: ImageError) -> Status {
    match e {
        ImageError::InvalidReference(e) => Status::invalid_argument(format!("image.image: {e}")),
        ImageError::InvalidArgument(m) => Status::invalid_argument(m),
        ImageError::NotFound(m) => Status::not_found(m),
        ImageError::InUse(m) => Status::failed_precondition(m),
        // The registry said no, or could not be reached: not berth's fault, and the
        // kubelet retries with back-off whatever the code.
        e @ ImageError::Pull { .. } => Status::unknown(e.to_string()),
        e @ (ImageError::Metadata(_) | ImageError::Storage(_)) => Status::internal(e.to_string()),
    }
}

/// A required message field the caller left out.
pub fn missing(field: &str) -> Status {
    Status::invalid_argument(format!("{field}: required"))
}

/// A sandbox or container service error as its gRPC code.
pub fn runtime(e: RuntimeError) -> Status {
    match e {
        RuntimeError::InvalidArgument(m) => Status::invalid_argument(m),
        RuntimeError::AlreadyExists(m) => Status::already_exists(m),
        RuntimeError::NotFound(m) => Status::not_found(m),
        RuntimeError::FailedPrecondition(m) => Status::failed_precondition(m),
        RuntimeError::Unimplemented(m) => Status::unimplemented(m),
        RuntimeError::ResourceExhausted(m) => Status::resource_exhausted(m),
        RuntimeError::DeadlineExceeded(m) => Status::deadline_exceeded(m),
        RuntimeError::Internal(m) => Status::internal(m),
    }
}
