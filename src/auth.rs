//! Who is calling: a bearer token (`authorization: Bearer <token>`, matched by its SHA-256,
//! never stored in plain text) or an mTLS client certificate (subject or SAN), resolved to
//! the client's [`Grant`]. No identity is `UNAUTHENTICATED` unless the config says
//! `allow_unauthenticated = true`. What a client may then do is [`crate::access`]'s; the
//! tower layer that calls [`Authenticator::authenticate`] is `grpc::layers::auth`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use crate::access::{Grant, GrantParts, Prefix, TokenBucket};
use crate::config::ClientConfig;

/// The tracing target audit events go to (rendered as JSON lines, see `telemetry`).
pub const AUDIT_TARGET: &str = "cdnsign::audit";

/// Paths that never need an identity: probes and API discovery.
pub fn is_public(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
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

/// What a call presented: its `authorization` header and its mTLS client certificate. The
/// auth layer keeps them in the request's extensions beside the [`Caller`], so that a call
/// that outlives a reload (a `SignUrlsStream`) is authenticated again, against the
/// configuration in force, for each message it sends.
#[derive(Clone)]
pub struct Credentials {
    authorization: Option<http::HeaderValue>,
    certificate: Option<Arc<[u8]>>,
}

impl Credentials {
    /// The credentials of one call.
    pub fn new(
        authorization: Option<&http::HeaderValue>,
        certificate: Option<Arc<[u8]>>,
    ) -> Credentials {
        Credentials {
            authorization: authorization.cloned(),
            certificate,
        }
    }

    /// The caller these credentials resolve to under `auth`.
    pub fn authenticate(&self, auth: &Authenticator) -> Result<Caller, AuthError> {
        auth.authenticate(self.authorization.as_ref(), self.certificate.as_deref())
    }
}

/// Never shows the token: only which kinds of credential were presented.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("certificate", &self.certificate.is_some())
            .finish()
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
    by_name: HashMap<String, Arc<Grant>>,
    allow_unauthenticated: bool,
}

impl Authenticator {
    /// Builds the lookup tables from `[[clients]]`, or says every problem found.
    ///
    /// `previous` is the authenticator a reload replaces: a client whose rate limits did
    /// not change keeps its buckets, and so their state.
    pub fn build(
        clients: &[ClientConfig],
        allow_unauthenticated: bool,
        max_batch: usize,
        previous: Option<&Authenticator>,
    ) -> Result<Authenticator, Vec<String>> {
        let mut a = Authenticator {
            allow_unauthenticated,
            ..Authenticator::default()
        };
        let mut problems = Vec::new();
        let mut names = HashSet::new();
        for (i, c) in clients.iter().enumerate() {
            let at = if c.name.is_empty() {
                format!("clients[{i}]")
            } else {
                format!("clients[{i}] ({:?})", c.name)
            };
            if c.name.is_empty() {
                problems.push(format!("{at}: name is empty"));
            } else if !names.insert(c.name.clone()) {
                problems.push(format!("{at}: name is used by another client"));
            }
            if c.token_sha256.is_empty() && c.cert_subject.is_empty() && c.cert_san.is_empty() {
                problems.push(format!(
                    "{at}: needs token_sha256, cert_subject or cert_san"
                ));
            }
            let mut prefixes = Vec::new();
            for p in &c.url_prefixes {
                match Prefix::parse(p) {
                    Ok(prefix) => prefixes.push(prefix),
                    Err(e) => problems.push(format!("{at}: url_prefixes entry {p:?} {e}")),
                }
            }
            // A rate of 0 would never refill (and a wait of "forever" is no retry hint).
            for (key, value, hint) in [
                (
                    "urls_per_second",
                    c.urls_per_second,
                    "omit it for no URL limit",
                ),
                ("urls_burst", c.urls_burst, "omit it for one second's worth"),
                (
                    "purge_paths_per_minute",
                    c.purge_paths_per_minute,
                    "leave purge_targets empty for a client that may not purge",
                ),
            ] {
                if value == Some(0) {
                    problems.push(format!("{at}: {key} must be at least 1 ({hint})"));
                }
            }
            let old = previous.and_then(|prev| prev.by_name.get(&c.name));
            let urls = c.urls_per_second.map(|rate| {
                let rate = f64::from(rate);
                let burst = c
                    .urls_burst
                    .map_or_else(|| rate.max(max_batch as f64), f64::from);
                keep_or_new(old.and_then(|g| g.url_bucket()), rate, burst)
            });
            let grant = Arc::new(Grant::new(GrantParts {
                name: c.name.clone(),
                keys: c.keys.clone(),
                prefixes,
                max_ttl_seconds: c.max_ttl_seconds,
                purge_targets: c.purge_targets.clone(),
                urls,
                purge_paths_per_minute: c.purge_paths_per_minute,
            }));
            if !c.token_sha256.is_empty() {
                match parse_sha256_hex(&c.token_sha256) {
                    None => problems.push(format!("{at}: token_sha256 must be 64 hex digits")),
                    Some(hash) => {
                        if a.by_token.insert(hash, Arc::clone(&grant)).is_some() {
                            problems.push(format!(
                                "{at}: token_sha256 is the same as another client's"
                            ));
                        }
                    }
                }
            }
            if !c.cert_subject.is_empty()
                && a.by_subject
                    .insert(c.cert_subject.clone(), Arc::clone(&grant))
                    .is_some()
            {
                problems.push(format!(
                    "{at}: cert_subject is the same as another client's"
                ));
            }
            if !c.cert_san.is_empty()
                && a.by_san
                    .insert(san_key(&c.cert_san), Arc::clone(&grant))
                    .is_some()
            {
                problems.push(format!("{at}: cert_san is the same as another client's"));
            }
            a.by_name.insert(c.name.clone(), grant);
        }
        if problems.is_empty() {
            Ok(a)
        } else {
            Err(problems)
        }
    }

