//! PullImage.

use super::{errors, Cri};
use berth_proto::{AuthConfig, PullImageRequest, PullImageResponse};
use berth_runtime::image::registry::Credentials;
use tonic::Status;

pub async fn pull_image(cri: &Cri, req: PullImageRequest) -> Result<PullImageResponse, Status> {
    let spec = req.image.ok_or_else(|| errors::missing("image"))?;
    let name = spec.image.trim();
    if name.is_empty() {
        return Err(errors::missing("image.image"));
    }
    // One image store serves every handler; an unknown one is refused, as the CRI asks.
    let handlers = cri.inner.containers.runtime_handlers();
    if !handlers.contains(&spec.runtime_handler) {
        return Err(Status::invalid_argument(format!(
            "image.runtime_handler: unknown runtime handler {:?} (known: {handlers:?})",
            spec.runtime_handler
        )));
    }
    tracing::Span::current().record("image", name);
    let creds = req.auth.map(credentials);
    let record = cri.inner.images.pull(name, creds.as_ref()).await.map_err(errors::image)?;
    tracing::info!(image = name, id = %record.id, "pulled");
    // The kubelet uses the returned ref to name the image from now on: its id.
    Ok(PullImageResponse { image_ref: record.id.to_string() })
}

fn credentials(auth: AuthConfig) -> Credentials {
    Credentials {
        username: auth.username,
        password: auth.password,
        auth: auth.auth,
        registry_token: auth.registry_token,
        identity_token: auth.identity_token,
        server_address: auth.server_address,
    }
}
