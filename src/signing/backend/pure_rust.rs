//! The pure-Rust backend (feature `pure-rust`): `rsa` 0.10 for RSA, `p256` 0.14 for ECDSA,
//! for builds without OpenSSL. The `rsa` crate is not constant-time (RUSTSEC-2023-0071):
//! `cdnsign serve` refuses its RSA keys unless told otherwise (see `crate::live`).

use super::{NOT_A_KEY, Parsed, PrivateKey, PublicKey, rsa_off_pool};
use crate::signing::algorithm::{HashAlg, KeyKind, check_bits};
use crate::signing::errors::{CryptoError, KeyError};

enum RustKey {
    Sha1(Box<rsa::pkcs1v15::SigningKey<sha1::Sha1>>),
    Sha256(Box<rsa::pkcs1v15::SigningKey<rsa::sha2::Sha256>>),
    Ecdsa(Box<p256::ecdsa::SigningKey>),
}

/// Parses `pem` (RSA PKCS#1/PKCS#8, EC P-256 PKCS#8/SEC1) for the pure-Rust backend. The
/// digest is part of an `rsa` signing key's type, so it is given here.
pub(crate) fn parse(id: &str, pem: &str, hash: HashAlg) -> Result<Parsed, KeyError> {
    use rsa::pkcs1::DecodeRsaPrivateKey as _;
    use rsa::pkcs8::DecodePrivateKey as _;
    use rsa::traits::PublicKeyParts as _;
    let rsa_key =
        rsa::PrivateKey::from_pkcs1_pem(pem).or_else(|_| rsa::PrivateKey::from_pkcs8_pem(pem));
    let key = match rsa_key {
        Ok(key) => key,
        Err(_) => {
            // Not RSA: an EC P-256 key (PKCS#8 or SEC1), or nothing we sign with.
            let ec = p256_from_pem(pem).map_err(|_| {
                if pem.contains("EC PRIVATE KEY") || pem.contains("BEGIN PRIVATE KEY") {
                    KeyError::Unsupported {
                        id: id.to_owned(),
                        reason: "neither RSA nor EC P-256 (CloudFront accepts RSA 2048 and ECDSA P-256 only)".into(),
                    }
                } else {
                    KeyError::Parse {
                        id: id.to_owned(),
                        reason: NOT_A_KEY.into(),
                    }
                }
            })?;
            return Ok(Parsed {
                kind: KeyKind::EcdsaP256,
                bits: 256,
                key: Box::new(RustKey::Ecdsa(Box::new(ec))),
            });
        }
    };
    let bits = key.n().bit_width();
    check_bits(id, KeyKind::Rsa, bits)?;
    let key = match hash {
        HashAlg::Sha1 => RustKey::Sha1(Box::new(rsa::pkcs1v15::SigningKey::new(key))),
        HashAlg::Sha256 => RustKey::Sha256(Box::new(rsa::pkcs1v15::SigningKey::new(key))),
    };
    Ok(Parsed {
        kind: KeyKind::Rsa,
        bits,
        key: Box::new(key),
    })
}

impl PrivateKey for RustKey {
    fn sign(&self, hash: HashAlg, msg: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match self {
            RustKey::Sha1(key) => rsa_sign(key.as_ref(), msg),
            RustKey::Sha256(key) => rsa_sign(key.as_ref(), msg),
            RustKey::Ecdsa(_) => self.sign_ecdsa_here(hash, msg),
        }
    }

    fn sign_ecdsa_here(&self, hash: HashAlg, msg: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match self {
            RustKey::Ecdsa(key) => ecdsa_sign(key, hash, msg),
            RustKey::Sha1(_) | RustKey::Sha256(_) => Err(rsa_off_pool()),
        }
    }
}

/// An RSA or EC P-256 public key for the pure-Rust backend.
enum RustPublic {
    Rsa(Box<rsa::PublicKey>),
    P256(Box<p256::ecdsa::VerifyingKey>),
}

