//! Start, stop and remove: of one container, and of all the containers of a pod.

use crate::container::record::ContainerRecord;
use crate::error::internal;
use crate::image::Images;
use crate::shim::client::ExitWait;
use crate::shim::protocol::Status;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{ContainerError, Containers, Result};

impl Containers {
    pub async fn start(self: &Arc<Self>, wanted: &str) -> Result<()> {
        let rec = self.get(wanted)?;
        let _lock = self.locks.lock(rec.id.clone()).await;
        let (id, pod_id) = (rec.id.clone(), rec.pod_id.clone());
        self.blocking(move |this| {
            let mut shim = this.shim(&rec.pod_id, false)?;
            shim.start(&rec.id).map_err(|e| {
                ContainerError::FailedPrecondition(format!("starting {}: {e}", rec.id))
            })
        })
        .await??;
        self.events.started(&id, &pod_id);
        self.watch_exit(id, pod_id);
        Ok(())
    }

    /// Sends `signal` (the image's StopSignal or SIGTERM), waits up to `timeout`, then
    /// SIGKILLs. Stopping a stopped or unknown container succeeds.
    pub async fn stop(
        self: &Arc<Self>,
        wanted: &str,
        timeout: Duration,
        signal: i32,
    ) -> Result<()> {
        let rec = match self.get(wanted) {
            Ok(r) => r,
            Err(ContainerError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let _lock = self.locks.lock(rec.id.clone()).await;
        let id = rec.id.clone();
        let stopped = self.blocking(move |this| this.stop_blocking(&rec, timeout, signal)).await?;
        // Its exit watch may answer a moment later: the next status must not wait for it.
        self.forget_state(&id);
        stopped
    }

    fn stop_blocking(&self, rec: &ContainerRecord, timeout: Duration, signal: i32) -> Result<()> {
        let Ok(mut shim) = self.shim(&rec.pod_id, false) else { return Ok(()) };
        let Ok(state) = shim.state(&rec.id) else { return Ok(()) };
        if state.status != Status::Running {
            return Ok(());
        }
        // Parked before the first signal: the shim answers it as it reaps the process, so
        // the stop returns with the exit rather than at the next look at the state.
        let Ok(mut exit) = ExitWait::send(&self.shim_paths(&rec.pod_id), &rec.id) else {
            return Ok(());
        };
        if !timeout.is_zero() {
            // The container's process is usually PID 1 of its namespace, where a signal
            // with no handler is dropped. A process stopped right after it started may not
            // have installed its handler yet (`sh -c app` before `app` runs): deliver the
            // signal again once a handler appears, so the grace period is not wasted.
            let mut delivered_to_handler = catches(state.pid, signal);
            let _ = shim.kill(&rec.id, signal, false);
            let deadline = Instant::now() + timeout;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                // Without a handler yet, look for one now and then; with one, only the
                // exit (or the end of the grace period) wakes this.
                let slice = if delivered_to_handler { left } else { left.min(HANDLER_LOOK) };
                if exit.stopped_within(slice) {
                    return Ok(());
                }
                if left.is_zero() {
                    break;
                }
                if !delivered_to_handler && catches(state.pid, signal) {
                    delivered_to_handler = true;
                    let _ = shim.kill(&rec.id, signal, false);
                }
            }
        }
        let _ = shim.kill(&rec.id, libc::SIGKILL, true);
        if !exit.stopped_within(Duration::from_secs(10)) {
            return Err(internal(format!("container {} did not die after SIGKILL", rec.id)));
        }
        Ok(())
    }

    /// Removes a container (killing it first if it runs); absent is fine.
    pub async fn remove(self: &Arc<Self>, images: &Images, wanted: &str) -> Result<()> {
        let rec = match self.get(wanted) {
            Ok(r) => r,
            Err(ContainerError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.stop(&rec.id, Duration::ZERO, libc::SIGKILL).await?;
        let _lock = self.locks.lock(rec.id.clone()).await;
        let _ = std::fs::remove_file(self.shim_paths(&rec.pod_id).exit_file(&rec.id));
        self.undo_create(images, &rec).await?;
        self.forget_state(&rec.id);
        self.forget_exec_template(&rec.id);
        self.events.deleted(&rec.id, &rec.pod_id);
        Ok(())
    }

    /// Stops every container of a pod (StopPodSandbox).
    pub async fn stop_pod(self: &Arc<Self>, pod_id: &str) -> Result<()> {
        for rec in self.list()?.into_iter().filter(|r| r.pod_id == pod_id) {
            self.stop(&rec.id, Duration::ZERO, libc::SIGKILL).await?;
        }
        // A stopped pod keeps no process: its init (if it shares a PID namespace) goes too.
        let pod = pod_id.to_string();
        self.blocking(move |this| {
            if let Ok(mut shim) = this.shim(&pod, false) {
                let _ = shim.stop_pod_init();
            }
        })
        .await?;
        Ok(())
    }

    /// Removes every container of a pod and its shim (RemovePodSandbox).
    pub async fn remove_pod(self: &Arc<Self>, images: &Images, pod_id: &str) -> Result<()> {
        for rec in self.list()?.into_iter().filter(|r| r.pod_id == pod_id) {
            self.remove(images, &rec.id).await?;
        }
        let pod = pod_id.to_string();
        self.blocking(move |this| {
            if let Ok(mut shim) = this.shim(&pod, false) {
                if shim.shutdown(true).is_ok() {
                    // The connection ends when the shim has exited, after it removed its
                    // socket: wait for that instead of looking for the socket.
                    shim.wait_closed(Duration::from_secs(5));
                }
            }
            let paths = this.shim_paths(&pod);
            // The shim removes its socket as it exits; wait for that, then its directory.
            let deadline = Instant::now() + Duration::from_secs(5);
            while paths.socket().exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = std::fs::remove_dir_all(paths.dir());
        })
        .await?;
        Ok(())
    }
}

/// How often a stop looks whether the container's process has installed a handler for
/// the stop signal yet (see [`Containers::stop`]).
const HANDLER_LOOK: Duration = Duration::from_millis(20);

/// Whether process `pid` has a handler installed for `signal` (`SigCgt` in its status).
fn catches(pid: i32, signal: i32) -> bool {
    if pid <= 0 || !(1..=64).contains(&signal) {
        return false;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return false };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1u64 << (signal - 1)) != 0)
}
