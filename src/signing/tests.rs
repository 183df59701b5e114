//! Batch signing tests against the TEST ONLY key, on every compiled backend.

use std::sync::Arc;

use super::keys::{Backend, HashAlg, KeySet, SigningKey};
use super::pool::{SigningPool, Site};
use super::validate::{BatchContext, ItemSpec};
use super::verify::{VerifyKey, verify_url};
use super::*;

const KEY_ID: &str = "K2JCJMDEHXQW5F";
const NOW: i64 = 1_700_000_000;

fn repo_file(rel: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn keyset(backend: Backend) -> KeySet {
    let pem = repo_file("config/dev-keys/TEST-ONLY-cloudfront.pem");
    KeySet::from_keys([SigningKey::from_pem(KEY_ID, &pem, HashAlg::Sha1, backend).expect("key")])
}

fn ctx(keys: &KeySet) -> BatchContext {
    BatchContext {
        default_key: keys.get(KEY_ID),
        default_key_id: KEY_ID.into(),
        expires_at: 0,
        ttl_seconds: 3600,
        custom_policy: false,
        max_ttl_seconds: 86_400,
        now: NOW,
        grant: None,
    }
}

fn verify_key() -> VerifyKey {
    VerifyKey::from_pem(&repo_file("config/dev-keys/TEST-ONLY-cloudfront.pub.pem")).expect("pub")
}

#[test]
fn one_bad_item_in_a_thousand_fails_alone() {
    let pool = SigningPool::new(2).expect("pool");
    for backend in Backend::compiled() {
        let keys = keyset(backend);
        let urls: Vec<String> = (0..1000)
            .map(|i| {
                if i == 500 {
                    "not a url".to_owned()
                } else {
                    format!("https://d111111abcdef8.cloudfront.net/hls/seg{i}.ts")
                }
            })
            .collect();
        let items: Vec<ItemSpec<'_>> = urls
            .iter()
            .map(|u| ItemSpec {
                url: u,
                ..ItemSpec::default()
            })
            .collect();
        let (results, stats) =
            pool.run_blocking(|on| sign_batch(&items, &ctx(&keys), &keys, Site::Pool(on)));
        assert_eq!(results.len(), 1000);
        assert_eq!(stats.signed, 999);
        assert_eq!(stats.failed, 1);
        assert_eq!(stats.signatures, 999);
        let err = results[500].as_ref().expect_err("bad item");
        assert_eq!(err.field(), Some(Field::Url));
        let vk = verify_key();
        for (i, r) in results
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 500)
            .step_by(97)
        {
            let url = r.as_ref().expect("signed").signed_url();
            assert!(url.starts_with(&urls[i]), "{url}");
            let verdict = verify_url(&url, &vk, NOW + 10, None);
            assert!(verdict.valid(), "{backend:?} {url}: {:?}", verdict.problems);
        }
    }
}

#[test]
fn a_playlist_under_one_wildcard_policy_costs_one_signature() {
    let pool = SigningPool::new(2).expect("pool");
    let keys = keyset(Backend::default());
    let urls: Vec<String> = (0..10_000)
        .map(|i| format!("https://d111111abcdef8.cloudfront.net/hls/abc/seg{i}.ts"))
        .collect();
    let items: Vec<ItemSpec<'_>> = urls
        .iter()
        .map(|u| ItemSpec {
            url: u,
            policy_resource: "https://d111111abcdef8.cloudfront.net/hls/abc/*",
            ..ItemSpec::default()
        })
        .collect();
    let (results, stats) =
        pool.run_blocking(|on| sign_batch(&items, &ctx(&keys), &keys, Site::Pool(on)));
    assert_eq!(stats.signatures, 1);
    assert_eq!(stats.signed, 10_000);
    let vk = verify_key();
    for r in [&results[0], &results[9_999]] {
        let url = r.as_ref().expect("signed").signed_url();
        assert!(url.contains("?Policy="), "{url}");
        let v = verify_url(&url, &vk, NOW + 1, None);
        assert!(v.valid(), "{:?}", v.problems);
        assert!(v.custom);
    }
}

#[test]
fn existing_query_string_gets_an_ampersand() {
    let pool = SigningPool::new(1).expect("pool");
    let keys = keyset(Backend::default());
    let items = [ItemSpec {
        url: "https://d.example/a.m3u8?lang=en",
        ..ItemSpec::default()
    }];
    let (results, _) =
        pool.run_blocking(|on| sign_batch(&items, &ctx(&keys), &keys, Site::Pool(on)));
    let url = results[0].as_ref().expect("signed").signed_url();
    assert!(
        url.starts_with("https://d.example/a.m3u8?lang=en&Expires=1700003600&Signature="),
        "{url}"
    );
    assert!(url.ends_with("&Key-Pair-Id=K2JCJMDEHXQW5F"), "{url}");
    assert!(verify_url(&url, &verify_key(), NOW, None).valid());
    // The same signature over `+1700003600` or `01700003600` is not the signed policy.
    for other in ["+1700003600", "01700003600", "-0"] {
        let changed = url.replace("Expires=1700003600", &format!("Expires={other}"));
        let v = verify_url(&changed, &verify_key(), NOW, None);
        assert!(!v.valid(), "{changed}");
        assert!(
            v.problems
                .iter()
                .any(|p| p.message.contains("no sign or leading zero")),
            "{:?}",
            v.problems
        );
    }
}

