//! Who is calling, and what they may do.
//!
//! - Identity: a bearer token (`authorization: Bearer <token>`, matched by its SHA-256,
//!   never stored in plain text) or an mTLS client certificate (subject or SAN).
//!   [`AuthLayer`] resolves it once per call and puts a [`Caller`] in the request
//!   extensions; no identity is `UNAUTHENTICATED` unless the config says
//!   `allow_unauthenticated = true`. Health and reflection need no identity (probes).
//! - Authorization: a [`Grant`] lists the keys, URL prefixes, TTL and purge targets of one
//!   client, plus its rate limits. Prefix checks run on a normalised form of the resource
//!   ([`normalize_for_grant`]) so `..`, `%2e%2e`, user info, another scheme, host or port
//!   cannot escape a prefix.
//! - [`ShedLayer`]: a concurrency limit that answers `RESOURCE_EXHAUSTED` at once when
//!   full, before any work or buffering.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;
use tower::{Layer, Service};

use crate::config::{ClientConfig, Config};
use crate::grpc::layers::take_ready;

/// The tracing target audit events go to (rendered as JSON lines, see `telemetry`).
pub const AUDIT_TARGET: &str = "cdnsign::audit";

/// Paths that never need an identity: probes and API discovery.
fn is_public(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
}

/// Why a resource cannot be checked against a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    /// Not `http://` or `https://` (a wildcard scheme cannot be proven inside a grant).
    #[error("scheme is not http or https")]
    Scheme,
    /// `user@host` in the authority.
    #[error("user info ('@') in the host part")]
    UserInfo,
    /// No host.
    #[error("no host")]
    NoHost,
    /// A malformed percent escape.
    #[error("malformed percent escape")]
    BadEscape,
    /// `%2F` or `%5C` in the path: an origin that decodes them could resolve `..` across
    /// them, so they cannot be proven to stay inside a prefix.
    #[error("encoded '/' or '\\' (%2F, %5C) in the path")]
    EncodedSeparator,
}

/// Canonical form of a URL or resource pattern for prefix checks: lowercase scheme and
/// host, default port dropped, percent-escapes of unreserved characters decoded (so
/// `%2e` is `.`), other escapes upper-cased, and dot segments removed from the path
/// (RFC 3986 §5.2.4). Wildcards are ordinary characters here: a pattern is allowed only
/// if its literal text starts with the (wildcard-free) prefix.
pub fn normalize_for_grant(text: &str) -> Result<String, NormalizeError> {
    normalize(text, false)
}

/// [`normalize_for_grant`] for a policy Resource pattern, where `?` is CloudFront's
/// one-character wildcard, not the start of a query: dot segments are resolved across the
/// whole text after the host, so `/hls/?/../../x` cannot pass for something under `/hls/`.
pub fn normalize_pattern_for_grant(text: &str) -> Result<String, NormalizeError> {
    normalize(text, true)
}

fn normalize(text: &str, pattern: bool) -> Result<String, NormalizeError> {
    let (scheme, rest) = text.split_once("://").ok_or(NormalizeError::Scheme)?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => ":443",
        "http" => ":80",
        _ => return Err(NormalizeError::Scheme),
    };
    let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(auth_end);
    if authority.contains('@') {
        return Err(NormalizeError::UserInfo);
    }
    let mut host = authority.to_ascii_lowercase();
    if host.ends_with(default_port) {
        host.truncate(host.len() - default_port.len());
    }
    if host.is_empty() || host.starts_with(':') {
        return Err(NormalizeError::NoHost);
    }
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) if !pattern => (p, Some(q)),
        _ => (tail, None),
    };
    let upper = path.to_ascii_uppercase();
    if upper.contains("%2F") || upper.contains("%5C") {
        return Err(NormalizeError::EncodedSeparator);
    }
    let path = decode_unreserved(path)?;
    let mut out = format!("{scheme}://{host}{}", remove_dot_segments(&path));
    if let Some(q) = query {
        out.push('?');
        out.push_str(&decode_unreserved(q)?);
    }
    Ok(out)
}

