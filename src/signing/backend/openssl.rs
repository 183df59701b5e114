//! The OpenSSL backend (the `openssl` crate, the default): RSA PKCS#1 v1.5 and ECDSA P-256.

use std::sync::atomic::{AtomicU64, Ordering};

use openssl::pkey::{Id, PKey, Private, Public};

use super::{NOT_A_KEY, Parsed, PrivateKey, PublicKey, rsa_off_pool};
use crate::signing::algorithm::{HashAlg, KeyKind, check_bits};
use crate::signing::errors::{CryptoError, KeyError};

/// A key parsed by OpenSSL.
pub(crate) enum OpensslKey {
    /// RSA: `EVP_DigestSign` per signature.
    Rsa(PKey<Private>),
    /// EC: the message is hashed here and signed with a per-thread `EVP_PKEY_CTX`
    /// initialised once per key (see [`ec_sign`]).
    Ec {
        pkey: PKey<Private>,
        /// Process-unique id of this parsed key, the per-thread context cache's key.
        uid: u64,
    },
}

/// Parses a PKCS#1, PKCS#8 or SEC1 PEM into an OpenSSL key, checking type and size.
pub(crate) fn parse_pkey(id: &str, pem: &str) -> Result<(KeyKind, u32, PKey<Private>), KeyError> {
    let parse_err = |reason: &str| KeyError::Parse {
        id: id.to_owned(),
        reason: reason.to_owned(),
    };
    let pkey = PKey::private_key_from_pem(pem.as_bytes()).map_err(|_| parse_err(NOT_A_KEY))?;
    let kind = match pkey.id() {
        Id::RSA => KeyKind::Rsa,
        Id::EC => {
            let ec = pkey.ec_key().map_err(|_| parse_err("bad EC key"))?;
            if ec.group().curve_name() != Some(openssl::nid::Nid::X9_62_PRIME256V1) {
                return Err(KeyError::Unsupported {
                    id: id.to_owned(),
                    reason: "EC keys must be on P-256 (prime256v1), as CloudFront requires".into(),
                });
            }
            KeyKind::EcdsaP256
        }
        _ => {
            return Err(KeyError::Unsupported {
                id: id.to_owned(),
                reason: "only RSA and ECDSA P-256 keys are supported".into(),
            });
        }
    };
    let bits = pkey.bits();
    check_bits(id, kind, bits)?;
    Ok((kind, bits, pkey))
}

impl OpensslKey {
    /// Wraps a parsed key.
    pub(crate) fn new(kind: KeyKind, pkey: PKey<Private>) -> OpensslKey {
        match kind {
            KeyKind::Rsa => OpensslKey::Rsa(pkey),
            KeyKind::EcdsaP256 => OpensslKey::Ec {
                pkey,
                uid: NEXT_KEY_UID.fetch_add(1, Ordering::Relaxed),
            },
        }
    }

    /// Signs a digest already computed with `hash` (the multi-buffer backend's fallback,
    /// which only holds digests): the same bytes as [`PrivateKey::sign`] of the message.
    pub(crate) fn sign_digest(&self, hash: HashAlg, digest: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match self {
            OpensslKey::Rsa(pkey) => {
                let mut ctx = openssl::pkey_ctx::PkeyCtx::new(pkey).map_err(err)?;
                ctx.sign_init().map_err(err)?;
                ctx.set_rsa_padding(openssl::rsa::Padding::PKCS1)
                    .map_err(err)?;
                ctx.set_signature_md(md(hash)).map_err(err)?;
                let mut sig = Vec::with_capacity(256);
                ctx.sign_to_vec(digest, &mut sig).map_err(err)?;
                Ok(sig)
            }
            OpensslKey::Ec { pkey, uid } => ec_sign_digest(pkey, *uid, hash, digest).map_err(err),
        }
    }
}

/// Parses `pem` for the OpenSSL backend.
pub(crate) fn parse(id: &str, pem: &str) -> Result<Parsed, KeyError> {
    let (kind, bits, pkey) = parse_pkey(id, pem)?;
    Ok(Parsed {
        kind,
        bits,
        key: Box::new(OpensslKey::new(kind, pkey)),
    })
}

/// An RSA or EC public key parsed by OpenSSL.
struct OpensslPublic(PKey<Public>);

/// Parses a public key PEM (SPKI `BEGIN PUBLIC KEY` or PKCS#1 `BEGIN RSA PUBLIC KEY`), or a
/// private key PEM whose public half is then used; `None` when it is none of these.
pub(crate) fn parse_public(pem: &str) -> Option<Box<dyn PublicKey>> {
    let key = PKey::public_key_from_pem(pem.as_bytes())
        .or_else(|_| {
            openssl::rsa::Rsa::public_key_from_pem_pkcs1(pem.as_bytes()).and_then(PKey::from_rsa)
        })
        .or_else(|_| {
            let private = PKey::private_key_from_pem(pem.as_bytes())?;
            PKey::public_key_from_der(&private.public_key_to_der()?)
        })
        .ok()?;
    Some(Box::new(OpensslPublic(key)))
}