/// Parses a public key PEM (SPKI, or PKCS#1 for RSA), or a private key PEM whose public
/// half is then used; `None` when it is none of these.
pub(crate) fn parse_public(pem: &str) -> Option<Box<dyn PublicKey>> {
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
        return Some(Box::new(RustPublic::Rsa(Box::new(key))));
    }
    let ec = p256::ecdsa::VerifyingKey::from_public_key_pem(pem)
        .ok()
        .or_else(|| p256_from_pem(pem).ok().map(|k| *k.verifying_key()))?;
    Some(Box::new(RustPublic::P256(Box::new(ec))))
}

impl PublicKey for RustPublic {
    fn verify(&self, hash: HashAlg, msg: &[u8], sig: &[u8]) -> bool {
        use rsa::signature::Verifier as _;
        match self {
            RustPublic::P256(key) => {
                use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
                let Ok(sig) = p256::ecdsa::Signature::from_der(sig) else {
                    return false;
                };
                key.verify_prehash(&digest(hash, msg), &sig).is_ok()
            }
            RustPublic::Rsa(key) => {
                let Ok(sig) = rsa::pkcs1v15::Signature::try_from(sig) else {
                    return false;
                };
                let key = key.as_ref().clone();
                match hash {
                    HashAlg::Sha1 => rsa::pkcs1v15::VerifyingKey::<sha1::Sha1>::new(key)
                        .verify(msg, &sig)
                        .is_ok(),
                    HashAlg::Sha256 => rsa::pkcs1v15::VerifyingKey::<rsa::sha2::Sha256>::new(key)
                        .verify(msg, &sig)
                        .is_ok(),
                }
            }
        }
    }
}

/// The digest of `msg` under `hash` (20 or 32 bytes).
fn digest(hash: HashAlg, msg: &[u8]) -> Vec<u8> {
    use sha1::Digest as _;
    match hash {
        HashAlg::Sha1 => sha1::Sha1::digest(msg).to_vec(),
        HashAlg::Sha256 => rsa::sha2::Sha256::digest(msg).to_vec(),
    }
}

/// Parses an EC P-256 private key from PKCS#8 (`BEGIN PRIVATE KEY`) or SEC1
/// (`BEGIN EC PRIVATE KEY`) PEM; keys on any other curve fail.
fn p256_from_pem(pem: &str) -> Result<p256::ecdsa::SigningKey, ()> {
    use p256::pkcs8::DecodePrivateKey as _;
    if let Ok(key) = p256::ecdsa::SigningKey::from_pkcs8_pem(pem) {
        return Ok(key);
    }
    p256::SecretKey::from_sec1_pem(pem)
        .map(p256::ecdsa::SigningKey::from)
        .map_err(|_| ())
}

/// ECDSA P-256 over SHA-1 or SHA-256 of `msg`, DER-encoded as CloudFront expects (the bytes
/// `openssl dgst -sign` writes). Nonces are RFC 6979 (deterministic), which CloudFront
/// cannot tell from random ones.
fn ecdsa_sign(
    key: &p256::ecdsa::SigningKey,
    hash: HashAlg,
    msg: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    use p256::ecdsa::signature::hazmat::PrehashSigner as _;
    let sig: p256::ecdsa::Signature = key
        .sign_prehash(&digest(hash, msg))
        .map_err(|e| CryptoError::new("pure-rust", e.to_string()))?;
    Ok(sig.to_der().as_bytes().to_vec())
}

fn rsa_sign(
    key: &impl rsa::signature::Signer<rsa::pkcs1v15::Signature>,
    msg: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    use rsa::signature::SignatureEncoding as _;
    // `Signer` in rsa 0.10 blinds with the OS RNG (feature `getrandom`).
    key.try_sign(msg)
        .map(|s| s.to_vec())
        .map_err(|e| CryptoError::new("pure-rust", e.to_string()))
}
