//! Exec, Attach and PortForward: validate, and hand out a single-use URL on the
//! streaming server, which does the work when the client connects.

use super::{errors, Cri};
use crate::rpc_span::record_container;
use crate::streaming::{Pending, PodNetwork};
use berth_proto::{
    AttachRequest, AttachResponse, ExecRequest, ExecResponse, PortForwardRequest,
    PortForwardResponse,
};
use berth_runtime::container::streams::StreamOptions;
use berth_runtime::sandbox::record::SandboxState;
use tonic::Status;

/// The checks the kubelet's own streaming server makes of a session's streams.
fn options(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Result<StreamOptions, Status> {
    if !(stdin || stdout || stderr) {
        return Err(Status::invalid_argument("stdin, stdout, stderr: one of them must be set"));
    }
    if tty && stderr {
        return Err(Status::invalid_argument(
            "tty, stderr: cannot both be true (a terminal has one output stream)",
        ));
    }
    Ok(StreamOptions { stdin, stdout, stderr, tty })
}

fn url(cri: &Cri, pending: Pending) -> Result<String, Status> {
    cri.inner
        .streaming
        .url(pending)
        .map_err(|e| Status::internal(format!("cannot make a streaming token: {e}")))
}

pub async fn exec(cri: &Cri, req: ExecRequest) -> Result<ExecResponse, Status> {
    if req.container_id.is_empty() {
        return Err(errors::missing("container_id"));
    }
    record_container(&req.container_id);
    if req.cmd.is_empty() {
        return Err(errors::missing("cmd"));
    }
    let opts = options(req.stdin, req.stdout, req.stderr, req.tty)?;
    let rec = cri.inner.containers.get(&req.container_id).map_err(errors::runtime)?;
    let observed = cri.inner.containers.observe(&rec).await;
    if observed.status != berth_runtime::shim::protocol::Status::Running {
        return Err(Status::failed_precondition(format!(
            "container_id: container {} is not running",
            rec.id
        )));
    }
    let url = url(cri, Pending::Exec { container_id: rec.id, cmd: req.cmd, opts })?;
    Ok(ExecResponse { url })
}

pub async fn attach(cri: &Cri, req: AttachRequest) -> Result<AttachResponse, Status> {
    if req.container_id.is_empty() {
        return Err(errors::missing("container_id"));
    }
    record_container(&req.container_id);
    let opts = options(req.stdin, req.stdout, req.stderr, req.tty)?;
    let rec = cri.inner.containers.get(&req.container_id).map_err(errors::runtime)?;
    if req.stdin && !rec.stdin {
        return Err(Status::invalid_argument(format!(
            "stdin: container {} was not created with stdin open",
            rec.id
        )));
    }
    // The container decides whether there is a terminal, not the request.
    let opts = StreamOptions { tty: rec.tty, stderr: opts.stderr && !rec.tty, ..opts };
    let url = url(cri, Pending::Attach { container_id: rec.id, opts })?;
    Ok(AttachResponse { url })
}

pub async fn port_forward(
    cri: &Cri,
    req: PortForwardRequest,
) -> Result<PortForwardResponse, Status> {
    if req.pod_sandbox_id.is_empty() {
        return Err(errors::missing("pod_sandbox_id"));
    }
    if let Some(p) = req.port.iter().find(|p| **p <= 0 || **p > 65535) {
        return Err(Status::invalid_argument(format!("port: {p} is not a TCP port")));
    }
    let pod = cri.inner.sandboxes.status(&req.pod_sandbox_id).map_err(errors::runtime)?;
    if pod.state != SandboxState::Ready {
        return Err(Status::failed_precondition(format!(
            "pod_sandbox_id: pod sandbox {} is not ready",
            pod.id
        )));
    }
    let url = url(cri, Pending::PortForward { network: PodNetwork { netns: pod.netns.clone() } })?;
    Ok(PortForwardResponse { url })
}
