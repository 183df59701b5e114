//! Checks a signed URL (or a request with signed cookies) the way CloudFront would: is the
//! signature valid for the policy under the key its `Key-Pair-Id` names, and does the
//! policy admit this URL now? Every reason it would be refused is reported, each with a
//! [`Reason`]. Used by tests, by operators debugging an `AccessDenied` (`cdnsign verify`),
//! and by the `VerifyUrls` / `VerifyCookies` RPCs.

mod key;
mod verdict;

use std::net::IpAddr;

use super::keys::HashAlg;
use super::policy::{IpRange, canned_json, cf_base64_decode, wildcard_match};

pub use key::{BadVerifyKey, VerifyKey};
pub use verdict::{Problem, Reason, Verdict};

/// Signing query parameters (and, with a `CloudFront-` prefix, cookie names).
const SIGNING_PARAMS: [&str; 5] = [
    "Expires",
    "Policy",
    "Signature",
    "Key-Pair-Id",
    "Hash-Algorithm",
];

/// Verifies `signed_url` with `key` at time `now`, whatever key id the URL names.
/// `client_ip`, when known, is checked against an `IpAddress` condition.
pub fn verify_url(
    signed_url: &str,
    key: &VerifyKey,
    now: i64,
    client_ip: Option<IpAddr>,
) -> Verdict {
    verify_url_with(signed_url, |_| Ok(key), now, client_ip)
}

/// Verifies `signed_url` with the key its `Key-Pair-Id` names: `key_for(id)` gives the key
/// or says why there is none (a [`Reason::UnknownKey`] problem; the policy is still
/// checked, so every other reason is reported too).
pub fn verify_url_with<'k>(
    signed_url: &str,
    key_for: impl Fn(&str) -> Result<&'k VerifyKey, String>,
    now: i64,
    client_ip: Option<IpAddr>,
) -> Verdict {
    let mut v = Verdict::default();
    let Some((base, query)) = signed_url.split_once('?') else {
        v.unsigned_url = signed_url.to_owned();
        v.problem(Reason::Malformed, "no query string: the URL is not signed");
        return v;
    };
    let (mut expires, mut policy_b64, mut signature, mut hash) = (None, None, None, HashAlg::Sha1);
    let mut kept: Vec<&str> = Vec::new();
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "Expires" => expires = Some(value),
            "Policy" => policy_b64 = Some(value),
            "Signature" => signature = Some(value),
            "Key-Pair-Id" => v.key_pair_id = Some(value.to_owned()),
            "Hash-Algorithm" => match value {
                "SHA256" => hash = HashAlg::Sha256,
                "SHA1" => hash = HashAlg::Sha1,
                other => v.problem(
                    Reason::Malformed,
                    format!("Hash-Algorithm {other:?} is not SHA1 or SHA256"),
                ),
            },
            _ => kept.push(pair),
        }
    }
    v.unsigned_url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let key = match v.key_pair_id.as_deref() {
        None => {
            v.problem(Reason::Malformed, "missing Key-Pair-Id");
            None
        }
        Some(id) => match key_for(id) {
            Ok(k) => Some(k),
            Err(why) => {
                v.problem(Reason::UnknownKey, why);
                None
            }
        },
    };
    let policy = match (expires, policy_b64) {
        (Some(_), Some(_)) => {
            v.problem(Reason::Malformed, "has both Expires and Policy");
            return v;
        }
        // Only the form we sign: the canned policy is rebuilt from this text, and `+5` or
        // `05` would read as the number 5 here but not as the policy that was signed.
        (Some(e), None) => match e.parse::<i64>() {
            Ok(n) if e == n.to_string() && n >= 0 => canned_json(&v.unsigned_url, n),
            _ => {
                v.problem(
                    Reason::Malformed,
                    format!("Expires {e:?} is not a number of seconds (decimal digits, no sign or leading zero)"),
                );
                return v;
            }
        },
        (None, Some(p)) => {
            v.custom = true;
            match cf_base64_decode(p).map(String::from_utf8) {
                Some(Ok(text)) => text,
                _ => {
                    v.problem(
                        Reason::Malformed,
                        "Policy is not CloudFront base64 of UTF-8 JSON",
                    );
                    return v;
                }
            }
        }
        (None, None) => {
            v.problem(Reason::Malformed, "missing Expires or Policy");
            return v;
        }
    };
    match signature.map(cf_base64_decode) {
        Some(Some(sig)) => {
            if let Some(key) = key {
                v.signature_valid = key.verify(hash, policy.as_bytes(), &sig);
                if !v.signature_valid {
                    v.problem(
                        Reason::Signature,
                        "signature does not match the policy under this public key",
                    );
                }
            }
        }
        Some(None) => v.problem(Reason::Malformed, "Signature is not CloudFront base64"),
        None => v.problem(Reason::Malformed, "missing Signature"),
    }
    let url = std::mem::take(&mut v.unsigned_url);
    check_policy(&policy, &url, now, client_ip, &mut v);
    v.unsigned_url = url;
    v.policy = Some(policy);
    v
}

