//! A real OCI registry on loopback for image tests.
//!
//! Debian's `docker-registry` (distribution v2.8) serves plain HTTP on a private
//! loopback port. In front of it runs an in-process proxy (see [`proxy`]) on the
//! public port that the tests and berthd talk to. The proxy exists because:
//! - counting requests per blob must be exact at the moment a client has its
//!   answer; the registry's access log is written after the response and would race;
//! - tests need to serve corrupt or failing blobs, which the registry itself never
//!   does (it verifies digests on upload);
//! - TLS is terminated there with a CA generated per registry ([`crate::tls`]).
//!
//! Basic auth is done by the registry itself (htpasswd, bcrypt), so the 401
//! challenge and its `WWW-Authenticate` header are the real ones.
//!
//! The registry process is a child of a supervisor thread that lives exactly as
//! long as the [`Registry`] value, and it gets `PR_SET_PDEATHSIG`, so it dies
//! even if the test process is killed or the `Registry` sits in a static.

mod process;
pub mod proxy;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{anyhow, Context, Result};

use crate::oci_image::RegistryClient;
use crate::tls::TestCa;
pub use proxy::{BlobFault, RequestRecord};

/// How to start a [`Registry`].
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// Serve HTTPS with a certificate from a fresh test CA.
    pub tls: bool,
    /// Require HTTP basic auth with this user name and password.
    pub basic_auth: Option<(String, String)>,
    /// Require a bearer token from the registry's `/token` endpoint, which hands one out
    /// for this user name and password (the Docker Hub scheme).
    pub token_auth: Option<(String, String)>,
}

impl RegistryOptions {
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    pub fn basic_auth(mut self, user: &str, password: &str) -> Self {
        self.basic_auth = Some((user.to_string(), password.to_string()));
        self
    }

    pub fn token_auth(mut self, user: &str, password: &str) -> Self {
        self.token_auth = Some((user.to_string(), password.to_string()));
        self
    }
}

/// A running registry. Dropping it kills the process and removes its storage.
pub struct Registry {
    child: Option<Child>,
    supervisor: Option<JoinHandle<()>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    state: Arc<proxy::ProxyState>,
    addr: SocketAddr,
    backend: SocketAddr,
    ca: Option<TestCa>,
    options: RegistryOptions,
    // Last: the directory goes only after the process that writes into it.
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry, panicking with the registry's log if it cannot.
    pub fn start(options: RegistryOptions) -> Registry {
        Registry::try_start(options).unwrap_or_else(|e| panic!("test registry: {e:#}"))
    }

    pub fn try_start(options: RegistryOptions) -> Result<Registry> {
        sweep_stale_dirs();
        let dir =
            tempfile::Builder::new().prefix(DIR_PREFIX).tempdir().context("registry temp dir")?;
        std::fs::write(dir.path().join(OWNER_FILE), std::process::id().to_string())?;
        let ca = if options.tls {
            Some(TestCa::generate(dir.path(), &["127.0.0.1", "localhost"])?)
        } else {
            None
        };
        // The public side is ours, so it can bind port 0 without any race.
        let listener = TcpListener::bind("127.0.0.1:0").context("bind proxy port")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(match &options.token_auth {
            Some((user, password)) => proxy::ProxyState::with_token_auth(user, password),
            None => proxy::ProxyState::default(),
        });
        let tls = match &ca {
            Some(ca) => Some(proxy::tls_acceptor(ca)?),
            None => None,
        };

        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel();
        let spawn = process::Spawn {
            dir: dir.path().to_path_buf(),
            basic_auth: options.basic_auth.clone(),
        };
        let proxy_state = state.clone();
        let supervisor = std::thread::Builder::new()
            .name(format!("registry-{}", addr.port()))
            .spawn(move || {
                // The child is spawned here so that its parent-death signal is
                // tied to this thread, which ends only when the Registry drops.
                let started = spawn.start();
                let backend = started.as_ref().map(|(_, b)| *b).ok();
                let _ = started_tx.send(started);
                if let Some(backend) = backend {
                    proxy::serve(listener, backend, tls, proxy_state, shutdown_rx);
                }
            })
            .context("spawn registry supervisor thread")?;

        let started = started_rx
            .recv()
            .map_err(|_| anyhow!("registry supervisor thread died"))
            .and_then(|r| r);
        let (child, backend) = match started {
            Ok(v) => v,
            Err(e) => {
                let _ = supervisor.join();
                return Err(e);
            }
        };
        Ok(Registry {
            child: Some(child),
            supervisor: Some(supervisor),
            shutdown: Some(shutdown_tx),
            state,
            addr,
            backend,
            ca,
            options,
            dir,
        })
    }

