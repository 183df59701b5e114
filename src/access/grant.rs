//! What one client may do: keys, URL prefixes, TTL, purge targets and rates (the URL
//! signing bucket lives here, per replica; the purge bucket in the purge store, shared).

use std::collections::HashSet;
use std::sync::Arc;

use super::rate::{RateError, TokenBucket};
use super::resource::{Prefix, TextKind, find_dot_segment, has_encoded_separator};

/// Why a grant does not cover some text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// The text has a dot segment (callers refuse those earlier, for every client, as
    /// invalid; a grant refuses them again so it never depends on that).
    #[error("{0}")]
    DotSegment(super::resource::DotSegment),
    /// `%2F` / `%5C` in the path.
    #[error("encoded '/' or '\\' (%2F, %5C) in the path cannot be proven to stay inside a prefix")]
    EncodedSeparator,
    /// Outside every prefix (for a pattern: some string it matches is).
    #[error("{text:?} is outside client {client:?}'s url_prefixes{hint}")]
    Outside {
        /// The text as it would be signed.
        text: String,
        /// The client's name.
        client: String,
        /// For patterns: what the rule is.
        hint: &'static str,
    },
}

/// One client's grants, built once per configuration.
#[derive(Debug)]
pub struct Grant {
    /// Client name (config).
    pub name: String,
    keys: HashSet<String>,
    prefixes: Vec<Prefix>,
    /// TTL cap for this client.
    pub max_ttl_seconds: Option<i64>,
    purge_targets: HashSet<String>,
    urls: Option<Arc<TokenBucket>>,
    /// Purge paths per minute (the bucket lives in the purge store, shared by replicas).
    pub purge_paths_per_minute: Option<u32>,
}

/// Everything a [`Grant`] is made of.
#[derive(Debug, Default)]
pub struct GrantParts {
    /// Client name.
    pub name: String,
    /// Key ids it may sign with.
    pub keys: Vec<String>,
    /// Parsed URL prefixes.
    pub prefixes: Vec<Prefix>,
    /// TTL cap.
    pub max_ttl_seconds: Option<i64>,
    /// Purge targets it may purge.
    pub purge_targets: Vec<String>,
    /// URL signing rate limit.
    pub urls: Option<Arc<TokenBucket>>,
    /// Purge paths per minute.
    pub purge_paths_per_minute: Option<u32>,
}

impl Grant {
    /// Assembles a grant.
    pub fn new(parts: GrantParts) -> Grant {
        Grant {
            name: parts.name,
            keys: parts.keys.into_iter().collect(),
            prefixes: parts.prefixes,
            max_ttl_seconds: parts.max_ttl_seconds,
            purge_targets: parts.purge_targets.into_iter().collect(),
            urls: parts.urls,
            purge_paths_per_minute: parts.purge_paths_per_minute,
        }
    }

    /// May this client sign with `key_id`?
    pub fn allows_key(&self, key_id: &str) -> bool {
        self.keys.contains(key_id)
    }

    /// The one decision of whether text that is about to be signed lies inside this grant:
    /// a URL, or a policy resource pattern together with everything it can match. `text`
    /// must be exactly the string that goes into the policy (see [`super::resource`]).
    pub fn covers(&self, text: &str, kind: TextKind) -> Result<(), Denial> {
        if let Some(dot) = find_dot_segment(text, kind) {
            return Err(Denial::DotSegment(dot));
        }
        if has_encoded_separator(text, kind) {
            return Err(Denial::EncodedSeparator);
        }
        if self.prefixes.iter().any(|p| p.covers(text, kind)) {
            return Ok(());
        }
        Err(Denial::Outside {
            text: text.to_owned(),
            client: self.name.clone(),
            hint: match kind {
                TextKind::Url => "",
                TextKind::Pattern => {
                    " (a pattern's text before its first '*' or '?' must start with a prefix)"
                }
            },
        })
    }

    /// May this client purge `target`?
    pub fn allows_purge_target(&self, target: &str) -> bool {
        self.purge_targets.contains(target)
    }

    /// Takes `n` URLs from the signing rate limit.
    pub fn take_urls(&self, n: u64) -> Result<(), RateError> {
        self.urls.as_ref().map_or(Ok(()), |b| b.take(n))
    }