#[test]
fn custom_conditions_are_enforced_by_verify() {
    let pool = SigningPool::new(1).expect("pool");
    let keys = keyset(Backend::default());
    let items = [ItemSpec {
        url: "https://d.example/v/a.mp4",
        not_before: NOW + 100,
        ip_range: "192.0.2.0/24",
        ..ItemSpec::default()
    }];
    let (results, _) =
        pool.run_blocking(|on| sign_batch(&items, &ctx(&keys), &keys, Site::Pool(on)));
    let url = results[0].as_ref().expect("signed").signed_url();
    let vk = verify_key();
    let early = verify_url(&url, &vk, NOW + 50, None);
    assert!(early.signature_valid && !early.valid(), "{early:?}");
    assert!(verify_url(&url, &vk, NOW + 200, Some("192.0.2.9".parse().expect("ip"))).valid());
    assert!(
        !verify_url(
            &url,
            &vk,
            NOW + 200,
            Some("198.51.100.1".parse().expect("ip"))
        )
        .valid()
    );
    assert!(!verify_url(&url, &vk, NOW + 3600, None).valid(), "expired");
    // Tampering with the URL breaks the resource match.
    let other = url.replace("/v/a.mp4", "/v/b.mp4");
    assert!(!verify_url(&other, &vk, NOW + 200, None).valid());
}

#[test]
fn expiry_rules() {
    let pool = SigningPool::new(1).expect("pool");
    let keys = keyset(Backend::default());
    let cases: [(ItemSpec<'_>, Field, &str); 5] = [
        (
            ItemSpec {
                url: "https://d/a",
                expires_at: NOW - 1,
                ..ItemSpec::default()
            },
            Field::ExpiresAt,
            "not in the future",
        ),
        (
            ItemSpec {
                url: "https://d/a",
                ttl_seconds: 86_401,
                ..ItemSpec::default()
            },
            Field::TtlSeconds,
            "max_ttl_seconds limit of 86400",
        ),
        (
            ItemSpec {
                url: "https://d/a",
                not_before: NOW + 7200,
                ..ItemSpec::default()
            },
            Field::NotBefore,
            "not before the expiry",
        ),
        (
            ItemSpec {
                url: "https://d/a",
                expires_at: NOW + 5,
                ttl_seconds: 5,
                ..ItemSpec::default()
            },
            Field::ExpiresAt,
            "only one",
        ),
        (
            ItemSpec {
                url: "https://d/a",
                ip_range: "300.1.1.1",
                ..ItemSpec::default()
            },
            Field::IpRange,
            "not an IPv4",
        ),
    ];
    let items: Vec<ItemSpec<'_>> = cases.iter().map(|c| c.0).collect();
    let (results, stats) =
        pool.run_blocking(|on| sign_batch(&items, &ctx(&keys), &keys, Site::Pool(on)));
    assert_eq!(stats.failed, cases.len());
    for (r, (_, field, text)) in results.iter().zip(&cases) {
        let e = r.as_ref().expect_err("must fail");
        assert_eq!(e.field(), Some(*field), "{e}");
        assert!(e.to_string().contains(text), "{e}");
    }
}

#[test]
fn unknown_key_is_per_item() {
    let pool = SigningPool::new(1).expect("pool");
    let keys = keyset(Backend::default());
    let items = [
        ItemSpec {
            url: "https://d/a",
            key_id: "NOPE",
            ..ItemSpec::default()
        },
        ItemSpec {
            url: "https://d/b",
            ..ItemSpec::default()
        },
    ];
    let (results, _) =
        pool.run_blocking(|on| sign_batch(&items, &ctx(&keys), &keys, Site::Pool(on)));
    assert!(matches!(results[0], Err(SignError::UnknownKey(_))));
    assert!(results[1].is_ok());
}

#[test]
fn cookies_carry_the_same_signature_as_the_url() {
    let pool = SigningPool::new(1).expect("pool");
    let keys = keyset(Backend::default());
    let items = [ItemSpec {
        url: "https://d.example/hls/index.m3u8",
        policy_resource: "https://d.example/hls/*",
        ..ItemSpec::default()
    }];
    let (results, _) =
        pool.run_blocking(|on| sign_batch(&items, &ctx(&keys), &keys, Site::Pool(on)));
    let item = results[0].as_ref().expect("signed");
    let cookies = item.cookies();
    let names: Vec<&str> = cookies.iter().map(|c| c.0).collect();
    assert_eq!(
        names,
        [
            "CloudFront-Policy",
            "CloudFront-Signature",
            "CloudFront-Key-Pair-Id"
        ]
    );
    assert!(
        item.signed_url()
            .contains(&format!("Signature={}&", cookies[1].1))
    );
    let _ = Arc::clone(&item.key);
}

#[test]
fn backends_agree_byte_for_byte() {
    let pool = SigningPool::new(1).expect("pool");
    let outs: Vec<String> = Backend::compiled()
        .into_iter()
        .map(|b| {
            let keys = keyset(b);
            let items = [ItemSpec {
                url: "https://d/a",
                ..ItemSpec::default()
            }];
            let (r, _) =
                pool.run_blocking(|on| sign_batch(&items, &ctx(&keys), &keys, Site::Pool(on)));
            r[0].as_ref().expect("signed").signed_url()
        })
        .collect();
    assert!(outs.windows(2).all(|w| w[0] == w[1]), "{outs:?}");
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever path a caller sends, the item either fails with a named field or
        /// signs to a URL that verifies under the public key and admits itself.
        #[test]
        fn sign_then_verify_round_trips(path in "\\PC{0,60}", query in proptest::option::of("[a-z0-9=&%]{0,20}"), custom in any::<bool>()) {
            let pool = SigningPool::new(1).expect("pool");
            let keys = keyset(Backend::default());
            let url = match &query {
                Some(q) => format!("https://d111111abcdef8.cloudfront.net/{path}?{q}"),
                None => format!("https://d111111abcdef8.cloudfront.net/{path}"),
            };
            let items = [ItemSpec { url: &url, custom_policy: custom, ..ItemSpec::default() }];
            let (results, _) = pool.run_blocking(|on| sign_batch(&items, &ctx(&keys), &keys, Site::Pool(on)));
            match &results[0] {
                Ok(item) => {
                    let signed = item.signed_url();
                    let v = verify_url(&signed, &verify_key(), NOW + 1, None);
                    prop_assert!(v.valid(), "{signed}: {:?}", v.problems);
                    // The policy is JSON that says exactly what was asked.
                    let doc: serde_json::Value = serde_json::from_str(v.policy.as_deref().unwrap_or("")).expect("policy json");
                    prop_assert_eq!(doc["Statement"][0]["Resource"].as_str(), Some(item.url.as_str()));
                    prop_assert_eq!(doc["Statement"][0]["Condition"]["DateLessThan"]["AWS:EpochTime"].as_i64(), Some(NOW + 3600));
                }
                Err(e) => prop_assert!(e.field().is_some(), "{e}"),
            }
        }

        /// Arbitrary field values never panic and never sign a policy that is not JSON.
        #[test]
        fn arbitrary_items_never_panic(url in ".{0,80}", resource in ".{0,40}", ip in ".{0,20}", exp in any::<i64>(), ttl in any::<i64>(), nb in any::<i64>()) {
            let pool = SigningPool::new(1).expect("pool");
            let keys = keyset(Backend::default());
            let items = [ItemSpec { url: &url, policy_resource: &resource, ip_range: &ip, expires_at: exp, ttl_seconds: ttl, not_before: nb, ..ItemSpec::default() }];
            let (results, _) = pool.run_blocking(|on| sign_batch(&items, &ctx(&keys), &keys, Site::Pool(on)));
            if let Ok(item) = &results[0] {
                let v = verify_url(&item.signed_url(), &verify_key(), NOW + 1, None);
                prop_assert!(v.signature_valid);
                prop_assert!(v.policy.as_deref().is_some_and(|p| serde_json::from_str::<serde_json::Value>(p).is_ok()));
            }
        }
    }
}

