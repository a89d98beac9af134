//! Talking to registries: one oci-client per endpoint (so each can have its own scheme
//! and CA), credentials per pull, and a stall timeout on every byte stream.

use super::reference::Endpoint;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Registry settings from berthd's config.
#[derive(Debug, Clone, Default)]
pub struct RegistrySettings {
    /// Registry host → mirror endpoint URLs, tried in order before the registry.
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// Per-host (`host[:port]`) TLS settings.
    pub hosts: BTreeMap<String, HostSettings>,
    /// A docker-style `config.json` with `auths` to use when a pull brings no credentials.
    pub auth_file: Option<PathBuf>,
    /// A pull that receives no byte for this long is aborted.
    pub progress_timeout: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct HostSettings {
    /// PEM of extra CA certificates to trust for this host.
    pub ca_pem: Option<Vec<u8>>,
}

/// Credentials for one pull, as the kubelet sends them in `AuthConfig`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// `base64(username:password)`, docker's `auth` field.
    pub auth: String,
    pub registry_token: String,
    pub identity_token: String,
    /// The registry these credentials are for; empty means any.
    pub server_address: String,
}

impl std::fmt::Debug for Credentials {
    // Never let a secret reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("server_address", &self.server_address)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    fn applies_to(&self, host: &str) -> bool {
        let server = self.server_address.trim();
        if server.is_empty() {
            return true;
        }
        let server = server.split("://").last().unwrap_or(server);
        let server = server.split('/').next().unwrap_or(server);
        server == host || (server.ends_with("docker.io") && host.ends_with("docker.io"))
    }

    fn to_auth(&self) -> Option<RegistryAuth> {
        if !self.registry_token.is_empty() {
            return Some(RegistryAuth::Bearer(self.registry_token.clone()));
        }
        if !self.username.is_empty() {
            return Some(RegistryAuth::Basic(self.username.clone(), self.password.clone()));
        }
        if !self.auth.is_empty() {
            return decode_basic(&self.auth);
        }
        None
    }
}

fn decode_basic(b64: &str) -> Option<RegistryAuth> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some(RegistryAuth::Basic(user.into(), pass.into()))
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{host}: {message}")]
    Request { host: String, message: String },
    #[error("{host}: no data received for {timeout:?}; pull aborted")]
    Stalled { host: String, timeout: Duration },
    #[error("cannot read registry credentials file {}: {message}", path.display())]
    AuthFile { path: PathBuf, message: String },
}

pub struct Registries {
    settings: RegistrySettings,
    /// One client per endpoint and credentials: oci-client remembers the first
    /// credentials it sees for a registry, and one pull's secret must never serve another.
    clients: Mutex<HashMap<ClientKey, Arc<oci_client::Client>>>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    host: String,
    plain_http: bool,
    /// A hash of the credentials, so the key itself holds no secret.
    auth: crate::digest::Digest,
}

/// More distinct (endpoint, credentials) pairs than this and the cache starts over.
const MAX_CLIENTS: usize = 64;

pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, RegistryError>> + Send>>;

impl Registries {
    pub fn new(settings: RegistrySettings) -> Self {
        Self { settings, clients: Mutex::new(HashMap::new()) }
    }

    pub fn settings(&self) -> &RegistrySettings {
        &self.settings
    }

    fn client(&self, ep: &Endpoint, auth: &RegistryAuth) -> Arc<oci_client::Client> {
        let fingerprint = match auth {
            RegistryAuth::Anonymous => "anonymous".to_string(),
            RegistryAuth::Basic(u, p) => format!("basic\0{u}\0{p}"),
            RegistryAuth::Bearer(t) => format!("bearer\0{t}"),
        };
        let key = ClientKey {
            host: ep.host.clone(),
            plain_http: ep.plain_http,
            auth: crate::digest::Digest::of(fingerprint.as_bytes()),
        };
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if clients.len() >= MAX_CLIENTS && !clients.contains_key(&key) {
            clients.clear();
        }
        clients
            .entry(key)
            .or_insert_with(|| {
                let mut config = ClientConfig {
                    protocol: if ep.plain_http {
                        ClientProtocol::Http
                    } else {
                        ClientProtocol::Https
                    },
                    connect_timeout: Some(Duration::from_secs(30)),
                    // A backstop only: berth's own progress watchdog (the same timeout)
                    // must be the one that fires, with its error naming the stall; a tie
                    // went to the HTTP client's bare "operation timed out" under load.
                    read_timeout: Some(self.settings.progress_timeout * 2),
                    user_agent: concat!("berth/", env!("CARGO_PKG_VERSION")),
                    ..Default::default()
                };
                if let Some(pem) = self.settings.hosts.get(&ep.host).and_then(|h| h.ca_pem.clone())
                {
                    config
                        .extra_root_certificates
                        .push(Certificate { encoding: CertificateEncoding::Pem, data: pem });
                }
                Arc::new(oci_client::Client::new(config))
            })
            .clone()
    }

