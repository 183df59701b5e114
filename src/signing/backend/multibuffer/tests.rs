//! The multi-buffer backend through `sign_batch`, against OpenSSL: lanes filled 1 to 8 (and
//! past 8), keys mixed within a batch, bad items among good ones, the verify-before-release
//! check. Each test reports itself skipped, by name, where crypto_mb is absent or the CPU
//! lacks AVX-512 IFMA.

use std::io::Write as _;
use std::sync::Arc;

use super::engine::{Engine, engine};
use crate::signing::keys::{Backend, HashAlg, KeySet, SigningKey};
use crate::signing::pool::{SigningPool, Site};
use crate::signing::validate::{BatchContext, ItemSpec};
use crate::signing::verify::{VerifyKey, verify_url};
use crate::signing::{SignError, sign_batch};

pub(crate) const NOW: i64 = 1_700_000_000;

/// The engine, or a "SKIPPED <test>: <why>" line on stderr (written past the test
/// harness's capture, so the suite's output shows it) and `None`. With
/// `CDNSIGN_TEST_REQUIRE_MULTIBUFFER=1` (scripts/test.sh sets it on CPUs with AVX-512 IFMA)
/// an unavailable engine fails the test instead of skipping it.
pub(crate) fn engine_or_skip(test: &str) -> Option<Arc<Engine>> {
    match engine() {
        Ok(e) => Some(e),
        Err(why) => {
            if std::env::var_os("CDNSIGN_TEST_REQUIRE_MULTIBUFFER").is_some_and(|v| v == "1") {
                panic!(
                    "{test}: CDNSIGN_TEST_REQUIRE_MULTIBUFFER=1, but the multi-buffer backend \
                     is unavailable: {why}"
                );
            }
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
            None
        }
    }
}