#[test]
fn on_the_caller_thread_ecdsa_signs_and_rsa_refuses() {
    for backend in Backend::compiled() {
        let rsa = SigningKey::from_pem(
            KEY_ID,
            &repo_file("config/dev-keys/TEST-ONLY-cloudfront.pem"),
            HashAlg::Sha1,
            backend,
        )
        .expect("rsa key");
        let ec = SigningKey::from_pem(
            "KEC",
            &repo_file("tests/fixtures/keys/ec-p256.pem"),
            HashAlg::Sha256,
            backend,
        )
        .expect("ec key");
        let keys = KeySet::from_keys([rsa, ec]);
        let items = [
            ItemSpec {
                url: "https://d111111abcdef8.cloudfront.net/ec.ts",
                key_id: "KEC",
                ..ItemSpec::default()
            },
            ItemSpec {
                url: "https://d111111abcdef8.cloudfront.net/rsa.ts",
                ..ItemSpec::default()
            },
        ];
        // No pool anywhere: this is the test thread.
        assert!(!pool::OnPool::is_pool_thread());
        let (results, stats) = sign_batch(&items, &ctx(&keys), &keys, Site::CallerThread);
        assert_eq!((stats.signed, stats.failed), (1, 1), "{backend:?}");
        let url = results[0].as_ref().expect("ec item signs").signed_url();
        let vk =
            VerifyKey::from_pem(&repo_file("tests/fixtures/keys/ec-p256.pub.pem")).expect("ec pub");
        let v = verify_url(&url, &vk, NOW, None);
        assert!(v.valid(), "{url}: {:?}", v.problems);
        match &results[1] {
            Err(SignError::Crypto(e)) => {
                assert!(e.to_string().contains("only on the signing pool"), "{e}")
            }
            other => panic!("{backend:?}: RSA signed off the pool: {other:?}"),
        }
    }
}
