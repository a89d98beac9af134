//! Image references as the kubelet, docker and containerd write them, normalised to one
//! fully-qualified form, and the ordered list of endpoints an image is fetched from.
//!
//! Grammar (docker/distribution's, with its "familiar" short forms):
//!
//! ```text
//! reference  := name [ ":" tag ] [ "@" digest ]
//! name       := [ domain "/" ] path-component ( "/" path-component )*
//! domain     := host [ ":" port ]          host: DNS name, IPv4, or "[" IPv6 "]"
//! path-comp  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! digest     := "sha256:" 64 lowercase hex  |  "sha512:" 128 lowercase hex
//! ```
//!
//! The first path segment is a domain only if it contains `.` or `:`, is `localhost`, or
//! has uppercase letters (which a repository never may); otherwise the image lives on
//! Docker Hub, where one-segment names get the `library/` prefix.

use std::collections::BTreeMap;
use std::fmt;

/// Docker Hub's name in normalised references.
pub const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's legacy name, normalised to [`DOCKER_HUB`].
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
/// Where Docker Hub's registry API actually answers.
const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
const OFFICIAL_PREFIX: &str = "library/";
const DEFAULT_TAG: &str = "latest";
/// Mirror-map key that applies to every registry without its own entry.
pub const ANY_REGISTRY: &str = "*";

const NAME_MAX_LEN: usize = 255;
const TAG_MAX_LEN: usize = 128;

/// Why a string is not a valid image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {input:?}: {reason}")]
pub struct ReferenceError {
    input: String,
    reason: String,
}

impl ReferenceError {
    fn new(input: &str, reason: impl Into<String>) -> Self {
        Self { input: input.to_owned(), reason: reason.into() }
    }

    /// What is wrong, without the input.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// A parsed, normalised image reference.
///
/// `tag` is `latest` when the input named neither a tag nor a digest; with only a digest
/// there is no tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Reference {
    /// Parses and normalises `s` (`busybox` → `docker.io/library/busybox:latest`).
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        let err = |reason: String| ReferenceError::new(s, reason);
        if s.is_empty() {
            return Err(err("empty reference".into()));
        }
        if s.trim() != s {
            return Err(err("leading or trailing whitespace".into()));
        }
        if parse_image_id(s).is_some() && !s.contains(':') {
            return Err(err(
                "a 64-character hexadecimal string is an image id, not a repository name".into(),
            ));
        }