fn decode_unreserved(s: &str) -> Result<String, NormalizeError> {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).ok_or(NormalizeError::BadEscape)?;
            let text = std::str::from_utf8(hex).map_err(|_| NormalizeError::BadEscape)?;
            let v = u8::from_str_radix(text, 16).map_err(|_| NormalizeError::BadEscape)?;
            if v.is_ascii_alphanumeric() || b"-._~".contains(&v) {
                out.push(char::from(v));
            } else {
                out.push('%');
                out.push_str(&text.to_ascii_uppercase());
            }
            i += 3;
        } else {
            // Input has passed `clean_text`: ASCII only.
            out.push(char::from(b[i]));
            i += 1;
        }
    }
    Ok(out)
}

/// RFC 3986 §5.2.4, on segments.
fn remove_dot_segments(path: &str) -> String {
    let mut stack: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => {
                if i == last {
                    stack.push("");
                }
            }
            ".." => {
                if stack.len() > 1 {
                    stack.pop();
                }
                if i == last {
                    stack.push("");
                }
            }
            s => stack.push(s),
        }
    }
    let joined = stack.join("/");
    if path.starts_with('/') && !joined.starts_with('/') {
        format!("/{joined}")
    } else {
        joined
    }
}

/// A token bucket: `rate` tokens per second up to `burst`.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

