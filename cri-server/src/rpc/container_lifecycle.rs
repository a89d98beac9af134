//! StartContainer, StopContainer and RemoveContainer.

use super::{errors, Cri};
use crate::rpc_span::record_container;
use berth_proto::{
    RemoveContainerRequest, RemoveContainerResponse, StartContainerRequest, StartContainerResponse,
    StopContainerRequest, StopContainerResponse,
};
use std::time::Duration;
use tonic::Status;

pub async fn start_container(
    cri: &Cri,
    req: StartContainerRequest,
) -> Result<StartContainerResponse, Status> {
    if req.container_id.is_empty() {
        return Err(errors::missing("container_id"));
    }
    record_container(&req.container_id);
    cri.inner.containers.start(&req.container_id).await.map_err(errors::runtime)?;
    Ok(StartContainerResponse {})
}

pub async fn stop_container(
    cri: &Cri,
    req: StopContainerRequest,
) -> Result<StopContainerResponse, Status> {
    if req.container_id.is_empty() {
        return Err(errors::missing("container_id"));
    }
    record_container(&req.container_id);
    let timeout = Duration::from_secs(req.timeout.max(0) as u64);
    // The image's StopSignal, else SIGTERM.
    let signal = match cri.inner.containers.get(&req.container_id) {
        Ok(rec) => cri
            .inner
            .images
            .resolve(&rec.image_id.to_string())
            .ok()
            .flatten()
            .and_then(|image| signal_number(&image.config.stop_signal))
            .unwrap_or(libc::SIGTERM),
        Err(_) => libc::SIGTERM,
    };
    cri.inner.containers.stop(&req.container_id, timeout, signal).await.map_err(errors::runtime)?;
    Ok(StopContainerResponse {})
}

pub async fn remove_container(
    cri: &Cri,
    req: RemoveContainerRequest,
) -> Result<RemoveContainerResponse, Status> {
    if req.container_id.is_empty() {
        return Err(errors::missing("container_id"));
    }
    record_container(&req.container_id);
    cri.inner
        .containers
        .remove(&cri.inner.images, &req.container_id)
        .await
        .map_err(errors::runtime)?;
    Ok(RemoveContainerResponse {})
}

pub async fn reopen_container_log(
    cri: &Cri,
    req: berth_proto::ReopenContainerLogRequest,
) -> Result<berth_proto::ReopenContainerLogResponse, Status> {
    if req.container_id.is_empty() {
        return Err(errors::missing("container_id"));
    }
    record_container(&req.container_id);
    cri.inner.containers.reopen_log(&req.container_id).await.map_err(errors::runtime)?;
    Ok(berth_proto::ReopenContainerLogResponse {})
}

/// `SIGQUIT`, `QUIT` or `3` as a signal number.
fn signal_number(name: &str) -> Option<i32> {
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    if let Ok(n) = name.parse::<i32>() {
        return Some(n);
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    full.parse::<nix::sys::signal::Signal>().ok().map(|s| s as i32)
}

#[cfg(test)]
mod tests {
    use super::signal_number;

    #[test]
    fn stop_signals() {
        assert_eq!(signal_number("SIGQUIT"), Some(libc::SIGQUIT));
        assert_eq!(signal_number("quit"), Some(libc::SIGQUIT));
        assert_eq!(signal_number("9"), Some(9));
        assert_eq!(signal_number(""), None);
        assert_eq!(signal_number("SIGNOPE"), None);
    }
}
