//! Turns one caller's item into something safe to sign, or a per-item error naming the
//! field and the rule it broke. The text rules every URL and resource passes first (its
//! characters, its shape, CloudFront's reserved parameters) are in `text`.

mod text;

use std::sync::Arc;

use super::keys::{KeySet, SigningKey};
use super::policy::{IpRange, PolicySpec, canned_json};
use super::{Field, SignError};
use crate::access::resource::find_dot_segment;
use crate::access::{Grant, TextKind};

use text::check_reserved_params;
pub use text::{check_url_shape, clean_text};

/// Longest URL or resource accepted, in bytes (after percent-encoding). CloudFront's own
/// limit on a request URL is 8,192 bytes; the signature adds several hundred more.
pub const MAX_URL_BYTES: usize = 8192;

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

    let custom = spec.custom_policy
        || ctx.custom_policy
        || resource.is_some()
        || not_before.is_some()
        || ip.is_some();
    // With no policy_resource a custom policy's Resource is the URL itself, where `*` and
    // `?` are wildcards and the query is path: it must pass the pattern rules as well.
    let url_is_resource = custom && resource.is_none();
    if url_is_resource && let Some(dot) = find_dot_segment(&url, TextKind::Pattern) {
        return Err(invalid(Field::Url, format!("{URL_AS_RESOURCE}: {dot}")));
    }

    if let Some(grant) = &ctx.grant {
        check_grant(grant, &key, &url, resource.as_deref(), url_is_resource)?;
    }

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

/// Why a URL is also read as a pattern (see [`prepare`]).
const URL_AS_RESOURCE: &str = "becomes the custom policy's Resource (custom_policy, not_before \
     or ip_range is set and policy_resource is not), in which '*' and '?' are wildcards and \
     the query is read as path";

/// The caller may use this key, and both the URL and the policy resource, exactly as they
/// will be signed, lie under one of its URL prefixes ([`Grant::covers`]). A URL that is
/// also the policy's Resource (`url_is_resource`) must be covered read as a pattern too.
fn check_grant(
    grant: &Grant,
    key: &SigningKey,
    url: &str,
    resource: Option<&str>,
    url_is_resource: bool,
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
    if url_is_resource {
        grant
            .covers(url, TextKind::Pattern)
            .map_err(|d| denied(Field::Url, format!("{URL_AS_RESOURCE}: {d}")))?;
    }
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
mod tests;
