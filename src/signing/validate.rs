//! Turns one caller's item into something safe to sign, or a per-item error naming the
//! field and the rule it broke.
//!
//! Encoding rule (documented in README): a space or a non-ASCII character in a URL or
//! resource is percent-encoded as its UTF-8 bytes (`%20`, `%C3%A9`), because that is how
//! the viewer's request reaches CloudFront and the policy must match it. A `"`, `\`, control
//! character or `#` is rejected: the first three would change the policy's JSON, and a
//! fragment is never sent to CloudFront, so a signed URL with one could not be used.

use std::borrow::Cow;
use std::sync::Arc;

use super::keys::{KeySet, SigningKey};
use super::policy::{IpRange, PolicySpec, canned_json};
use super::{Field, SignError};
use crate::access::resource::find_dot_segment;
use crate::access::{Grant, TextKind};

/// Longest URL or resource accepted, in bytes (after percent-encoding). CloudFront's own
/// limit on a request URL is 8,192 bytes; the signature adds several hundred more.
pub const MAX_URL_BYTES: usize = 8192;

/// Query parameters CloudFront reserves for signing; a URL must not already carry them.
const RESERVED_PARAMS: [&str; 5] = [
    "Expires",
    "Policy",
    "Signature",
    "Key-Pair-Id",
    "Hash-Algorithm",
];

/// One item as the caller gave it; empty / zero means "not set".
#[derive(Debug, Clone, Copy, Default)]
pub struct ItemSpec<'a> {
    /// URL to sign.
    pub url: &'a str,
    /// Custom-policy resource (wildcards allowed).
    pub policy_resource: &'a str,
    /// Absolute expiry, unix seconds.
    pub expires_at: i64,
    /// Relative expiry, seconds.
    pub ttl_seconds: i64,
    /// Start of validity, unix seconds.
    pub not_before: i64,
    /// IP or CIDR.
    pub ip_range: &'a str,
    /// Key id.
    pub key_id: &'a str,
    /// Force a custom policy.
    pub custom_policy: bool,
    /// `url` is a bare object name (legacy streaming form).
    pub bare_resource: bool,
}

/// Batch-wide defaults and server limits, resolved once per batch.
#[derive(Debug, Clone, Default)]
pub struct BatchContext {
    /// Key used when an item names none (request default, else config default).
    pub default_key: Option<Arc<SigningKey>>,
    /// The key id the default came from, for error messages when it is not loaded.
    pub default_key_id: String,
    /// Batch-wide absolute expiry.
    pub expires_at: i64,
    /// Batch-wide TTL.
    pub ttl_seconds: i64,
    /// Batch-wide "force custom policy".
    pub custom_policy: bool,
    /// `[signing] max_ttl_seconds` (or a lower per-caller limit).
    pub max_ttl_seconds: i64,
    /// Current time, unix seconds; one reading per batch so every item agrees.
    pub now: i64,
    /// The caller's grant; `None` when authentication is off.
    pub grant: Option<Arc<Grant>>,
}

/// An item ready for the signing pool: the policy is written, the key resolved.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The URL (normalised) the signature parameters are appended to.
    pub url: String,
    /// The exact policy bytes to sign.
    pub policy: String,
    /// Custom policy (`Policy=`) rather than canned (`Expires=`).
    pub custom: bool,
    /// `DateLessThan`.
    pub expires: i64,
    /// Key to sign with.
    pub key: Arc<SigningKey>,
}