        let (rest, digest) = match s.split_once('@') {
            Some((rest, digest)) => {
                validate_digest(digest).map_err(&err)?;
                (rest, Some(digest.to_owned()))
            }
            None => (s, None),
        };
        // A ':' after the last '/' starts the tag; earlier ones belong to a registry port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let i = last_slash + i;
                let tag = &rest[i + 1..];
                validate_tag(tag).map_err(&err)?;
                (&rest[..i], Some(tag.to_owned()))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(err("empty repository name".into()));
        }
        if name.len() > NAME_MAX_LEN {
            return Err(err(format!(
                "name is {} characters long, at most {NAME_MAX_LEN} are allowed",
                name.len()
            )));
        }

        let (registry, path) = split_registry(name);
        validate_registry(registry).map_err(&err)?;
        validate_repository(path).map_err(&err)?;

        let registry = if registry == DOCKER_HUB_LEGACY { DOCKER_HUB } else { registry };
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("{OFFICIAL_PREFIX}{path}")
        } else {
            path.to_owned()
        };
        // As docker's normalisation: the limit holds for the full name too, or an image
        // pulled by its short name would be listed under a name no one can parse back.
        let full = registry.len() + 1 + repository.len();
        if full > NAME_MAX_LEN {
            return Err(err(format!(
                "name is {full} characters long once normalised ({registry}/{repository}), at most {NAME_MAX_LEN} are allowed"
            )));
        }
        let tag = match (tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_owned()),
            (tag, _) => tag,
        };
        Ok(Reference { registry: registry.to_owned(), repository, tag, digest })
    }

    /// The registry host, with port if any (`docker.io`, `localhost:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry (`library/busybox`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// `sha256:<hex>` (or `sha512:<hex>`) when the reference pins a digest.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// Registry and repository without tag or digest (`docker.io/library/busybox`).
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl fmt::Display for Reference {
    /// The fully-qualified normalised form: `docker.io/library/busybox:latest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

/// If `s` names an image by id rather than by reference — 64 lowercase hex characters,
/// optionally prefixed with `sha256:` — returns the id as `sha256:<hex>`.
///
/// CRI callers pass either form in `ImageSpec.image`; check this before
/// [`Reference::parse`], which rejects a bare 64-hex string as a repository name.
pub fn parse_image_id(s: &str) -> Option<String> {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    (hex.len() == 64 && is_lower_hex(hex)).then(|| format!("sha256:{hex}"))
}

/// Whether `s` looks like an image id / digest rather than a reference.
pub fn looks_like_image_id(s: &str) -> bool {
    parse_image_id(s).is_some()
}

fn split_registry(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => (DOCKER_HUB, name),
    }
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn validate_digest(digest: &str) -> Result<(), String> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(format!("digest {digest:?} is not of the form algorithm:hex"));
    };
    let want = match algorithm {
        "sha256" => 64,
        "sha512" => 128,
        _ => {
            return Err(format!(
                "digest algorithm {algorithm:?} is not supported (sha256 or sha512)"
            ))
        }
    };
    if hex.len() != want || !is_lower_hex(hex) {
        return Err(format!(
            "{algorithm} digest must be {want} lowercase hexadecimal characters, got {hex:?}"
        ));
    }
    Ok(())
}

fn validate_tag(tag: &str) -> Result<(), String> {
    if tag.is_empty() {
        return Err("empty tag".into());
    }
    if tag.len() > TAG_MAX_LEN {
        return Err(format!(
            "tag is {} characters long, at most {TAG_MAX_LEN} are allowed",
            tag.len()
        ));
    }
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = tag.chars();
    if !chars.next().is_some_and(word) {
        return Err(format!("tag {tag:?} must start with a letter, digit or underscore"));
    }
    if let Some(bad) = chars.find(|&c| !(word(c) || c == '.' || c == '-')) {
        return Err(format!(
            "tag {tag:?} contains {bad:?}; only letters, digits, '_', '.' and '-' are allowed"
        ));
    }
    Ok(())
}

fn validate_registry(registry: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return Err(format!("registry {registry:?} has an unclosed '['"));
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("registry {registry:?}: {v6:?} is not an IPv6 address"));
        }
        match after {
            "" => (None, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return Err(format!("registry {registry:?}: junk after ']'")),
            },
        }
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(registry), None),
        }
    };
    if let Some(host) = host {
        if host.is_empty() {
            return Err(format!("registry {registry:?} has an empty host"));
        }
        for label in host.split('.') {
            let ok = !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return Err(format!(
                    "registry host {host:?} has an invalid label {label:?}: labels are \
                     non-empty letters, digits and inner '-'"
                ));
            }
        }
    }
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.len() > 5 {
            return Err(format!("registry {registry:?} has an invalid port {port:?}"));
        }
    }
    Ok(())
}

fn validate_repository(path: &str) -> Result<(), String> {
    for component in path.split('/') {
        if component.is_empty() {
            return Err(format!("repository {path:?} has an empty path component"));
        }
        if component.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(format!(
                "repository {path:?} has uppercase letters; repository names must be lowercase"
            ));
        }
        validate_path_component(component)
            .map_err(|why| format!("repository {path:?}: component {component:?} {why}"))?;
    }
    Ok(())
}

