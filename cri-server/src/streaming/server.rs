//! The streaming HTTP server: `/exec/<token>`, `/attach/<token>` and
//! `/portforward/<token>`, each upgraded to SPDY/3.1 or WebSocket as the client asks.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use berth_runtime::container::streams::StreamOptions;
use berth_runtime::container::Containers;
use bytes::Bytes;
use http::{header, HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::portforward::{self, PodNetwork};
use super::remotecommand::{self, Channels, Target, Version};
use super::spdy_conn;
use super::tokens::Tokens;
use super::websocket::{self, Framing};
use crate::config::StreamingConfig;

/// What a token stands for.
pub enum Pending {
    Exec { container_id: String, cmd: Vec<String>, opts: StreamOptions },
    Attach { container_id: String, opts: StreamOptions },
    PortForward { network: PodNetwork },
}

impl Pending {
    fn path(&self) -> &'static str {
        match self {
            Pending::Exec { .. } => "exec",
            Pending::Attach { .. } => "attach",
            Pending::PortForward { .. } => "portforward",
        }
    }
}

/// Hands out URLs and serves them.
#[derive(Clone)]
pub struct Streaming {
    shared: Arc<Shared>,
}

struct Shared {
    tokens: Tokens<Pending>,
    base: String,
    containers: Arc<Containers>,
}

/// How long a client may take to open the streams of a session.
const STREAMS_TIMEOUT: Duration = Duration::from_secs(30);

const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";

impl Streaming {
    /// Binds the server's address (a free port when none is set).
    pub async fn bind(
        config: &StreamingConfig,
        containers: Arc<Containers>,
    ) -> anyhow::Result<(Self, TcpListener)> {
        let addr: SocketAddr = format!("{}:{}", config.address, config.port)
            .parse()
            .or_else(|_| format!("[{}]:{}", config.address, config.port).parse())
            .map_err(|_| {
                anyhow::anyhow!("streaming.address: {:?} is not an IP address", config.address)
            })?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("streaming: cannot listen on {addr}: {e}"))?;
        let local = listener.local_addr()?;
        let shared = Shared {
            tokens: Tokens::new(Duration::from_secs(config.token_ttl_secs.max(1))),
            base: format!("http://{local}"),
            containers,
        };
        Ok((Self { shared: Arc::new(shared) }, listener))
    }

    /// A URL for `pending`, usable once.
    pub fn url(&self, pending: Pending) -> std::io::Result<String> {
        let path = pending.path();
        let token = self.shared.tokens.insert(pending)?;
        Ok(format!("{}/{path}/{token}", self.shared.base))
    }

    pub async fn serve(self, listener: TcpListener, mut stop: watch::Receiver<bool>) {
        loop {
            let (stream, _) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "streaming: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = super::channels::until_true(&mut stop) => return,
            };
            let shared = self.shared.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle(shared.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    }
}

fn reply(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *r.status_mut() = status;
    r
}

/// Every value of a header that may be repeated or comma-separated.
fn header_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

/// The first protocol the client offers that the server speaks.
fn negotiate<'a>(offered: &[String], supported: &[&'a str]) -> Option<&'a str> {
    offered.iter().find_map(|o| supported.iter().find(|s| **s == o.as_str()).copied())
}

enum Transport {
    Spdy,
    WebSocket { key: String },
}

fn transport(headers: &HeaderMap) -> Option<Transport> {
    let upgrade = headers.get(header::UPGRADE)?.to_str().ok()?.to_ascii_lowercase();
    if upgrade.contains("spdy/3.1") {
        Some(Transport::Spdy)
    } else if upgrade.contains("websocket") {
        let key = headers.get(header::SEC_WEBSOCKET_KEY)?.to_str().ok()?.to_string();
        Some(Transport::WebSocket { key })
    } else {
        None
    }
}

