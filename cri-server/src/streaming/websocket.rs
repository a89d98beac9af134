//! The WebSocket transport of the streaming protocols: every message carries a channel
//! number in its first byte (binary protocols) or first character (base64 protocols).
//! Remote command: 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize, and with v5 a
//! message on 255 closes the channel named by its second byte. Port-forward: channels
//! 2i (data) and 2i+1 (error) for the i-th port asked for, each opened by a first message
//! holding the port, little-endian.

use base64::Engine;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use std::collections::HashMap;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::{Message, Role};
use tokio_tungstenite::WebSocketStream;

use super::channels::{Out, Outgoing, IN_DEPTH};

/// Channel that closes another (v5).
const CLOSE_CHANNEL: u8 = 255;

/// How messages are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Binary,
    Base64,
}

type Source = futures::stream::SplitStream<WebSocketStream<Box<dyn Upgraded>>>;

/// What the transport runs on (an upgraded HTTP connection).
pub trait Upgraded: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Upgraded for T {}

/// A WebSocket connection split into channels.
pub struct Connection {
    pub tx: mpsc::Sender<Outgoing>,
    pub closed: watch::Receiver<bool>,
    closed_tx: Option<watch::Sender<bool>>,
    framing: Framing,
    inputs: HashMap<u8, mpsc::Sender<Bytes>>,
    source: Option<Source>,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Connection {
    /// Takes the server side of an upgraded connection.
    pub async fn start(io: Box<dyn Upgraded>, framing: Framing) -> Self {
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        let (sink, source) = ws.split();
        let (tx, rx) = mpsc::channel(256);
        let (closed_tx, closed) = watch::channel(false);
        let w = tokio::spawn(write_loop(sink, rx, framing)).abort_handle();
        Connection {
            tx,
            closed,
            closed_tx: Some(closed_tx),
            framing,
            inputs: HashMap::new(),
            source: Some(source),
            tasks: vec![w],
        }
    }

    /// The incoming side of `channel`, registered before [`Connection::listen`].
    pub fn input(&mut self, channel: u8) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel(IN_DEPTH);
        self.inputs.insert(channel, tx);
        rx
    }

    pub fn output(&self, channel: u8) -> Out {
        Out::new(channel as u32, self.tx.clone())
    }

    /// Starts reading from the client, into the inputs registered so far.
    pub fn listen(&mut self) {
        if let (Some(source), Some(closed)) = (self.source.take(), self.closed_tx.take()) {
            let inputs = std::mem::take(&mut self.inputs);
            let h = tokio::spawn(read_loop(source, inputs, self.framing, closed));
            self.tasks.push(h.abort_handle());
        }
    }

    /// Ends the connection: queued messages are written, then a close frame; the client
    /// has a few seconds to answer it.
    pub async fn finish(mut self) {
        let (dummy, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.tx, dummy));
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            super::channels::until_true(&mut self.closed),
        )
        .await;
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn write_loop<S>(mut sink: S, mut rx: mpsc::Receiver<Outgoing>, framing: Framing)
where
    S: futures::Sink<Message> + Unpin,
{
    while let Some(msg) = rx.recv().await {
        let (channel, data) = match msg {
            Outgoing::Data(ch, data) => (ch as u8, data),
            Outgoing::Close(_) | Outgoing::Spdy(_) => continue,
        };
        if sink.send(frame(framing, channel, &data)).await.is_err() {
            return;
        }
    }
    let _ = sink.send(Message::Close(None)).await;
    let _ = sink.close().await;
}

/// One message on `channel`.
pub fn frame(framing: Framing, channel: u8, data: &[u8]) -> Message {
    match framing {
        Framing::Binary => {
            let mut b = Vec::with_capacity(1 + data.len());
            b.push(channel);
            b.extend_from_slice(data);
            Message::Binary(b.into())
        }
        Framing::Base64 => {
            let mut s = String::with_capacity(1 + data.len() * 4 / 3 + 4);
            s.push((b'0' + channel) as char);
            base64::engine::general_purpose::STANDARD.encode_string(data, &mut s);
            Message::Text(s.into())
        }
    }
}

/// Splits a message into its channel and payload.
pub fn unframe(framing: Framing, msg: &Message) -> Option<(u8, Vec<u8>)> {
    match (framing, msg) {
        (Framing::Binary, Message::Binary(b)) if !b.is_empty() => Some((b[0], b[1..].to_vec())),
        (Framing::Base64, Message::Text(t)) if !t.is_empty() => {
            let ch = t.as_bytes()[0].checked_sub(b'0')?;
            let data = base64::engine::general_purpose::STANDARD.decode(&t.as_bytes()[1..]).ok()?;
            Some((ch, data))
        }
        _ => None,
    }
}

async fn read_loop<S>(
    mut source: S,
    mut inputs: HashMap<u8, mpsc::Sender<Bytes>>,
    framing: Framing,
    closed: watch::Sender<bool>,
) where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    while let Some(Ok(msg)) = source.next().await {
        if msg.is_close() {
            break;
        }
        let Some((channel, data)) = unframe(framing, &msg) else { continue };
        if channel == CLOSE_CHANNEL {
            if let Some(target) = data.first() {
                inputs.remove(target);
            }
            continue;
        }
        if let Some(input) = inputs.get(&channel) {
            if !data.is_empty() && input.send(Bytes::from(data)).await.is_err() {
                inputs.remove(&channel);
            }
        }
    }
    drop(inputs);
    let _ = closed.send(true);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_in_both_framings() {
        for framing in [Framing::Binary, Framing::Base64] {
            let m = frame(framing, 2, b"hello\x00\xff");
            assert_eq!(unframe(framing, &m), Some((2, b"hello\x00\xff".to_vec())));
        }
        assert_eq!(
            unframe(Framing::Base64, &Message::Text("1aGk=".into())),
            Some((1, b"hi".to_vec()))
        );
        assert_eq!(unframe(Framing::Base64, &Message::Text("1%%%".into())), None);
        assert_eq!(unframe(Framing::Binary, &Message::Binary(Vec::new().into())), None);
    }
}
