//! Checks a signed URL the way CloudFront would: is the signature valid for the policy,
//! and does the policy admit this URL now? Used by tests and by operators debugging an
//! `AccessDenied` (`cdnsign verify`).

use std::net::IpAddr;

use super::keys::HashAlg;
use super::policy::{IpRange, canned_json, cf_base64_decode, wildcard_match};

/// A public key to verify with (RSA or ECDSA P-256, with either backend).
pub struct VerifyKey {
    #[cfg(feature = "openssl-backend")]
    key: openssl::pkey::PKey<openssl::pkey::Public>,
    #[cfg(all(feature = "pure-rust", not(feature = "openssl-backend")))]
    key: RustVerifyKey,
}

#[cfg(all(feature = "pure-rust", not(feature = "openssl-backend")))]
enum RustVerifyKey {
    Rsa(rsa::PublicKey),
    P256(p256::ecdsa::VerifyingKey),
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerifyKey")
    }
}

/// The PEM is neither a public key nor a private key we can derive one from.
#[derive(Debug, thiserror::Error)]
#[error("not a PEM public key (BEGIN PUBLIC KEY / BEGIN RSA PUBLIC KEY) or private key")]
pub struct BadVerifyKey;

impl VerifyKey {
    /// Parses a public key PEM; a private key PEM is accepted too (its public half is used).
    pub fn from_pem(pem: &str) -> Result<VerifyKey, BadVerifyKey> {
        let pem = pem.find("-----BEGIN").map_or(pem, |i| &pem[i..]);
        #[cfg(feature = "openssl-backend")]
        {
            use openssl::pkey::PKey;
            if let Ok(key) = PKey::public_key_from_pem(pem.as_bytes()) {
                return Ok(VerifyKey { key });
            }
            if let Ok(rsa) = openssl::rsa::Rsa::public_key_from_pem_pkcs1(pem.as_bytes()) {
                return PKey::from_rsa(rsa)
                    .map(|key| VerifyKey { key })
                    .map_err(|_| BadVerifyKey);
            }
            let private = PKey::private_key_from_pem(pem.as_bytes()).map_err(|_| BadVerifyKey)?;
            let der = private.public_key_to_der().map_err(|_| BadVerifyKey)?;
            let key = PKey::public_key_from_der(&der).map_err(|_| BadVerifyKey)?;
            Ok(VerifyKey { key })
        }
        #[cfg(all(feature = "pure-rust", not(feature = "openssl-backend")))]
        {
            use rsa::pkcs1::{DecodeRsaPrivateKey as _, DecodeRsaPublicKey as _};
            use rsa::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _};
            let rsa_key = rsa::PublicKey::from_public_key_pem(pem)
                .or_else(|_| rsa::PublicKey::from_pkcs1_pem(pem))
                .or_else(|_| {
                    rsa::PrivateKey::from_pkcs1_pem(pem)
                        .or_else(|_| rsa::PrivateKey::from_pkcs8_pem(pem))
                        .map(|k| k.to_public_key())
                });
            if let Ok(key) = rsa_key {
                return Ok(VerifyKey {
                    key: RustVerifyKey::Rsa(key),
                });
            }
            let ec = p256::ecdsa::VerifyingKey::from_public_key_pem(pem)
                .or_else(|_| {
                    p256::ecdsa::SigningKey::from_pkcs8_pem(pem)
                        .or_else(|_| p256::SecretKey::from_sec1_pem(pem).map(Into::into))
                        .map(|k| *k.verifying_key())
                })
                .map_err(|_| BadVerifyKey)?;
            Ok(VerifyKey {
                key: RustVerifyKey::P256(ec),
            })
        }
    }

    fn verify(&self, hash: HashAlg, msg: &[u8], sig: &[u8]) -> bool {
        #[cfg(feature = "openssl-backend")]
        {
            use openssl::hash::MessageDigest;
            let md = match hash {
                HashAlg::Sha1 => MessageDigest::sha1(),
                HashAlg::Sha256 => MessageDigest::sha256(),
            };
            openssl::sign::Verifier::new(md, &self.key)
                .and_then(|mut v| {
                    v.update(msg)?;
                    v.verify(sig)
                })
                .unwrap_or(false)
        }
        #[cfg(all(feature = "pure-rust", not(feature = "openssl-backend")))]
        {
            use rsa::signature::Verifier as _;
            let key = match &self.key {
                RustVerifyKey::Rsa(key) => key,
                RustVerifyKey::P256(key) => {
                    use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
                    use sha1::Digest as _;
                    let Ok(sig) = p256::ecdsa::Signature::from_der(sig) else {
                        return false;
                    };
                    let digest: Vec<u8> = match hash {
                        HashAlg::Sha1 => sha1::Sha1::digest(msg).to_vec(),
                        HashAlg::Sha256 => rsa::sha2::Sha256::digest(msg).to_vec(),
                    };
                    return key.verify_prehash(&digest, &sig).is_ok();
                }
            };
            let Ok(sig) = rsa::pkcs1v15::Signature::try_from(sig) else {
                return false;
            };
            match hash {
                HashAlg::Sha1 => rsa::pkcs1v15::VerifyingKey::<sha1::Sha1>::new(key.clone())
                    .verify(msg, &sig)
                    .is_ok(),
                HashAlg::Sha256 => {
                    rsa::pkcs1v15::VerifyingKey::<rsa::sha2::Sha256>::new(key.clone())
                        .verify(msg, &sig)
                        .is_ok()
                }
            }
        }
    }
}

