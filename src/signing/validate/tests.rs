//! What `prepare` refuses and signs, with and without a grant: above all that a URL which
//! becomes a custom policy's `Resource` is read the way CloudFront reads a Resource.

use std::sync::Arc;

use super::*;
use crate::access::GrantParts;
use crate::access::resource::Prefix;
use crate::signing::keys::{Backend, HashAlg};

const KEY_ID: &str = "K2JCJMDEHXQW5F";
const NOW: i64 = 1_700_000_000;
const HLS: &str = "https://d111111abcdef8.cloudfront.net/hls/";

fn keys() -> KeySet {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/dev-keys/TEST-ONLY-cloudfront.pem");
    let pem = std::fs::read_to_string(&path).expect("TEST ONLY key");
    KeySet::from_keys([
        SigningKey::from_pem(KEY_ID, &pem, HashAlg::Sha1, Backend::default()).expect("key"),
    ])
}

fn ctx(keys: &KeySet, granted: bool) -> BatchContext {
    BatchContext {
        default_key: keys.get(KEY_ID),
        default_key_id: KEY_ID.into(),
        ttl_seconds: 600,
        max_ttl_seconds: 3600,
        now: NOW,
        grant: granted.then(|| {
            Arc::new(Grant::new(GrantParts {
                name: "playlist-generator".into(),
                keys: vec![KEY_ID.into()],
                prefixes: vec![Prefix::parse(HLS).expect("prefix")],
                ..GrantParts::default()
            }))
        }),
        ..BatchContext::default()
    }
}

/// The ways an item without `policy_resource` gets a custom policy whose Resource is its
/// URL: the item's switch, the batch's, `ip_range`, `not_before`.
fn custom_ways(url: &str) -> Vec<(&'static str, ItemSpec<'_>, bool)> {
    let item = ItemSpec {
        url,
        ..ItemSpec::default()
    };
    vec![
        (
            "custom_policy",
            ItemSpec {
                custom_policy: true,
                ..item
            },
            false,
        ),
        ("batch custom_policy", item, true),
        (
            "ip_range",
            ItemSpec {
                ip_range: "192.0.2.0/24",
                ..item
            },
            false,
        ),
        (
            "not_before",
            ItemSpec {
                not_before: NOW - 60,
                ..item
            },
            false,
        ),
    ]
}

fn prepare_as(
    spec: &ItemSpec<'_>,
    granted: bool,
    batch_custom: bool,
) -> Result<Prepared, SignError> {
    let keys = keys();
    let mut ctx = ctx(&keys, granted);
    ctx.custom_policy = batch_custom;
    prepare(spec, &ctx, &keys)
}

fn canned(url: &str, granted: bool) -> Result<Prepared, SignError> {
    prepare_as(
        &ItemSpec {
            url,
            ..ItemSpec::default()
        },
        granted,
        false,
    )
}

#[test]
fn a_url_that_becomes_a_custom_resource_cannot_carry_a_dot_segment_past_a_wildcard() {
    for url in [
        // `?` is one character in a Resource, so the query below is path.
        "https://d111111abcdef8.cloudfront.net/hls/a?/../../x",
        "https://d111111abcdef8.cloudfront.net/hls/a.ts?p=/../../private/x.ts",
        "https://d111111abcdef8.cloudfront.net/hls/?/..;/private/x.ts",
        // `*` can make `..`.
        "https://d111111abcdef8.cloudfront.net/hls/.*/x",
        "https://d111111abcdef8.cloudfront.net/hls/*../private/x",
        "https://d111111abcdef8.cloudfront.net/hls/..*x/private/x",
    ] {
        for granted in [false, true] {
            // Canned, the URL is one literal string and its query is not path: signed,
            // except where a wildcard makes the dot segment in the path itself.
            if !url.contains('*') {
                let p = canned(url, granted).unwrap_or_else(|e| panic!("{url}: {e}"));
                assert!(!p.custom, "{url}");
            }
            for (how, spec, batch) in custom_ways(url) {
                match prepare_as(&spec, granted, batch) {
                    Err(SignError::Invalid {
                        field: Field::Url,
                        reason,
                    }) => {
                        assert!(reason.contains("dot segment"), "{url} ({how}): {reason}");
                        assert!(
                            reason.contains("custom policy's Resource"),
                            "{url} ({how}): {reason}"
                        );
                        assert!(reason.contains("wildcards"), "{url} ({how}): {reason}");
                    }
                    other => panic!("{url} ({how}, granted {granted}): {other:?}"),
                }
            }
        }
    }
}

