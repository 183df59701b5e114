//! Reading the text of a URL or a policy resource the way a grant must: literally.
//!
//! Nothing here rewrites the text that will be signed. A grant check compares the exact
//! string that goes into the policy against a prefix: the scheme and host compare without
//! case and with the scheme's default port optional (every client and CloudFront agree on
//! that), and everything after the host compares byte for byte. Decoding escapes or
//! resolving `..` before comparing would check one string and sign another, which is how a
//! pattern like `https://d/*/../hls/*` once passed for something under `/hls/`.
//!
//! Because the comparison is literal, text whose meaning differs between readers is refused
//! before any grant is consulted:
//! - a dot segment (`.` or `..`, literal or percent-encoded in any case, alone or with
//!   wildcards that can make one, also followed by `;` path parameters: `..;x`) anywhere
//!   in the path ([`find_dot_segment`]): CloudFront, browsers and S3 disagree on what it
//!   means, and Tomcat, Jetty and Spring origins drop `;x` and then resolve the `..`;
//! - for a grant, `%2F` or `%5C` in the path ([`has_encoded_separator`]): an origin that
//!   decodes them sees separators the prefix check did not.

use std::fmt;

/// How the text will be read by CloudFront.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// A URL a viewer requests: `?` starts the query, and the path ends there.
    Url,
    /// A policy `Resource`: `*` matches any run of characters (`/` and `?` included) and
    /// `?` any one character, so there is no query: the whole text after the host is path.
    Pattern,
}

/// A URL or resource split at its authority: `scheme://authority` then the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split<'a> {
    /// Text before `://`.
    pub scheme: &'a str,
    /// Text between `://` and the first `/` or `?` (for a pattern, also `*`).
    pub authority: &'a str,
    /// Everything after the authority (starts with `/`, `?`, `*` or is empty).
    pub rest: &'a str,
}

/// Splits `scheme://authority rest`; `None` without `://`.
pub fn split(text: &str, kind: TextKind) -> Option<Split<'_>> {
    let (scheme, after) = text.split_once("://")?;
    let stops: &[char] = match kind {
        TextKind::Url => &['/', '?'],
        TextKind::Pattern => &['/', '?', '*'],
    };
    let end = after.find(stops).unwrap_or(after.len());
    let (authority, rest) = after.split_at(end);
    Some(Split {
        scheme,
        authority,
        rest,
    })
}

/// The path part of `text` as CloudFront would match it: after the authority (or all of a
/// text without a scheme, such as a bare object name), up to the query for a URL.
fn path_of(text: &str, kind: TextKind) -> &str {
    let rest = split(text, kind).map_or(text, |s| s.rest);
    match kind {
        TextKind::Url => rest.split_once('?').map_or(rest, |(path, _)| path),
        TextKind::Pattern => rest,
    }
}

/// A dot segment found in a path, for the error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DotSegment(pub String);

impl fmt::Display for DotSegment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "path has the dot segment {:?}; '.' and '..' segments (also percent-encoded, \
             followed by ';' parameters, or made by wildcards) are refused because CloudFront, \
             browsers and origins resolve them differently (origins such as Tomcat, Jetty and \
             Spring read '..;x' as '..')",
            self.0
        )
    }
}

/// Finds a segment of the path that is, or with its wildcards can be, `.` or `..`:
/// after decoding `%2e`/`%2E`, a segment made only of dots and wildcards (`*`, `?` in a
/// pattern) with one or two dots. `...` (a name) and `a.b` pass.
///
/// The segment is read up to its first `;` (or `%3B`, any case): origins that take
/// `;params` off a segment before resolving dot segments (Tomcat, Jetty, Spring) read
/// `..;x` as `..` although CloudFront passes it on as it is. In a pattern a wildcard can
/// also be that `;`, so `..?x` is refused as well. `a;b` and `file;v=1.ts` pass.
pub fn find_dot_segment(text: &str, kind: TextKind) -> Option<DotSegment> {
    path_of(text, kind)
        .split('/')
        .find(|seg| is_dot_segment(seg, kind))
        .map(|seg| DotSegment(seg.to_owned()))
}