    /// The credentials to present to `host`: the pull's own, else the auth file's.
    fn auth_for(
        &self,
        host: &str,
        creds: Option<&Credentials>,
    ) -> Result<RegistryAuth, RegistryError> {
        if let Some(auth) = creds.filter(|c| c.applies_to(host)).and_then(Credentials::to_auth) {
            return Ok(auth);
        }
        let Some(path) = &self.settings.auth_file else { return Ok(RegistryAuth::Anonymous) };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(RegistryAuth::Anonymous)
            }
            Err(e) => {
                return Err(RegistryError::AuthFile { path: path.clone(), message: e.to_string() })
            }
        };
        let file: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| RegistryError::AuthFile { path: path.clone(), message: e.to_string() })?;
        let auths = file.get("auths").and_then(|a| a.as_object());
        for (server, entry) in auths.into_iter().flatten() {
            let c = Credentials {
                auth: entry.get("auth").and_then(|v| v.as_str()).unwrap_or_default().into(),
                username: entry.get("username").and_then(|v| v.as_str()).unwrap_or_default().into(),
                password: entry.get("password").and_then(|v| v.as_str()).unwrap_or_default().into(),
                registry_token: entry
                    .get("registrytoken")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .into(),
                server_address: server.clone(),
                ..Default::default()
            };
            if !server.is_empty() && c.applies_to(host) {
                if let Some(auth) = c.to_auth() {
                    return Ok(auth);
                }
            }
        }
        Ok(RegistryAuth::Anonymous)
    }

    /// Fetches a manifest by tag or digest; returns its bytes.
    pub async fn manifest(
        &self,
        ep: &Endpoint,
        tag_or_digest: &str,
        creds: Option<&Credentials>,
    ) -> Result<Bytes, RegistryError> {
        let reference = oci_ref(ep, tag_or_digest);
        let auth = self.auth_for(&ep.host, creds)?;
        let client = self.client(ep, &auth);
        let fetch = client.pull_manifest_raw(&reference, &auth, super::manifest::ACCEPTED);
        match tokio::time::timeout(self.settings.progress_timeout, fetch).await {
            Ok(Ok((bytes, _digest))) => Ok(bytes),
            Ok(Err(e)) => {
                Err(RegistryError::Request { host: ep.host.clone(), message: error_text(&e) })
            }
            Err(_) => Err(RegistryError::Stalled {
                host: ep.host.clone(),
                timeout: self.settings.progress_timeout,
            }),
        }
    }

    /// Streams a blob. The caller verifies size and digest; this only enforces progress.
    pub async fn blob(
        &self,
        ep: &Endpoint,
        digest: &str,
        creds: Option<&Credentials>,
    ) -> Result<ByteStream, RegistryError> {
        let reference = oci_ref(ep, digest);
        let auth = self.auth_for(&ep.host, creds)?;
        let client = self.client(ep, &auth);
        let host = ep.host.clone();
        let timeout = self.settings.progress_timeout;
        let open = async {
            // Authenticates (or reuses the token from the manifest request) for this client.
            client.store_auth_if_needed(reference.resolve_registry(), &auth).await;
            client.pull_blob_stream(&reference, digest).await
        };
        let sized = match tokio::time::timeout(timeout, open).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(RegistryError::Request { host, message: error_text(&e) }),
            Err(_) => return Err(RegistryError::Stalled { host, timeout }),
        };
        // Each chunk must arrive within the progress timeout; the first error ends it.
        let stream = futures::stream::unfold((sized.stream, false), move |(mut inner, failed)| {
            let host = host.clone();
            async move {
                if failed {
                    return None;
                }
                match tokio::time::timeout(timeout, inner.next()).await {
                    Ok(Some(Ok(bytes))) => Some((Ok(bytes), (inner, false))),
                    Ok(Some(Err(e))) => Some((
                        Err(RegistryError::Request { host, message: e.to_string() }),
                        (inner, true),
                    )),
                    Ok(None) => None,
                    Err(_) => Some((Err(RegistryError::Stalled { host, timeout }), (inner, true))),
                }
            }
        });
        Ok(Box::pin(stream))
    }
}

fn oci_ref(ep: &Endpoint, tag_or_digest: &str) -> oci_client::Reference {
    if tag_or_digest.contains(':') {
        oci_client::Reference::with_digest(
            ep.host.clone(),
            ep.repository.clone(),
            tag_or_digest.into(),
        )
    } else {
        oci_client::Reference::with_tag(
            ep.host.clone(),
            ep.repository.clone(),
            tag_or_digest.into(),
        )
    }
}

/// The error with its causes: reqwest's top-level message alone ("error sending
/// request") hides the part an operator needs (certificate, refused connection).
fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_scoped_to_their_server() {
        let c = Credentials {
            username: "u".into(),
            password: "s3cret".into(),
            server_address: "https://reg.example:5000/v2/".into(),
            ..Default::default()
        };
        assert!(c.applies_to("reg.example:5000"));
        assert!(!c.applies_to("other.example"));
        let any = Credentials { auth: "dTpw".into(), ..Default::default() }; // "u:p"
        assert!(any.applies_to("x"));
        assert!(matches!(any.to_auth(), Some(RegistryAuth::Basic(u, p)) if u == "u" && p == "p"));
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
