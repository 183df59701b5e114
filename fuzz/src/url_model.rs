//! URL shapes and grant prefixes, by a model written apart from cdnsign's own checks.

use cdnsign::access::TextKind;
use cdnsign::access::resource::find_dot_segment;
use cdnsign::signing::Field;
use cdnsign::signing::validate;

use crate::*;

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
pub(crate) fn model_inside(text: &str, pattern: bool) -> bool {
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
pub(crate) fn model_has_dot_segment(text: &str, pattern: bool) -> bool {
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
