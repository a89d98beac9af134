//! The counting, fault-injecting, TLS-terminating proxy in front of the registry.
//!
//! Requests are forwarded unchanged (the client's `Host` is kept and
//! `X-Forwarded-Proto` is set, so the registry's absolute upload `Location`s point
//! back at the proxy with the right scheme). Bodies stream through, except for a
//! blob under a [`BlobFault`] that needs rewriting.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;

use crate::tls::TestCa;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ProxyBody = BoxBody<Bytes, BoxError>;

/// A way for the proxy to misbehave on `GET` of one blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobFault {
    /// Serve the blob with its last byte flipped: same length, wrong digest. On an
    /// uncompressed layer the last byte is tar padding, so only a digest check
    /// notices; on gzip it also breaks the trailer.
    Corrupt,
    /// Serve these bytes instead of the blob (`Content-Length` follows them).
    Replace(Vec<u8>),
    /// Answer the next `times` GETs with this status and an empty body, without
    /// asking the registry; later GETs go through.
    Status { code: u16, times: usize },
    /// Send the headers (full `Content-Length`) and half of the body, then cut
    /// the connection.
    Truncate,
    /// Hold every GET this long before forwarding it, e.g. so that two
    /// concurrent pulls surely overlap.
    Delay(Duration),
}

/// One request seen by the proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Status answered to the client (502 when the registry was unreachable).
    pub status: u16,
}

#[derive(Default)]
pub(super) struct ProxyState {
    requests: Mutex<Vec<RequestRecord>>,
    faults: Mutex<HashMap<String, BlobFault>>,
    /// Set: the proxy is a registry with token authentication (the Docker Hub scheme).
    token_auth: Option<TokenAuth>,
}

/// Token authentication: `/v2/` answers 401 with a `Bearer` challenge naming `/token`,
/// which hands out a token for the right basic credentials; requests carrying an issued
/// token go through.
pub(super) struct TokenAuth {
    user: String,
    password: String,
    issued: Mutex<Vec<String>>,
    /// The `scope` parameter of every token request, in order.
    scopes: Mutex<Vec<String>>,
}

impl ProxyState {
    pub fn with_token_auth(user: &str, password: &str) -> Self {
        ProxyState {
            token_auth: Some(TokenAuth {
                user: user.into(),
                password: password.into(),
                issued: Mutex::default(),
                scopes: Mutex::default(),
            }),
            ..Default::default()
        }
    }

    /// Scopes asked for at the token endpoint so far.
    pub fn token_scopes(&self) -> Vec<String> {
        self.token_auth.as_ref().map(|t| t.scopes.lock().unwrap().clone()).unwrap_or_default()
    }

    pub fn blob_get_count(&self, digest: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == "GET" && blob_digest(&r.path) == Some(digest))
            .count()
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.requests.lock().unwrap().clone()
    }

    pub fn reset_requests(&self) {
        self.requests.lock().unwrap().clear()
    }

    pub fn set_fault(&self, digest: &str, fault: BlobFault) {
        self.faults.lock().unwrap().insert(digest.to_string(), fault);
    }

    pub fn clear_fault(&self, digest: &str) {
        self.faults.lock().unwrap().remove(digest);
    }

    /// The fault to apply to this GET, consuming one use of a `Status` fault.
    fn take_fault(&self, digest: &str) -> Option<BlobFault> {
        let mut faults = self.faults.lock().unwrap();
        let fault = faults.get_mut(digest)?;
        if let BlobFault::Status { code, times } = fault {
            let code = *code;
            *times = times.saturating_sub(1);
            if *times == 0 {
                faults.remove(digest);
            }
            return Some(BlobFault::Status { code, times: 1 });
        }
        Some(fault.clone())
    }

    fn record(&self, method: &Method, path: &str, status: u16) {
        self.requests.lock().unwrap().push(RequestRecord {
            method: method.to_string(),
            path: path.to_string(),
            status,
        });
    }
}