/// What verification found. `valid()` only when the signature checks out and no
/// problem was found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// The signature matches the policy under the given key.
    pub signature_valid: bool,
    /// `Key-Pair-Id` from the URL.
    pub key_pair_id: Option<String>,
    /// Custom (`Policy=`) rather than canned (`Expires=`).
    pub custom: bool,
    /// The policy JSON that was (or would have been) signed.
    pub policy: Option<String>,
    /// The URL with the signing parameters removed.
    pub unsigned_url: String,
    /// `DateLessThan`.
    pub expires: Option<i64>,
    /// Everything that makes CloudFront refuse this URL now; empty when valid.
    pub problems: Vec<String>,
}

impl Verdict {
    /// Valid signature and nothing else wrong.
    pub fn valid(&self) -> bool {
        self.signature_valid && self.problems.is_empty()
    }
}

/// Verifies `signed_url` with `key` at time `now`. `client_ip`, when known, is checked
/// against an `IpAddress` condition.
pub fn verify_url(
    signed_url: &str,
    key: &VerifyKey,
    now: i64,
    client_ip: Option<IpAddr>,
) -> Verdict {
    let mut v = Verdict::default();
    let Some((base, query)) = signed_url.split_once('?') else {
        v.unsigned_url = signed_url.to_owned();
        v.problems
            .push("no query string: the URL is not signed".into());
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
                other => v
                    .problems
                    .push(format!("Hash-Algorithm {other:?} is not SHA1 or SHA256")),
            },
            _ => kept.push(pair),
        }
    }
    v.unsigned_url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    if v.key_pair_id.is_none() {
        v.problems.push("missing Key-Pair-Id".into());
    }
    let policy = match (expires, policy_b64) {
        (Some(_), Some(_)) => {
            v.problems.push("has both Expires and Policy".into());
            return v;
        }
        (Some(e), None) => match e.parse::<i64>() {
            Ok(e) => canned_json(&v.unsigned_url, e),
            Err(_) => {
                v.problems.push(format!("Expires {e:?} is not a number"));
                return v;
            }
        },
        (None, Some(p)) => {
            v.custom = true;
            match cf_base64_decode(p).map(String::from_utf8) {
                Some(Ok(text)) => text,
                _ => {
                    v.problems
                        .push("Policy is not CloudFront base64 of UTF-8 JSON".into());
                    return v;
                }
            }
        }
        (None, None) => {
            v.problems.push("missing Expires or Policy".into());
            return v;
        }
    };
    match signature.map(cf_base64_decode) {
        Some(Some(sig)) => v.signature_valid = key.verify(hash, policy.as_bytes(), &sig),
        Some(None) => v.problems.push("Signature is not CloudFront base64".into()),
        None => v.problems.push("missing Signature".into()),
    }
    if !v.signature_valid && signature.is_some() {
        v.problems
            .push("signature does not match the policy under this public key".into());
    }
    let url = std::mem::take(&mut v.unsigned_url);
    check_policy(&policy, &url, now, client_ip, &mut v);
    v.unsigned_url = url;
    v.policy = Some(policy);
    v
}

fn check_policy(policy: &str, url: &str, now: i64, client_ip: Option<IpAddr>, v: &mut Verdict) {
    let doc: serde_json::Value = match serde_json::from_str(policy) {
        Ok(doc) => doc,
        Err(e) => {
            v.problems.push(format!("policy is not JSON: {e}"));
            return;
        }
    };
    let Some(statement) = doc
        .get("Statement")
        .and_then(|s| s.as_array())
        .and_then(|s| s.first())
    else {
        v.problems.push("policy has no Statement".into());
        return;
    };
    if let Some(resource) = statement.get("Resource").and_then(|r| r.as_str())
        && !wildcard_match(resource, url)
    {
        v.problems.push(format!(
            "policy resource {resource:?} does not match the URL"
        ));
    }
    let cond = &statement["Condition"];
    match cond["DateLessThan"]["AWS:EpochTime"].as_i64() {
        Some(exp) => {
            v.expires = Some(exp);
            if now >= exp {
                v.problems.push(format!("expired at {exp} (now {now})"));
            }
        }
        None => v.problems.push("policy has no DateLessThan".into()),
    }
    if let Some(start) = cond["DateGreaterThan"]["AWS:EpochTime"].as_i64()
        && now <= start
    {
        v.problems
            .push(format!("not valid before {start} (now {now})"));
    }
    if let Some(range) = cond["IpAddress"]["AWS:SourceIp"].as_str() {
        match (range.parse::<IpRange>(), client_ip) {
            (Err(e), _) => v.problems.push(format!("policy IP range {range:?}: {e}")),
            (Ok(r), Some(ip)) if !r.contains(ip) => {
                v.problems
                    .push(format!("client IP {ip} is outside {range}"));
            }
            _ => {}
        }
    }
}
