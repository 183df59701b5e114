//! Path normalisation: turns what callers send (paths or full URLs) into what each CDN
//! matches, or a reason it cannot be purged as given.
//!
//! CloudFront compares invalidation paths with the request path byte for byte, so a path
//! must be written the way CloudFront sees requests: a leading `/`, characters outside
//! RFC 3986's unreserved/sub-delims/`:@/` set percent-encoded (UTF-8), existing `%XX`
//! escapes kept as they are, and `*` only as the last character.

use crate::purge::config::TargetConfig;
use crate::purge::model::PurgeKind;

/// Longest path accepted (CloudFront's documented maximum is 4,000 characters).
pub const MAX_PATH_LEN: usize = 4_000;

/// Longest URL Alibaba Cloud CDN takes in `ObjectPath` (its documented maximum is 1,024
/// characters per URL), counted as sent: scheme, domain and percent-encoding included.
pub const ALIYUN_MAX_URL_LEN: usize = 1_024;

/// Bytes CloudFront paths may carry as they are; everything else is percent-encoded.
fn keep_as_is(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'/'
                | b'?'
        )
}

/// Percent-encodes what must be encoded and nothing else; keeps valid `%XX` escapes.
pub fn encode_path(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
        {
            out.push('%');
            out.push(bytes[i + 1].to_ascii_uppercase() as char);
            out.push(bytes[i + 2].to_ascii_uppercase() as char);
            i += 3;
            continue;
        }
        if keep_as_is(b) || b == b'*' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
        i += 1;
    }
    out
}

/// Splits `http(s)://host[:port]/path` into (lower-case host, path); `None` if not a URL.
fn split_url(s: &str) -> Option<(String, &str)> {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, h)| h)
        .split(':')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    Some((host, path))
}

fn target_domains(t: &TargetConfig) -> impl Iterator<Item = String> + '_ {
    t.domain
        .iter()
        .chain(t.aliases.iter())
        .map(|d| d.to_ascii_lowercase())
}

/// Turns a full URL on one of the target's domains into its path; passes paths through.
fn url_to_path<'a>(t: &TargetConfig, item: &'a str) -> Result<&'a str, String> {
    match split_url(item) {
        None => Ok(item),
        Some((host, path)) => {
            if target_domains(t).any(|d| d == host) {
                Ok(path)
            } else {
                Err(format!(
                    "URL host {host:?} is not a domain of target {:?} (domain/aliases)",
                    t.name
                ))
            }
        }
    }
}

/// What one item becomes for CloudFront.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloudFrontPath {
    /// A file path (counts against the 3,000 file paths in progress).
    File(String),
    /// A path ending in `*` (counts against the 15 wildcard paths in progress).
    Wildcard(String),
    /// A cache tag, sent as `#tag`.
    Tag(String),
}

impl CloudFrontPath {
    /// The string sent in the invalidation batch.
    pub fn as_str(&self) -> &str {
        match self {
            CloudFrontPath::File(s) | CloudFrontPath::Wildcard(s) | CloudFrontPath::Tag(s) => s,
        }
    }
}

/// Longest cache tag, not counting the `#` cdnsign adds.
pub const MAX_TAG_LEN: usize = 256;

/// A cache tag as CloudFront and Aliyun take it: visible ASCII (33-126), no comma (the
/// separator of tag lists), at most [`MAX_TAG_LEN`] characters. Compared without case.
pub fn check_cache_tag(tag: &str) -> Result<(), String> {
    if tag.is_empty() {
        return Err("an empty cache tag".into());
    }
    if tag.len() > MAX_TAG_LEN {
        return Err(format!(
            "cache tag of {} characters, over the {MAX_TAG_LEN} allowed",
            tag.len()
        ));
    }
    if let Some(c) = tag.chars().find(|c| !(c.is_ascii_graphic()) || *c == ',') {
        let what = if c == ',' {
            "a comma (the tag list separator)".to_owned()
        } else {
            format!("{c:?}")
        };
        return Err(format!(
            "cache tag has {what}: only visible ASCII (33-126) other than ',' is allowed"
        ));
    }
    Ok(())
}