/// `sha256:…` when `path` is `/v2/<repo>/blobs/<digest>` (not an upload).
fn blob_digest(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v2/")?;
    let (_, digest) = rest.rsplit_once("/blobs/")?;
    (digest.contains(':') && !digest.contains('/')).then_some(digest)
}

pub(super) fn tls_acceptor(ca: &TestCa) -> Result<TlsAcceptor> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = vec![
        CertificateDer::from(ca.server_cert_der.clone()),
        CertificateDer::from(ca.ca_der.clone()),
    ];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ca.server_key_der.clone()));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("rustls protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("rustls server certificate")?;
    // The proxy speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

struct Ctx {
    backend: SocketAddr,
    scheme: &'static str,
    client: Client<HttpConnector, Incoming>,
    state: Arc<ProxyState>,
}

/// Runs the proxy on `listener` until `shutdown` fires (or its sender drops).
pub(super) fn serve(
    listener: std::net::TcpListener,
    backend: SocketAddr,
    tls: Option<TlsAcceptor>,
    state: Arc<ProxyState>,
    shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    // Two workers so that big pulls through the proxy are not serialised.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("registry-proxy")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("registry proxy: no runtime: {e}");
            return;
        }
    };
    rt.block_on(async move {
        if let Err(e) = accept_loop(listener, backend, tls, state, shutdown).await {
            eprintln!("registry proxy: {e:#}");
        }
    });
    // Open connections are simply dropped with the runtime.
    rt.shutdown_background();
}

async fn accept_loop(
    listener: std::net::TcpListener,
    backend: SocketAddr,
    tls: Option<TlsAcceptor>,
    state: Arc<ProxyState>,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) -> Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let ctx = Arc::new(Ctx {
        backend,
        scheme: if tls.is_some() { "https" } else { "http" },
        client: Client::builder(TokioExecutor::new()).build_http(),
        state,
    });
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => {
                    // A client that distrusts the CA aborts here; nothing to report.
                    if let Ok(stream) = acceptor.accept(stream).await {
                        serve_conn(stream, ctx).await
                    }
                }
                None => serve_conn(stream, ctx).await,
            }
        });
    }
}

async fn serve_conn<I>(io: I, ctx: Arc<Ctx>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| forward(req, ctx.clone()));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .await;
}