/// A rate limit refused a request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RateError {
    /// Not enough tokens now; retry after the given seconds.
    #[error("rate limit of {rate} per second exceeded; retry in {retry_after:.1}s")]
    Exceeded {
        /// The configured rate.
        rate: f64,
        /// Seconds until enough tokens have accrued.
        retry_after: f64,
    },
    /// The request alone is larger than the bucket.
    #[error("request of {asked} exceeds the rate limit burst of {burst}")]
    TooLarge {
        /// Tokens asked.
        asked: u64,
        /// Bucket size.
        burst: f64,
    },
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_second: f64, burst: f64) -> TokenBucket {
        TokenBucket {
            rate: rate_per_second,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes `n` tokens or says when to retry; takes nothing on refusal.
    pub fn take(&self, n: u64) -> Result<(), RateError> {
        let n_f = n as f64;
        if n_f > self.burst {
            return Err(RateError::TooLarge {
                asked: n,
                burst: self.burst,
            });
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let (tokens, last) = *state;
        let available =
            (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.burst);
        if available >= n_f {
            *state = (available - n_f, now);
            Ok(())
        } else {
            *state = (available, now);
            Err(RateError::Exceeded {
                rate: self.rate,
                retry_after: (n_f - available) / self.rate,
            })
        }
    }
}

/// One client's grants, built once from `[[clients]]`.
#[derive(Debug)]
pub struct Grant {
    /// Client name (config).
    pub name: String,
    keys: HashSet<String>,
    prefixes: Vec<String>,
    /// TTL cap for this client.
    pub max_ttl_seconds: Option<i64>,
    purge_targets: HashSet<String>,
    urls: Option<TokenBucket>,
    purge_paths: Option<TokenBucket>,
}

impl Grant {
    fn from_config(c: &ClientConfig, max_batch: usize) -> Result<Grant, String> {
        let prefixes = c
            .url_prefixes
            .iter()
            .map(|p| {
                if p.contains(['*', '?']) {
                    return Err(format!(
                        "clients.{}: url_prefixes entry {p:?} must not contain wildcards",
                        c.name
                    ));
                }
                normalize_for_grant(p)
                    .map_err(|e| format!("clients.{}: url_prefixes entry {p:?}: {e}", c.name))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let urls = c.urls_per_second.map(|rate| {
            let burst = c
                .urls_burst
                .map_or_else(|| f64::from(rate).max(max_batch as f64), f64::from);
            TokenBucket::new(f64::from(rate), burst)
        });
        let purge_paths = c
            .purge_paths_per_minute
            .map(|per_min| TokenBucket::new(f64::from(per_min) / 60.0, f64::from(per_min)));
        Ok(Grant {
            name: c.name.clone(),
            keys: c.keys.iter().cloned().collect(),
            prefixes,
            max_ttl_seconds: c.max_ttl_seconds,
            purge_targets: c.purge_targets.iter().cloned().collect(),
            urls,
            purge_paths,
        })
    }

    /// May this client sign with `key_id`?
    pub fn allows_key(&self, key_id: &str) -> bool {
        self.keys.contains(key_id)
    }

    /// Is `resource` (a URL, or with `pattern` a policy Resource with wildcards, already
    /// cleaned) under one of the prefixes? A pattern must pass both readings of `?`
    /// (query separator and wildcard).
    pub fn allows_resource(&self, resource: &str, pattern: bool) -> Result<(), String> {
        self.inside(normalize_for_grant(resource))?;
        if pattern {
            self.inside(normalize_pattern_for_grant(resource))?;
        }
        Ok(())
    }

    fn inside(&self, normalized: Result<String, NormalizeError>) -> Result<(), String> {
        let normalized = normalized.map_err(|e| e.to_string())?;
        if self
            .prefixes
            .iter()
            .any(|p| normalized.starts_with(p.as_str()))
        {
            Ok(())
        } else {
            Err(format!(
                "{normalized:?} is outside client {:?}'s url_prefixes",
                self.name
            ))
        }
    }

    /// May this client purge `target`?
    pub fn allows_purge_target(&self, target: &str) -> bool {
        self.purge_targets.contains(target)
    }

    /// Takes `n` URLs from the signing rate limit.
    pub fn take_urls(&self, n: u64) -> Result<(), RateError> {
        self.urls.as_ref().map_or(Ok(()), |b| b.take(n))
    }

    /// Takes `n` paths from the purge rate limit.
    pub fn take_purge_paths(&self, n: u64) -> Result<(), RateError> {
        self.purge_paths.as_ref().map_or(Ok(()), |b| b.take(n))
    }
}

/// The authenticated caller of one request, in its extensions.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Authentication is off (`allow_unauthenticated = true`) and no identity was given:
    /// no grant restrictions apply.
    Anonymous,
    /// A configured client.
    Client(Arc<Grant>),
}

impl Caller {
    /// The grant, if any restrictions apply.
    pub fn grant(&self) -> Option<&Arc<Grant>> {
        match self {
            Caller::Anonymous => None,
            Caller::Client(g) => Some(g),
        }
    }

    /// Name for logs and audit events.
    pub fn name(&self) -> &str {
        match self {
            Caller::Anonymous => "anonymous",
            Caller::Client(g) => &g.name,
        }
    }
}

/// Why a call was refused before reaching a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token and no client certificate.
    #[error("no credentials: send `authorization: Bearer <token>` or a client certificate")]
    Missing,
    /// A token or certificate that matches no client.
    #[error("credentials match no configured client")]
    Unknown,
    /// The authorization header is not a bearer token.
    #[error("authorization metadata must be `Bearer <token>`")]
    Malformed,
}

impl AuthError {
    /// Bounded label.
    pub fn label(self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Unknown => "unknown",
            AuthError::Malformed => "malformed",
        }
    }
}

/// Resolves callers from tokens and certificates.
#[derive(Debug, Default)]
pub struct Authenticator {
    by_token: HashMap<[u8; 32], Arc<Grant>>,
    by_subject: HashMap<String, Arc<Grant>>,
    by_san: HashMap<String, Arc<Grant>>,
    allow_unauthenticated: bool,
}

impl Authenticator {
    /// Builds the lookup tables from `[[clients]]`.
    pub fn from_config(config: &Config) -> Result<Authenticator, String> {
        let mut a = Authenticator {
            allow_unauthenticated: config.server.allow_unauthenticated,
            ..Authenticator::default()
        };
        let mut names = HashSet::new();
        for c in &config.clients {
            if c.name.is_empty() || !names.insert(c.name.clone()) {
                return Err(format!("clients: name {:?} is empty or repeated", c.name));
            }
            if c.token_sha256.is_empty() && c.cert_subject.is_empty() && c.cert_san.is_empty() {
                return Err(format!(
                    "clients.{}: needs token_sha256, cert_subject or cert_san",
                    c.name
                ));
            }
            let grant = Arc::new(Grant::from_config(c, config.signing.max_batch)?);
            if !c.token_sha256.is_empty() {
                let hash = parse_sha256_hex(&c.token_sha256).ok_or_else(|| {
                    format!("clients.{}: token_sha256 must be 64 hex digits", c.name)
                })?;
                if a.by_token.insert(hash, Arc::clone(&grant)).is_some() {
                    return Err(format!("clients.{}: token_sha256 used twice", c.name));
                }
            }
            if !c.cert_subject.is_empty() {
                a.by_subject
                    .insert(c.cert_subject.clone(), Arc::clone(&grant));
            }
            if !c.cert_san.is_empty() {
                a.by_san
                    .insert(c.cert_san.to_ascii_lowercase(), Arc::clone(&grant));
            }
        }
        Ok(a)
    }

    /// Resolves the caller from request metadata and the TLS peer certificate.
    pub fn authenticate(
        &self,
        authorization: Option<&http::HeaderValue>,
        peer_cert: Option<&[u8]>,
    ) -> Result<Caller, AuthError> {
        if let Some(value) = authorization {
            let text = value.to_str().map_err(|_| AuthError::Malformed)?;
            let token = text
                .strip_prefix("Bearer ")
                .or_else(|| text.strip_prefix("bearer "))
                .ok_or(AuthError::Malformed)?
                .trim();
            let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            return self
                .by_token
                .get(&hash)
                .map(|g| Caller::Client(Arc::clone(g)))
                .ok_or(AuthError::Unknown);
        }
        if let Some(der) = peer_cert {
            return self.by_certificate(der).ok_or(AuthError::Unknown);
        }
        if self.allow_unauthenticated {
            Ok(Caller::Anonymous)
        } else {
            Err(AuthError::Missing)
        }
    }

    fn by_certificate(&self, der: &[u8]) -> Option<Caller> {
        use x509_parser::prelude::*;
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let subject = cert.subject().to_string();
        if let Some(g) = self.by_subject.get(&subject) {
            return Some(Caller::Client(Arc::clone(g)));
        }
        let san = cert.subject_alternative_name().ok().flatten()?;
        san.value.general_names.iter().find_map(|name| {
            let text = match name {
                GeneralName::DNSName(s) | GeneralName::URI(s) | GeneralName::RFC822Name(s) => {
                    s.to_ascii_lowercase()
                }
                _ => return None,
            };
            self.by_san
                .get(&text)
                .map(|g| Caller::Client(Arc::clone(g)))
        })
    }
}

fn parse_sha256_hex(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Builds a trailers-only gRPC error response.
fn reject<B: Default>(status: tonic::Status) -> Response<B> {
    status.into_http()
}

/// Resolves the [`Caller`] of every call (see the module docs).
#[derive(Debug, Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
}

impl AuthLayer {
    /// Layer over `auth`.
    pub fn new(auth: Arc<Authenticator>) -> AuthLayer {
        AuthLayer { auth }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            auth: Arc::clone(&self.auth),
        }
    }
}

