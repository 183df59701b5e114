//! ECDSA P-256 and SHA-256 signing pinned against an independent implementation: the AWS
//! SDK for JavaScript v3 (`@aws-sdk/cloudfront-signer`), whose output is committed in
//! `tests/fixtures/sdk_js_vectors.json` (regenerate with `scripts/gen_sdk_js_vectors.sh`).
//!
//! Both directions are checked for every compiled backend:
//! - the SDK's URLs and cookies verify with `cdnsign::signing::verify`;
//! - cdnsign signs the same items; its URLs carry the same parameters (and, for the
//!   deterministic RSA cases, the same signature bytes); its ECDSA signatures are DER and
//!   verify with our verifier and with `openssl dgst -verify` and the fixture public key.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use cdnsign::signing::keys::{Backend, HashAlg, KeySet, SigningKey};
use cdnsign::signing::policy::{IpRange, cf_base64_decode};
use cdnsign::signing::pool::{SigningPool, Site};
use cdnsign::signing::validate::{BatchContext, ItemSpec};
use cdnsign::signing::verify::{VerifyKey, verify_url};
use cdnsign::signing::{SignedItem, sign_batch};
use serde_json::Value;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    let path = repo(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn vectors() -> Value {
    serde_json::from_str(&read("tests/fixtures/sdk_js_vectors.json")).expect("vectors json")
}

/// One vector, with the fields the tests use.
struct Case<'a> {
    name: &'a str,
    key_file: String,
    pub_file: String,
    key_pair_id: &'a str,
    ecdsa: bool,
    hash: HashAlg,
    url: &'a str,
    resource: Option<&'a str>,
    expires: i64,
    not_before: Option<i64>,
    ip: Option<&'a str>,
    policy: &'a str,
}

impl<'a> Case<'a> {
    fn from(doc: &'a Value, v: &'a Value) -> Case<'a> {
        let s = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("{k}"));
        let key = &doc["keys"][s("key")];
        Case {
            name: s("name"),
            key_file: key["private"].as_str().expect("private").to_owned(),
            pub_file: key["public"].as_str().expect("public").to_owned(),
            key_pair_id: s("key_pair_id"),
            ecdsa: s("key_type") == "ecdsa_p256",
            hash: match s("algorithm") {
                "SHA256" => HashAlg::Sha256,
                "SHA1" => HashAlg::Sha1,
                other => panic!("algorithm {other}"),
            },
            url: s("url"),
            resource: v["resource"].as_str(),
            expires: v["expires"].as_i64().expect("expires"),
            not_before: v["not_before"].as_i64(),
            ip: v["ip"].as_str(),
            policy: s("policy"),
        }
    }

    /// A time at which the policy is in force.
    fn now(&self) -> i64 {
        self.not_before.map_or(self.expires - 60, |nb| nb + 1)
    }

    fn client_ip(&self) -> Option<IpAddr> {
        self.ip
            .map(|ip| ip.parse::<IpRange>().expect("ip range").addr())
    }

    fn verify_key(&self) -> VerifyKey {
        VerifyKey::from_pem(&read(&self.pub_file)).expect("public key")
    }

    /// The public key parsed by `backend`'s own verifier.
    fn verify_key_with(&self, backend: Backend) -> VerifyKey {
        VerifyKey::from_pem_with(&read(&self.pub_file), backend).expect("public key")
    }
}

fn params(url: &str) -> Vec<(String, String)> {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let mut v: Vec<(String, String)> = query
        .split('&')
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect();
    v.sort();
    v
}

/// A cookie value as text (the SDK returns `CloudFront-Expires` as a number).
fn json_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn param<'u>(url: &'u str, name: &str) -> Option<&'u str> {
    url.split_once('?')?
        .1
        .split('&')
        .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
}