/// Normalises one item for a CloudFront target.
pub fn cloudfront(t: &TargetConfig, kind: PurgeKind, item: &str) -> Result<CloudFrontPath, String> {
    let item = item.trim();
    if item.is_empty() {
        return Err("empty path".into());
    }
    if item.len() > MAX_PATH_LEN {
        return Err(format!("longer than {MAX_PATH_LEN} characters"));
    }
    if item.bytes().any(|b| b.is_ascii_control()) {
        return Err("control characters are not allowed".into());
    }
    match kind {
        PurgeKind::Prewarm => {
            return Err("CloudFront has no pre-warm; use kind FILE or DIRECTORY".into());
        }
        PurgeKind::CacheTag => {
            if !t.cache_tags {
                return Err(format!(
                    "target {:?} does not declare cache_tags = true (the distribution needs a CacheTagConfig)",
                    t.name
                ));
            }
            let tag = item.strip_prefix('#').unwrap_or(item);
            check_cache_tag(tag)?;
            return Ok(CloudFrontPath::Tag(format!("#{tag}")));
        }
        PurgeKind::File | PurgeKind::Directory => {}
    }
    if kind == PurgeKind::File
        && let Some(tag) = item.strip_prefix('#')
    {
        return cloudfront(t, PurgeKind::CacheTag, tag);
    }
    let path = url_to_path(t, item)?;
    let mut path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    // A fragment never reaches CloudFront.
    if let Some(i) = path.find('#') {
        path.truncate(i);
    }
    if kind == PurgeKind::Directory {
        let trimmed = path.trim_end_matches('*');
        path = if trimmed.ends_with('/') {
            format!("{trimmed}*")
        } else {
            format!("{trimmed}/*")
        };
    }
    let stars = path.matches('*').count();
    if stars > 1 || (stars == 1 && !path.ends_with('*')) {
        return Err("'*' is allowed only once, as the last character".into());
    }
    let encoded = encode_path(&path);
    // CloudFront's limit is on the path as sent, percent-encoding included.
    if encoded.len() > MAX_PATH_LEN {
        return Err(format!(
            "{} characters once percent-encoded, over CloudFront's {MAX_PATH_LEN}",
            encoded.len()
        ));
    }
    if stars == 1 {
        Ok(CloudFrontPath::Wildcard(encoded))
    } else {
        Ok(CloudFrontPath::File(encoded))
    }
}

