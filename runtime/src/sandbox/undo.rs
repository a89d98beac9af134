//! A stack of undo actions, so a RunPodSandbox that fails at any step takes back every
//! step before it without each error path having to know what came before.
//!
//! Each step that creates something pushes the action that removes it. On success the
//! stack is [`Undo::commit`]ted (forgotten); on failure [`Undo::rollback`] runs the
//! actions newest first. If the stack is dropped while still armed (the task was
//! cancelled mid-way), the actions run on a spawned task, so even then nothing leaks.

use futures::future::BoxFuture;

type Action = Box<dyn FnOnce() -> BoxFuture<'static, Result<(), String>> + Send>;

#[derive(Default)]
pub struct Undo {
    actions: Vec<(String, Action)>,
}

impl Undo {
    /// Pushes an async undo action, described by `what` for the log.
    pub fn push_async<F, Fut>(&mut self, what: impl Into<String>, f: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        self.actions.push((what.into(), Box::new(move || Box::pin(f()))));
    }

    /// Pushes a blocking undo action.
    pub fn push<F>(&mut self, what: impl Into<String>, f: F)
    where
        F: FnOnce() -> Result<(), String> + Send + 'static,
    {
        self.push_async(what, move || async move { f() });
    }

    /// Success: nothing is undone.
    pub fn commit(mut self) {
        self.actions.clear();
    }

    /// Failure: runs every action, newest first; failures are logged, not returned (the
    /// caller reports the error that caused the rollback).
    pub async fn rollback(mut self) {
        run(std::mem::take(&mut self.actions)).await;
    }
}

async fn run(actions: Vec<(String, Action)>) {
    for (what, action) in actions.into_iter().rev() {
        if let Err(e) = action().await {
            tracing::warn!(step = %what, error = %e, "undo failed");
        } else {
            tracing::debug!(step = %what, "undone");
        }
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        let actions = std::mem::take(&mut self.actions);
        if actions.is_empty() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(run(actions));
            }
            Err(_) => tracing::error!("undo stack dropped outside a runtime; leftovers remain"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn rollback_runs_newest_first_and_commit_runs_nothing() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut undo = Undo::default();
        for i in 0..3 {
            let log = log.clone();
            undo.push(format!("step {i}"), move || {
                log.lock().unwrap().push(i);
                if i == 1 {
                    Err("fails but the others still run".into())
                } else {
                    Ok(())
                }
            });
        }
        undo.rollback().await;
        assert_eq!(*log.lock().unwrap(), [2, 1, 0]);

        let mut undo = Undo::default();
        let l = log.clone();
        undo.push("x", move || {
            l.lock().unwrap().push(9);
            Ok(())
        });
        undo.commit();
        assert_eq!(log.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn dropped_armed_stack_still_undoes() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut undo = Undo::default();
        undo.push("signal", move || {
            let _ = tx.send(());
            Ok(())
        });
        drop(undo);
        tokio::time::timeout(std::time::Duration::from_secs(1), rx).await.unwrap().unwrap();
    }
}