/// Rebuilds a URL from a cookie set, so the URL verifier can check the cookies.
fn url_from_cookies(base: &str, cookies: &[(String, String)]) -> String {
    let get = |n: &str| {
        cookies
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    let mut url = format!("{base}{}", if base.contains('?') { '&' } else { '?' });
    match (get("CloudFront-Policy"), get("CloudFront-Expires")) {
        (Some(p), None) => url.push_str(&format!("Policy={p}")),
        (None, Some(e)) => url.push_str(&format!("Expires={e}")),
        other => panic!("cookies must carry exactly one of Policy/Expires: {other:?}"),
    }
    url.push_str(&format!(
        "&Signature={}&Key-Pair-Id={}",
        get("CloudFront-Signature").expect("signature cookie"),
        get("CloudFront-Key-Pair-Id").expect("key pair id cookie")
    ));
    if let Some(h) = get("CloudFront-Hash-Algorithm") {
        url.push_str(&format!("&Hash-Algorithm={h}"));
    }
    url
}

/// A DER ECDSA-Sig-Value: SEQUENCE { INTEGER r, INTEGER s }, short-form lengths.
fn assert_der_ecdsa(sig: &[u8], what: &str) {
    assert!(
        sig.len() >= 8 && sig.len() <= 72,
        "{what}: {} bytes is not a DER P-256 signature",
        sig.len()
    );
    assert_eq!(sig[0], 0x30, "{what}: not a DER SEQUENCE");
    assert_eq!(
        usize::from(sig[1]),
        sig.len() - 2,
        "{what}: SEQUENCE length"
    );
    assert_eq!(sig[2], 0x02, "{what}: r is not an INTEGER");
    let r_len = usize::from(sig[3]);
    assert_eq!(sig[4 + r_len], 0x02, "{what}: s is not an INTEGER");
    assert_eq!(
        4 + r_len + 2 + usize::from(sig[5 + r_len]),
        sig.len(),
        "{what}: INTEGER lengths"
    );
}

/// `openssl dgst -<hash> -verify pub -signature sig msg` (the CLI is a peer the suite
/// installs: scripts/setup.sh).
fn openssl_cli_verify(hash: HashAlg, pub_file: &str, msg: &[u8], sig: &[u8]) -> bool {
    let dir = tempfile::tempdir().expect("tempdir");
    let (m, s) = (dir.path().join("msg"), dir.path().join("sig"));
    std::fs::write(&m, msg).expect("write msg");
    std::fs::write(&s, sig).expect("write sig");
    let out = Command::new("openssl")
        .arg("dgst")
        .arg(format!("-{}", hash.as_str()))
        .arg("-verify")
        .arg(repo(pub_file))
        .arg("-signature")
        .arg(&s)
        .arg(&m)
        .output()
        .expect("openssl CLI (scripts/setup.sh installs it)");
    out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "Verified OK"
}

#[test]
fn fixture_covers_ecdsa_and_sha256() {
    let doc = vectors();
    let cases = doc["cases"].as_array().expect("cases");
    let kinds: Vec<(bool, HashAlg, &str)> = cases
        .iter()
        .map(|v| {
            let c = Case::from(&doc, v);
            (c.ecdsa, c.hash, v["kind"].as_str().unwrap_or(""))
        })
        .collect();
    for want in [
        (true, HashAlg::Sha256, "canned"),
        (true, HashAlg::Sha256, "custom"),
        (true, HashAlg::Sha1, "canned"),
        (false, HashAlg::Sha256, "canned"),
        (false, HashAlg::Sha256, "custom"),
    ] {
        assert!(kinds.contains(&want), "no vector for {want:?}");
    }
}

#[test]
fn sdk_urls_and_cookies_verify_with_our_verifier() {
    let doc = vectors();
    for (v, backend) in doc["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .flat_map(|v| Backend::compiled().into_iter().map(move |b| (v, b)))
    {
        let c = Case::from(&doc, v);
        // Every backend's verifier accepts the SDK's signatures, not only the default one.
        let vk = c.verify_key_with(backend);
        let sdk_url = v["signed_url"].as_str().expect("signed_url");

        // The documented parameter: present exactly for SHA-256.
        assert_eq!(
            param(sdk_url, "Hash-Algorithm"),
            (c.hash == HashAlg::Sha256).then_some("SHA256"),
            "{}",
            c.name
        );
        let verdict = verify_url(sdk_url, &vk, c.now(), c.client_ip());
        assert!(verdict.valid(), "{} ({backend:?}): {verdict:?}", c.name);
        assert_eq!(verdict.policy.as_deref(), Some(c.policy), "{}", c.name);
        assert_eq!(verdict.unsigned_url, c.url, "{}", c.name);

        let sig = cf_base64_decode(param(sdk_url, "Signature").expect("Signature")).expect("b64");
        if c.ecdsa {
            assert_der_ecdsa(&sig, c.name);
        }

        // The digest is part of what is signed: dropping or changing Hash-Algorithm breaks it.
        if c.hash == HashAlg::Sha256 {
            let stripped = sdk_url.replace("&Hash-Algorithm=SHA256", "");
            let verdict = verify_url(&stripped, &vk, c.now(), c.client_ip());
            assert!(
                !verdict.signature_valid,
                "{} ({backend:?}): verified as SHA-1",
                c.name
            );
        }

        let cookies: Vec<(String, String)> = v["cookies"]
            .as_object()
            .expect("cookies")
            .iter()
            .map(|(k, v)| (k.clone(), json_text(v)))
            .collect();
        let from_cookies = url_from_cookies(c.url, &cookies);
        let verdict = verify_url(&from_cookies, &vk, c.now(), c.client_ip());
        assert!(
            verdict.valid(),
            "{} cookies ({backend:?}): {verdict:?}",
            c.name
        );
    }
}

fn sign_case(c: &Case<'_>, backend: Backend, pool: &SigningPool) -> SignedItem {
    let key = SigningKey::from_pem(c.key_pair_id, &read(&c.key_file), c.hash, backend)
        .unwrap_or_else(|e| panic!("{} {backend:?}: {e}", c.name))
        // On the multi-buffer backend, even this lone signature goes through the lanes.
        .with_min_lane_fill(1);
    let keys = KeySet::from_keys([key]);
    let ctx = BatchContext {
        default_key: keys.get(c.key_pair_id),
        default_key_id: c.key_pair_id.to_owned(),
        expires_at: 0,
        ttl_seconds: 0,
        custom_policy: false,
        max_ttl_seconds: i64::MAX,
        now: c.now(),
        grant: None,
    };
    let item = ItemSpec {
        url: c.url,
        policy_resource: c.resource.unwrap_or(""),
        expires_at: c.expires,
        not_before: c.not_before.unwrap_or(0),
        ip_range: c.ip.unwrap_or(""),
        key_id: c.key_pair_id,
        ..ItemSpec::default()
    };
    let (mut results, stats) =
        pool.run_blocking(|on| sign_batch(&[item], &ctx, &keys, Site::Pool(on)));
    assert_eq!(stats.signed, 1, "{}", c.name);
    results
        .pop()
        .expect("one result")
        .unwrap_or_else(|e| panic!("{} {backend:?}: {e}", c.name))
}

#[test]
fn our_signatures_match_or_verify_like_the_sdk() {
    let doc = vectors();
    let pool = SigningPool::new(1).expect("pool");
    let mut openssl_cli_checked = 0;
    let backends = crate::common::signing_backends(
        "sdk_js_vectors::our_signatures_match_or_verify_like_the_sdk",
    );
    let cases = doc["cases"].as_array().expect("cases").len();
    assert!(cases > 0 && !backends.is_empty());
    for &backend in &backends {
        for v in doc["cases"].as_array().expect("cases") {
            let c = Case::from(&doc, v);
            let what = format!("{} ({backend:?})", c.name);
            let vk = c.verify_key();
            let sdk_url = v["signed_url"].as_str().expect("signed_url");
            let ours = sign_case(&c, backend, &pool);
            let url = ours.signed_url();

            // Same parameters as the SDK (order aside), the signature only where ECDSA's
            // random nonce makes it differ.
            let mut ours_p = params(&url);
            let mut sdk_p = params(sdk_url);
            if c.ecdsa {
                ours_p.retain(|(k, _)| k != "Signature");
                sdk_p.retain(|(k, _)| k != "Signature");
            }
            assert_eq!(ours_p, sdk_p, "{what}: {url} vs {sdk_url}");

            let verdict = verify_url(&url, &vk, c.now(), c.client_ip());
            assert!(verdict.valid(), "{what}: {verdict:?}");
            assert_eq!(verdict.policy.as_deref(), Some(c.policy), "{what}");

            let sig = cf_base64_decode(param(&url, "Signature").expect("Signature")).expect("b64");
            if c.ecdsa {
                assert_der_ecdsa(&sig, &what);
            }
            assert!(
                openssl_cli_verify(c.hash, &c.pub_file, c.policy.as_bytes(), &sig),
                "{what}: openssl dgst -verify refused our signature"
            );
            openssl_cli_checked += 1;

            // Cookies: same names and values as the SDK's (signature aside for ECDSA), and
            // they verify.
            let cookies: Vec<(String, String)> = ours
                .cookies()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            let sdk_cookies = v["cookies"].as_object().expect("cookies");
            assert_eq!(cookies.len(), sdk_cookies.len(), "{what}: cookie count");
            for (name, value) in &cookies {
                let theirs = sdk_cookies.get(name.as_str()).map(json_text);
                assert!(theirs.is_some(), "{what}: SDK has no {name} cookie");
                if !(c.ecdsa && name == "CloudFront-Signature") {
                    assert_eq!(Some(value), theirs.as_ref(), "{what}: {name}");
                }
            }
            let verdict = verify_url(
                &url_from_cookies(c.url, &cookies),
                &vk,
                c.now(),
                c.client_ip(),
            );
            assert!(verdict.valid(), "{what} cookies: {verdict:?}");
        }
    }
    assert_eq!(
        openssl_cli_checked,
        cases * backends.len(),
        "every signature checked by openssl dgst"
    );
}
