//! Shared harness code for cdnsign's fuzz targets: the TEST ONLY key set, a server-like
//! batch context, and the invariants every prepared item must satisfy.
//!
//! Everything here is deterministic (a fixed "now", no clock, no environment), so a
//! crash reproduces from its input file alone.

use std::sync::{Arc, OnceLock};

use cdnsign::access::resource::find_dot_segment;
use cdnsign::access::{Grant, TextKind};
use cdnsign::auth::Authenticator;
use cdnsign::config::ClientConfig;
use cdnsign::signing::keys::{Backend, HashAlg, KeySet, SigningKey};
use cdnsign::signing::policy::{IpRange, canned_json};
use cdnsign::signing::validate::{self, BatchContext, ItemSpec, MAX_URL_BYTES, Prepared};
use cdnsign::signing::{Field, SignError};
use serde::Deserialize;

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
const CANONICAL_PREFIXES: [&str; 2] = [
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

/// A character `validate::clean_text` must never let through.
pub fn forbidden(c: char) -> bool {
    matches!(c, '"' | '\\' | '#') || c.is_control()
}

/// Length of `input` once `clean_text` has percent-encoded spaces and non-ASCII.
pub fn encoded_len(input: &str) -> usize {
    input
        .chars()
        .map(|c| match c {
            ' ' => 3,
            c if c.is_ascii() => 1,
            c => 3 * c.len_utf8(),
        })
        .sum()
}

/// Checks `clean_text` against a model of its rules; returns the cleaned text if any.
///
/// Invariants: never panics; accepts exactly the non-empty inputs with no forbidden
/// character whose encoded length is within the limit; its output holds only printable
/// ASCII other than `"`, `\`, `#` and space; it is idempotent; and without a `%` in the
/// input, percent-decoding the output gives the input back.
pub fn check_clean_text(field: Field, input: &str) -> Option<String> {
    let result = validate::clean_text(field, input);
    let should_accept =
        !input.is_empty() && !input.chars().any(forbidden) && encoded_len(input) <= MAX_URL_BYTES;
    match result {
        Err(e) => {
            assert!(!should_accept, "clean_text refused {input:?}: {e}");
            assert_eq!(e.field(), Some(field), "error names the wrong field: {e}");
            None
        }
        Ok(out) => {
            assert!(should_accept, "clean_text accepted {input:?} as {out:?}");
            let out = out.into_owned();
            assert_eq!(out.len(), encoded_len(input));
            assert_safe_text(&out);
            let again = validate::clean_text(field, &out).expect("cleaned text cleans again");
            assert!(
                matches!(again, std::borrow::Cow::Borrowed(_)) && again == out.as_str(),
                "clean_text is not idempotent: {out:?} -> {again:?}"
            );
            if !input.contains('%') {
                assert_eq!(percent_decode(&out), input, "encoding is not reversible");
            }
            Some(out)
        }
    }
}

/// Text that may go into a policy's JSON string and a URL verbatim.
pub fn assert_safe_text(text: &str) {
    for c in text.chars() {
        assert!(
            c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '#'),
            "unsafe character {c:?} in cleaned text {text:?}"
        );
    }
    assert!(text.len() <= MAX_URL_BYTES);
}

/// Percent-decodes `%XX` sequences (invalid ones are kept as they are).
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
        {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ASCII");
            out.push(u8::from_str_radix(hex, 16).expect("two hex digits"));
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).expect("percent-decoded output is UTF-8")
}

/// Checks `check_url_shape` on already cleaned text: never panics, and it accepts exactly
/// `http(s)://host[:port][/...|?...]` with no user info, where host is a non-empty name
/// with no `:`, `[`, `]`, or a bracketed IPv6 literal, and port is 1-5 digits.
pub fn check_url_shape(url: &str) -> bool {
    let ok = validate::check_url_shape(Field::Url, url).is_ok();
    assert_eq!(ok, model_url_shape(url), "check_url_shape({url:?}) = {ok}");
    ok
}