async fn handle(
    shared: Arc<Shared>,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().trim_start_matches('/');
    let Some((kind, token)) = path.split_once('/') else {
        return Ok(reply(StatusCode::NOT_FOUND, "not found"));
    };
    let pending = match shared.tokens.take(token) {
        Some(p) if p.path() == kind => p,
        _ => return Ok(reply(StatusCode::NOT_FOUND, "unknown, used or expired streaming token")),
    };
    let Some(transport) = transport(req.headers()) else {
        return Ok(reply(
            StatusCode::BAD_REQUEST,
            "streaming needs an upgrade to SPDY/3.1 or websocket",
        ));
    };
    let ports: Vec<String> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.strip_prefix("port="))
        .map(str::to_string)
        .collect();
    let is_pf = matches!(pending, Pending::PortForward { .. });
    let (response, protocol) = match &transport {
        Transport::Spdy => {
            let offered = header_values(req.headers(), "x-stream-protocol-version");
            let supported: Vec<&str> = if is_pf {
                vec![PORT_FORWARD_PROTOCOL]
            } else {
                Version::NAMES.iter().map(|(n, _)| *n).collect()
            };
            let chosen = if offered.is_empty() {
                // Clients from before protocol negotiation speak the first version.
                Some(if is_pf { PORT_FORWARD_PROTOCOL } else { "channel.k8s.io" })
            } else {
                negotiate(&offered, &supported)
            };
            let Some(chosen) = chosen else {
                return Ok(reply(
                    StatusCode::FORBIDDEN,
                    &format!("unable to negotiate a protocol: client offers {offered:?}, berth speaks {supported:?}"),
                ));
            };
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let h = r.headers_mut();
            h.insert(header::CONNECTION, "Upgrade".parse().expect("static"));
            h.insert(header::UPGRADE, "SPDY/3.1".parse().expect("static"));
            h.insert("X-Stream-Protocol-Version", chosen.parse().expect("known protocol"));
            (r, chosen)
        }
        Transport::WebSocket { key } => {
            let offered = header_values(req.headers(), "sec-websocket-protocol");
            let supported: &[&str] = if is_pf {
                &[
                    "v4.channel.k8s.io",
                    "v4.base64.channel.k8s.io",
                    "channel.k8s.io",
                    "base64.channel.k8s.io",
                ]
            } else {
                &[
                    "v5.channel.k8s.io",
                    "v4.channel.k8s.io",
                    "v4.base64.channel.k8s.io",
                    "channel.k8s.io",
                    "base64.channel.k8s.io",
                ]
            };
            let chosen = if offered.is_empty() { Some("") } else { negotiate(&offered, supported) };
            let Some(chosen) = chosen else {
                return Ok(reply(
                    StatusCode::FORBIDDEN,
                    &format!("unable to negotiate a protocol: client offers {offered:?}, berth speaks {supported:?}"),
                ));
            };
            let accept =
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let h = r.headers_mut();
            h.insert(header::CONNECTION, "Upgrade".parse().expect("static"));
            h.insert(header::UPGRADE, "websocket".parse().expect("static"));
            h.insert(header::SEC_WEBSOCKET_ACCEPT, accept.parse().expect("base64"));
            if !chosen.is_empty() {
                h.insert(header::SEC_WEBSOCKET_PROTOCOL, chosen.parse().expect("known protocol"));
            }
            (r, chosen)
        }
    };
    let protocol = protocol.to_string();
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::debug!(error = %e, "streaming: upgrade failed");
                return;
            }
        };
        match transport {
            Transport::Spdy => run_spdy(shared, io, &protocol, pending).await,
            Transport::WebSocket { .. } => {
                run_websocket(shared, Box::new(io), &protocol, pending, ports).await
            }
        }
    });
    Ok(response)
}

fn version_of(protocol: &str) -> Version {
    let base = protocol.replace(".base64", "");
    Version::NAMES.iter().find(|(n, _)| *n == base).map_or(Version::V1, |(_, v)| *v)
}

/// A remote-command session, or the network of a port-forward.
fn target_of(pending: Pending) -> Result<(Target, StreamOptions), PodNetwork> {
    match pending {
        Pending::Exec { container_id, cmd, opts } => Ok((Target::Exec { container_id, cmd }, opts)),
        Pending::Attach { container_id, opts } => Ok((Target::Attach { container_id }, opts)),
        Pending::PortForward { network } => Err(network),
    }
}

async fn run_spdy<IO>(shared: Arc<Shared>, io: IO, protocol: &str, pending: Pending)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let mut conn = spdy_conn::start(io);
    let (target, opts) = match target_of(pending) {
        Ok(session) => session,
        Err(network) => {
            spdy_port_forward(&mut conn, network).await;
            conn.finish().await;
            return;
        }
    };
    let version = version_of(protocol);
    let opts =
        StreamOptions { stderr: opts.stderr && !(opts.tty && version >= Version::V2), ..opts };
    let expected = 1
        + opts.stdin as usize
        + opts.stdout as usize
        + opts.stderr as usize
        + (opts.tty && version >= Version::V3) as usize;
    let (mut error, mut stdin, mut stdout, mut stderr, mut resize) = (None, None, None, None, None);
    let mut got = 0;
    let deadline = tokio::time::sleep(STREAMS_TIMEOUT);
    tokio::pin!(deadline);
    while got < expected {
        let s = tokio::select! {
            s = conn.streams.recv() => match s { Some(s) => s, None => break },
            () = &mut deadline => break,
        };
        got += 1;
        match s.header("streamtype").unwrap_or("") {
            "error" => error = Some(s.output),
            "stdin" => stdin = Some(s.input),
            "stdout" => stdout = Some(s.output),
            "stderr" => stderr = Some(s.output),
            "resize" => resize = Some(s.input),
            _ => got -= 1,
        }
    }
    let Some(error) = error else {
        conn.finish().await;
        return;
    };
    // Streams the client did not open are not used, even if the request asked for them.
    let opts = StreamOptions {
        stdin: opts.stdin && stdin.is_some(),
        stdout: opts.stdout && stdout.is_some(),
        stderr: opts.stderr && stderr.is_some(),
        tty: opts.tty,
    };
    let ch = Channels { stdin, stdout, stderr, error, resize, closed: conn.closed.clone() };
    remotecommand::run(shared.containers.clone(), target, opts, version, ch).await;
    conn.finish().await;
}

