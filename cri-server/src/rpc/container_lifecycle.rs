//! StartContainer, StopContainer and RemoveContainer.

use super::{errors, Cri};
use crate::rpc_span::record_container;
use berth_proto::{
    RemoveContainerRequest, RemoveContainerResponse, StartContainerRequest, StartContainerResponse,
    StopContainerRequest, StopContainerResponse,
};
use berth_runtime::container::record::ContainerRecord;
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
    let signal = match cri.inner.containers.get(&req.container_id) {
        Ok(rec) => effective_stop_signal(cri, &rec),
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

/// The request's stop signal, else the image's StopSignal, else SIGTERM.
pub fn effective_stop_signal(cri: &Cri, rec: &ContainerRecord) -> i32 {
    if rec.stop_signal != 0 {
        return rec.stop_signal;
    }
    cri.inner
        .images
        .resolve(&rec.image_id.to_string())
        .ok()
        .flatten()
        .and_then(|image| signal_number(&image.config.stop_signal))
        .unwrap_or(libc::SIGTERM)
}

/// A signal number as the CRI's `Signal`; `RUNTIME_DEFAULT` for one it has no name for.
pub fn cri_signal(n: i32) -> berth_proto::Signal {
    use berth_proto::Signal as S;
    let (rtmin, rtmax) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    if (rtmin..=rtmax).contains(&n) {
        // SIGRTMIN+0..15 and SIGRTMAX-14..0 are the names the CRI has.
        let v = if n - rtmin <= 15 {
            S::Sigrtmin as i32 + (n - rtmin)
        } else if rtmax - n <= 14 {
            S::Sigrtmax as i32 - (rtmax - n)
        } else {
            return S::RuntimeDefault;
        };
        return S::try_from(v).unwrap_or(S::RuntimeDefault);
    }
    nix::sys::signal::Signal::try_from(n)
        .ok()
        .and_then(|s| S::from_str_name(s.as_str()))
        .unwrap_or(S::RuntimeDefault)
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
    use super::{cri_signal, signal_number};
    use berth_proto::Signal;

    #[test]
    fn signal_numbers_as_cri_names() {
        assert_eq!(cri_signal(libc::SIGTERM), Signal::Sigterm);
        assert_eq!(cri_signal(libc::SIGRTMIN() + 3), Signal::Sigrtminplus3);
        assert_eq!(cri_signal(libc::SIGRTMAX() - 2), Signal::Sigrtmaxminus2);
        assert_eq!(cri_signal(0), Signal::RuntimeDefault);
    }

    #[test]
    fn stop_signals() {
        assert_eq!(signal_number("SIGQUIT"), Some(libc::SIGQUIT));
        assert_eq!(signal_number("quit"), Some(libc::SIGQUIT));
        assert_eq!(signal_number("9"), Some(9));
        assert_eq!(signal_number(""), None);
        assert_eq!(signal_number("SIGNOPE"), None);
    }
}