    /// The URL bucket, for a reload to keep when the rate did not change.
    pub fn url_bucket(&self) -> Option<&Arc<TokenBucket>> {
        self.urls.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::signing::policy::wildcard_match;

    fn grant(prefixes: &[&str]) -> Grant {
        Grant::new(GrantParts {
            name: "gen".into(),
            prefixes: prefixes
                .iter()
                .map(|p| Prefix::parse(p).expect("prefix"))
                .collect(),
            ..GrantParts::default()
        })
    }

    const HLS: &str = "https://d111111abcdef8.cloudfront.net/hls/";

    #[test]
    fn the_reported_escapes_are_refused() {
        let g = grant(&[HLS]);
        for pattern in [
            "https://d111111abcdef8.cloudfront.net/*/../hls/*",
            "https://d111111abcdef8.cloudfront.net/private/*/../../hls/*",
            "https://d111111abcdef8.cloudfront.net/*/%2e%2e/hls/*",
            "https://d111111abcdef8.cloudfront.net/*/%2E%2E/hls/*",
            "https://d111111abcdef8.cloudfront.net/*hls/*",
            "https://d111111abcdef8.cloudfront.net/?/hls/*",
            "https://d111111abcdef8.cloudfront.net/hls/?/../../x",
            "https://d111111abcdef8.cloudfront.net/other?/../hls/a",
            "https://d111111abcdef8.cloudfront.net/hls/a%2F..%2F..%2Fx",
        ] {
            assert!(g.covers(pattern, TextKind::Pattern).is_err(), "{pattern}");
        }
        for url in [
            "https://d111111abcdef8.cloudfront.net/private/../hls/x.ts",
            "https://d111111abcdef8.cloudfront.net/x/%2e%2e/hls/y",
            "https://d111111abcdef8.cloudfront.net/hls/../private/x",
        ] {
            assert!(g.covers(url, TextKind::Url).is_err(), "{url}");
        }
        assert!(g.covers(&format!("{HLS}abc/*"), TextKind::Pattern).is_ok());
        assert!(
            g.covers(&format!("{HLS}abc/seg1.ts"), TextKind::Url)
                .is_ok()
        );
    }

    /// Independent reading of "starts with the prefix": lowercase scheme and host, drop a
    /// default port, then a plain string prefix test against the prefix as configured in
    /// canonical form (ending in `/`).
    fn oracle_under(s: &str, canonical_prefix: &str) -> bool {
        let Some((scheme, rest)) = s.split_once("://") else {
            return false;
        };
        let end = rest.find('/').unwrap_or(rest.len());
        let mut authority = rest[..end].to_ascii_lowercase();
        let scheme = scheme.to_ascii_lowercase();
        let port = if scheme == "https" { ":443" } else { ":80" };
        if authority.ends_with(port) {
            authority.truncate(authority.len() - port.len());
        }
        format!("{scheme}://{authority}{}", &rest[end..]).starts_with(canonical_prefix)
    }

    /// Pieces that patterns, prefixes and wildcard expansions are made of: separators,
    /// dots and their escapes, wildcards, case variants of the host and scheme.
    fn piece() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "/",
            "/",
            "a",
            "hls",
            "HLS",
            "b.ts",
            ".",
            "..",
            "%2e",
            "%2E",
            "*",
            "?",
            "?",
            "x=",
            "&",
            "%2F",
            ":443",
            ":80",
            ":8443",
            "@",
            "d.example",
            "D.EXAMPLE",
            "e.example",
            "https://",
            "http://",
            "HTTPS://",
            "hls/",
            "/hls",
            "-",
            "%68",
        ])
    }

    fn text(max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(piece(), 0..max).prop_map(|v| v.concat())
    }

    /// Every string CloudFront's matcher accepts is made by replacing each `*` with any
    /// text and each `?` with one character.
    fn expand(pattern: &str, fills: &[String], chars: &[char]) -> String {
        let mut out = String::new();
        let (mut f, mut c) = (0, 0);
        for ch in pattern.chars() {
            match ch {
                '*' => {
                    out.push_str(&fills[f % fills.len()]);
                    f += 1;
                }
                '?' => {
                    out.push(chars[c % chars.len()]);
                    c += 1;
                }
                other => out.push(other),
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

        /// If a grant approves a pattern, every string CloudFront's matcher accepts for it
        /// starts with the prefix.
        #[test]
        fn approved_patterns_only_match_inside_the_prefix(
            prefix_path in text(4),
            pattern_tail in text(8),
            pattern_head in prop::sample::select(vec!["", "https://d.example", "HTTPS://D.EXAMPLE:443", "http://d.example", "https://d.example:8443", "*", "https://d.example/hls"]),
            fills in prop::collection::vec(text(6), 1..4),
            chars in prop::collection::vec(prop::sample::select(vec!['/', '.', '?', 'a', '*', '%', ':', '@']), 1..4),
        ) {
            let Ok(prefix) = Prefix::parse(&format!("https://d.example/{}", prefix_path.trim_start_matches('/'))) else {
                return Ok(());
            };
            let g = Grant::new(GrantParts { name: "p".into(), prefixes: vec![prefix.clone()], ..GrantParts::default() });
            let pattern = format!("{pattern_head}{pattern_tail}");
            if g.covers(&pattern, TextKind::Pattern).is_ok() {
                let canonical = prefix.to_string();
                for i in 0..fills.len() {
                    let s = expand(&pattern, &fills[i..], &chars[i % chars.len()..]);
                    prop_assert!(wildcard_match(&pattern, &s), "generator made {s:?} for {pattern:?}");
                    prop_assert!(oracle_under(&s, &canonical), "{pattern:?} approved under {canonical:?} but matches {s:?}");
                }
            }
        }

        /// The same for URLs: an approved URL starts with the prefix, and never has a dot
        /// segment in its path.
        #[test]
        fn approved_urls_are_inside_the_prefix(
            prefix_path in text(4),
            head in prop::sample::select(vec!["https://d.example", "HTTPS://D.EXAMPLE:443", "http://d.example", "https://d.example:8443", "https://d.example@e.example"]),
            tail in text(10),
        ) {
            let Ok(prefix) = Prefix::parse(&format!("https://d.example/{}", prefix_path.trim_start_matches('/'))) else {
                return Ok(());
            };
            let g = Grant::new(GrantParts { name: "p".into(), prefixes: vec![prefix.clone()], ..GrantParts::default() });
            let url = format!("{head}{tail}");
            if g.covers(&url, TextKind::Url).is_ok() {
                prop_assert!(oracle_under(&url, &prefix.to_string()), "{url:?} approved under {prefix}");
                let path = url.split_once("://").map(|(_, r)| r).unwrap_or_default();
                let path = path.find('/').map_or("", |i| &path[i..]);
                let path = path.split('?').next().unwrap_or_default().to_ascii_lowercase().replace("%2e", ".");
                prop_assert!(!path.split('/').any(|seg| seg == "." || seg == ".."), "{url:?}");
            }
        }
    }
}