fn invalid(field: Field, reason: impl Into<String>) -> SignError {
    SignError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Checks every character of a URL or resource, percent-encoding spaces and non-ASCII
/// characters and refusing what would corrupt a policy or a URL.
pub fn clean_text(field: Field, input: &str) -> Result<Cow<'_, str>, SignError> {
    if input.is_empty() {
        return Err(invalid(field, "is empty"));
    }
    let mut owned: Option<String> = None;
    for (i, c) in input.char_indices() {
        let needs_encoding = match c {
            '"' | '\\' => {
                return Err(invalid(
                    field,
                    format!(
                        "contains {c:?} at byte {i}; it cannot appear in a CloudFront policy (percent-encode it)"
                    ),
                ));
            }
            '#' => {
                return Err(invalid(
                    field,
                    format!(
                        "contains '#' at byte {i}; a fragment is never sent to CloudFront (percent-encode it as %23)"
                    ),
                ));
            }
            c if c.is_control() => {
                return Err(invalid(
                    field,
                    format!(
                        "contains control character U+{:04X} at byte {i}",
                        u32::from(c)
                    ),
                ));
            }
            ' ' => true,
            c => !c.is_ascii(),
        };
        match (&mut owned, needs_encoding) {
            (None, false) => {}
            (None, true) => {
                let mut s = String::with_capacity(input.len() + 16);
                s.push_str(&input[..i]);
                percent_encode_char(&mut s, c);
                owned = Some(s);
            }
            (Some(s), true) => percent_encode_char(s, c),
            (Some(s), false) => s.push(c),
        }
    }
    let out = owned.map_or(Cow::Borrowed(input), Cow::Owned);
    if out.len() > MAX_URL_BYTES {
        return Err(invalid(
            field,
            format!(
                "is {} bytes, over the {MAX_URL_BYTES}-byte limit",
                out.len()
            ),
        ));
    }
    Ok(out)
}

fn percent_encode_char(out: &mut String, c: char) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut buf = [0u8; 4];
    for &b in c.encode_utf8(&mut buf).as_bytes() {
        out.push('%');
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
}