fn model_url_shape(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return false;
    }
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    if authority.contains('@') {
        return false;
    }
    let (host_ok, port) = match authority.strip_prefix('[') {
        Some(inner) => match inner.split_once(']') {
            None => return false,
            Some((literal, after)) => (
                literal.parse::<std::net::Ipv6Addr>().is_ok(),
                match after {
                    "" => None,
                    a => match a.strip_prefix(':') {
                        Some(p) => Some(p),
                        None => return false,
                    },
                },
            ),
        },
        None => {
            let (host, port) = match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            };
            (!host.is_empty() && !host.contains([':', '[', ']']), port)
        }
    };
    host_ok
        && port.is_none_or(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The model of "inside a prefix", written independently of `access::resource`: lowercase
/// the scheme and host and drop a default port, then test the text literally. A pattern
/// is read up to its first `*` or `?` (CloudFront's wildcards match anything after it), and
/// that text must hold the whole host, ended by `/`.
fn model_inside(text: &str, pattern: bool) -> bool {
    let literal = if pattern {
        text.split(['*', '?']).next().unwrap_or_default()
    } else {
        text
    };
    let wildcard = literal.len() < text.len();
    let Some((scheme, rest)) = literal.split_once("://") else {
        return false;
    };
    let host_end = rest.find(['/', '?']).unwrap_or(rest.len());
    if rest.as_bytes().get(host_end) != Some(&b'/')
        || (wildcard && !rest[host_end..].starts_with('/'))
    {
        return false;
    }
    let scheme = scheme.to_ascii_lowercase();
    let mut host = rest[..host_end].to_ascii_lowercase();
    for (s, port) in [("https", ":443"), ("http", ":80")] {
        if scheme == s && host.ends_with(port) {
            host.truncate(host.len() - port.len());
        }
    }
    let canonical = format!("{scheme}://{host}{}", &rest[host_end..]);
    CANONICAL_PREFIXES.iter().any(|p| canonical.starts_with(p))
}

/// A literal `.` or `..` segment (also `%2e`-encoded) in the path of a URL (up to `?`) or
/// of a pattern (all of it), written independently of `access::resource`.
fn model_has_dot_segment(text: &str, pattern: bool) -> bool {
    let rest = text.split_once("://").map_or(text, |(_, r)| r);
    let path = if pattern {
        rest.find(['/', '?', '*']).map_or("", |i| &rest[i..])
    } else {
        let path = rest.find(['/', '?']).map_or("", |i| &rest[i..]);
        path.split('?').next().unwrap_or_default()
    };
    path.to_ascii_lowercase()
        .replace("%2e", ".")
        .split('/')
        .any(|seg| seg == "." || seg == "..")
}

/// Checks the fuzz client's grant on cleaned text, read as a URL and as a pattern:
/// never panics, and whatever it approves is inside a prefix by the model and has no dot
/// segment. Dot-segment detection must find every literal one the model finds.
pub fn check_grant_text(text: &str) {
    let g = grant();
    for (kind, pattern) in [(TextKind::Url, false), (TextKind::Pattern, true)] {
        if model_has_dot_segment(text, pattern) {
            assert!(
                find_dot_segment(text, kind).is_some(),
                "dot segment in {text:?} ({kind:?}) not found"
            );
        }
        if g.covers(text, kind).is_ok() {
            assert!(
                model_inside(text, pattern),
                "{text:?} ({kind:?}) approved outside the prefixes"
            );
            assert!(
                !model_has_dot_segment(text, pattern),
                "{text:?} ({kind:?}) approved with a dot segment"
            );
        }
    }
}

/// What a granted item may have signed: its key is granted, and the URL and the policy's
/// Resource, exactly as signed, are inside a prefix by the model, without dot segments.
/// `explicit`: the caller gave the resource (else it is the URL, checked as one).
fn check_granted(p: &Prepared, resource: &str, explicit: bool) {
    assert_eq!(p.key.id(), KEY_SHA1, "signed with a key outside the grant");
    assert!(
        model_inside(&p.url, false),
        "URL {:?} signed outside the grant",
        p.url
    );
    assert!(
        !model_has_dot_segment(&p.url, false),
        "URL {:?} signed with a dot segment",
        p.url
    );
    // Every string the Resource matches starts with its text before the first wildcard.
    assert!(
        model_inside(resource, true),
        "Resource {resource:?} signed outside the grant"
    );
    if explicit {
        assert!(
            !model_has_dot_segment(resource, true),
            "Resource {resource:?} signed with a dot segment"
        );
    }
}

// The policy shape, parsed strictly: unknown or duplicate keys fail the parse, so a
// resource that smuggled in a second `Resource` or `Condition` could not go unnoticed.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Policy {
    #[serde(rename = "Statement")]
    statement: Vec<Statement>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Statement {
    #[serde(rename = "Resource")]
    resource: String,
    #[serde(rename = "Condition")]
    condition: Condition,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Condition {
    #[serde(rename = "DateLessThan")]
    date_less_than: EpochTime,
    #[serde(rename = "IpAddress")]
    ip_address: Option<SourceIp>,
    #[serde(rename = "DateGreaterThan")]
    date_greater_than: Option<EpochTime>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EpochTime {
    #[serde(rename = "AWS:EpochTime")]
    epoch: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceIp {
    #[serde(rename = "AWS:SourceIp")]
    source_ip: String,
}

/// The expiry `prepare` must choose, by the documented precedence: the item's
/// `expires_at` or `ttl_seconds`, else the batch's (`None`: no valid expiry to model).
fn model_expiry(spec: &ItemSpec<'_>, ctx: &BatchContext) -> Option<i64> {
    let pick = |e: i64, t: i64| match (e, t) {
        (0, 0) => None,
        (e, 0) => Some(Some(e)),
        (0, t) if t > 0 => Some(ctx.now.checked_add(t)),
        _ => Some(None),
    };
    let expires = match pick(spec.expires_at, spec.ttl_seconds) {
        Some(e) => e?,
        None => pick(ctx.expires_at, ctx.ttl_seconds)??,
    };
    (expires > ctx.now && expires - ctx.now <= ctx.max_ttl_seconds).then_some(expires)
}

/// Checks the result of `validate::prepare` for one item.
///
/// On success: the key is the one asked for; the URL is the cleaned URL; the policy is
/// strict JSON whose one statement has exactly the Resource (cleaned `policy_resource`,
/// else the URL), DateLessThan (the modelled expiry), DateGreaterThan and IpAddress (each
/// present iff asked, with the asked value) requested; a canned policy is byte-equal to
/// `canned_json(url, expires)`. On failure: the error is a validation error, never a
/// crypto one, and names a field.
pub fn check_prepared(
    spec: &ItemSpec<'_>,
    ctx: &BatchContext,
    result: &Result<Prepared, SignError>,
) {
    let p = match result {
        Err(SignError::Crypto(e)) => panic!("prepare did crypto: {e}"),
        Err(e) => {
            assert!(e.field().is_some(), "error with no field: {e}");
            return;
        }
        Ok(p) => p,
    };

    // Key.
    if spec.key_id.is_empty() {
        let default = ctx
            .default_key
            .as_ref()
            .expect("signed with no default key");
        assert!(Arc::ptr_eq(&p.key, default), "not the batch default key");
    } else {
        assert_eq!(p.key.id(), spec.key_id, "signed with another key");
    }

    // URL.
    let url = validate::clean_text(Field::Url, spec.url).expect("accepted URL cleans");
    assert_eq!(p.url, url, "prepared URL is not the cleaned URL");
    assert_safe_text(&p.url);
    if !spec.bare_resource {
        assert!(
            check_url_shape(&p.url),
            "accepted a URL of the wrong shape: {:?}",
            p.url
        );
    } else {
        assert!(
            !p.url.contains("://"),
            "bare resource with a scheme: {:?}",
            p.url
        );
    }
    assert!(
        !p.url
            .split_once('?')
            .is_some_and(|(_, q)| q.split('&').any(|kv| {
                let name = kv.split_once('=').map_or(kv, |(n, _)| n);
                [
                    "Expires",
                    "Policy",
                    "Signature",
                    "Key-Pair-Id",
                    "Hash-Algorithm",
                ]
                .contains(&name)
            })),
        "URL already carries a signing parameter: {:?}",
        p.url
    );

    // Expiry.
    assert_eq!(Some(p.expires), model_expiry(spec, ctx), "wrong expiry");

    // What was asked.
    let resource = match spec.policy_resource {
        "" => p.url.clone(),
        r => validate::clean_text(Field::PolicyResource, r)
            .expect("accepted resource cleans")
            .into_owned(),
    };
    assert_safe_text(&resource);
    let not_before = (spec.not_before != 0).then_some(spec.not_before);
    let ip = match spec.ip_range {
        "" => None,
        text => Some(text.parse::<IpRange>().expect("accepted ip_range parses")),
    };
    let custom = spec.custom_policy
        || ctx.custom_policy
        || !spec.policy_resource.is_empty()
        || not_before.is_some()
        || ip.is_some();
    assert_eq!(p.custom, custom, "custom flag");

    // The policy parses back to exactly that.
    let policy: Policy = serde_json::from_str(&p.policy)
        .unwrap_or_else(|e| panic!("policy is not the expected JSON ({e}): {}", p.policy));
    assert_eq!(policy.statement.len(), 1, "{}", p.policy);
    let st = &policy.statement[0];
    assert_eq!(st.resource, resource, "Resource in {}", p.policy);
    assert_eq!(st.condition.date_less_than.epoch, p.expires, "DateLessThan");
    assert_eq!(
        st.condition.date_greater_than.as_ref().map(|d| d.epoch),
        not_before,
        "DateGreaterThan in {}",
        p.policy
    );
    match (&st.condition.ip_address, ip) {
        (None, None) => {}
        (Some(got), Some(want)) => {
            assert_eq!(got.source_ip, want.to_string(), "SourceIp");
            assert_eq!(
                got.source_ip.parse::<IpRange>().ok(),
                Some(want),
                "SourceIp round trip"
            );
        }
        (got, want) => panic!(
            "IpAddress present={} but asked={}: {}",
            got.is_some(),
            want.is_some(),
            p.policy
        ),
    }
    if !custom {
        assert_eq!(
            p.policy,
            canned_json(&p.url, p.expires),
            "canned policy bytes"
        );
    }
    if let Some(nb) = not_before {
        assert!(
            0 < nb && nb < p.expires,
            "not_before {nb} vs expiry {}",
            p.expires
        );
    }
    if ctx.grant.is_some() {
        check_granted(p, &st.resource, !spec.policy_resource.is_empty());
    }
}

/// Prepares one item and checks it.
pub fn prepare_and_check(spec: &ItemSpec<'_>, ctx: &BatchContext) {
    let result = validate::prepare(spec, ctx, keys());
    check_prepared(spec, ctx, &result);
}