/// Pairs each request's data and error streams (by `requestid`) and forwards them.
async fn spdy_port_forward(conn: &mut spdy_conn::Connection, network: PodNetwork) {
    type Pair = (Option<spdy_conn::Stream>, Option<spdy_conn::Stream>);
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut forwards = tokio::task::JoinSet::new();
    let mut closed = conn.closed.clone();
    loop {
        let s = tokio::select! {
            s = conn.streams.recv() => match s { Some(s) => s, None => break },
            _ = super::channels::until_true(&mut closed) => break,
        };
        let kind = s.header("streamtype").unwrap_or("").to_string();
        let port = s.header("port").and_then(|p| p.parse::<u16>().ok()).filter(|p| *p > 0);
        let Some(port) = port else {
            s.output.write(Bytes::from("invalid or missing port header")).await;
            s.output.close().await;
            continue;
        };
        // Old clients send no request id: an error stream's id is then the data stream's + 2.
        let id = match s.header("requestid") {
            Some(r) => r.to_string(),
            None if kind == "error" => s.id.to_string(),
            None => s.id.saturating_sub(2).to_string(),
        };
        let entry = pairs.entry(id.clone()).or_default();
        match kind.as_str() {
            "data" => entry.0 = Some(s),
            "error" => entry.1 = Some(s),
            _ => continue,
        }
        if let (Some(_), Some(_)) = (&entry.0, &entry.1) {
            let (Some(data), Some(error)) = pairs.remove(&id).map_or((None, None), |p| p) else {
                continue;
            };
            forwards.spawn(portforward::forward(
                network.clone(),
                port,
                data.input,
                data.output,
                error.output,
            ));
        }
    }
    forwards.abort_all();
}

async fn run_websocket(
    shared: Arc<Shared>,
    io: Box<dyn websocket::Upgraded>,
    protocol: &str,
    pending: Pending,
    ports: Vec<String>,
) {
    let framing = if protocol.contains("base64") { Framing::Base64 } else { Framing::Binary };
    let mut conn = websocket::Connection::start(io, framing).await;
    let (target, opts) = match target_of(pending) {
        Ok(session) => session,
        Err(network) => {
            ws_port_forward(&mut conn, network, &ports).await;
            conn.finish().await;
            return;
        }
    };
    let version = version_of(protocol);
    let opts = StreamOptions { stderr: opts.stderr && !opts.tty, ..opts };
    let stdin = opts.stdin.then(|| conn.input(0));
    let resize = opts.tty.then(|| conn.input(4));
    let ch = Channels {
        stdin,
        stdout: opts.stdout.then(|| conn.output(1)),
        stderr: opts.stderr.then(|| conn.output(2)),
        error: conn.output(3),
        resize,
        closed: conn.closed.clone(),
    };
    conn.listen();
    remotecommand::run(shared.containers.clone(), target, opts, version, ch).await;
    conn.finish().await;
}

/// One connection per port asked for in the query; channels 2i and 2i+1 for the i-th.
async fn ws_port_forward(conn: &mut websocket::Connection, network: PodNetwork, ports: &[String]) {
    let mut forwards = tokio::task::JoinSet::new();
    let mut parsed = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let Some(port) = p.parse::<u16>().ok().filter(|p| *p > 0) else {
            let err = conn.output((2 * i + 1) as u8);
            err.write(Bytes::from(format!("invalid port {p:?}"))).await;
            return;
        };
        parsed.push((i, port));
    }
    let mut inputs = Vec::new();
    for (i, _) in &parsed {
        inputs.push(conn.input((2 * i) as u8));
    }
    conn.listen();
    for ((i, port), input) in parsed.into_iter().zip(inputs) {
        let data = conn.output((2 * i) as u8);
        let error = conn.output((2 * i + 1) as u8);
        // Each channel starts with the port it serves.
        data.write(Bytes::copy_from_slice(&port.to_le_bytes())).await;
        error.write(Bytes::copy_from_slice(&port.to_le_bytes())).await;
        forwards.spawn(portforward::forward(network.clone(), port, input, data, error));
    }
    let mut closed = conn.closed.clone();
    tokio::select! {
        _ = async { while forwards.join_next().await.is_some() {} } => {}
        _ = super::channels::until_true(&mut closed) => {}
    }
    forwards.abort_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_the_clients_order() {
        let offered = vec!["v4.channel.k8s.io".to_string(), "v5.channel.k8s.io".to_string()];
        let supported: Vec<&str> = Version::NAMES.iter().map(|(n, _)| *n).collect();
        assert_eq!(negotiate(&offered, &supported), Some("v4.channel.k8s.io"));
        assert_eq!(negotiate(&["v9.channel.k8s.io".to_string()], &supported), None);
        assert_eq!(version_of("v4.base64.channel.k8s.io"), Version::V4);
        assert_eq!(version_of("base64.channel.k8s.io"), Version::V1);
    }
}