/// What token authentication says about a request: answer it here, or let it through.
fn token_gate(
    req: &Request<Incoming>,
    auth: &TokenAuth,
    scheme: &str,
) -> Option<Response<ProxyBody>> {
    use base64::Engine;
    let header = req.headers().get(header::AUTHORIZATION).and_then(|h| h.to_str().ok());
    let path = req.uri().path();
    if path == "/token" {
        let query = req.uri().query().unwrap_or_default();
        let scope = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("scope="))
            .map(|s| s.replace("%3A", ":").replace("%2F", "/"))
            .unwrap_or_default();
        auth.scopes.lock().unwrap().push(scope);
        let expected = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", auth.user, auth.password));
        if header != Some(&format!("Basic {expected}")) {
            return Some(empty(StatusCode::UNAUTHORIZED));
        }
        let token = format!("tok-{}", auth.issued.lock().unwrap().len() + 1);
        auth.issued.lock().unwrap().push(token.clone());
        let body = format!(r#"{{"token":"{token}","access_token":"{token}","expires_in":300}}"#);
        let mut resp = Response::new(full(body.into()));
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return Some(resp);
    }
    let token = header.and_then(|h| h.strip_prefix("Bearer "));
    if token.is_some_and(|t| auth.issued.lock().unwrap().iter().any(|i| i == t)) {
        return None;
    }
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let mut challenge = format!(r#"Bearer realm="{scheme}://{host}/token",service="berth-test""#);
    // /v2/<name>/manifests/… and /v2/<name>/blobs/…: the repository is <name>.
    let repo = path
        .strip_prefix("/v2/")
        .and_then(|r| r.rsplit_once("/manifests/").or_else(|| r.rsplit_once("/blobs/")))
        .map(|(name, _)| name);
    if let Some(repo) = repo {
        challenge.push_str(&format!(r#",scope="repository:{repo}:pull""#));
    }
    let mut resp = empty(StatusCode::UNAUTHORIZED);
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_str(&challenge).ok()?);
    Some(resp)
}

async fn forward(
    mut req: Request<Incoming>,
    ctx: Arc<Ctx>,
) -> Result<Response<ProxyBody>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    if let Some(auth) = &ctx.state.token_auth {
        if let Some(resp) = token_gate(&req, auth, ctx.scheme) {
            ctx.state.record(&method, &path, resp.status().as_u16());
            return Ok(resp);
        }
        // The backend itself has no authentication.
        req.headers_mut().remove(header::AUTHORIZATION);
    }
    let fault = match blob_digest(&path) {
        Some(digest) if method == Method::GET => ctx.state.take_fault(digest),
        _ => None,
    };

    match &fault {
        Some(BlobFault::Status { code, .. }) => {
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            ctx.state.record(&method, &path, status.as_u16());
            return Ok(empty(status));
        }
        Some(BlobFault::Delay(d)) => tokio::time::sleep(*d).await,
        _ => {}
    }

    let path_and_query =
        req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
    let uri: Uri = match format!("http://{}{}", ctx.backend, path_and_query).parse() {
        Ok(u) => u,
        Err(_) => {
            ctx.state.record(&method, &path, 400);
            return Ok(empty(StatusCode::BAD_REQUEST));
        }
    };
    *req.uri_mut() = uri;
    req.headers_mut().insert("x-forwarded-proto", HeaderValue::from_static(ctx.scheme));

    let resp = match ctx.client.request(req).await {
        Ok(r) => r,
        Err(_) => {
            ctx.state.record(&method, &path, 502);
            return Ok(empty(StatusCode::BAD_GATEWAY));
        }
    };
    let status = resp.status();
    // Recorded before the client can see the response: counts are exact.
    ctx.state.record(&method, &path, status.as_u16());

    let (mut parts, body) = resp.into_parts();
    let rewrite =
        matches!(fault, Some(BlobFault::Corrupt | BlobFault::Replace(_) | BlobFault::Truncate));
    if !(rewrite && status == StatusCode::OK) {
        return Ok(Response::from_parts(parts, body.map_err(BoxError::from).boxed()));
    }
    let data = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => return Ok(empty(StatusCode::BAD_GATEWAY)),
    };
    let body = match fault {
        Some(BlobFault::Corrupt) => {
            let mut v = data.to_vec();
            if let Some(last) = v.last_mut() {
                *last ^= 0xff;
            }
            full(v.into())
        }
        Some(BlobFault::Replace(bytes)) => {
            parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            full(bytes.into())
        }
        _ => {
            // Truncate: the declared length stays, the stream errors half-way,
            // which makes hyper abort the connection.
            let half = data.slice(..data.len() / 2);
            let frames: Vec<Result<Frame<Bytes>, BoxError>> =
                vec![Ok(Frame::data(half)), Err("truncated by the test proxy".into())];
            BodyExt::boxed(StreamBody::new(futures::stream::iter(frames)))
        }
    };
    Ok(Response::from_parts(parts, body))
}

fn full(data: Bytes) -> ProxyBody {
    Full::new(data).map_err(|never| match never {}).boxed()
}

fn empty(status: StatusCode) -> Response<ProxyBody> {
    let mut resp = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *resp.status_mut() = status;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_paths() {
        let d = "sha256:abcd";
        assert_eq!(blob_digest("/v2/a/b/blobs/sha256:abcd"), Some(d));
        assert_eq!(blob_digest("/v2/a/blobs/uploads/"), None);
        assert_eq!(blob_digest("/v2/a/blobs/uploads/uuid"), None);
        assert_eq!(blob_digest("/v2/a/manifests/latest"), None);
    }

    #[test]
    fn status_fault_is_used_up() {
        let s = ProxyState::default();
        s.set_fault("sha256:x", BlobFault::Status { code: 500, times: 2 });
        assert!(s.take_fault("sha256:x").is_some());
        assert!(s.take_fault("sha256:x").is_some());
        assert!(s.take_fault("sha256:x").is_none());
    }
}
