//! The text rules every URL and resource passes before anything else.
//!
//! Encoding rule (documented in README): a space or a non-ASCII character in a URL or
//! resource is percent-encoded as its UTF-8 bytes (`%20`, `%C3%A9`), because that is how
//! the viewer's request reaches CloudFront and the policy must match it. A `"`, `\`, control
//! character or `#` is rejected: the first three would change the policy's JSON, and a
//! fragment is never sent to CloudFront, so a signed URL with one could not be used.

use std::borrow::Cow;

use super::{MAX_URL_BYTES, invalid};
use crate::signing::{Field, SignError};

/// Query parameters CloudFront reserves for signing; a URL must not already carry them.
const RESERVED_PARAMS: [&str; 5] = [
    "Expires",
    "Policy",
    "Signature",
    "Key-Pair-Id",
    "Hash-Algorithm",
];

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
pub(super) fn check_reserved_params(url: &str) -> Result<(), SignError> {
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