/// Normalises one item for an Aliyun target: a full URL on the target's domain
/// (`https://cdn.example.com/a/b.png`; directories end with `/`).
pub fn aliyun(t: &TargetConfig, kind: PurgeKind, item: &str) -> Result<String, String> {
    let item = item.trim();
    if item.is_empty() {
        return Err("empty path".into());
    }
    if item.len() > MAX_PATH_LEN {
        return Err(format!("longer than {MAX_PATH_LEN} characters"));
    }
    if item.bytes().any(|b| b.is_ascii_control()) {
        return Err("control characters are not allowed".into());
    }
    if kind == PurgeKind::CacheTag {
        let tag = item.strip_prefix('#').unwrap_or(item);
        check_cache_tag(tag)?;
        return Ok(tag.to_owned());
    }
    if item.starts_with('#') {
        return Err("a cache tag here: use kind CACHE_TAG".into());
    }
    let path = url_to_path(t, item)?;
    let mut path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    if path.contains('*') {
        return Err("Alibaba Cloud CDN takes no '*' here; use kind DIRECTORY".into());
    }
    if kind == PurgeKind::Directory && !path.ends_with('/') {
        path.push('/');
    }
    let domain = t.domain.as_deref().unwrap_or_default();
    let url = format!("{}://{}{}", t.scheme, domain, encode_path(&path));
    // Refused here, by name, rather than by Aliyun for the whole call it would share.
    if url.len() > ALIYUN_MAX_URL_LEN {
        return Err(format!(
            "{} characters as a URL on the domain, percent-encoding included, over Alibaba \
             Cloud CDN's {ALIYUN_MAX_URL_LEN}",
            url.len()
        ));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::purge::config::{ProviderKind, SignatureVersion};

    fn cf() -> TargetConfig {
        TargetConfig {
            name: "site".into(),
            provider: ProviderKind::Cloudfront,
            distribution_id: Some("E2QWRUHAPOMQZL".into()),
            domain: Some("cdn.example.com".into()),
            aliases: vec!["www.example.com".into()],
            endpoint: None,
            signature: SignatureVersion::V3,
            scheme: "https".into(),
            cache_tags: true,
        }
    }

    #[test]
    fn cloudfront_paths_are_written_the_way_cloudfront_matches_them() {
        let t = cf();
        let f = |s| cloudfront(&t, PurgeKind::File, s);
        assert_eq!(
            f("img/a.png"),
            Ok(CloudFrontPath::File("/img/a.png".into()))
        );
        assert_eq!(
            f("https://cdn.example.com/img/a b.png?v=1"),
            Ok(CloudFrontPath::File("/img/a%20b.png?v=1".into()))
        );
        assert_eq!(
            f("http://WWW.example.com:8080/x"),
            Ok(CloudFrontPath::File("/x".into()))
        );
        assert_eq!(
            f("/caf\u{e9}.html"),
            Ok(CloudFrontPath::File("/caf%C3%A9.html".into()))
        );
        assert_eq!(
            f("/already%2fencoded"),
            Ok(CloudFrontPath::File("/already%2Fencoded".into()))
        );
        assert_eq!(f("/50%"), Ok(CloudFrontPath::File("/50%25".into())));
        assert_eq!(
            f("/a~b-c_d.e"),
            Ok(CloudFrontPath::File("/a~b-c_d.e".into()))
        );
        assert_eq!(f("/img/*"), Ok(CloudFrontPath::Wildcard("/img/*".into())));
        assert_eq!(
            f("#product-42"),
            Ok(CloudFrontPath::Tag("#product-42".into()))
        );
        assert!(f("/a*/b").is_err());
        assert!(f("/a**").is_err());
        assert!(f("").is_err());
        assert!(
            f("https://evil.example.org/x")
                .expect_err("foreign host")
                .contains("not a domain")
        );
        assert_eq!(
            cloudfront(&t, PurgeKind::Directory, "/img"),
            Ok(CloudFrontPath::Wildcard("/img/*".into()))
        );
        assert_eq!(
            cloudfront(&t, PurgeKind::Directory, "/img/"),
            Ok(CloudFrontPath::Wildcard("/img/*".into()))
        );
        assert!(cloudfront(&t, PurgeKind::Prewarm, "/a").is_err());
        let long = format!("/{}", "\u{e9}".repeat(700));
        assert!(long.len() < MAX_PATH_LEN, "short before encoding");
        assert!(
            f(&long)
                .expect_err("long once encoded")
                .contains("once percent-encoded")
        );
    }

    #[test]
    fn cache_tags_are_checked_as_documented() {
        let t = cf();
        let tag = |s| cloudfront(&t, PurgeKind::CacheTag, s);
        assert_eq!(
            tag("product-42"),
            Ok(CloudFrontPath::Tag("#product-42".into()))
        );
        assert_eq!(
            tag("#Product-42"),
            Ok(CloudFrontPath::Tag("#Product-42".into()))
        );
        assert!(tag("a,b").is_err());
        assert!(tag("a b").is_err());
        assert!(tag("caf\u{e9}").is_err());
        let (long, longest) = ("x".repeat(257), "x".repeat(256));
        assert!(tag(&long).is_err());
        assert!(tag(&longest).is_ok());
        let mut off = cf();
        off.cache_tags = false;
        assert!(
            cloudfront(&off, PurgeKind::CacheTag, "a")
                .expect_err("not declared")
                .contains("cache_tags = true")
        );
        let mut ali = cf();
        ali.provider = ProviderKind::Aliyun;
        assert_eq!(
            aliyun(&ali, PurgeKind::CacheTag, "#Tag1").as_deref(),
            Ok("Tag1")
        );
        assert!(aliyun(&ali, PurgeKind::CacheTag, "a,b").is_err());
    }

    #[test]
    fn aliyun_items_become_full_urls_on_the_domain() {
        let mut t = cf();
        t.provider = ProviderKind::Aliyun;
        assert_eq!(
            aliyun(&t, PurgeKind::File, "/a b.png").as_deref(),
            Ok("https://cdn.example.com/a%20b.png")
        );
        assert_eq!(
            aliyun(&t, PurgeKind::Directory, "https://cdn.example.com/img").as_deref(),
            Ok("https://cdn.example.com/img/")
        );
        assert!(aliyun(&t, PurgeKind::File, "/img/*").is_err());
        assert!(aliyun(&t, PurgeKind::File, "#tag").is_err());
        assert!(aliyun(&t, PurgeKind::File, "http://other.example/x").is_err());
        // 1,024 characters as sent is the most; encoding counts ("https://cdn.example.com"
        // is 23).
        let fits = format!("/{}", "a".repeat(1_024 - 24));
        assert_eq!(
            aliyun(&t, PurgeKind::File, &fits).map(|u| u.len()),
            Ok(1_024)
        );
        let over = format!("/{}", "a".repeat(1_024 - 23));
        let e = aliyun(&t, PurgeKind::File, &over).expect_err("1,025");
        assert!(e.contains("1025 characters") && e.contains("1024"), "{e}");
        let encoded = format!("/{}", "a b".repeat(250));
        assert!(encoded.len() < 1_024);
        let e = aliyun(&t, PurgeKind::File, &encoded).expect_err("1,275 once encoded");
        assert!(e.contains("percent-encoding included"), "{e}");
    }
}