/// The service [`AuthLayer`] produces.
#[derive(Debug, Clone)]
pub struct Auth<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Auth<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Response<ResBody>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let mut inner = take_ready(&mut self.inner);
        if is_public(req.uri().path()) {
            return Box::pin(inner.call(req));
        }
        let cert = req
            .extensions()
            .get::<tonic::transport::server::TlsConnectInfo<tonic::transport::server::TcpConnectInfo>>()
            .and_then(|info| info.peer_certs())
            .and_then(|certs| certs.first().map(|c| c.as_ref().to_vec()));
        match self.auth.authenticate(
            req.headers().get(http::header::AUTHORIZATION),
            cert.as_deref(),
        ) {
            Ok(caller) => {
                tracing::Span::current().record("client", caller.name());
                req.extensions_mut().insert(caller);
                Box::pin(inner.call(req))
            }
            Err(e) => {
                metrics::counter!(crate::metrics::AUTH_FAILURES, "reason" => e.label())
                    .increment(1);
                tracing::warn!(
                    target: AUDIT_TARGET,
                    event = "unauthenticated",
                    method = req.uri().path(),
                    reason = e.label(),
                    "call refused: no valid identity"
                );
                Box::pin(async move { Ok(reject(tonic::Status::unauthenticated(e.to_string()))) })
            }
        }
    }
}