/// Splits `scheme://authority/rest` and checks it is an http(s) URL CloudFront could serve.
/// The text must already have passed [`clean_text`].
pub fn check_url_shape(field: Field, url: &str) -> Result<(), SignError> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(invalid(
            field,
            "must be an absolute http:// or https:// URL (set bare_resource for a bare object name)",
        ));
    };
    if !scheme.eq_ignore_ascii_case("https") && !scheme.eq_ignore_ascii_case("http") {
        return Err(invalid(
            field,
            format!("scheme {scheme:?} is not http or https"),
        ));
    }
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    if authority.is_empty() {
        return Err(invalid(field, "has no host"));
    }
    if authority.contains('@') {
        return Err(invalid(
            field,
            "must not contain user info ('@') in the host part",
        ));
    }
    // `host[:port]`, where host is a name with no `:`, `[` or `]`, or a bracketed IPv6
    // literal. Splitting on the last `:` alone would accept `:x]:443` as host `:x]`.
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let Some((literal, after)) = inner.split_once(']') else {
            return Err(invalid(field, "IPv6 host has no closing ']'"));
        };
        if literal.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(invalid(
                field,
                format!("[{literal}] is not an IPv6 address"),
            ));
        }
        match after {
            "" => (authority, None),
            a => match a.strip_prefix(':') {
                Some(port) => (&authority[..authority.len() - a.len()], Some(port)),
                None => {
                    return Err(invalid(
                        field,
                        format!("unexpected {a:?} after the IPv6 host"),
                    ));
                }
            },
        }
    } else {
        match authority.split_once(':') {
            Some((_, rest)) if rest.contains(':') => {
                return Err(invalid(field, "IPv6 hosts must be in brackets"));
            }
            Some((h, port)) => (h, Some(port)),
            None => (authority, None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(invalid(field, format!("port {port:?} is not a number")));
    }
    if host.is_empty() {
        return Err(invalid(field, "has no host"));
    }
    if host.contains(['[', ']']) && !host.starts_with('[') {
        return Err(invalid(
            field,
            format!("host {host:?} has '[' or ']' outside an IPv6 literal"),
        ));
    }
    Ok(())
}

/// Refuses a URL whose query already carries one of CloudFront's signing parameters.
fn check_reserved_params(url: &str) -> Result<(), SignError> {
    let Some((_, query)) = url.split_once('?') else {
        return Ok(());
    };
    for pair in query.split('&') {
        let name = pair.split_once('=').map_or(pair, |(n, _)| n);
        if RESERVED_PARAMS.contains(&name) {
            return Err(invalid(
                Field::Url,
                format!("query already has {name:?}, a parameter CloudFront reserves for signing"),
            ));
        }
    }
    Ok(())
}

/// Resolves the item's expiry from the item, then the batch, and checks it against now and
/// the TTL limit.
fn resolve_expiry(spec: &ItemSpec<'_>, ctx: &BatchContext) -> Result<i64, SignError> {
    let (expires, field) = match (spec.expires_at, spec.ttl_seconds) {
        (e, t) if e != 0 && t != 0 => {
            return Err(invalid(
                Field::ExpiresAt,
                "set only one of expires_at and ttl_seconds",
            ));
        }
        (e, _) if e != 0 => (e, Field::ExpiresAt),
        (_, t) if t != 0 => (ttl_to_expiry(t, ctx)?, Field::TtlSeconds),
        _ => match (ctx.expires_at, ctx.ttl_seconds) {
            (e, t) if e != 0 && t != 0 => {
                return Err(invalid(
                    Field::ExpiresAt,
                    "request sets both expires_at and ttl_seconds; set only one",
                ));
            }
            (e, _) if e != 0 => (e, Field::ExpiresAt),
            (_, t) if t != 0 => (ttl_to_expiry(t, ctx)?, Field::TtlSeconds),
            _ => {
                return Err(invalid(
                    Field::ExpiresAt,
                    "no expiry: set expires_at or ttl_seconds on the item or the request",
                ));
            }
        },
    };
    if expires <= ctx.now {
        return Err(invalid(
            field,
            format!("expiry {expires} is not in the future (now {})", ctx.now),
        ));
    }
    if expires - ctx.now > ctx.max_ttl_seconds {
        return Err(invalid(
            field,
            format!(
                "expiry is {}s from now, over the max_ttl_seconds limit of {}",
                expires - ctx.now,
                ctx.max_ttl_seconds
            ),
        ));
    }
    Ok(expires)
}

fn ttl_to_expiry(ttl: i64, ctx: &BatchContext) -> Result<i64, SignError> {
    if ttl < 0 {
        return Err(invalid(Field::TtlSeconds, "must be positive"));
    }
    ctx.now
        .checked_add(ttl)
        .ok_or_else(|| invalid(Field::TtlSeconds, "overflows"))
}

/// Validates one item and writes its policy.
pub fn prepare(
    spec: &ItemSpec<'_>,
    ctx: &BatchContext,
    keys: &KeySet,
) -> Result<Prepared, SignError> {
    let key = if spec.key_id.is_empty() {
        ctx.default_key
            .clone()
            .ok_or_else(|| match ctx.default_key_id.as_str() {
                "" => SignError::NoKey,
                id => SignError::UnknownKey(id.to_owned()),
            })?
    } else {
        keys.get(spec.key_id)
            .ok_or_else(|| SignError::UnknownKey(spec.key_id.to_owned()))?
    };

    let url = clean_text(Field::Url, spec.url)?;
    if spec.bare_resource {
        if url.contains("://") {
            return Err(invalid(
                Field::Url,
                "bare_resource is set but the url has a scheme",
            ));
        }
    } else {
        check_url_shape(Field::Url, &url)?;
    }
    if let Some(dot) = find_dot_segment(&url, TextKind::Url) {
        return Err(invalid(Field::Url, dot.to_string()));
    }
    check_reserved_params(&url)?;

    let expires = resolve_expiry(spec, ctx)?;

    let not_before = match spec.not_before {
        0 => None,
        nb if nb < 0 => return Err(invalid(Field::NotBefore, "must be positive")),
        nb if nb >= expires => {
            return Err(invalid(
                Field::NotBefore,
                format!("not_before {nb} is not before the expiry {expires}"),
            ));
        }
        nb => Some(nb),
    };

    let ip = match spec.ip_range {
        "" => None,
        text => Some(
            text.parse::<IpRange>()
                .map_err(|e| invalid(Field::IpRange, format!("{text:?}: {e}")))?,
        ),
    };

    let resource = match spec.policy_resource {
        "" => None,
        r => {
            let r = clean_text(Field::PolicyResource, r)?;
            if !spec.bare_resource && !r.starts_with('*') {
                check_resource_scheme(&r)?;
            }
            if let Some(dot) = find_dot_segment(&r, TextKind::Pattern) {
                return Err(invalid(Field::PolicyResource, dot.to_string()));
            }
            Some(r)
        }
    };

    if let Some(grant) = &ctx.grant {
        check_grant(grant, &key, &url, resource.as_deref())?;
    }

    let custom = spec.custom_policy
        || ctx.custom_policy
        || resource.is_some()
        || not_before.is_some()
        || ip.is_some();

    let policy = if custom {
        PolicySpec {
            resource: resource.as_deref().unwrap_or(&url),
            expires,
            not_before,
            ip,
        }
        .custom_json()
    } else {
        canned_json(&url, expires)
    };

    Ok(Prepared {
        url: url.into_owned(),
        policy,
        custom,
        expires,
        key,
    })
}

/// The caller may use this key, and both the URL and the policy resource, exactly as they
/// will be signed, lie under one of its URL prefixes ([`Grant::covers`]).
fn check_grant(
    grant: &Grant,
    key: &SigningKey,
    url: &str,
    resource: Option<&str>,
) -> Result<(), SignError> {
    let denied = |field, reason: String| SignError::Denied { field, reason };
    if !grant.allows_key(key.id()) {
        return Err(denied(
            Field::KeyId,
            format!("client {:?} may not sign with key {}", grant.name, key.id()),
        ));
    }
    grant
        .covers(url, TextKind::Url)
        .map_err(|d| denied(Field::Url, d.to_string()))?;
    if let Some(r) = resource {
        grant
            .covers(r, TextKind::Pattern)
            .map_err(|d| denied(Field::PolicyResource, d.to_string()))?;
    }
    Ok(())
}

/// A policy resource may wildcard the scheme (`http*://`) but must otherwise be http(s).
fn check_resource_scheme(resource: &str) -> Result<(), SignError> {
    let scheme = resource.split_once("://").map(|(s, _)| s);
    match scheme {
        Some(s)
            if s.eq_ignore_ascii_case("https")
                || s.eq_ignore_ascii_case("http")
                || s.contains(['*', '?']) =>
        {
            Ok(())
        }
        _ => Err(invalid(
            Field::PolicyResource,
            "must be an http(s):// URL pattern, start with '*', or be used with bare_resource",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_space_and_non_ascii() {
        assert_eq!(
            clean_text(Field::Url, "https://d/a b/é.ts").expect("clean"),
            "https://d/a%20b/%C3%A9.ts"
        );
        assert!(matches!(
            clean_text(Field::Url, "https://d/a"),
            Ok(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn rejects_policy_breakers() {
        for bad in [
            "https://d/\"x",
            "https://d/\\x",
            "https://d/\u{1}",
            "https://d/#frag",
            "",
        ] {
            let err = clean_text(Field::Url, bad).expect_err(bad);
            assert!(err.to_string().starts_with("url:"), "{err}");
        }
        let long = format!("https://d/{}", "a".repeat(MAX_URL_BYTES));
        assert!(
            clean_text(Field::Url, &long)
                .expect_err("long")
                .to_string()
                .contains("8192-byte limit")
        );
    }

    #[test]
    fn url_shapes() {
        assert!(check_url_shape(Field::Url, "https://d111111abcdef8.cloudfront.net/a").is_ok());
        assert!(check_url_shape(Field::Url, "http://d:8080/a?b=1").is_ok());
        assert!(check_url_shape(Field::Url, "HTTPS://d").is_ok());
        assert!(check_url_shape(Field::Url, "https://[2001:db8::1]:443/a").is_ok());
        // A bracketed IPv6 host without a port used to be refused as unbracketed.
        assert!(check_url_shape(Field::Url, "https://[2001:db8::1]/a").is_ok());
        assert!(check_url_shape(Field::Url, "http://[::1]?x=1").is_ok());
        for bad in [
            "ftp://d/a",
            "https:///a",
            "d/a",
            "https://user@d/a",
            "https://d:x/a",
            "https://d:/a",
            "https://2001:db8::1/a",
            "not a url",
            // Found by the `policy` fuzz target: the last-':' split took ":d]" for a host.
            "http://:d]:4243/a",
            "HTTPS://:]:8443/a1", // and by the `url` target
            "https://d111111abcdef8.cloudfront.net:x]:443/a",
            "https://d]/a",
            "https://[::1/a",
            "https://[not-v6]/a",
            "https://[::1]x/a",
            "https://[::1]:/a",
        ] {
            assert!(check_url_shape(Field::Url, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reserved_params_are_refused() {
        assert!(check_reserved_params("https://d/a?x=1&Signature=abc").is_err());
        assert!(check_reserved_params("https://d/a?Expires").is_err());
        assert!(check_reserved_params("https://d/a?ExpiresX=1").is_ok());
    }
}
