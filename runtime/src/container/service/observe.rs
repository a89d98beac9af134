//! What a container's state is: asked of its shim, kept while it cannot change, and
//! followed by an exit watch that publishes the container's stop.

use crate::container::record::ContainerRecord;
use crate::shim::protocol::{ContainerState, Status};
use crate::shim::read_exit;
use std::sync::Arc;

use super::{Containers, KnownStates, Observed, Result};

impl Containers {
    /// Publishes STOPPED for container `id` once it stops (an async Wait on the shim).
    pub(super) fn watch_exit(self: &Arc<Self>, id: String, pod_id: String) {
        self.watch_started(&id);
        let this = self.clone();
        tokio::spawn(async move {
            let paths = this.shim_paths(&pod_id);
            if let Err(e) = crate::container::exits::wait(&paths, &id).await {
                tracing::debug!(container_id = %id, error = %e, "exit watch ended without an answer");
            }
            this.forget_state(&id);
            this.events().stopped(&id, &pod_id);
        });
    }

    /// After a berthd restart: watches every container still running, so their exits are
    /// published too.
    pub async fn watch_running(self: &Arc<Self>) {
        let Ok(records) = self.list() else { return };
        for rec in records {
            if self.observe(&rec).await.status == Status::Running {
                self.events().running(&rec.id);
                self.watch_exit(rec.id.clone(), rec.pod_id.clone());
            }
        }
    }

    /// What the shim (or, when it is gone, its exit record) says about a container;
    /// from memory when that cannot have changed.
    pub async fn observe(self: &Arc<Self>, rec: &ContainerRecord) -> Observed {
        if let Some(o) = self.known().states.get(&rec.id) {
            return o.clone();
        }
        let o = self.ask(rec).await;
        if o.status == Status::Stopped && !o.unknown && rec.exit.is_none() {
            self.keep_exit(&rec.id, &o).await;
        }
        let mut known = self.known();
        let lasting = match o.status {
            Status::Stopped => !o.unknown,
            // Only while its exit watch runs: the watch forgets the state when it answers.
            Status::Running => known.watched.contains(&rec.id),
            Status::Created => false,
        };
        if lasting {
            known.states.insert(rec.id.clone(), o.clone());
        }
        o
    }

    /// Records a seen exit in the container's record (best effort: the next observation
    /// tries again).
    async fn keep_exit(self: &Arc<Self>, id: &str, o: &Observed) {
        let exit = crate::shim::ExitRecord {
            exit_code: o.exit_code,
            started_at_ns: o.started_at,
            finished_at_ns: o.finished_at,
            oom_killed: o.oom_killed,
            pid: 0,
        };
        let key = id.to_string();
        let kept = self
            .blocking(move |this| -> Result<()> {
                let id = key;
                let mut tx = this.meta.write()?;
                if let Some(mut rec) = tx.get::<ContainerRecord>(&id)? {
                    if rec.exit.is_none() {
                        rec.exit = Some(exit);
                        tx.put(&id, &rec)?;
                        tx.commit()?;
                    }
                }
                Ok(())
            })
            .await;
        if let Ok(Err(e)) = kept {
            tracing::warn!(container_id = %id, error = %e, "cannot record the container's exit");
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, KnownStates> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An exit watch for `id` starts: its running state may be kept.
    pub(in crate::container) fn watch_started(&self, id: &str) {
        self.known().watched.insert(id.to_string());
    }

    /// The container stopped, or is going away: ask its shim next time.
    pub(in crate::container) fn forget_state(&self, id: &str) {
        let mut known = self.known();
        known.watched.remove(id);
        known.states.remove(id);
    }

    async fn ask(self: &Arc<Self>, rec: &ContainerRecord) -> Observed {
        let (pod, id) = (rec.pod_id.clone(), rec.id.clone());
        let state = self
            .blocking(move |this| this.shim(&pod, false).ok().and_then(|mut s| s.state(&id).ok()))
            .await
            .ok()
            .flatten();
        match state {
            Some(s) => observed(&s),
            // The shim's exit file, else (the volatile state went with a reboot) the exit
            // berthd recorded when it saw it.
            None => match read_exit(&self.shim_paths(&rec.pod_id), &rec.id) {
                Ok(Some(e)) => exited(&e),
                _ => match &rec.exit {
                    Some(e) => exited(e),
                    None => Observed {
                        status: Status::Stopped,
                        pid: 0,
                        started_at: 0,
                        finished_at: 0,
                        exit_code: 255,
                        oom_killed: false,
                        unknown: true,
                    },
                },
            },
        }
    }
}

/// What a recorded exit says.
fn exited(e: &crate::shim::ExitRecord) -> Observed {
    Observed {
        status: Status::Stopped,
        pid: 0,
        started_at: e.started_at_ns,
        finished_at: e.finished_at_ns,
        exit_code: e.exit_code,
        oom_killed: e.oom_killed,
        unknown: false,
    }
}

fn observed(s: &ContainerState) -> Observed {
    Observed {
        status: s.status,
        pid: s.pid,
        started_at: s.started_at_ns,
        finished_at: s.finished_at_ns,
        exit_code: s.exit_code.unwrap_or(0),
        oom_killed: s.oom_killed,
        unknown: false,
    }
}
