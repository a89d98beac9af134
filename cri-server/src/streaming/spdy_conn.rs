//! A SPDY/3.1 connection as the Kubernetes clients use it (moby/spdystream): the client
//! opens every stream; the server accepts each with a SYN_REPLY and reads and writes
//! data frames on it. No flow control is enforced either way, as in spdystream.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::channels::{In, Out, Outgoing, IN_DEPTH};
use super::spdy::{self, Codec, Frame, Headers};

/// A stream the client opened.
pub struct Stream {
    pub id: u32,
    pub headers: Headers,
    pub input: In,
    pub output: Out,
}

impl Stream {
    pub fn header(&self, name: &str) -> Option<&str> {
        spdy::header(&self.headers, name)
    }
}

/// The server side of one connection: streams as the client opens them.
pub struct Connection {
    pub streams: mpsc::Receiver<Stream>,
    /// Turns true when the client's side of the connection is gone.
    pub closed: watch::Receiver<bool>,
    pub tx: mpsc::Sender<Outgoing>,
    tasks: [tokio::task::AbortHandle; 2],
}

impl Connection {
    /// Ends the connection once the session is done: what is queued is written, then the
    /// client has a few seconds to close its side before the connection is dropped.
    pub async fn finish(self) {
        let Connection { mut streams, tx, tasks, mut closed } = self;
        streams.close();
        let _ = tx.send(Outgoing::Spdy(Frame::GoAway { last_good_stream_id: 0, status: 0 })).await;
        drop(tx);
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            super::channels::until_true(&mut closed),
        )
        .await;
        for t in tasks.iter() {
            t.abort();
        }
    }
}

/// Starts the reader and writer tasks of an upgraded connection.
pub fn start<IO>(io: IO) -> Connection
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (rd, wr) = tokio::io::split(io);
    let (tx, rx) = mpsc::channel(256);
    let (streams_tx, streams) = mpsc::channel(64);
    let (closed_tx, closed) = watch::channel(false);
    let w = tokio::spawn(write_loop(wr, rx)).abort_handle();
    let r = tokio::spawn(read_loop(rd, tx.clone(), streams_tx, closed_tx)).abort_handle();
    Connection { streams, closed, tx, tasks: [w, r] }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut wr: W, mut rx: mpsc::Receiver<Outgoing>) {
    let mut codec = Codec::new();
    let mut buf = BytesMut::new();
    while let Some(msg) = rx.recv().await {
        let frame = match msg {
            Outgoing::Data(id, data) => Frame::Data { stream_id: id, fin: false, data },
            Outgoing::Close(id) => Frame::Data { stream_id: id, fin: true, data: Bytes::new() },
            Outgoing::Spdy(f) => f,
        };
        if let Err(e) = codec.encode(&frame, &mut buf) {
            tracing::warn!(error = %e, "spdy: cannot encode a frame");
            continue;
        }
        // Batch what is already queued into one write.
        while buf.len() < 64 * 1024 {
            match rx.try_recv() {
                Ok(Outgoing::Data(id, data)) => {
                    let _ =
                        codec.encode(&Frame::Data { stream_id: id, fin: false, data }, &mut buf);
                }
                Ok(Outgoing::Close(id)) => {
                    let f = Frame::Data { stream_id: id, fin: true, data: Bytes::new() };
                    let _ = codec.encode(&f, &mut buf);
                }
                Ok(Outgoing::Spdy(f)) => {
                    let _ = codec.encode(&f, &mut buf);
                }
                Err(_) => break,
            }
        }
        if wr.write_all(&buf).await.is_err() {
            return;
        }
        buf.clear();
    }
    let _ = wr.shutdown().await;
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut rd: R,
    tx: mpsc::Sender<Outgoing>,
    streams: mpsc::Sender<Stream>,
    closed: watch::Sender<bool>,
) {
    let mut codec = Codec::new();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut inputs: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    let mut last_stream = 0u32;
    'conn: loop {
        loop {
            let frame = match codec.decode(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "spdy: protocol error; closing");
                    let _ = tx
                        .send(Outgoing::Spdy(Frame::GoAway {
                            last_good_stream_id: last_stream,
                            status: spdy::goaway::PROTOCOL_ERROR,
                        }))
                        .await;
                    break 'conn;
                }
            };
            match frame {
                Frame::SynStream { stream_id, fin, headers, .. } => {
                    // Client streams are odd and increase; anything else is refused.
                    if stream_id % 2 == 0 || stream_id <= last_stream {
                        let _ = tx
                            .send(Outgoing::Spdy(Frame::RstStream {
                                stream_id,
                                status: spdy::rst::PROTOCOL_ERROR,
                            }))
                            .await;
                        continue;
                    }
                    last_stream = stream_id;
                    let (in_tx, input) = mpsc::channel(IN_DEPTH);
                    if !fin {
                        inputs.insert(stream_id, in_tx);
                    }
                    let reply = Frame::SynReply { stream_id, fin: false, headers: Vec::new() };
                    if tx.send(Outgoing::Spdy(reply)).await.is_err() {
                        break 'conn;
                    }
                    let stream = Stream {
                        id: stream_id,
                        headers,
                        input,
                        output: Out::new(stream_id, tx.clone()),
                    };
                    if streams.send(stream).await.is_err() {
                        // Nobody takes streams any more (the session ended).
                        let _ = tx
                            .send(Outgoing::Spdy(Frame::RstStream {
                                stream_id,
                                status: spdy::rst::REFUSED_STREAM,
                            }))
                            .await;
                    }
                }
                Frame::Data { stream_id, fin, data } => {
                    if let Some(input) = inputs.get(&stream_id) {
                        if !data.is_empty() && input.send(data).await.is_err() {
                            // The session stopped reading this stream: drop its input.
                            inputs.remove(&stream_id);
                        }
                    }
                    if fin {
                        inputs.remove(&stream_id);
                    }
                }
                Frame::RstStream { stream_id, .. } => {
                    inputs.remove(&stream_id);
                }
                Frame::Ping { id } => {
                    let _ = tx.send(Outgoing::Spdy(Frame::Ping { id })).await;
                }
                Frame::GoAway { .. } => break 'conn,
                Frame::SynReply { .. }
                | Frame::Settings { .. }
                | Frame::Headers { .. }
                | Frame::WindowUpdate { .. }
                | Frame::Unknown { .. } => {}
            }
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    drop(inputs);
    let _ = closed.send(true);
}
