//! Signed cookies as the Signer API returns them: the `CloudFront-*` name/value pairs and
//! `Set-Cookie` headers with the caller's attributes, which are checked so that no value
//! can add an attribute or a cookie of its own.

use super::status::{ApiError, item_error};
use crate::proto;
use crate::signing::{BatchStats, SignError, SignedItem};

/// Cookie attribute values must not be able to add attributes or cookies of their own.
fn check_attribute(field: &'static str, value: &str) -> Result<(), ApiError> {
    if value
        .chars()
        .any(|c| c == ';' || c == ',' || c.is_whitespace() || c.is_control() || !c.is_ascii())
    {
        return Err(ApiError::InvalidField {
            field,
            reason: "must not contain ';', ',', whitespace, control or non-ASCII characters".into(),
        });
    }
    Ok(())
}

/// The caller's Set-Cookie attributes cannot add attributes or cookies of their own.
pub(super) fn check_attributes(attrs: &proto::CookieAttributes) -> Result<(), ApiError> {
    check_attribute("attributes.domain", &attrs.domain)?;
    check_attribute("attributes.path", &attrs.path)?;
    if !matches!(attrs.same_site.as_str(), "" | "Strict" | "Lax" | "None") {
        return Err(ApiError::InvalidField {
            field: "attributes.same_site",
            reason: "must be Strict, Lax, None or empty".into(),
        });
    }
    // Browsers drop a `SameSite=None` cookie that is not `Secure` (RFC 6265bis): refused
    // here, by name, rather than returned to fail playback without a word.
    if attrs.same_site == "None" && !attrs.secure {
        return Err(ApiError::InvalidField {
            field: "attributes.same_site",
            reason: "None needs attributes.secure = true (browsers drop a SameSite=None cookie that is not Secure)".into(),
        });
    }
    Ok(())
}

pub(super) fn set_cookie_header(
    name: &str,
    value: &str,
    attrs: &proto::CookieAttributes,
) -> String {
    let mut h = format!("{name}={value}");
    if !attrs.domain.is_empty() {
        h.push_str("; Domain=");
        h.push_str(&attrs.domain);
    }
    if !attrs.path.is_empty() {
        h.push_str("; Path=");
        h.push_str(&attrs.path);
    }
    if attrs.secure {
        h.push_str("; Secure");
    }
    if attrs.http_only {
        h.push_str("; HttpOnly");
    }
    if !attrs.same_site.is_empty() {
        h.push_str("; SameSite=");
        h.push_str(&attrs.same_site);
    }
    h
}

/// A signed item's `CloudFront-*` cookies, as name/value pairs and as `Set-Cookie`
/// headers with `attrs`.
pub(super) fn cookie_set(item: &SignedItem, attrs: &proto::CookieAttributes) -> proto::CookieSet {
    let pairs = item.cookies();
    proto::CookieSet {
        set_cookie_headers: pairs
            .iter()
            .map(|(n, v)| set_cookie_header(n, v, attrs))
            .collect(),
        cookies: pairs
            .into_iter()
            .map(|(name, value)| proto::Cookie {
                name: name.to_owned(),
                value,
            })
            .collect(),
    }
}

/// SignCookies' answer: each item's cookies or its error, in request order.
pub(super) fn cookie_response(
    results: Vec<Result<SignedItem, SignError>>,
    stats: BatchStats,
    attrs: &proto::CookieAttributes,
) -> proto::SignCookiesResponse {
    use proto::sign_cookies_result::Outcome;
    let results = results
        .into_iter()
        .enumerate()
        .map(|(i, r)| match r {
            Ok(item) => proto::SignCookiesResult {
                outcome: Some(Outcome::Cookies(cookie_set(&item, attrs))),
                index: u32::try_from(i).unwrap_or(u32::MAX),
                expires_at: item.expires,
                key_id: item.key.id().to_owned(),
            },
            Err(e) => proto::SignCookiesResult {
                outcome: Some(Outcome::Error(item_error(i, &e))),
                index: u32::try_from(i).unwrap_or(u32::MAX),
                expires_at: 0,
                key_id: String::new(),
            },
        })
        .collect();
    proto::SignCookiesResponse {
        results,
        signed: u32::try_from(stats.signed).unwrap_or(u32::MAX),
        failed: u32::try_from(stats.failed).unwrap_or(u32::MAX),
    }
}