    /// Number of configured clients.
    pub fn clients(&self) -> usize {
        self.by_name.len()
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
        if let Some(g) = subject_text(cert.subject()).and_then(|s| self.by_subject.get(&s)) {
            return Some(Caller::Client(Arc::clone(g)));
        }
        let san = cert.subject_alternative_name().ok().flatten()?;
        san.value.general_names.iter().find_map(|name| {
            let (kind, value) = match name {
                GeneralName::DNSName(s) => ("dns", s),
                GeneralName::URI(s) => ("uri", s),
                GeneralName::RFC822Name(s) => ("email", s),
                _ => return None,
            };
            let value = value.to_ascii_lowercase();
            // A cert_san that names its type matches only that type; one that does not,
            // any of the three.
            self.by_san
                .get(&format!("{kind}:{value}"))
                .or_else(|| self.by_san.get(&format!("*:{value}")))
                .map(|g| Caller::Client(Arc::clone(g)))
        })
    }
}

/// `cert_san` as the lookup key: `dns:`, `uri:` or `email:` (any case) before the value
/// names the SAN type it must be (`dns:gen.internal`); without one, any of the three.
fn san_key(configured: &str) -> String {
    let lower = configured.trim().to_ascii_lowercase();
    for kind in ["dns", "uri", "email"] {
        if let Some(value) = lower
            .strip_prefix(kind)
            .and_then(|rest| rest.strip_prefix(':'))
            // `uri:` followed by `//` is a URI whose scheme is "uri", not a type.
            .filter(|rest| !rest.starts_with("//"))
        {
            return format!("{kind}:{value}");
        }
    }
    format!("*:{lower}")
}

/// A certificate's subject as `cert_subject` is written: `CN=gen, O=Acme`, in the
/// certificate's order (the attributes of one RDN joined by ` + `), each value escaped as
/// RFC 4514 says (`\,` `\+` `\"` `\\` `\<` `\>` `\;`, a leading `#` or space and a
/// trailing space, control characters as `\XX`), so that one value holding `, O=Acme`
/// cannot read as a second attribute. `None` when a value is not a string.
fn subject_text(name: &x509_parser::x509::X509Name<'_>) -> Option<String> {
    use x509_parser::objects::{oid_registry, oid2abbrev};
    let mut out = String::new();
    for (i, rdn) in name.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push_str(" + ");
            }
            match oid2abbrev(attr.attr_type(), oid_registry()) {
                Ok(abbrev) => out.push_str(abbrev),
                Err(_) => out.push_str(&attr.attr_type().to_id_string()),
            }
            out.push('=');
            escape_rfc4514(attr.as_str().ok()?, &mut out);
        }
    }
    Some(out)
}

fn escape_rfc4514(value: &str, out: &mut String) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{b:02X}"));
                }
            }
            c => out.push(c),
        }
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

/// The previous bucket when its limits are the same (its state carries over), else a new one.
fn keep_or_new(old: Option<&Arc<TokenBucket>>, rate: f64, burst: f64) -> Arc<TokenBucket> {
    match old {
        Some(b) if b.has_limits(rate, burst) => Arc::clone(b),
        _ => Arc::new(TokenBucket::new(rate, burst)),
    }
}

#[cfg(test)]
mod tests;
