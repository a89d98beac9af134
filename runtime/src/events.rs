//! Container lifecycle events (the CRI's GetContainerEvents) fanned out to subscribers.
//!
//! Each subscriber has a bounded window into one shared ring buffer (tokio's broadcast):
//! publishing never waits on a subscriber, and one that falls more than the buffer
//! behind learns it lost events (and the stream serving it ends with an error) instead of
//! slowing the runtime.
//!
//! Every container goes CREATED → STARTED → STOPPED → DELETED, each event once and in
//! that order, whichever path notices a change first (StopContainer, the exit watcher,
//! RemoveContainer): the set of running containers and the send are under one lock.

use std::collections::HashSet;
use std::sync::Mutex;

use tokio::sync::{broadcast, watch};

/// Events a subscriber may fall behind by before it is dropped. 100 containers changing
/// state at once make 400; this leaves room for a busy node.
pub const DEFAULT_CAPACITY: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Started,
    Stopped,
    Deleted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    pub container_id: String,
    pub pod_id: String,
    pub kind: EventKind,
    /// Nanoseconds since the epoch.
    pub created_at: i64,
}

pub struct Events {
    running: Mutex<HashSet<String>>,
    tx: broadcast::Sender<ContainerEvent>,
    closed: watch::Sender<bool>,
}

impl Default for Events {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

/// What a subscriber gets.
pub struct Subscription {
    pub events: broadcast::Receiver<ContainerEvent>,
    /// Turns true when berthd is stopping: the stream should end.
    pub closed: watch::Receiver<bool>,
}

impl Events {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self { running: Mutex::default(), tx, closed: watch::channel(false).0 }
    }

    /// A new subscriber; it sees events published from now on.
    pub fn subscribe(&self) -> Subscription {
        Subscription { events: self.tx.subscribe(), closed: self.closed.subscribe() }
    }

    /// Ends every subscription (berthd is stopping).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }

    pub fn created(&self, id: &str, pod: &str) {
        let _g = self.lock();
        self.send(id, pod, EventKind::Created);
    }

    /// Publishes STARTED and remembers the container runs, so one STOPPED follows.
    pub fn started(&self, id: &str, pod: &str) {
        let mut running = self.lock();
        if running.insert(id.to_string()) {
            self.send(id, pod, EventKind::Started);
        }
    }

    /// Remembers a container found running (after a berthd restart) without an event.
    pub fn running(&self, id: &str) {
        self.lock().insert(id.to_string());
    }

    /// Publishes STOPPED unless it was already published for this run.
    pub fn stopped(&self, id: &str, pod: &str) {
        let mut running = self.lock();
        if running.remove(id) {
            self.send(id, pod, EventKind::Stopped);
        }
    }

    /// Publishes DELETED, preceded by STOPPED if nobody published that yet.
    pub fn deleted(&self, id: &str, pod: &str) {
        let mut running = self.lock();
        if running.remove(id) {
            self.send(id, pod, EventKind::Stopped);
        }
        self.send(id, pod, EventKind::Deleted);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, id: &str, pod: &str, kind: EventKind) {
        let event = ContainerEvent {
            container_id: id.to_string(),
            pod_id: pod.to_string(),
            kind,
            created_at: crate::clock::now_ns(),
        };
        // No subscriber is not an error: events are not kept for later ones.
        let _ = self.tx.send(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::broadcast::error::TryRecvError;

    fn kinds(rx: &mut broadcast::Receiver<ContainerEvent>) -> Vec<(String, EventKind)> {
        let mut out = Vec::new();
        while let Ok(e) = rx.try_recv() {
            out.push((e.container_id, e.kind));
        }
        out
    }

    #[test]
    fn each_event_once_and_in_order() {
        let events = Events::default();
        let mut a = events.subscribe().events;
        let mut b = events.subscribe().events;
        events.created("c", "p");
        events.started("c", "p");
        events.stopped("c", "p");
        events.stopped("c", "p"); // the exit watcher after StopContainer: no second one
        events.deleted("c", "p");
        // Started, never seen stopping, removed: STOPPED comes before DELETED.
        events.created("d", "p");
        events.started("d", "p");
        events.deleted("d", "p");
        events.stopped("d", "p");
        use EventKind::*;
        let want: Vec<(String, EventKind)> = [
            ("c", Created),
            ("c", Started),
            ("c", Stopped),
            ("c", Deleted),
            ("d", Created),
            ("d", Started),
            ("d", Stopped),
            ("d", Deleted),
        ]
        .into_iter()
        .map(|(c, k)| (c.to_string(), k))
        .collect();
        assert_eq!(kinds(&mut a), want);
        assert_eq!(kinds(&mut b), want);
    }

    #[test]
    fn a_slow_subscriber_is_told_it_fell_behind() {
        let events = Events::new(4);
        let mut slow = events.subscribe().events;
        for i in 0..10 {
            events.created(&i.to_string(), "p"); // never blocks
        }
        assert!(matches!(slow.try_recv(), Err(TryRecvError::Lagged(6))));
    }

    #[test]
    fn close_reaches_subscribers() {
        let events = Events::default();
        let s = events.subscribe();
        assert!(!*s.closed.borrow());
        events.close();
        assert!(*s.closed.borrow());
    }
}
