//! Unit tests of [`super`]: dot segments (literal, encoded, with wildcards and `;`
//! parameters), encoded separators, and prefixes.

use super::*;

#[test]
fn dot_segments_in_every_spelling_are_found() {
    for (text, kind) in [
        ("https://d/private/../hls/x.ts", TextKind::Url),
        ("https://d/x/%2e%2e/hls/y", TextKind::Url),
        ("https://d/x/%2E%2e/hls/y", TextKind::Url),
        ("https://d/x/.%2E/hls/y", TextKind::Url),
        ("https://d/hls/./a", TextKind::Url),
        ("https://d/hls/%2e/a", TextKind::Url),
        ("https://d/hls/..", TextKind::Url),
        ("https://d/*/../hls/*", TextKind::Pattern),
        ("https://d/private/*/../../hls/*", TextKind::Pattern),
        ("https://d/*/%2e%2e/hls/*", TextKind::Pattern),
        ("https://d/hls/.*/x", TextKind::Pattern),
        ("https://d/hls/*../x", TextKind::Pattern),
        ("https://d/hls/.?/x", TextKind::Pattern),
        ("https://d/hls/x?/../y", TextKind::Pattern),
        ("../x", TextKind::Url),
        ("hls/../x", TextKind::Pattern),
    ] {
        assert!(find_dot_segment(text, kind).is_some(), "{text}");
    }
    for (text, kind) in [
        ("https://d/hls/a.b/x", TextKind::Url),
        ("https://d/hls/.../x", TextKind::Url),
        ("https://d/hls/.well-known/x", TextKind::Url),
        ("https://d/hls/x.ts?q=/../y", TextKind::Url),
        ("https://d/hls/*", TextKind::Pattern),
        ("https://d/hls/*.ts", TextKind::Pattern),
        ("https://d/hls/...*/x", TextKind::Pattern),
        ("https://d/hls/%2e%2e%2e", TextKind::Url),
        ("https://d/hls/x?", TextKind::Url),
    ] {
        assert_eq!(find_dot_segment(text, kind), None, "{text}");
    }
}

/// `..;x` is `..` to an origin that strips `;` path parameters before resolving dot
/// segments (Tomcat, Jetty, Spring), so it is refused wherever `..` is.
#[test]
fn path_parameters_do_not_hide_dot_segments() {
    for kind in [TextKind::Url, TextKind::Pattern] {
        for text in [
            "https://d111111abcdef8.cloudfront.net/hls/..;/private/x.ts",
            "https://d111111abcdef8.cloudfront.net/hls/%2e%2e%3b/private/x.ts",
            "https://d111111abcdef8.cloudfront.net/hls/%2E%2E%3B/private/x.ts",
            "https://d/hls/.;x/a",
            "https://d/hls/..;jsessionid=1/a",
            "https://d/hls/%2e%2e;/a",
            "https://d/hls/.%2e%3b/a",
            "https://d/hls/..%3Bx=1/a",
            "https://d/hls/..;",
            "https://d/hls/.;",
            "https://d/hls/..;a;b/x",
            "https://d/hls/..;%2F/x",
            "..;/x",
        ] {
            let dot = find_dot_segment(text, kind);
            assert!(dot.is_some(), "{text} ({kind:?})");
            let message = dot.map(|d| d.to_string()).unwrap_or_default();
            assert!(message.contains("dot segment"), "{message}");
            assert!(message.contains("';'"), "{message}");
        }
        for text in [
            "https://d/hls/a;b/x",
            "https://d/hls/file;v=1.ts",
            "https://d/hls/;/x",
            "https://d/hls/;..",
            "https://d/hls/...;x/y",
            "https://d/hls/a..;/y",
            "https://d/hls/a%3b../y",
            "https://d/hls/%2e%2e%2e%3b/y",
            "https://d/hls/.x;y/z",
        ] {
            assert_eq!(find_dot_segment(text, kind), None, "{text} ({kind:?})");
        }
    }
    // In a pattern a wildcard can stand for the ';' as well as for a dot.
    for text in [
        "https://d/hls/..;/private/*",
        "https://d/hls/..?x/private/*",
        "https://d/hls/..*x/private/*",
        "https://d/hls/.?jsessionid=1/a",
        "https://d/hls/?.?x/a",
        "https://d/hls/.*;x/a",
    ] {
        assert!(
            find_dot_segment(text, TextKind::Pattern).is_some(),
            "{text}"
        );
    }
    for text in [
        "https://d/hls/a;b/*",
        "https://d/hls/file;v=*.ts",
        "https://d/hls/*;v=1/x",
        "https://d/hls/seg?.ts;v=1",
        "https://d/hls/*.ts",
    ] {
        assert_eq!(find_dot_segment(text, TextKind::Pattern), None, "{text}");
    }
    // After the query a URL's ';' is the query's business.
    assert_eq!(
        find_dot_segment("https://d/hls/x.ts?a=..;/b", TextKind::Url),
        None
    );
}

#[test]
fn a_grant_prefix_with_a_path_parameter_dot_segment_is_refused() {
    assert!(matches!(
        Prefix::parse("https://d/hls/..;/private/"),
        Err(PrefixError::DotSegment(_))
    ));
    assert!(Prefix::parse("https://d/hls;v=1/").is_ok());
}