/// Verifies a request for `url` carrying CloudFront's signed cookies (`CloudFront-Policy`
/// or `CloudFront-Expires`, `CloudFront-Signature`, `CloudFront-Key-Pair-Id`,
/// `CloudFront-Hash-Algorithm`), given as name/value pairs; other cookies are ignored.
pub fn verify_cookies_with<'k>(
    url: &str,
    cookies: &[(&str, &str)],
    key_for: impl Fn(&str) -> Result<&'k VerifyKey, String>,
    now: i64,
    client_ip: Option<IpAddr>,
) -> Verdict {
    let mut query: Vec<String> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    let mut early = Verdict {
        unsigned_url: url.to_owned(),
        ..Verdict::default()
    };
    if url.is_empty() {
        early.problem(Reason::Malformed, "the request URL is empty");
    }
    for (name, value) in cookies {
        let Some(param) = name.strip_prefix("CloudFront-") else {
            continue;
        };
        if !SIGNING_PARAMS.contains(&param) {
            continue;
        }
        if seen.contains(&param) {
            early.problem(
                Reason::Malformed,
                format!("cookie {name} is sent more than once"),
            );
        }
        seen.push(param);
        query.push(format!("{param}={value}"));
    }
    if let Some((_, q)) = url.split_once('?')
        && let Some(p) = q
            .split('&')
            .map(|pair| pair.split_once('=').map_or(pair, |(n, _)| n))
            .find(|n| SIGNING_PARAMS.contains(n))
    {
        early.problem(
            Reason::Malformed,
            format!(
                "the URL's query already has {p:?}: CloudFront would read the signed URL, not \
                 the cookies (verify it with VerifyUrls)"
            ),
        );
    }
    if query.is_empty() {
        early.problem(
            Reason::Malformed,
            "no CloudFront-* signing cookies (CloudFront-Policy or CloudFront-Expires, \
             CloudFront-Signature, CloudFront-Key-Pair-Id)",
        );
    }
    if !early.problems.is_empty() {
        return early;
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    let mut v = verify_url_with(
        &format!("{url}{sep}{}", query.join("&")),
        key_for,
        now,
        client_ip,
    );
    for p in &mut v.problems {
        for param in SIGNING_PARAMS {
            p.message = p.message.replace(
                &format!("missing {param}"),
                &format!("missing cookie CloudFront-{param}"),
            );
        }
    }
    v
}

/// Splits a `Cookie` header value (`a=1; b=2`) into name/value pairs.
pub fn parse_cookie_header(header: &str) -> Vec<(&str, &str)> {
    header
        .split(';')
        .filter_map(|c| {
            let c = c.trim();
            (!c.is_empty()).then(|| c.split_once('=').unwrap_or((c, "")))
        })
        .map(|(n, v)| (n.trim(), v.trim()))
        .collect()
}

fn check_policy(policy: &str, url: &str, now: i64, client_ip: Option<IpAddr>, v: &mut Verdict) {
    let doc: serde_json::Value = match serde_json::from_str(policy) {
        Ok(doc) => doc,
        Err(e) => {
            v.problem(Reason::Malformed, format!("policy is not JSON: {e}"));
            return;
        }
    };
    let Some(statement) = doc
        .get("Statement")
        .and_then(|s| s.as_array())
        .and_then(|s| s.first())
    else {
        v.problem(Reason::Malformed, "policy has no Statement");
        return;
    };
    if let Some(resource) = statement.get("Resource").and_then(|r| r.as_str()) {
        v.resource = Some(resource.to_owned());
        if !wildcard_match(resource, url) {
            v.problem(
                Reason::Resource,
                format!("policy resource {resource:?} does not match the URL"),
            );
        }
    }
    let cond = &statement["Condition"];
    match cond["DateLessThan"]["AWS:EpochTime"].as_i64() {
        Some(exp) => {
            v.expires = Some(exp);
            if now >= exp {
                v.problem(Reason::Expired, format!("expired at {exp} (now {now})"));
            }
        }
        None => v.problem(Reason::Malformed, "policy has no DateLessThan"),
    }
    if let Some(start) = cond["DateGreaterThan"]["AWS:EpochTime"].as_i64() {
        v.not_before = Some(start);
        if now <= start {
            v.problem(
                Reason::NotYetValid,
                format!("not valid before {start} (now {now})"),
            );
        }
    }
    if let Some(range) = cond["IpAddress"]["AWS:SourceIp"].as_str() {
        v.ip_range = Some(range.to_owned());
        match (range.parse::<IpRange>(), client_ip) {
            (Err(e), _) => v.problem(Reason::Malformed, format!("policy IP range {range:?}: {e}")),
            (Ok(r), Some(ip)) if !r.contains(ip) => {
                v.problem(Reason::Ip, format!("client IP {ip} is outside {range}"));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public() -> VerifyKey {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config/dev-keys/TEST-ONLY-cloudfront.pub.pem");
        VerifyKey::from_pem(&std::fs::read_to_string(path).expect("pem")).expect("key")
    }

    fn reasons(v: &Verdict) -> Vec<Reason> {
        v.problems.iter().map(|p| p.reason).collect()
    }

    /// The CloudFront base64 signature of `policy` with the TEST ONLY key.
    fn signature(policy: &str) -> String {
        let pem = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("config/dev-keys/TEST-ONLY-cloudfront.pem"),
        )
        .expect("pem");
        let key = crate::signing::keys::SigningKey::from_pem(
            "K2JCJMDEHXQW5F",
            &pem,
            HashAlg::Sha1,
            crate::signing::keys::Backend::compiled()[0],
        )
        .expect("key");
        let pool = crate::signing::pool::SigningPool::new(1).expect("pool");
        let sig = pool
            .run_blocking(|p| key.sign(policy.as_bytes(), p))
            .expect("sign");
        crate::signing::policy::cf_base64(&sig)
    }

    fn signed() -> String {
        let sig = signature(&canned_json("https://d.example/a.ts", 2_000));
        format!("https://d.example/a.ts?Expires=2000&Signature={sig}&Key-Pair-Id=K2JCJMDEHXQW5F")
    }

    #[test]
    fn every_reason_is_reported_with_its_kind() {
        let key = public();
        let url = signed();
        assert!(verify_url(&url, &key, 1_000, None).valid());
        assert_eq!(
            reasons(&verify_url(&url, &key, 2_000, None)),
            [Reason::Expired]
        );
        let unknown = verify_url_with(&url, |id| Err(format!("no key {id}")), 2_500, None);
        assert_eq!(reasons(&unknown), [Reason::UnknownKey, Reason::Expired]);
        // A canned policy is rebuilt from the URL: another URL is a signature mismatch.
        let moved = url.replace("/a.ts", "/b.ts");
        assert_eq!(
            reasons(&verify_url(&moved, &key, 1_000, None)),
            [Reason::Signature]
        );
        // A custom policy names its resource, start and IP range.
        let policy = crate::signing::policy::PolicySpec {
            resource: "https://d.example/a/*",
            expires: 2_000,
            not_before: Some(1_500),
            ip: Some("192.0.2.0/24".parse().expect("cidr")),
        }
        .custom_json();
        let custom = format!(
            "https://d.example/b/x.ts?Policy={}&Signature={}&Key-Pair-Id=K2JCJMDEHXQW5F",
            crate::signing::policy::cf_base64(policy.as_bytes()),
            signature(&policy)
        );
        let ip = "198.51.100.7".parse().ok();
        let v = verify_url(&custom, &key, 1_000, ip);
        assert!(v.signature_valid);
        assert_eq!(
            reasons(&v),
            [Reason::Resource, Reason::NotYetValid, Reason::Ip]
        );
        assert_eq!(v.resource.as_deref(), Some("https://d.example/a/*"));
        assert_eq!((v.expires, v.not_before), (Some(2_000), Some(1_500)));
        assert_eq!(v.ip_range.as_deref(), Some("192.0.2.0/24"));
        let inside = custom.replace("/b/x.ts", "/a/x.ts");
        assert!(verify_url(&inside, &key, 1_600, "192.0.2.9".parse().ok()).valid());
        let at = url.find("Signature=").expect("sig") + "Signature=".len();
        let flip = if url[at..].starts_with('A') { "B" } else { "A" };
        let tampered = format!("{}{flip}{}", &url[..at], &url[at + 1..]);
        assert!(reasons(&verify_url(&tampered, &key, 1_000, None)).contains(&Reason::Signature));
        assert_eq!(
            reasons(&verify_url("https://d.example/a.ts", &key, 1_000, None)),
            [Reason::Malformed]
        );
    }

    #[test]
    fn cookies_verify_like_the_query() {
        let key = public();
        let url = signed();
        let query = url.split_once('?').expect("query").1;
        let pairs: Vec<(String, String)> = query
            .split('&')
            .filter_map(|p| p.split_once('='))
            .map(|(n, v)| (format!("CloudFront-{n}"), v.to_owned()))
            .collect();
        let header = pairs
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
            + "; other=1";
        let cookies = parse_cookie_header(&header);
        let ok = verify_cookies_with(
            "https://d.example/a.ts",
            &cookies,
            |_| Ok(&key),
            1_000,
            None,
        );
        assert!(ok.valid(), "{:?}", ok.problems);
        let other = verify_cookies_with(
            "https://d.example/c.ts",
            &cookies,
            |_| Ok(&key),
            1_000,
            None,
        );
        assert_eq!(reasons(&other), [Reason::Signature]);
        let none = verify_cookies_with("https://d.example/a.ts", &[], |_| Ok(&key), 1_000, None);
        assert_eq!(reasons(&none), [Reason::Malformed]);
        let without_sig: Vec<(&str, &str)> = cookies
            .iter()
            .copied()
            .filter(|(n, _)| *n != "CloudFront-Signature")
            .collect();
        let v = verify_cookies_with(
            "https://d.example/a.ts",
            &without_sig,
            |_| Ok(&key),
            1_000,
            None,
        );
        assert!(
            v.problems
                .iter()
                .any(|p| p.message == "missing cookie CloudFront-Signature"),
            "{:?}",
            v.problems
        );
    }
}
