//! Streaming clients for the tests, speaking the protocols as kubectl and crictl do:
//! remote command and port-forward over SPDY/3.1 (with berth's frame codec; the session
//! logic here is the client's, written from the Kubernetes client's behaviour) and over
//! WebSocket channels.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use berth_cri_server::streaming::spdy::{Codec, Frame, Headers};
use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// `http://host:port/path` → (host:port, path).
fn split_url(url: &str) -> Result<(String, String)> {
    let rest = url.strip_prefix("http://").context("streaming URLs are http://")?;
    let (host, path) = rest.split_once('/').context("no path")?;
    Ok((host.to_string(), format!("/{path}")))
}

/// Sends a SPDY upgrade request; returns the status code and the negotiated protocol,
/// and the connection when it switched protocols.
async fn upgrade(url: &str, protocols: &[&str]) -> Result<(u16, String, Option<TcpStream>)> {
    let (host, path) = split_url(url)?;
    let mut tcp = TcpStream::connect(&host).await?;
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nContent-Length: 0\r\n"
    );
    for p in protocols {
        req.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await?;
    // Read the response head byte by byte: SPDY frames may follow at once.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let b = tcp.read_u8().await.context("response head")?;
        head.push(b);
        if head.len() > 16 * 1024 {
            bail!("response head too long");
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let code: u16 = head.split_whitespace().nth(1).context("status line")?.parse()?;
    let proto = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-stream-protocol-version").then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    Ok((code, proto, (code == 101).then_some(tcp)))
}

/// The status code a streaming URL answers an upgrade with (404 for a bad token).
pub async fn spdy_status(url: &str) -> Result<u16> {
    Ok(upgrade(url, &["v4.channel.k8s.io"]).await?.0)
}

/// A client-side SPDY connection.
pub struct SpdyClient {
    pub protocol: String,
    tx: mpsc::UnboundedSender<Frame>,
    next_id: u32,
    streams: std::sync::Arc<std::sync::Mutex<HashMap<u32, mpsc::UnboundedSender<Bytes>>>>,
    reader: tokio::task::JoinHandle<()>,
    writer: tokio::task::JoinHandle<()>,
}

impl SpdyClient {
    pub async fn connect(url: &str, protocols: &[&str]) -> Result<Self> {
        let (code, protocol, tcp) = upgrade(url, protocols).await?;
        let Some(tcp) = tcp else { bail!("upgrade refused with HTTP {code}") };
        let (mut rd, mut wr) = tcp.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Frame>();
        let writer = tokio::spawn(async move {
            let mut codec = Codec::new();
            let mut buf = BytesMut::new();
            while let Some(f) = rx.recv().await {
                buf.clear();
                codec.encode(&f, &mut buf).expect("encode");
                if wr.write_all(&buf).await.is_err() {
                    return;
                }
            }
        });
        let streams: std::sync::Arc<std::sync::Mutex<HashMap<u32, mpsc::UnboundedSender<Bytes>>>> =
            Default::default();
        let map = streams.clone();
        let reader = tokio::spawn(async move {
            let mut codec = Codec::new();
            let mut buf = BytesMut::new();
            loop {
                while let Ok(Some(f)) = codec.decode(&mut buf) {
                    if let Frame::Data { stream_id, fin, data } = f {
                        let mut m = map.lock().unwrap();
                        if let Some(s) = m.get(&stream_id) {
                            if !data.is_empty() {
                                let _ = s.send(data);
                            }
                        }
                        if fin {
                            m.remove(&stream_id);
                        }
                    }
                }
                match rd.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            map.lock().unwrap().clear();
        });
        Ok(Self { protocol, tx, next_id: 1, streams, reader, writer })
    }

    /// Opens a stream with `headers`; returns its id and what arrives on it.
    pub fn open(&mut self, headers: &[(&str, &str)]) -> (u32, mpsc::UnboundedReceiver<Bytes>) {
        let id = self.next_id;
        self.next_id += 2;
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        self.streams.lock().unwrap().insert(id, in_tx);
        let headers: Headers =
            headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let _ = self.tx.send(Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            fin: false,
            unidirectional: false,
            headers,
        });
        (id, in_rx)
    }

    pub fn write(&self, id: u32, data: &[u8]) {
        let _ = self.tx.send(Frame::Data {
            stream_id: id,
            fin: false,
            data: Bytes::copy_from_slice(data),
        });
    }

    pub fn close(&self, id: u32) {
        let _ = self.tx.send(Frame::Data { stream_id: id, fin: true, data: Bytes::new() });
    }
}

impl Drop for SpdyClient {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

/// Everything a stream delivered until its end (or `limit`).
pub async fn read_all(rx: &mut mpsc::UnboundedReceiver<Bytes>, limit: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        while let Some(b) = rx.recv().await {
            out.extend_from_slice(&b);
        }
    })
    .await;
    out
}

