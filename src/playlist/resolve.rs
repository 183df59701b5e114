//! From a URI as written to the URL a player requests, and the shared policy's resource.
//!
//! Resolution follows the WHATWG URL standard (the `url` crate), which is what browsers,
//! hls.js, dash.js and Shaka use: relative references against the base, dot segments
//! removed, scheme and host lowercased, default ports dropped, spaces and non-ASCII
//! characters percent-encoded. The result is what is signed, what the grant is checked
//! against, and what is written back into the playlist, so a player requests exactly the
//! string that was signed wherever it fetched the playlist from.

use url::Url;

use super::found::Resolved;
use super::template::{self, Kind};
use super::{PlaylistError, Target, UriErrorKind};
use crate::access::TextKind;
use crate::access::resource::find_dot_segment;
use crate::signing::policy::wildcard_match;
use crate::signing::validate::{check_url_shape, clean_text};
use crate::signing::{Field, SignError};

fn invalid(reason: impl Into<String>) -> PlaylistError {
    PlaylistError::Invalid {
        field: "base_url",
        reason: reason.into(),
    }
}

fn reason(e: SignError) -> String {
    match e {
        SignError::Invalid { reason, .. } | SignError::Denied { reason, .. } => reason,
        other => other.to_string(),
    }
}

/// Checks `base_url` by the rules of a URL to sign (http(s), a host, no user info, no
/// fragment, no dot segment) and parses it.
pub fn base_url(text: &str) -> Result<Url, PlaylistError> {
    if text.is_empty() {
        return Err(invalid(
            "is empty; set it to the URL the playlist is served at (relative URIs resolve against it)",
        ));
    }
    let cleaned = clean_text(Field::Url, text).map_err(|e| invalid(reason(e)))?;
    check_url_shape(Field::Url, &cleaned).map_err(|e| invalid(reason(e)))?;
    if let Some(dot) = find_dot_segment(&cleaned, TextKind::Url) {
        return Err(invalid(dot.to_string()));
    }
    let url = Url::parse(&cleaned).map_err(|e| invalid(format!("{text:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "scheme {:?} is not http or https",
            url.scheme()
        )));
    }
    Ok(url)
}

/// What `written` (a URI as it appears in the playlist) resolves to against `base`.
pub fn resolve(base: &Url, written: &str) -> Target {
    resolve_as(base, written, Kind::None)
}

/// [`resolve`] for a URI whose template identifiers have been classified as `template`.
pub fn resolve_as(base: &Url, written: &str, template: Kind) -> Target {
    if written.is_empty() {
        return Target::Broken(UriErrorKind::Malformed("the URI is empty".into()));
    }
    match base.join(written) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Target::Http(Resolved {
            urls: vec![url.into()],
            template,
        }),
        Ok(_) => Target::Other,
        Err(e) => Target::Broken(UriErrorKind::Malformed(format!(
            "cannot be resolved against its base URL: {e}"
        ))),
    }
}

/// The default shared policy resource: the directory of `base` followed by `*`.
pub fn default_resource(base: &Url) -> String {
    let mut dir = base.clone();
    dir.set_query(None);
    dir.set_fragment(None);
    let path = dir.path();
    let cut = path.rfind('/').map_or(0, |i| i + 1);
    let directory = path[..cut].to_owned();
    dir.set_path(if directory.is_empty() {
        "/"
    } else {
        &directory
    });
    format!("{dir}*")
}

/// Whether a policy with `resource` admits `url`; for a DASH template, every URL its
/// identifiers can expand to. A template is proven covered only by a resource that is a
/// literal prefix followed by one `*` (the default resource has that shape).
pub fn covers(resource: &str, url: &str, template: Kind) -> bool {
    if template == Kind::None {
        return wildcard_match(resource, url);
    }
    let pattern = template::to_pattern(url);
    let Some(prefix) = resource.strip_suffix('*') else {
        return false;
    };
    if prefix.contains(['*', '?']) {
        return false;
    }
    let fixed = pattern
        .find(['*', '?'])
        .map_or(pattern.as_str(), |i| &pattern[..i]);
    fixed.starts_with(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(s: &str) -> Url {
        base_url(s).expect("base")
    }

    #[test]
    fn relative_uris_resolve_as_browsers_do() {
        let b = base("https://D111111abcdef8.cloudfront.net:443/hls/a/master.m3u8?x=1");
        let url = |w: &str| match resolve(&b, w) {
            Target::Http(r) => r.urls[0].clone(),
            other => panic!("{w}: {other:?}"),
        };
        assert_eq!(
            url("seg1.ts"),
            "https://d111111abcdef8.cloudfront.net/hls/a/seg1.ts"
        );
        assert_eq!(
            url("../b/seg 1.ts?q=1"),
            "https://d111111abcdef8.cloudfront.net/hls/b/seg%201.ts?q=1"
        );
        assert_eq!(
            url("/other/x.ts"),
            "https://d111111abcdef8.cloudfront.net/other/x.ts"
        );
        assert_eq!(
            url("//cdn.example.com/x.ts"),
            "https://cdn.example.com/x.ts"
        );
        assert_eq!(url("http://e.example/é.ts"), "http://e.example/%C3%A9.ts");
        assert_eq!(resolve(&b, "skd://key-id"), Target::Other);
        assert_eq!(resolve(&b, "data:text/plain,hi"), Target::Other);
        assert!(matches!(resolve(&b, ""), Target::Broken(_)));
        assert!(matches!(resolve(&b, "http://[::1"), Target::Broken(_)));
    }

    #[test]
    fn base_url_follows_the_url_rules() {
        for bad in [
            "",
            "hls/master.m3u8",
            "ftp://d/a",
            "https://user@d/a",
            "https://d/a/../b.m3u8",
            "https://d/a#frag",
        ] {
            let e = base_url(bad).expect_err(bad);
            assert!(e.to_string().starts_with("base_url: "), "{e}");
        }
    }

    #[test]
    fn the_default_resource_is_the_directory() {
        assert_eq!(
            default_resource(&base("https://d.example/hls/a/master.m3u8?t=1")),
            "https://d.example/hls/a/*"
        );
        assert_eq!(
            default_resource(&base("https://d.example")),
            "https://d.example/*"
        );
        assert_eq!(
            default_resource(&base("http://d.example:8080/x/")),
            "http://d.example:8080/x/*"
        );
    }

    #[test]
    fn coverage_of_urls_and_templates() {
        let r = "https://d.example/v/*";
        assert!(covers(r, "https://d.example/v/a/seg.ts", Kind::None));
        assert!(!covers(r, "https://d.example/w/seg.ts", Kind::None));
        assert!(covers(
            r,
            "https://d.example/v/c-$RepresentationID$-$Number%05d$.m4s",
            Kind::PerSegment
        ));
        assert!(!covers(
            r,
            "https://d.example/$RepresentationID$/c-$Number$.m4s",
            Kind::PerSegment
        ));
        // Only a literal prefix + '*' proves a template covered.
        assert!(!covers(
            "https://d.example/v/*.m4s",
            "https://d.example/v/c-$Number$.m4s",
            Kind::PerSegment
        ));
    }
}