/// Refuses calls beyond a concurrency limit at once (no queueing, no buffering).
#[derive(Debug, Clone)]
pub struct ShedLayer {
    permits: Arc<Semaphore>,
    limit: usize,
}

impl ShedLayer {
    /// At most `limit` signing/purge calls in flight.
    pub fn new(limit: usize) -> ShedLayer {
        ShedLayer {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Shed<S> {
        Shed {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`ShedLayer`] produces.
#[derive(Debug, Clone)]
pub struct Shed<S> {
    inner: S,
    layer: ShedLayer,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Shed<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Response<ResBody>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let mut inner = take_ready(&mut self.inner);
        if is_public(req.uri().path()) {
            return Box::pin(inner.call(req));
        }
        match Arc::clone(&self.layer.permits).try_acquire_owned() {
            Ok(permit) => Box::pin(async move {
                let out = inner.call(req).await;
                drop(permit);
                out
            }),
            Err(_) => {
                metrics::counter!(crate::metrics::REQUESTS_SHED).increment(1);
                let limit = self.layer.limit;
                Box::pin(async move {
                    Ok(reject(tonic::Status::resource_exhausted(format!(
                        "server is at its limit of {limit} concurrent calls (server.max_concurrent_requests); retry with backoff"
                    ))))
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_closes_the_escapes() {
        let n = |s| normalize_for_grant(s);
        assert_eq!(
            n("HTTPS://D.Example:443/hls/a").as_deref(),
            Ok("https://d.example/hls/a")
        );
        assert_eq!(
            n("https://d/hls/../admin/x").as_deref(),
            Ok("https://d/admin/x")
        );
        assert_eq!(
            n("https://d/hls/%2e%2e/admin").as_deref(),
            Ok("https://d/admin")
        );
        assert_eq!(
            n("https://d/hls/%2E%2E/admin").as_deref(),
            Ok("https://d/admin")
        );
        assert_eq!(
            n("https://d/hls/./a/./b").as_deref(),
            Ok("https://d/hls/a/b")
        );
        assert_eq!(n("https://d/hls/*/../../x").as_deref(), Ok("https://d/x"));
        assert_eq!(n("https://d/../../x").as_deref(), Ok("https://d/x"));
        assert_eq!(
            n("https://d/hls%2F..%2Fadmin"),
            Err(NormalizeError::EncodedSeparator)
        );
        assert_eq!(
            n("https://d/hls/a%5c..%5cb"),
            Err(NormalizeError::EncodedSeparator)
        );
        assert_eq!(n("https://d/a?x=%2F").as_deref(), Ok("https://d/a?x=%2F"));
        assert_eq!(
            normalize_pattern_for_grant("https://d/hls/?/../../x").as_deref(),
            Ok("https://d/x")
        );
        assert_eq!(n("https://d/%41b?x=%7e").as_deref(), Ok("https://d/Ab?x=~"));
        assert_eq!(n("https://u@d/hls/"), Err(NormalizeError::UserInfo));
        assert_eq!(n("http*://d/hls/"), Err(NormalizeError::Scheme));
        assert_eq!(n("ftp://d/hls/"), Err(NormalizeError::Scheme));
        assert_eq!(n("https://d/%zz"), Err(NormalizeError::BadEscape));
        assert_eq!(n("https://:443/x"), Err(NormalizeError::NoHost));
    }

    fn grant() -> Grant {
        Grant::from_config(
            &ClientConfig {
                name: "gen".into(),
                token_sha256: "00".repeat(32),
                keys: vec!["K1".into()],
                url_prefixes: vec!["https://d111111abcdef8.cloudfront.net/hls/".into()],
                ..ClientConfig::default()
            },
            100,
        )
        .expect("grant")
    }

    #[test]
    fn prefixes_admit_only_what_they_cover() {
        let g = grant();
        for ok in [
            "https://d111111abcdef8.cloudfront.net/hls/a/seg1.ts",
            "https://d111111abcdef8.cloudfront.net/hls/abc/*",
            "HTTPS://D111111ABCDEF8.cloudfront.net:443/hls/x",
            "https://d111111abcdef8.cloudfront.net/hls/a/../b/*",
        ] {
            assert!(g.allows_resource(ok, true).is_ok(), "{ok}");
        }
        for bad in [
            "https://d111111abcdef8.cloudfront.net/hls/../admin/*",
            "https://d111111abcdef8.cloudfront.net/hls/%2e%2e/admin/x",
            "https://d111111abcdef8.cloudfront.net/hls/*/../../*",
            "https://d111111abcdef8.cloudfront.net/hl*",
            "https://d111111abcdef8.cloudfront.net/*",
            "https://d111111abcdef8.cloudfront.net@evil.example/hls/x",
            "https://evil.example/hls/x",
            "http://d111111abcdef8.cloudfront.net/hls/x",
            "http*://d111111abcdef8.cloudfront.net/hls/x",
            "https://d111111abcdef8.cloudfront.net:8443/hls/x",
            "https://*.cloudfront.net/hls/x",
            "https://d111111abcdef8.cloudfront.net.evil.example/hls/x",
            "*",
            "https://d111111abcdef8.cloudfront.net/hls/?/../../x",
            "https://d111111abcdef8.cloudfront.net/other?/../hls/a",
            "https://d111111abcdef8.cloudfront.net/hls/a%2F..%2F..%2Fx",
        ] {
            assert!(g.allows_resource(bad, true).is_err(), "{bad}");
        }
    }

    #[test]
    fn wildcard_prefixes_are_refused_in_config() {
        let err = Grant::from_config(
            &ClientConfig {
                name: "x".into(),
                url_prefixes: vec!["https://d/*".into()],
                ..ClientConfig::default()
            },
            1,
        )
        .expect_err("wildcard prefix");
        assert!(err.contains("wildcards"), "{err}");
    }

    #[test]
    fn token_bucket_refuses_without_taking() {
        let b = TokenBucket::new(10.0, 20.0);
        assert!(b.take(15).is_ok());
        assert!(matches!(b.take(10), Err(RateError::Exceeded { .. })));
        assert!(b.take(5).is_ok());
        assert!(matches!(b.take(21), Err(RateError::TooLarge { .. })));
    }

    #[test]
    fn tokens_are_matched_by_hash() {
        let token = "s3cret-token";
        let hex: String = Sha256::digest(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let config = Config::from_toml_str(
            &format!("[[clients]]\nname = \"gen\"\ntoken_sha256 = \"{hex}\"\nkeys = [\"K\"]\n"),
            std::path::Path::new("."),
        )
        .expect("config");
        let a = Authenticator::from_config(&config).expect("auth");
        let header = |v: &str| http::HeaderValue::from_str(v).expect("header");
        assert!(matches!(
            a.authenticate(Some(&header("Bearer s3cret-token")), None),
            Ok(Caller::Client(g)) if g.name == "gen"
        ));
        assert_eq!(
            a.authenticate(Some(&header("Bearer wrong")), None)
                .map(|_| ()),
            Err(AuthError::Unknown)
        );
        assert_eq!(
            a.authenticate(Some(&header("Basic abc")), None).map(|_| ()),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            a.authenticate(None, None).map(|_| ()),
            Err(AuthError::Missing)
        );
        let dbg = format!("{a:?}");
        assert!(!dbg.contains(token));
    }
}
