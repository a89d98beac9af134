//! RemoveImage.

use super::{errors, Cri};
use berth_proto::{RemoveImageRequest, RemoveImageResponse};
use tonic::Status;

pub async fn remove_image(
    cri: &Cri,
    req: RemoveImageRequest,
) -> Result<RemoveImageResponse, Status> {
    let spec = req.image.ok_or_else(|| errors::missing("image"))?;
    let name = spec.image.trim();
    if name.is_empty() {
        return Err(errors::missing("image.image"));
    }
    tracing::Span::current().record("image", name);
    // Removing what is not there succeeds, as the CRI asks.
    cri.inner.images.remove(name).await.map_err(errors::image)?;
    Ok(RemoveImageResponse {})
}