fn is_dot_segment(segment: &str, kind: TextKind) -> bool {
    let bytes = segment.as_bytes();
    let escape = |i: usize, hex: &[u8; 2]| {
        bytes
            .get(i + 1..i + 3)
            .is_some_and(|h| h.eq_ignore_ascii_case(hex))
    };
    // Wildcards alone (`*`) are not a dot segment; with one or two dots they can make one.
    let (mut dots, mut i) = (0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'.' => dots += 1,
            b'%' if escape(i, b"2e") => {
                dots += 1;
                i += 2;
            }
            // Path parameters: what comes after is not part of the name an origin resolves.
            b';' => break,
            b'%' if escape(i, b"3b") => break,
            // A wildcard can be a dot, nothing (`*`), or the `;` that ends the name here.
            b'*' | b'?' if kind == TextKind::Pattern => {
                if (1..=2).contains(&dots) {
                    return true;
                }
            }
            _ => return false,
        }
        i += 1;
    }
    (1..=2).contains(&dots)
}

/// `%2F` or `%5C` (any case) in the path: an origin that decodes them would see path
/// separators that a prefix comparison did not.
pub fn has_encoded_separator(text: &str, kind: TextKind) -> bool {
    path_of(text, kind).as_bytes().windows(3).any(|w| {
        w[0] == b'%' && (w[1..].eq_ignore_ascii_case(b"2f") || w[1..].eq_ignore_ascii_case(b"5c"))
    })
}

/// Why a configured prefix was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// Not `http://` or `https://`.
    #[error("must start with http:// or https://")]
    Scheme,
    /// Wildcards have no meaning in a prefix.
    #[error("must not contain wildcards ('*', '?')")]
    Wildcard,
    /// `user@` in the host part.
    #[error("must not contain user info ('@')")]
    UserInfo,
    /// No host.
    #[error("has no host")]
    NoHost,
    /// A dot segment, which no signed text may contain.
    #[error("{0}")]
    DotSegment(DotSegment),
    /// Characters a URL cannot carry as they are.
    #[error("must be printable ASCII without spaces, '\"', '\\' or '#'")]
    Characters,
}

/// A granted URL prefix: `scheme://host[:port]` and a path that signed text must start
/// with, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix {
    scheme: String,
    authority: String,
    path: String,
}

impl Prefix {
    /// Parses a configured prefix. The scheme and host are lowercased and a default port
    /// dropped; the path is kept exactly (a prefix with no path covers the host: `/`).
    pub fn parse(text: &str) -> Result<Prefix, PrefixError> {
        if !text
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\' | b'#'))
        {
            return Err(PrefixError::Characters);
        }
        if text.contains(['*', '?']) {
            return Err(PrefixError::Wildcard);
        }
        let s = split(text, TextKind::Url).ok_or(PrefixError::Scheme)?;
        let scheme = s.scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(PrefixError::Scheme);
        }
        if s.authority.contains('@') {
            return Err(PrefixError::UserInfo);
        }
        let authority = canonical_authority(&scheme, s.authority);
        if authority.is_empty() || authority.starts_with(':') {
            return Err(PrefixError::NoHost);
        }
        if let Some(dot) = find_dot_segment(text, TextKind::Url) {
            return Err(PrefixError::DotSegment(dot));
        }
        let path = if s.rest.is_empty() { "/" } else { s.rest };
        Ok(Prefix {
            scheme,
            authority,
            path: path.to_owned(),
        })
    }

    /// Whether every string `text` can stand for starts with this prefix.
    ///
    /// A URL is one string. A pattern stands for every string CloudFront's matcher accepts
    /// for it; as `*` can be anything, that holds exactly when the literal text before its
    /// first `*` or `?` already contains the whole host (ends it with `/`) and starts with
    /// this prefix.
    pub fn covers(&self, text: &str, kind: TextKind) -> bool {
        let literal = match kind {
            TextKind::Url => text,
            TextKind::Pattern => text.find(['*', '?']).map_or(text, |i| &text[..i]),
        };
        let wildcard = literal.len() < text.len();
        let Some(s) = split(literal, TextKind::Url) else {
            return false;
        };
        if wildcard && !s.rest.starts_with('/') {
            // The wildcard is in the scheme or host (or right after it).
            return false;
        }
        if !s.scheme.eq_ignore_ascii_case(&self.scheme) || s.authority.contains('@') {
            return false;
        }
        if canonical_authority(&self.scheme, s.authority) != self.authority {
            return false;
        }
        // `https://d` or `https://d?x` has no path to compare: refused (write `https://d/`).
        s.rest.starts_with('/') && s.rest.starts_with(self.path.as_str())
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.path)
    }
}

/// Lowercase host, the scheme's default port dropped.
fn canonical_authority(scheme: &str, authority: &str) -> String {
    let mut a = authority.to_ascii_lowercase();
    let default_port = if scheme.eq_ignore_ascii_case("https") {
        ":443"
    } else {
        ":80"
    };
    if a.ends_with(default_port) {
        a.truncate(a.len() - default_port.len());
    }
    a
}

#[cfg(test)]
mod tests;