/// Reads until `want` shows up (or `limit`).
pub async fn read_until(
    rx: &mut mpsc::UnboundedReceiver<Bytes>,
    want: &str,
    limit: Duration,
) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        while !String::from_utf8_lossy(&out).contains(want) {
            match rx.recv().await {
                Some(b) => out.extend_from_slice(&b),
                None => break,
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

/// What a remote-command session gave back.
#[derive(Debug, Default)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    /// The error stream: a JSON Status (v4+) or text.
    pub error: String,
}

impl Outcome {
    /// The exit code from a v4 Status: 0 for Success.
    pub fn exit_code(&self) -> Option<i32> {
        let v: serde_json::Value = serde_json::from_str(&self.error).ok()?;
        if v["status"] == "Success" {
            return Some(0);
        }
        v["details"]["causes"].as_array()?.iter().find(|c| c["reason"] == "ExitCode")?["message"]
            .as_str()?
            .parse()
            .ok()
    }
}

/// An exec or attach over SPDY as `kubectl exec` does it: error stream first, then the
/// stdio streams asked for; `input` is written to stdin, which is then closed.
pub async fn spdy_session(
    url: &str,
    input: Option<&[u8]>,
    stdout: bool,
    stderr: bool,
) -> Result<Outcome> {
    let mut c = SpdyClient::connect(url, &["v4.channel.k8s.io", "v3.channel.k8s.io"]).await?;
    let (_, mut err) = c.open(&[("streamtype", "error")]);
    let stdin = input.map(|_| c.open(&[("streamtype", "stdin")]).0);
    let mut out = stdout.then(|| c.open(&[("streamtype", "stdout")]).1);
    let mut errs = stderr.then(|| c.open(&[("streamtype", "stderr")]).1);
    if let (Some(id), Some(data)) = (stdin, input) {
        c.write(id, data);
        c.close(id);
    }
    let limit = Duration::from_secs(20);
    let (o, e, x) = tokio::join!(
        async {
            match out.as_mut() {
                Some(r) => read_all(r, limit).await,
                None => Vec::new(),
            }
        },
        async {
            match errs.as_mut() {
                Some(r) => read_all(r, limit).await,
                None => Vec::new(),
            }
        },
        read_all(&mut err, limit)
    );
    Ok(Outcome {
        stdout: String::from_utf8_lossy(&o).into_owned(),
        stderr: String::from_utf8_lossy(&e).into_owned(),
        error: String::from_utf8_lossy(&x).into_owned(),
    })
}

/// A WebSocket client connection with channel framing.
pub struct WsClient {
    ws: tokio_tungstenite::WebSocketStream<TcpStream>,
    pub protocol: String,
    base64: bool,
}

impl WsClient {
    pub async fn connect(url: &str, protocols: &[&str]) -> Result<Self> {
        let (host, _) = split_url(url)?;
        let tcp = TcpStream::connect(&host).await?;
        let mut req = url.replacen("http://", "ws://", 1).into_client_request()?;
        req.headers_mut().insert("Sec-WebSocket-Protocol", protocols.join(", ").parse()?);
        let (ws, resp) = tokio_tungstenite::client_async(req, tcp).await?;
        let protocol = resp
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let base64 = protocol.contains("base64");
        Ok(Self { ws, protocol, base64 })
    }

    pub async fn send(&mut self, channel: u8, data: &[u8]) -> Result<()> {
        use base64::Engine;
        let msg = if self.base64 {
            let mut s = String::new();
            s.push((b'0' + channel) as char);
            s.push_str(&base64::engine::general_purpose::STANDARD.encode(data));
            Message::Text(s.into())
        } else {
            let mut b = vec![channel];
            b.extend_from_slice(data);
            Message::Binary(b.into())
        };
        self.ws.send(msg).await?;
        Ok(())
    }

    /// The next data message as (channel, payload); `None` when the server closed.
    pub async fn recv(&mut self) -> Option<(u8, Vec<u8>)> {
        use base64::Engine;
        loop {
            match self.ws.next().await? {
                Ok(Message::Binary(b)) if !b.is_empty() => return Some((b[0], b[1..].to_vec())),
                Ok(Message::Text(t)) if !t.is_empty() => {
                    let ch = t.as_bytes()[0] - b'0';
                    let data = base64::engine::general_purpose::STANDARD
                        .decode(&t.as_bytes()[1..])
                        .ok()?;
                    return Some((ch, data));
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// Collects channels 1 (stdout), 2 (stderr) and 3 (error) until the server closes.
    pub async fn outcome(&mut self) -> Outcome {
        let mut o = Outcome::default();
        let _ = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some((ch, data)) = self.recv().await {
                let text = String::from_utf8_lossy(&data);
                match ch {
                    1 => o.stdout.push_str(&text),
                    2 => o.stderr.push_str(&text),
                    3 => o.error.push_str(&text),
                    _ => {}
                }
            }
        })
        .await;
        o
    }
}
