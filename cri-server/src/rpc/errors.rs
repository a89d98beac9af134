//! Domain errors as gRPC status codes.

use berth_runtime::image::ImageError;
use berth_runtime::sandbox::SandboxError;
use tonic::Status;

pub fn image(e: ImageError) -> Status {
    match e {
        ImageError::InvalidReference(e) => Status::invalid_argument(format!("image.image: {e}")),
        ImageError::InvalidArgument(m) => Status::invalid_argument(m),
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

pub fn sandbox(e: SandboxError) -> Status {
    match e {
        SandboxError::InvalidArgument(m) => Status::invalid_argument(m),
        SandboxError::AlreadyExists(m) => Status::already_exists(m),
        SandboxError::NotFound(m) => Status::not_found(m),
        SandboxError::FailedPrecondition(m) => Status::failed_precondition(m),
        SandboxError::Unimplemented(m) => Status::unimplemented(m),
        SandboxError::ResourceExhausted(m) => Status::resource_exhausted(m),
        SandboxError::Internal(m) => Status::internal(m),
    }
}

pub fn container(e: berth_runtime::container::ContainerError) -> Status {
    use berth_runtime::container::ContainerError as E;
    match e {
        E::InvalidArgument(m) => Status::invalid_argument(m),
        E::AlreadyExists(m) => Status::already_exists(m),
        E::NotFound(m) => Status::not_found(m),
        E::FailedPrecondition(m) => Status::failed_precondition(m),
        E::Internal(m) => Status::internal(m),
    }
}