pub(crate) fn repo_file(rel: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// (id, private PEM, public PEM, digest) of the keys the tests sign with.
const KEYS: [(&str, &str, &str, HashAlg); 4] = [
    (
        "KRSA1",
        "config/dev-keys/TEST-ONLY-cloudfront.pem",
        "config/dev-keys/TEST-ONLY-cloudfront.pub.pem",
        HashAlg::Sha1,
    ),
    (
        "KRSA256",
        "tests/fixtures/keys/rsa2-pkcs1.pem",
        "tests/fixtures/keys/rsa2.pub.pem",
        HashAlg::Sha256,
    ),
    (
        "KEC256",
        "tests/fixtures/keys/ec-p256.pem",
        "tests/fixtures/keys/ec-p256.pub.pem",
        HashAlg::Sha256,
    ),
    (
        "KEC1",
        "tests/fixtures/keys/ec-p256.pem",
        "tests/fixtures/keys/ec-p256.pub.pem",
        HashAlg::Sha1,
    ),
];

pub(crate) fn keyset(backend: Backend, engine: Option<&Arc<Engine>>) -> KeySet {
    KeySet::from_keys(KEYS.iter().map(|(id, pem, _, hash)| {
        SigningKey::parse(id, &repo_file(pem), *hash, backend, engine).expect("key")
    }))
}

/// The same keys, every signature through the lanes (even a lone one).
fn keyset_all_lanes(engine: &Arc<Engine>) -> KeySet {
    keyset_with_fill(engine, 1)
}

/// The multi-buffer keys with a fixed [`SigningKey::min_lane_fill`] instead of this CPU's
/// measured one, for tests that count one-by-one flushes.
pub(crate) fn keyset_with_fill(engine: &Arc<Engine>, fill: usize) -> KeySet {
    KeySet::from_keys(KEYS.iter().map(|(id, pem, _, hash)| {
        SigningKey::parse(
            id,
            &repo_file(pem),
            *hash,
            Backend::Multibuffer,
            Some(engine),
        )
        .expect("key")
        .with_min_lane_fill(fill)
    }))
}

pub(crate) fn ctx(keys: &KeySet, default: &str) -> BatchContext {
    BatchContext {
        default_key: keys.get(default),
        default_key_id: default.into(),
        expires_at: 0,
        ttl_seconds: 3600,
        custom_policy: false,
        max_ttl_seconds: 86_400,
        now: NOW,
        grant: None,
    }
}

pub(crate) fn url(i: usize) -> String {
    format!("https://d111111abcdef8.cloudfront.net/hls/seg{i}.ts")
}

#[test]
fn rsa_lanes_filled_1_to_8_and_past_8_are_byte_identical_to_openssl() {
    let Some(engine) =
        engine_or_skip("rsa_lanes_filled_1_to_8_and_past_8_are_byte_identical_to_openssl")
    else {
        return;
    };
    let pool = SigningPool::new(2).expect("pool");
    let mb = keyset_all_lanes(&engine);
    let ossl = keyset(Backend::Openssl, None);
    assert_eq!(mb.get("KRSA1").expect("k").lanes(), 8);
    assert_eq!(mb.get("KRSA1").expect("k").min_lane_fill(), 1);
    for default in ["KRSA1", "KRSA256"] {
        for n in (1..=8).chain([9, 17]) {
            let urls: Vec<String> = (0..n).map(url).collect();
            let items: Vec<ItemSpec<'_>> = urls
                .iter()
                .map(|u| ItemSpec {
                    url: u,
                    ..ItemSpec::default()
                })
                .collect();
            let sign = |keys: &KeySet| {
                pool.run_blocking(|on| {
                    sign_batch(&items, &ctx(keys, default), keys, Site::Pool(on))
                })
            };
            let (ours, stats) = sign(&mb);
            let (want, _) = sign(&ossl);
            assert_eq!(stats.signatures, n);
            for (i, (a, b)) in ours.iter().zip(&want).enumerate() {
                assert_eq!(
                    a.as_ref().expect("signed").signed_url(),
                    b.as_ref().expect("signed").signed_url(),
                    "{default}: {n} lanes, item {i}"
                );
            }
        }
    }
}

#[test]
fn a_few_signatures_are_cheaper_one_by_one_and_identical() {
    let Some(engine) = engine_or_skip("a_few_signatures_are_cheaper_one_by_one_and_identical")
    else {
        return;
    };
    let pool = SigningPool::new(1).expect("pool");
    let keys = keyset(Backend::Multibuffer, Some(&engine));
    let key = keys.get("KRSA1").expect("key");
    // Measured on this CPU when the first such key loaded (calibrate.rs), and that
    // measurement is what the key uses.
    assert!((1..=cdnsign_cryptomb::LANES).contains(&key.min_lane_fill()));
    let measured = super::calibrate::min_lane_fill(
        "rsa_sha1",
        || panic!("measured once, when the first RSA-SHA1 key loaded"),
        || panic!("measured once, when the first RSA-SHA1 key loaded"),
    );
    assert_eq!(key.min_lane_fill(), measured);
    let msgs: Vec<&[u8]> = vec![b"one", b"two"];
    let (lanes, one_by_one) =
        pool.run_blocking(|on| (key.sign_lanes(&msgs, on), key.sign_one_by_one(&msgs, on)));
    for (a, b) in lanes.iter().zip(&one_by_one) {
        assert_eq!(a.as_ref().expect("lanes"), b.as_ref().expect("openssl"));
    }
}

#[test]
fn keys_mixed_in_a_batch_with_bad_items_among_good_ones() {
    let Some(engine) = engine_or_skip("keys_mixed_in_a_batch_with_bad_items_among_good_ones")
    else {
        return;
    };
    let pool = SigningPool::new(2).expect("pool");
    let mb = keyset(Backend::Multibuffer, Some(&engine));
    let ossl = keyset(Backend::Openssl, None);
    let urls: Vec<String> = (0..41).map(url).collect();
    let items: Vec<ItemSpec<'_>> = urls
        .iter()
        .enumerate()
        .map(|(i, u)| ItemSpec {
            url: if i == 13 { "not a url" } else { u },
            key_id: match i {
                20 => "NOPE",
                _ => KEYS[i % KEYS.len()].0,
            },
            ..ItemSpec::default()
        })
        .collect();
    let run = |keys: &KeySet| {
        pool.run_blocking(|on| sign_batch(&items, &ctx(keys, "KRSA1"), keys, Site::Pool(on)))
    };
    let (ours, stats) = run(&mb);
    let (want, _) = run(&ossl);
    assert_eq!((stats.signed, stats.failed), (39, 2));
    assert!(matches!(ours[13], Err(SignError::Invalid { .. })));
    assert!(matches!(ours[20], Err(SignError::UnknownKey(_))));
    for (i, (r, w)) in ours.iter().zip(&want).enumerate() {
        if i == 13 || i == 20 {
            continue;
        }
        let (id, _, public, _) = KEYS[i % KEYS.len()];
        let signed = r.as_ref().expect("signed").signed_url();
        assert!(signed.contains(&format!("Key-Pair-Id={id}")), "{signed}");
        let vk = VerifyKey::from_pem(&repo_file(public)).expect("public key");
        let v = verify_url(&signed, &vk, NOW + 1, None);
        assert!(v.valid(), "item {i} ({id}): {:?}", v.problems);
        if id.starts_with("KRSA") {
            // PKCS#1 v1.5 is deterministic: the same bytes as OpenSSL's.
            assert_eq!(signed, w.as_ref().expect("signed").signed_url(), "item {i}");
        }
    }
}

#[test]
fn ecdsa_lanes_are_der_and_fresh_each_time() {
    let Some(engine) = engine_or_skip("ecdsa_lanes_are_der_and_fresh_each_time") else {
        return;
    };
    let pool = SigningPool::new(1).expect("pool");
    let keys = keyset(Backend::Multibuffer, Some(&engine));
    let key = keys.get("KEC256").expect("ec");
    let msgs: Vec<&[u8]> = vec![b"same policy"; 8];
    let sigs = pool.run_blocking(|on| key.sign_lanes(&msgs, on));
    let ders: Vec<Vec<u8>> = sigs.into_iter().map(|s| s.expect("signed")).collect();
    for der in &ders {
        openssl::ecdsa::EcdsaSig::from_der(der).expect("DER ECDSA-Sig-Value");
    }
    // Nonces from OpenSSL's CSPRNG: eight signatures of one message, eight values.
    let distinct: std::collections::HashSet<&Vec<u8>> = ders.iter().collect();
    assert_eq!(distinct.len(), 8);
}