impl PublicKey for OpensslPublic {
    fn verify(&self, hash: HashAlg, msg: &[u8], sig: &[u8]) -> bool {
        use openssl::hash::MessageDigest;
        let md = match hash {
            HashAlg::Sha1 => MessageDigest::sha1(),
            HashAlg::Sha256 => MessageDigest::sha256(),
        };
        openssl::sign::Verifier::new(md, &self.0)
            .and_then(|mut v| {
                v.update(msg)?;
                v.verify(sig)
            })
            .unwrap_or(false)
    }
}

fn err(e: openssl::error::ErrorStack) -> CryptoError {
    CryptoError::new("openssl", e.to_string())
}

fn md(hash: HashAlg) -> &'static openssl::md::MdRef {
    match hash {
        HashAlg::Sha1 => openssl::md::Md::sha1(),
        HashAlg::Sha256 => openssl::md::Md::sha256(),
    }
}

/// The digest of `msg` under `hash` (20 or 32 bytes), in a 32-byte buffer.
pub(crate) fn digest(hash: HashAlg, msg: &[u8]) -> ([u8; 32], usize) {
    let mut out = [0u8; 32];
    match hash {
        HashAlg::Sha1 => {
            out[..20].copy_from_slice(&openssl::sha::sha1(msg));
            (out, 20)
        }
        HashAlg::Sha256 => (openssl::sha::sha256(msg), 32),
    }
}

impl PrivateKey for OpensslKey {
    fn sign(&self, hash: HashAlg, msg: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match self {
            OpensslKey::Rsa(pkey) => {
                use openssl::hash::MessageDigest;
                let md = match hash {
                    HashAlg::Sha1 => MessageDigest::sha1(),
                    HashAlg::Sha256 => MessageDigest::sha256(),
                };
                let mut signer = openssl::sign::Signer::new(md, pkey).map_err(err)?;
                signer.update(msg).map_err(err)?;
                signer.sign_to_vec().map_err(err)
            }
            OpensslKey::Ec { .. } => self.sign_ecdsa_here(hash, msg),
        }
    }

    fn sign_ecdsa_here(&self, hash: HashAlg, msg: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match self {
            OpensslKey::Ec { pkey, uid } => {
                let (d, len) = digest(hash, msg);
                ec_sign_digest(pkey, *uid, hash, &d[..len]).map_err(err)
            }
            OpensslKey::Rsa(_) => Err(rsa_off_pool()),
        }
    }
}

/// Source of [`OpensslKey::Ec`] uids; never reused, so a cached context can never be used
/// with a different key, even when a reload frees a key and allocates another.
static NEXT_KEY_UID: AtomicU64 = AtomicU64::new(1);

/// Most EC signing contexts one thread keeps (one per key; old keys age out).
const EC_CTX_CACHE: usize = 16;

thread_local! {
    /// Per-thread `EVP_PKEY_CTX`s, initialised for signing, by key uid and digest. OpenSSL
    /// allows `EVP_PKEY_sign` to be called repeatedly on one initialised context.
    static EC_SIGN_CTX: std::cell::RefCell<Vec<(u64, HashAlg, openssl::pkey_ctx::PkeyCtx<Private>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// ECDSA of a digest, DER-encoded: the bytes `EVP_DigestSign*` (and `openssl dgst -sign`)
/// produce, without `EVP_DigestSignInit`'s provider and digest fetches on every call, which
/// callgrind put at ~9% of an ECDSA signature.
fn ec_sign_digest(
    pkey: &PKey<Private>,
    uid: u64,
    hash: HashAlg,
    digest: &[u8],
) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    EC_SIGN_CTX.with(|cell| {
        let mut ctxs = cell.borrow_mut();
        let at = match ctxs.iter().position(|(u, h, _)| *u == uid && *h == hash) {
            Some(i) => i,
            None => {
                let mut ctx = openssl::pkey_ctx::PkeyCtx::new(pkey)?;
                ctx.sign_init()?;
                ctx.set_signature_md(md(hash))?;
                if ctxs.len() >= EC_CTX_CACHE {
                    ctxs.remove(0);
                }
                ctxs.push((uid, hash, ctx));
                ctxs.len() - 1
            }
        };
        let mut sig = Vec::with_capacity(72);
        ctxs[at].2.sign_to_vec(digest, &mut sig)?;
        Ok(sig)
    })
}
