//! ExecSync: a command in a running container, its output and exit code.

use super::{errors, Cri};
use crate::rpc_span::record_container;
use berth_proto::{ExecSyncRequest, ExecSyncResponse};
use std::time::Duration;
use tonic::Status;

pub async fn exec_sync(cri: &Cri, req: ExecSyncRequest) -> Result<ExecSyncResponse, Status> {
    if req.container_id.is_empty() {
        return Err(errors::missing("container_id"));
    }
    record_container(&req.container_id);
    if req.timeout < 0 {
        return Err(Status::invalid_argument("timeout: must not be negative"));
    }
    let timeout = Duration::from_secs(req.timeout as u64);
    let result = cri
        .inner
        .containers
        .exec_sync(&req.container_id, req.cmd, timeout)
        .await
        .map_err(errors::runtime)?;
    if result.timed_out {
        return Err(Status::deadline_exceeded(format!(
            "command timed out after {}s and was killed",
            req.timeout
        )));
    }
    Ok(ExecSyncResponse {
        stdout: result.stdout,
        stderr: result.stderr,
        exit_code: result.exit_code,
    })
}
