//! [`VerifyKey`]: a public key to verify signatures with, parsed by one of the crypto
//! backends (`super::super::backend`), which each implement the check.

use crate::signing::algorithm::{Backend, HashAlg};
use crate::signing::backend::{self, PublicKey};

/// A public key to verify with (RSA or ECDSA P-256), parsed by the build's default backend
/// or by a named one.
pub struct VerifyKey {
    key: Box<dyn PublicKey>,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerifyKey")
    }
}

/// Why a PEM gave no key to verify with.
#[derive(Debug, thiserror::Error)]
pub enum BadVerifyKey {
    /// The PEM is neither a public key nor a private key we can derive one from.
    #[error(
        "not a PEM public key (BEGIN PUBLIC KEY / BEGIN RSA PUBLIC KEY) or private key (RSA or EC P-256)"
    )]
    NotAKey,
    /// The backend asked for is not in this build.
    #[error("backend \"{0}\" is not compiled in")]
    NotCompiled(&'static str),
}

impl VerifyKey {
    /// Parses a public key PEM with the build's default backend; a private key PEM is
    /// accepted too (its public half is used).
    pub fn from_pem(pem: &str) -> Result<VerifyKey, BadVerifyKey> {
        Self::from_pem_with(pem, Backend::default())
    }

    /// Parses a public key PEM (or a private key's public half) with `backend`'s verifier;
    /// the multi-buffer backend verifies with OpenSSL.
    pub fn from_pem_with(pem: &str, backend: Backend) -> Result<VerifyKey, BadVerifyKey> {
        let pem = backend::pem_body(pem);
        match backend::parse_public(backend, pem) {
            Ok(Some(key)) => Ok(VerifyKey { key }),
            Ok(None) => Err(BadVerifyKey::NotAKey),
            Err(not_compiled) => Err(BadVerifyKey::NotCompiled(not_compiled.as_str())),
        }
    }

    /// Whether `sig` is a valid signature of `msg` with digest `hash` under this key.
    pub fn verify(&self, hash: HashAlg, msg: &[u8], sig: &[u8]) -> bool {
        self.key.verify(hash, msg, sig)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::keys::SigningKey;
    use crate::signing::pool::SigningPool;

    fn repo_file(rel: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// (private key, public key files that are its half) for RSA and EC P-256.
    const PAIRS: [(&str, &[&str]); 3] = [
        (
            "tests/fixtures/keys/rsa2-pkcs1.pem",
            &[
                "tests/fixtures/keys/rsa2.pub.pem",
                "tests/fixtures/keys/rsa2.pkcs1.pub.pem",
                "tests/fixtures/keys/rsa2-pkcs1.pem",
            ],
        ),
        (
            "config/dev-keys/TEST-ONLY-cloudfront.pem",
            &[
                "config/dev-keys/TEST-ONLY-cloudfront.pub.pem",
                "config/dev-keys/TEST-ONLY-cloudfront.pem",
            ],
        ),
        (
            "tests/fixtures/keys/ec-p256.pem",
            &[
                "tests/fixtures/keys/ec-p256.pub.pem",
                "tests/fixtures/keys/ec-p256.pem",
            ],
        ),
    ];

    /// Every compiled backend's verifier accepts every compiled backend's signatures, in
    /// every public key form, and refuses a changed message or signature.
    #[test]
    fn each_backend_verifies_each_backends_signatures() {
        let msg = b"{\"Statement\":[]}";
        let pool = SigningPool::new(1).expect("pool");
        for (private, publics) in PAIRS {
            for signer in Backend::compiled() {
                for hash in [HashAlg::Sha1, HashAlg::Sha256] {
                    let key = SigningKey::from_pem("K", &repo_file(private), hash, signer)
                        .expect("private key");
                    let sig = pool.run_blocking(|p| key.sign(msg, p)).expect("sign");
                    let mut bad_sig = sig.clone();
                    bad_sig[sig.len() / 2] ^= 1;
                    for public in publics.iter().copied() {
                        for verifier in Backend::compiled() {
                            let what =
                                format!("{private} {signer:?} {hash:?} -> {public} {verifier:?}");
                            let vk = VerifyKey::from_pem_with(&repo_file(public), verifier)
                                .unwrap_or_else(|e| panic!("{what}: {e}"));
                            assert!(vk.verify(hash, msg, &sig), "{what}");
                            assert!(!vk.verify(hash, b"{\"Statement\":[1]}", &sig), "{what}");
                            assert!(!vk.verify(hash, msg, &bad_sig), "{what}");
                            let other = match hash {
                                HashAlg::Sha1 => HashAlg::Sha256,
                                HashAlg::Sha256 => HashAlg::Sha1,
                            };
                            assert!(!vk.verify(other, msg, &sig), "{what}: other digest");
                        }
                    }
                }
            }
        }
    }

    /// Any bytes as a signature are an answer (`false`), never a panic.
    #[test]
    fn garbage_signatures_are_refused() {
        for verifier in Backend::compiled() {
            for public in [
                "tests/fixtures/keys/rsa2.pub.pem",
                "tests/fixtures/keys/ec-p256.pub.pem",
            ] {
                let vk = VerifyKey::from_pem_with(&repo_file(public), verifier).expect("key");
                for sig in [
                    &[][..],
                    &[0],
                    &[0x30, 0x06, 0x02, 0x01],
                    &[0xff; 256],
                    &[0; 512],
                ] {
                    assert!(
                        !vk.verify(HashAlg::Sha1, b"m", sig),
                        "{public} {verifier:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn not_a_key_is_named() {
        for verifier in Backend::compiled() {
            for pem in [
                repo_file("tests/fixtures/keys/not-a-key.pem"),
                String::new(),
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".to_owned(),
            ] {
                let err = VerifyKey::from_pem_with(&pem, verifier).expect_err("not a key");
                assert!(matches!(err, BadVerifyKey::NotAKey), "{verifier:?}: {err}");
                assert!(err.to_string().contains("not a PEM public key"), "{err}");
            }
        }
    }
}