#[test]
fn a_url_that_becomes_a_custom_resource_is_checked_against_the_grant_as_a_pattern() {
    // Read as a Resource, the query is path that an origin decoding %2F resolves:
    // `/hls/a.tsXx=/../../private/x.ts` is `/private/x.ts`.
    let url = "https://d111111abcdef8.cloudfront.net/hls/a.ts?x=%2F..%2F..%2Fprivate/x.ts";
    assert!(canned(url, true).is_ok());
    for (how, spec, batch) in custom_ways(url) {
        match prepare_as(&spec, true, batch) {
            Err(SignError::Denied {
                field: Field::Url,
                reason,
            }) => {
                assert!(
                    reason.contains("custom policy's Resource"),
                    "{how}: {reason}"
                );
                assert!(reason.contains("%2F"), "{how}: {reason}");
            }
            other => panic!("{how}: {other:?}"),
        }
        // Without a grant there is no prefix to leave (as for a policy_resource).
        assert!(prepare_as(&spec, false, batch).is_ok(), "{how}");
    }
}

#[test]
fn ordinary_urls_still_sign_with_a_custom_policy() {
    for url in [
        "https://d111111abcdef8.cloudfront.net/hls/a.ts",
        "https://d111111abcdef8.cloudfront.net/hls/a.ts?x=1",
        "https://d111111abcdef8.cloudfront.net/hls/a.ts?x=1&next=../y",
        "https://d111111abcdef8.cloudfront.net/hls/a.ts?",
        "https://d111111abcdef8.cloudfront.net/hls/seg;v=1.ts?x=a;b",
        "https://d111111abcdef8.cloudfront.net/hls/a;b/c.ts",
        "https://d111111abcdef8.cloudfront.net/hls/a*.ts",
    ] {
        for granted in [false, true] {
            for (how, spec, batch) in custom_ways(url) {
                let p = prepare_as(&spec, granted, batch)
                    .unwrap_or_else(|e| panic!("{url} ({how}, granted {granted}): {e}"));
                assert!(p.custom);
                let doc: serde_json::Value = serde_json::from_str(&p.policy).expect("json");
                assert_eq!(doc["Statement"][0]["Resource"].as_str(), Some(url));
            }
        }
    }
}

#[test]
fn an_explicit_resource_leaves_the_url_a_url() {
    let spec = ItemSpec {
        url: "https://d111111abcdef8.cloudfront.net/hls/a.ts?p=/../x",
        policy_resource: "https://d111111abcdef8.cloudfront.net/hls/*",
        ..ItemSpec::default()
    };
    for granted in [false, true] {
        let p = prepare_as(&spec, granted, false).expect("signs");
        assert!(p.custom);
    }
}

#[test]
fn path_parameter_dot_segments_are_refused_in_urls_and_resources() {
    for url in [
        "https://d111111abcdef8.cloudfront.net/hls/..;/private/x.ts",
        "https://d111111abcdef8.cloudfront.net/hls/%2e%2e%3b/private/x.ts",
        "https://d111111abcdef8.cloudfront.net/hls/..;jsessionid=1/private/x.ts",
        "https://d111111abcdef8.cloudfront.net/hls/.;x/a.ts",
    ] {
        for granted in [false, true] {
            match canned(url, granted) {
                Err(SignError::Invalid {
                    field: Field::Url,
                    reason,
                }) => assert!(reason.contains("dot segment"), "{url}: {reason}"),
                other => panic!("{url}: {other:?}"),
            }
        }
    }
    for resource in [
        "https://d111111abcdef8.cloudfront.net/hls/..;/private/*",
        "https://d111111abcdef8.cloudfront.net/hls/%2e%2e%3b/private/*",
        "https://d111111abcdef8.cloudfront.net/hls/..?x/private/*",
    ] {
        let spec = ItemSpec {
            url: "https://d111111abcdef8.cloudfront.net/hls/ok.ts",
            policy_resource: resource,
            ..ItemSpec::default()
        };
        for granted in [false, true] {
            match prepare_as(&spec, granted, false) {
                Err(SignError::Invalid {
                    field: Field::PolicyResource,
                    reason,
                }) => assert!(reason.contains("dot segment"), "{resource}: {reason}"),
                other => panic!("{resource}: {other:?}"),
            }
        }
    }
    for url in [
        "https://d111111abcdef8.cloudfront.net/hls/a;b/x.ts",
        "https://d111111abcdef8.cloudfront.net/hls/file;v=1.ts",
    ] {
        assert!(canned(url, true).is_ok(), "{url}");
    }
}
