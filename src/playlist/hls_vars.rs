//! HLS variables (`EXT-X-DEFINE`, draft-pantos-hls-rfc8216bis §4.4.2.3): a URI may hold
//! `{$name}` references that the player replaces before fetching. A URI is signed as the
//! player will fetch it, so references are replaced here first: a name defined with
//! `NAME`/`VALUE` by its value; a `QUERYPARAM` or `IMPORT` name (its value comes from the
//! playlist's own URL or the multivariant playlist, unknown when signing) or an undefined
//! one makes that URI a per-URI error, instead of a signature over text the player changes.

use std::collections::HashMap;

use url::Url;

use super::found::{Target, UriErrorKind};
use super::resolve::resolve;

/// The variables a playlist has defined so far: a value, or `None` when it is only known
/// to the player.
#[derive(Debug, Default)]
pub(super) struct Vars(HashMap<String, Option<String>>);

impl Vars {
    /// Records the variable an `EXT-X-DEFINE` tag defines, given its quoted-string
    /// attributes as (name, value).
    pub(super) fn define<'a>(&mut self, quoted: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let quoted: Vec<(&str, &str)> = quoted.into_iter().collect();
        let value_of = |name: &str| {
            quoted
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        };
        if let Some(name) = value_of("NAME") {
            let value = value_of("VALUE");
            self.0.insert(name, value);
        } else if let Some(name) = value_of("QUERYPARAM").or_else(|| value_of("IMPORT")) {
            self.0.insert(name, None);
        }
    }

    /// `written` with its references replaced, resolved against `base`; a reference whose
    /// value is not known here is a per-URI error naming it.
    pub(super) fn resolve(&self, base: &Url, written: &str) -> Target {
        if !written.contains("{$") {
            return resolve(base, written);
        }
        let mut out = String::with_capacity(written.len());
        let mut rest = written;
        while let Some(at) = rest.find("{$") {
            out.push_str(&rest[..at]);
            let after = &rest[at + 2..];
            let Some(end) = after.find('}') else {
                // Not a reference (no closing brace): the text stays as written.
                out.push_str(&rest[at..]);
                rest = "";
                break;
            };
            let name = &after[..end];
            match self.0.get(name) {
                Some(Some(value)) => out.push_str(value),
                Some(None) => {
                    return Target::Broken(UriErrorKind::Malformed(format!(
                        "uses the variable {{${name}}}, whose value comes from the playlist's \
                         URL or its multivariant playlist (EXT-X-DEFINE QUERYPARAM or IMPORT) \
                         and is not known when signing"
                    )));
                }
                None => {
                    return Target::Broken(UriErrorKind::Malformed(format!(
                        "uses the variable {{${name}}}, which no EXT-X-DEFINE before it defines"
                    )));
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        resolve(base, &out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(defines: &[&[(&str, &str)]]) -> Vars {
        let mut v = Vars::default();
        for d in defines {
            v.define(d.iter().copied());
        }
        v
    }

    fn url(t: &Target) -> &str {
        match t {
            Target::Http(r) => &r.urls[0],
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn references_are_replaced_before_resolving() {
        let base = Url::parse("https://d/hls/a/stream.m3u8").expect("base");
        let v = vars(&[
            &[("NAME", "res"), ("VALUE", "720p")],
            &[("NAME", "tok"), ("VALUE", "x1")],
        ]);
        assert_eq!(
            url(&v.resolve(&base, "{$res}/seg1.ts")),
            "https://d/hls/a/720p/seg1.ts"
        );
        assert_eq!(
            url(&v.resolve(&base, "seg-{$res}.ts?t={$tok}")),
            "https://d/hls/a/seg-720p.ts?t=x1"
        );
        assert_eq!(
            url(&v.resolve(&base, "plain.ts")),
            "https://d/hls/a/plain.ts"
        );
        // No closing brace: not a reference.
        assert_eq!(
            url(&v.resolve(&base, "a{$b.ts")),
            "https://d/hls/a/a%7B$b.ts"
        );
    }

    #[test]
    fn references_not_known_when_signing_are_per_uri_errors() {
        let base = Url::parse("https://d/hls/a/stream.m3u8").expect("base");
        let v = vars(&[&[("QUERYPARAM", "token")], &[("IMPORT", "cdn")]]);
        for (written, needle) in [
            ("seg.ts?token={$token}", "{$token}, whose value comes from"),
            ("{$cdn}/seg.ts", "{$cdn}, whose value comes from"),
            ("{$nope}/seg.ts", "{$nope}, which no EXT-X-DEFINE"),
        ] {
            match v.resolve(&base, written) {
                Target::Broken(UriErrorKind::Malformed(why)) => {
                    assert!(why.contains(needle), "{written}: {why}");
                }
                other => panic!("{written}: {other:?}"),
            }
        }
    }
}