fn prefix() -> Prefix {
    Prefix::parse("https://d111111abcdef8.cloudfront.net/hls/").expect("prefix")
}

#[test]
fn prefixes_are_compared_literally_after_the_host() {
    let p = prefix();
    for (text, kind) in [
        (
            "https://d111111abcdef8.cloudfront.net/hls/a.ts",
            TextKind::Url,
        ),
        (
            "HTTPS://D111111ABCDEF8.cloudfront.net:443/hls/a",
            TextKind::Url,
        ),
        (
            "https://d111111abcdef8.cloudfront.net/hls/a?x=/../b",
            TextKind::Url,
        ),
        (
            "https://d111111abcdef8.cloudfront.net/hls/*",
            TextKind::Pattern,
        ),
        (
            "https://d111111abcdef8.cloudfront.net/hls/seg?.ts",
            TextKind::Pattern,
        ),
    ] {
        assert!(p.covers(text, kind), "{text}");
    }
    for (text, kind) in [
        (
            "https://d111111abcdef8.cloudfront.net/*/../hls/*",
            TextKind::Pattern,
        ),
        (
            "https://d111111abcdef8.cloudfront.net/hl*",
            TextKind::Pattern,
        ),
        (
            "https://d111111abcdef8.cloudfront.net/hls*",
            TextKind::Pattern,
        ),
        ("https://d111111abcdef8.cloudfront.net/*", TextKind::Pattern),
        (
            "https://d111111abcdef8.cloudfront.net*/hls/x",
            TextKind::Pattern,
        ),
        (
            "http*://d111111abcdef8.cloudfront.net/hls/x",
            TextKind::Pattern,
        ),
        ("https://*.cloudfront.net/hls/x", TextKind::Pattern),
        ("*", TextKind::Pattern),
        (
            "https://d111111abcdef8.cloudfront.net/%68ls/a",
            TextKind::Url,
        ),
        ("https://d111111abcdef8.cloudfront.net/HLS/a", TextKind::Url),
        ("https://d111111abcdef8.cloudfront.net/hls", TextKind::Url),
        ("https://d111111abcdef8.cloudfront.net?/hls/", TextKind::Url),
        (
            "https://d111111abcdef8.cloudfront.net@evil.example/hls/x",
            TextKind::Url,
        ),
        ("https://evil.example/hls/x", TextKind::Url),
        ("http://d111111abcdef8.cloudfront.net/hls/x", TextKind::Url),
        (
            "https://d111111abcdef8.cloudfront.net:8443/hls/x",
            TextKind::Url,
        ),
        (
            "https://d111111abcdef8.cloudfront.net.evil.example/hls/x",
            TextKind::Url,
        ),
        ("/hls/x", TextKind::Url),
    ] {
        assert!(!p.covers(text, kind), "{text}");
    }
}

#[test]
fn a_host_wide_prefix_ends_at_the_host() {
    let p = Prefix::parse("https://cdn.example.com").expect("prefix");
    assert_eq!(p.to_string(), "https://cdn.example.com/");
    assert!(p.covers("https://cdn.example.com/a", TextKind::Url));
    assert!(!p.covers("https://cdn.example.com", TextKind::Url));
    assert!(!p.covers("https://cdn.example.com?a", TextKind::Url));
    assert!(p.covers("https://cdn.example.com/*", TextKind::Pattern));
    assert!(!p.covers("https://cdn.example.com*", TextKind::Pattern));
    assert!(!p.covers("https://cdn.example.com.evil/a", TextKind::Url));
    assert!(!p.covers("https://cdn.example.com:444/a", TextKind::Url));
}

#[test]
fn configured_prefixes_are_checked() {
    assert_eq!(
        Prefix::parse("HTTP://CDN.example.com:80/a/b/").map(|p| p.to_string()),
        Ok("http://cdn.example.com/a/b/".to_owned())
    );
    assert_eq!(Prefix::parse("https://d/*"), Err(PrefixError::Wildcard));
    assert_eq!(Prefix::parse("ftp://d/"), Err(PrefixError::Scheme));
    assert_eq!(Prefix::parse("https://u@d/"), Err(PrefixError::UserInfo));
    assert_eq!(Prefix::parse("https:///x"), Err(PrefixError::NoHost));
    assert!(matches!(
        Prefix::parse("https://d/a/../b/"),
        Err(PrefixError::DotSegment(_))
    ));
    assert_eq!(Prefix::parse("https://d/a b"), Err(PrefixError::Characters));
}

#[test]
fn encoded_separators_are_seen_in_the_path_only() {
    assert!(has_encoded_separator(
        "https://d/hls/a%2F..%2Fx",
        TextKind::Url
    ));
    assert!(has_encoded_separator("https://d/hls/a%5cb", TextKind::Url));
    assert!(!has_encoded_separator(
        "https://d/hls/a?x=%2F",
        TextKind::Url
    ));
    assert!(has_encoded_separator(
        "https://d/hls/a?x=%2F",
        TextKind::Pattern
    ));
}