fn validate_path_component(component: &str) -> Result<(), &'static str> {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = component.as_bytes();
    if !bytes.first().copied().is_some_and(alnum) || !bytes.last().copied().is_some_and(alnum) {
        return Err("must start and end with a lowercase letter or digit");
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let ok = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !ok {
            return Err("may only separate letters and digits with '.', '_', '__' or dashes");
        }
    }
    Ok(())
}

/// One place to fetch an image's blobs and manifests from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]` to connect to.
    pub host: String,
    /// Repository path on that host (a mirror keeps the original path).
    pub repository: String,
    /// Speak plain HTTP rather than HTTPS.
    pub plain_http: bool,
    /// Configured mirror rather than the image's own registry.
    pub mirror: bool,
}

impl Endpoint {
    pub fn scheme(&self) -> &'static str {
        if self.plain_http {
            "http"
        } else {
            "https"
        }
    }
}

/// A mirror endpoint from config: where to connect and whether to use plain HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorUrl {
    pub host: String,
    pub plain_http: bool,
}

/// Parses a configured mirror endpoint: `http://host[:port]`, `https://host[:port]` or a
/// bare `host[:port]` (HTTPS). A path other than `/` or `/v2` is refused because the
/// distribution API is always rooted at `/v2/`. Config validation calls this so that a bad
/// mirror is reported at start-up rather than skipped at pull time.
pub fn parse_mirror_url(url: &str) -> Result<MirrorUrl, ReferenceError> {
    let err = |reason: &str| ReferenceError::new(url, format!("registry mirror: {reason}"));
    let (plain_http, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (false, rest)
    } else if url.contains("://") {
        return Err(err("scheme must be http or https"));
    } else {
        (false, url)
    };
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if !matches!(path, "" | "/" | "/v2" | "/v2/") {
        return Err(err("path prefixes are not supported; give scheme://host[:port]"));
    }
    if host.contains('@') {
        return Err(err("credentials do not belong in the endpoint URL"));
    }
    validate_registry(host).map_err(|reason| err(&reason))?;
    Ok(MirrorUrl { host: host.to_owned(), plain_http })
}

/// The ordered endpoints to try for `reference`: each mirror configured for its registry
/// (or, failing that, for [`ANY_REGISTRY`]), then the registry itself over HTTPS unless a
/// mirror already names that host. Mirrors that do not parse (see [`parse_mirror_url`])
/// are skipped.
pub fn resolve_endpoints(
    reference: &Reference,
    mirrors: &BTreeMap<String, Vec<String>>,
) -> Vec<Endpoint> {
    let configured = mirrors
        .get(reference.registry())
        .or_else(|| {
            (reference.registry() == DOCKER_HUB).then(|| mirrors.get(DOCKER_HUB_LEGACY)).flatten()
        })
        .or_else(|| mirrors.get(ANY_REGISTRY));
    let upstream_host = match reference.registry() {
        DOCKER_HUB => DOCKER_HUB_API_HOST,
        other => other,
    };

    let mut endpoints: Vec<Endpoint> = Vec::new();
    for url in configured.into_iter().flatten() {
        let Ok(mirror) = parse_mirror_url(url) else {
            continue;
        };
        let host = match mirror.host.as_str() {
            DOCKER_HUB | DOCKER_HUB_LEGACY => DOCKER_HUB_API_HOST.to_owned(),
            _ => mirror.host,
        };
        let endpoint = Endpoint {
            mirror: host != upstream_host,
            host,
            repository: reference.repository().to_owned(),
            plain_http: mirror.plain_http,
        };
        if !endpoints.contains(&endpoint) {
            endpoints.push(endpoint);
        }
    }
    if !endpoints.iter().any(|e| e.host == upstream_host) {
        endpoints.push(Endpoint {
            host: upstream_host.to_owned(),
            repository: reference.repository().to_owned(),
            plain_http: false,
            mirror: false,
        });
    }
    endpoints
}

#[cfg(test)]
mod tests;
