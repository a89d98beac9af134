//! What a streaming session writes, whatever the transport: bytes on a numbered stream
//! (a SPDY stream id or a WebSocket channel), and the end of a stream. One writer task
//! per connection turns these into frames, so the order of writes is kept.

use bytes::Bytes;
use tokio::sync::mpsc;

use super::spdy;

pub enum Outgoing {
    Data(u32, Bytes),
    /// No more data on this stream (SPDY FIN; WebSocket channels just stop).
    Close(u32),
    /// A transport frame of its own (SYN_REPLY, PING answers, GOAWAY).
    Spdy(spdy::Frame),
}

/// The sending side of one stream.
#[derive(Clone)]
pub struct Out {
    id: u32,
    tx: mpsc::Sender<Outgoing>,
}

impl Out {
    pub fn new(id: u32, tx: mpsc::Sender<Outgoing>) -> Self {
        Self { id, tx }
    }

    /// False once the connection is gone.
    pub async fn write(&self, data: Bytes) -> bool {
        self.tx.send(Outgoing::Data(self.id, data)).await.is_ok()
    }

    pub async fn close(&self) {
        let _ = self.tx.send(Outgoing::Close(self.id)).await;
    }
}

/// Incoming bytes of one stream; ends at the peer's FIN (or close, or reset).
pub type In = mpsc::Receiver<Bytes>;

/// How many chunks may wait per incoming stream before the connection's reader waits.
pub const IN_DEPTH: usize = 64;

/// Waits until `flag` is true (or its sender is gone). The borrow `wait_for` returns is
/// not held, so callers stay `Send`.
pub async fn until_true(flag: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = flag.wait_for(|v| *v).await;
}