    /// `127.0.0.1:PORT`, the registry host as it appears in image references.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT` or `https://…` when started with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// PEM file of the CA that signed the server certificate (TLS only).
    pub fn ca_pem_path(&self) -> Option<&Path> {
        self.ca.as_ref().map(|ca| ca.ca_pem_path.as_path())
    }

    /// The configured basic-auth user name and password.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.options.basic_auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// A client for this registry, with its credentials and CA.
    pub fn client(&self) -> RegistryClient {
        RegistryClient::new(&self.url(), self.credentials(), self.ca_pem_path())
            .expect("registry client")
    }

    /// A client for the registry behind the proxy (no authentication, plain HTTP): how
    /// tests fill a registry whose front door wants tokens.
    pub fn backend_client(&self) -> RegistryClient {
        RegistryClient::new(&format!("http://{}", self.backend), None, None)
            .expect("registry client")
    }

    /// Scopes asked for at the token endpoint so far (token authentication only).
    pub fn token_scopes(&self) -> Vec<String> {
        self.state.token_scopes()
    }

    /// A client for this registry that trusts its CA but sends no credentials.
    pub fn anonymous_client(&self) -> RegistryClient {
        RegistryClient::new(&self.url(), None, self.ca_pem_path()).expect("registry client")
    }

    /// Number of `GET /v2/<any repo>/blobs/<digest>` requests seen so far,
    /// whatever their answer. A request is counted before its client has the
    /// response headers, so the count is exact as soon as a pull returns.
    pub fn blob_get_count(&self, digest: &str) -> usize {
        self.state.blob_get_count(digest)
    }

    /// Every request seen so far, in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state.requests()
    }

    /// Forgets the requests seen so far (counts start again from zero).
    pub fn reset_requests(&self) {
        self.state.reset_requests()
    }

    /// Makes the proxy misbehave on `GET` of this blob (any repository).
    pub fn set_blob_fault(&self, digest: &str, fault: BlobFault) {
        self.state.set_fault(digest, fault)
    }

    pub fn clear_blob_fault(&self, digest: &str) {
        self.state.clear_fault(digest)
    }

    /// Root of the registry's filesystem storage.
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Replaces the stored bytes of a blob behind the registry's back, so it is
    /// served (with the new length) under its old digest. This is the other way
    /// to serve a corrupt blob, next to [`BlobFault::Corrupt`]; the registry has
    /// no blob-descriptor cache configured, so it stats the file on every request.
    pub fn overwrite_stored_blob(&self, digest: &str, data: &[u8]) -> Result<()> {
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64)
            .ok_or_else(|| anyhow!("not a sha256 digest: {digest}"))?;
        let path = self
            .storage_dir()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data");
        if !path.exists() {
            return Err(anyhow!("blob {digest} is not stored"));
        }
        std::fs::write(&path, data).with_context(|| format!("write {}", path.display()))
    }

    /// The registry's own plain-HTTP address, bypassing the proxy (no TLS, no
    /// counting, no faults). For benchmarks that must not pay for the proxy.
    pub fn backend_addr(&self) -> String {
        self.backend.to_string()
    }

    /// PID of the `docker-registry` process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// The registry's stdout+stderr (its log and access log), for debugging.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

const DIR_PREFIX: &str = "berth-registry-";
/// Holds the PID of the test process that owns a registry directory.
const OWNER_FILE: &str = "owner.pid";

/// Removes registry directories whose test process is gone. Drop cleans up
/// normally; this catches test processes that were SIGKILLed (their registry
/// died with them through the parent-death signal, their directory did not).
fn sweep_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        // No owner file yet: another process is just creating it; leave it.
        let Ok(owner) = std::fs::read_to_string(entry.path().join(OWNER_FILE)) else {
            continue;
        };
        let alive = owner
            .trim()
            .parse::<u32>()
            .map(|pid| Path::new(&format!("/proc/{pid}")).exists())
            .unwrap_or(true);
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Child::kill signals exactly this PID; wait reaps it.
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.supervisor.take() {
            let _ = t.join();
        }
    }
}
