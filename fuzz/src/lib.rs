//! Shared harness code for cdnsign's fuzz targets: the TEST ONLY key set, a server-like
//! batch context, and the invariants every prepared item must satisfy.
//!
//! Everything here is deterministic (a fixed "now", no clock, no environment), so a
//! crash reproduces from its input file alone.
//!
//! The invariants are in three files: free text (`text`), URL shapes and grant prefixes by an
//! independent model (`url_model`), and whole prepared items (`prepared`).

mod prepared;
mod text;
mod url_model;

pub use prepared::{check_prepared, prepare_and_check};
pub use text::{assert_safe_text, check_clean_text, encoded_len, forbidden, percent_decode};
pub use url_model::{check_grant_text, check_url_shape};

use std::sync::{Arc, OnceLock};

use cdnsign::access::Grant;
use cdnsign::auth::Authenticator;
use cdnsign::config::ClientConfig;
use cdnsign::signing::keys::{Backend, HashAlg, KeySet, SigningKey};
use cdnsign::signing::validate::BatchContext;

/// Key id of the TEST ONLY key with SHA-1 (the fixtures' key pair id).
pub const KEY_SHA1: &str = "K2JCJMDEHXQW5F";
/// The same TEST ONLY key under a second id, with SHA-256.
pub const KEY_SHA256: &str = "K2TESTONLYSHA256";
/// The fixed "now" of every fuzz batch: 2025-12-31T23:00:00Z, one hour before the
/// fixtures' earliest expiry, so their seeds are inside the default TTL window.
pub const NOW: i64 = 1_767_222_000;
/// `[signing] max_ttl_seconds` default (7 days).
pub const DEFAULT_MAX_TTL: i64 = 7 * 24 * 3600;

/// The bearer token of the fuzz client (its SHA-256 is in [`CLIENTS_TOML`]).
pub const FUZZ_TOKEN: &str = "fuzz-token-TEST-ONLY";
/// The fuzz client's URL prefixes, as configured (the second in upper case with its
/// default port, as an operator might write it).
pub const GRANT_PREFIXES: [&str; 2] = [
    "https://d111111abcdef8.cloudfront.net/hls/",
    "HTTP://CDN.example.com:80/a/b/",
];
/// The same prefixes as the model below reads them: lowercase scheme and host, no default
/// port.
pub(crate) const CANONICAL_PREFIXES: [&str; 2] = [
    "https://d111111abcdef8.cloudfront.net/hls/",
    "http://cdn.example.com/a/b/",
];

/// The authenticator for one client: the SHA-1 TEST ONLY key only, two URL prefixes, 1 h
/// TTL; built once per process.
pub fn authenticator() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| {
        let client = ClientConfig {
            name: "fuzz-client".into(),
            token_sha256: "831fb49182d281677fc8a4240c9d2f1f87008825fcce2d83ac98e7316a6d9d2d".into(),
            cert_subject: "CN=fuzz-client".into(),
            cert_san: "fuzz-client.example".into(),
            keys: vec![KEY_SHA1.into()],
            url_prefixes: GRANT_PREFIXES.iter().map(|p| (*p).to_owned()).collect(),
            max_ttl_seconds: Some(3600),
            purge_targets: vec!["site".into()],
            ..ClientConfig::default()
        };
        Authenticator::build(&[client], false, 100, None).expect("fuzz client is valid")
    })
}

/// The fuzz client's grant, resolved once the way a call resolves it (by its bearer
/// token).
pub fn grant() -> Arc<Grant> {
    static GRANT: OnceLock<Arc<Grant>> = OnceLock::new();
    Arc::clone(GRANT.get_or_init(|| {
        let header = http::HeaderValue::from_str(&format!("Bearer {FUZZ_TOKEN}")).expect("ASCII");
        authenticator()
            .authenticate(Some(&header), None)
            .expect("the fuzz token authenticates")
            .grant()
            .cloned()
            .expect("a configured client has a grant")
    }))
}

/// The TEST ONLY key from the repository (never trusted by any CloudFront distribution).
const TEST_ONLY_PEM: &str = include_str!("../../config/dev-keys/TEST-ONLY-cloudfront.pem");

/// The key set every target signs with: parsed once per process.
pub fn keys() -> &'static KeySet {
    static KEYS: OnceLock<KeySet> = OnceLock::new();
    KEYS.get_or_init(|| {
        let load = |id: &str, hash| {
            SigningKey::from_pem(id, TEST_ONLY_PEM, hash, Backend::default())
                .expect("the TEST ONLY key parses")
        };
        KeySet::from_keys([
            load(KEY_SHA1, HashAlg::Sha1),
            load(KEY_SHA256, HashAlg::Sha256),
        ])
    })
}

/// A batch context built the way `grpc::sign` builds one: the default key is the
/// request's key id, else the configured default.
pub fn batch_context(
    request_key_id: &str,
    configured_default: &str,
    expires_at: i64,
    ttl_seconds: i64,
    custom_policy: bool,
    max_ttl_seconds: i64,
    grant: Option<Arc<Grant>>,
) -> BatchContext {
    // As grpc::sign does: a client's TTL cap lowers the server's.
    let max_ttl_seconds = grant
        .as_ref()
        .and_then(|g| g.max_ttl_seconds)
        .map_or(max_ttl_seconds, |t| t.min(max_ttl_seconds));
    let default_key_id = if request_key_id.is_empty() {
        configured_default
    } else {
        request_key_id
    };
    BatchContext {
        default_key: keys().get(default_key_id),
        default_key_id: default_key_id.to_owned(),
        expires_at,
        ttl_seconds,
        custom_policy,
        max_ttl_seconds,
        now: NOW,
        grant,
    }
}
