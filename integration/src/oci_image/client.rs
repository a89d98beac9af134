//! A small registry HTTP API v2 client for pushing fixtures and checking them.
//!
//! The API is synchronous so it works the same from plain `#[test]`s and from
//! `#[tokio::test]`s: every call runs on a scoped thread that drives the
//! client's own tokio runtime (calling `block_on` inside a test's runtime
//! would panic).

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use reqwest::header::{HeaderMap, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode, Url};

use super::layer::sha256_digest;

/// How blobs are uploaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadMode {
    /// `POST` to open an upload, then one `PUT ?digest=` with the whole blob.
    Monolithic,
    /// `POST`, a `PATCH` per chunk of this many bytes, then an empty `PUT ?digest=`.
    Chunked(usize),
}

/// An HTTP answer, for tests that look at the registry directly.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Talks to one registry, with optional basic auth and an optional extra CA.
pub struct RegistryClient {
    base: Url,
    auth: Option<(String, String)>,
    http: reqwest::Client,
    rt: Option<tokio::runtime::Runtime>,
    /// How [`RegistryClient::push_blob`] uploads (default monolithic).
    pub upload_mode: UploadMode,
}

impl RegistryClient {
    /// `url` is `http(s)://host:port`; `ca_pem` is a CA to trust (the only one:
    /// test registries never use public certificates).
    pub fn new(url: &str, auth: Option<(&str, &str)>, ca_pem: Option<&Path>) -> Result<Self> {
        let mut builder =
            reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).no_proxy();
        if let Some(path) = ca_pem {
            let pem = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("registry-client")
            .enable_all()
            .build()?;
        // reqwest builds its connector in the context of a runtime.
        let http = {
            let _guard = rt.enter();
            builder.build()?
        };
        Ok(RegistryClient {
            base: Url::parse(url)?,
            auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
            http,
            rt: Some(rt),
            upload_mode: UploadMode::Monolithic,
        })
    }

    /// `host:port` as it appears in image references.
    pub fn host(&self) -> String {
        match self.base.port() {
            Some(p) => format!("{}:{p}", self.base.host_str().unwrap_or_default()),
            None => self.base.host_str().unwrap_or_default().to_string(),
        }
    }

    /// Runs `fut` to completion on the client's runtime, from any context.
    fn block_on<T: Send>(&self, fut: impl std::future::Future<Output = T> + Send) -> T {
        let rt = self.rt.as_ref().expect("runtime lives until drop");
        std::thread::scope(|s| {
            s.spawn(|| rt.block_on(fut)).join().expect("registry client thread panicked")
        })
    }

    fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        let req = self.http.request(method, url);
        match &self.auth {
            Some((u, p)) => req.basic_auth(u, Some(p)),
            None => req,
        }
    }

    async fn send(req: reqwest::RequestBuilder) -> Result<HttpResponse> {
        let resp = req.send().await?;
        Ok(HttpResponse {
            status: resp.status(),
            headers: resp.headers().clone(),
            body: resp.bytes().await?.to_vec(),
        })
    }

    /// `GET` any path (e.g. `/v2/`), with this client's credentials.
    pub fn get(&self, path: &str, accept: Option<&str>) -> Result<HttpResponse> {
        let mut req = self.request(Method::GET, self.base.join(path)?);
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        self.block_on(Self::send(req))
    }

    /// Fetches a manifest by tag or digest, accepting every manifest type.
    pub fn get_manifest(&self, repo: &str, reference: &str) -> Result<HttpResponse> {
        let accept = [
            super::media::MEDIA_OCI_MANIFEST,
            super::media::MEDIA_OCI_INDEX,
            super::media::MEDIA_DOCKER_MANIFEST,
            super::media::MEDIA_DOCKER_LIST,
        ]
        .join(", ");
        self.get(&format!("/v2/{repo}/manifests/{reference}"), Some(&accept))
    }

    /// Fetches a blob's bytes, failing on any status but 200.
    pub fn get_blob(&self, repo: &str, digest: &str) -> Result<Vec<u8>> {
        let resp = self.get(&format!("/v2/{repo}/blobs/{digest}"), None)?;
        if resp.status != StatusCode::OK {
            bail!("GET blob {digest}: {}", resp.status);
        }
        Ok(resp.body)
    }

    /// Whether the registry has this blob in `repo`.
    pub fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool> {
        let url = self.base.join(&format!("/v2/{repo}/blobs/{digest}"))?;
        let resp = self.block_on(Self::send(self.request(Method::HEAD, url)))?;
        Ok(resp.status == StatusCode::OK)
    }

    /// Uploads a blob unless it is already there; returns its digest.
    pub fn push_blob(&self, repo: &str, data: &[u8]) -> Result<String> {
        let digest = sha256_digest(data);
        if self.blob_exists(repo, &digest)? {
            return Ok(digest);
        }
        self.upload_blob(repo, data, &digest)?;
        Ok(digest)
    }

    /// Uploads bytes claiming `digest`, without checking it first, so tests can
    /// watch the registry refuse a wrong digest.
    pub fn upload_blob(&self, repo: &str, data: &[u8], digest: &str) -> Result<()> {
        self.block_on(self.upload(repo, data, digest))
    }

    async fn upload(&self, repo: &str, data: &[u8], digest: &str) -> Result<()> {
        let start = self.base.join(&format!("/v2/{repo}/blobs/uploads/"))?;
        let resp = Self::send(self.request(Method::POST, start)).await?;
        expect_status(&resp, StatusCode::ACCEPTED, "start upload")?;
        let mut location = self.location(&resp)?;
        let body = match self.upload_mode {
            UploadMode::Monolithic => data.to_vec(),
            UploadMode::Chunked(size) => {
                let mut offset = 0;
                for chunk in data.chunks(size.max(1)) {
                    let end = offset + chunk.len() - 1;
                    let req = self
                        .request(Method::PATCH, location.clone())
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header("content-range", format!("{offset}-{end}"))
                        .body(chunk.to_vec());
                    let resp = Self::send(req).await?;
                    expect_status(&resp, StatusCode::ACCEPTED, "upload chunk")?;
                    location = self.location(&resp)?;
                    offset += chunk.len();
                }
                Vec::new()
            }
        };
        location.query_pairs_mut().append_pair("digest", digest);
        let req = self
            .request(Method::PUT, location)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(body);
        let resp = Self::send(req).await?;
        expect_status(&resp, StatusCode::CREATED, "finish upload")
    }

    fn location(&self, resp: &HttpResponse) -> Result<Url> {
        let loc = resp
            .headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| anyhow!("upload answer without Location"))?;
        // Absolute or relative: joining handles both.
        Ok(self.base.join(loc)?)
    }

    /// `PUT`s a manifest under a tag or digest; returns its digest (checked
    /// against the registry's `Docker-Content-Digest`).
    pub fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Result<String> {
        let url = self.base.join(&format!("/v2/{repo}/manifests/{reference}"))?;
        let req =
            self.request(Method::PUT, url).header(CONTENT_TYPE, media_type).body(body.to_vec());
        let resp = self.block_on(Self::send(req))?;
        expect_status(&resp, StatusCode::CREATED, "put manifest")?;
        let digest = sha256_digest(body);
        if let Some(theirs) = resp.header("docker-content-digest") {
            if theirs != digest {
                bail!("registry says manifest digest {theirs}, we computed {digest}");
            }
        }
        Ok(digest)
    }

    /// Deletes a manifest by digest (the registry runs with deletes enabled).
    pub fn delete_manifest(&self, repo: &str, digest: &str) -> Result<()> {
        let url = self.base.join(&format!("/v2/{repo}/manifests/{digest}"))?;
        let resp = self.block_on(Self::send(self.request(Method::DELETE, url)))?;
        expect_status(&resp, StatusCode::ACCEPTED, "delete manifest")
    }
}

impl Drop for RegistryClient {
    fn drop(&mut self) {
        // A plain drop would panic inside a test's async context.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn expect_status(resp: &HttpResponse, want: StatusCode, what: &str) -> Result<()> {
    if resp.status != want {
        bail!(
            "{what}: got {} (wanted {want}): {}",
            resp.status,
            String::from_utf8_lossy(&resp.body)
        );
    }
    Ok(())
}
