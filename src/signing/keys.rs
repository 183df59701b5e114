//! The pre-parsed key cache.
//!
//! Every key is parsed once, when the server starts or reloads, into a [`SigningKey`]
//! held in an immutable [`KeySet`]; the live configuration (`crate::live`) swaps whole sets
//! atomically, so a request sees either the old set or the new one, never a mix, and never
//! waits for a reload.
//! Private key material never leaves this module: `Debug` prints the id, kind and size,
//! and errors name the key id and file, never the bytes.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::pool::OnPool;
use crate::metrics::KeyCounters;

/// Digest used for the signature. CloudFront's default is SHA-1; SHA-256 adds
/// `Hash-Algorithm=SHA256` to URLs and a `CloudFront-Hash-Algorithm` cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashAlg {
    /// SHA-1 (CloudFront's original and default).
    #[default]
    Sha1,
    /// SHA-256.
    Sha256,
}

impl HashAlg {
    /// Bounded label value for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "sha1",
            HashAlg::Sha256 => "sha256",
        }
    }
}

/// Key type, detected from the PEM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// RSA (CloudFront requires 2048 bits), PKCS#1 v1.5 signatures.
    Rsa,
    /// ECDSA on P-256, DER-encoded signatures.
    EcdsaP256,
}

impl KeyKind {
    /// Bounded label value for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Rsa => "rsa",
            KeyKind::EcdsaP256 => "ecdsa_p256",
        }
    }
}

/// Bounded `algorithm` metric label of a key.
pub fn algorithm_label(kind: KeyKind, hash: HashAlg) -> &'static str {
    match (kind, hash) {
        (KeyKind::Rsa, HashAlg::Sha1) => "rsa_sha1",
        (KeyKind::Rsa, HashAlg::Sha256) => "rsa_sha256",
        (KeyKind::EcdsaP256, HashAlg::Sha1) => "ecdsa_sha1",
        (KeyKind::EcdsaP256, HashAlg::Sha256) => "ecdsa_sha256",
    }
}

/// Which crypto library signs. Both give byte-identical RSA signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// The `openssl` crate (default; ~4x faster than `rsa` for RSA-2048 here).
    Openssl,
    /// Pure Rust, feature `pure-rust`: the `rsa` 0.10 crate for RSA, `p256` 0.14 for ECDSA.
    PureRust,
}

impl Default for Backend {
    fn default() -> Self {
        if cfg!(feature = "openssl-backend") {
            Backend::Openssl
        } else {
            Backend::PureRust
        }
    }
}

impl Backend {
    /// The backends this build can sign with, default first.
    pub fn compiled() -> Vec<Backend> {
        let mut v = Vec::new();
        if cfg!(feature = "openssl-backend") {
            v.push(Backend::Openssl);
        }
        if cfg!(feature = "pure-rust") {
            v.push(Backend::PureRust);
        }
        v
    }

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Openssl => "openssl",
            Backend::PureRust => "pure-rust",
        }
    }
}

/// Where a key's PEM comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum PemSource {
    /// A file, read at load and at every reload.
    File(PathBuf),
    /// Compiled into the binary: only the built-in TEST ONLY dev key.
    Builtin(&'static str),
}

impl fmt::Debug for PemSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PemSource::File(p) => f.debug_tuple("File").field(p).finish(),
            PemSource::Builtin(_) => f.write_str("Builtin(<redacted>)"),
        }
    }
}

/// One configured key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    /// CloudFront public key id / key pair id (not secret: it is in every signed URL).
    pub id: String,
    /// The private key.
    pub pem: PemSource,
    /// Digest to sign with.
    pub hash: HashAlg,
}

/// Why a key could not be loaded. Never carries key bytes.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("key {id}: cannot read {path}: {source}")]
    Read {
        /// Key id.
        id: String,
        /// File path.
        path: PathBuf,
        /// I/O error.
        source: std::io::Error,
    },
    /// The bytes are not a usable private key.
    #[error("key {id}: {reason}")]
    Parse {
        /// Key id.
        id: String,
        /// What was wrong (no key material).
        reason: String,
    },
    /// Two keys share an id.
    #[error("key id {0} is configured twice")]
    Duplicate(String),
    /// The selected backend is not compiled in or cannot handle this key.
    #[error("key {id}: {reason}")]
    Unsupported {
        /// Key id.
        id: String,
        /// Why.
        reason: String,
    },
}

/// Errors from a signing operation itself (a crypto library failure, not bad input).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{backend} signing failed: {reason}")]
pub struct CryptoError {
    backend: &'static str,
    reason: String,
}

enum Inner {
    #[cfg(feature = "openssl-backend")]
    Openssl(openssl::pkey::PKey<openssl::pkey::Private>),
    /// EC keys: the policy is hashed here and signed with a per-thread `EVP_PKEY_CTX` that is
    /// initialised once per key (see [`openssl_ec_sign`]).
    #[cfg(feature = "openssl-backend")]
    OpensslEc {
        pkey: openssl::pkey::PKey<openssl::pkey::Private>,
        /// Process-unique id of this parsed key, the per-thread context cache's key.
        uid: u64,
    },
    #[cfg(feature = "pure-rust")]
    RustSha1(Box<rsa::pkcs1v15::SigningKey<sha1::Sha1>>),
    #[cfg(feature = "pure-rust")]
    RustSha256(Box<rsa::pkcs1v15::SigningKey<rsa::sha2::Sha256>>),
    #[cfg(feature = "pure-rust")]
    RustEcdsa(Box<p256::ecdsa::SigningKey>),
}

/// A parsed private key, ready to sign on the pool.
pub struct SigningKey {
    id: String,
    kind: KeyKind,
    hash: HashAlg,
    backend: Backend,
    bits: u32,
    counters: KeyCounters,
    inner: Inner,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("bits", &self.bits)
            .field("hash", &self.hash)
            .field("backend", &self.backend)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// Drops any explanatory text before the first `-----BEGIN` line (our TEST ONLY key
/// carries a warning there), which strict PEM parsers refuse.
fn pem_body(pem: &str) -> &str {
    pem.find("-----BEGIN").map_or(pem, |i| &pem[i..])
}

impl SigningKey {
    /// Parses a PKCS#1 or PKCS#8 PEM private key (RSA or EC P-256) for `backend`.
    pub fn from_pem(
        id: &str,
        pem: &str,
        hash: HashAlg,
        backend: Backend,
    ) -> Result<SigningKey, KeyError> {
        let pem = pem_body(pem);
        let parse_err = |reason: String| KeyError::Parse {
            id: id.to_owned(),
            reason,
        };
        match backend {
            Backend::Openssl => {
                #[cfg(feature = "openssl-backend")]
                {
                    use openssl::pkey::{Id, PKey};
                    let pkey = PKey::private_key_from_pem(pem.as_bytes()).map_err(|_| {
                        parse_err(
                            "not a PEM private key (expected BEGIN RSA PRIVATE KEY, BEGIN PRIVATE KEY or BEGIN EC PRIVATE KEY)"
                                .into(),
                        )
                    })?;
                    let kind = match pkey.id() {
                        Id::RSA => KeyKind::Rsa,
                        Id::EC => {
                            let ec = pkey.ec_key().map_err(|_| parse_err("bad EC key".into()))?;
                            if ec.group().curve_name() != Some(openssl::nid::Nid::X9_62_PRIME256V1)
                            {
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
                    let inner = match kind {
                        KeyKind::Rsa => Inner::Openssl(pkey),
                        KeyKind::EcdsaP256 => Inner::OpensslEc {
                            pkey,
                            uid: NEXT_KEY_UID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                        },
                    };
                    Ok(SigningKey {
                        id: id.to_owned(),
                        kind,
                        hash,
                        backend,
                        bits,
                        counters: KeyCounters::new(id, algorithm_label(kind, hash)),
                        inner,
                    })
                }
                #[cfg(not(feature = "openssl-backend"))]
                {
                    let _ = parse_err;
                    Err(KeyError::Unsupported {
                        id: id.to_owned(),
                        reason: "backend \"openssl\" is not compiled in (build with feature openssl-backend)".into(),
                    })
                }
            }
            Backend::PureRust => {
                #[cfg(feature = "pure-rust")]
                {
                    use rsa::pkcs1::DecodeRsaPrivateKey as _;
                    use rsa::pkcs8::DecodePrivateKey as _;
                    use rsa::traits::PublicKeyParts as _;
                    let rsa_key = rsa::PrivateKey::from_pkcs1_pem(pem)
                        .or_else(|_| rsa::PrivateKey::from_pkcs8_pem(pem));
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
                                    parse_err("not a PEM private key (expected BEGIN RSA PRIVATE KEY, BEGIN PRIVATE KEY or BEGIN EC PRIVATE KEY)".into())
                                }
                            })?;
                            return Ok(SigningKey {
                                id: id.to_owned(),
                                kind: KeyKind::EcdsaP256,
                                hash,
                                backend,
                                bits: 256,
                                counters: KeyCounters::new(
                                    id,
                                    algorithm_label(KeyKind::EcdsaP256, hash),
                                ),
                                inner: Inner::RustEcdsa(Box::new(ec)),
                            });
                        }
                    };
                    let bits = key.n().bit_width();
                    check_bits(id, KeyKind::Rsa, bits)?;
                    let inner = match hash {
                        HashAlg::Sha1 => {
                            Inner::RustSha1(Box::new(rsa::pkcs1v15::SigningKey::new(key)))
                        }
                        HashAlg::Sha256 => {
                            Inner::RustSha256(Box::new(rsa::pkcs1v15::SigningKey::new(key)))
                        }
                    };
                    Ok(SigningKey {
                        id: id.to_owned(),
                        kind: KeyKind::Rsa,
                        hash,
                        backend,
                        bits,
                        counters: KeyCounters::new(id, algorithm_label(KeyKind::Rsa, hash)),
                        inner,
                    })
                }
                #[cfg(not(feature = "pure-rust"))]
                {
                    let _ = parse_err;
                    Err(KeyError::Unsupported {
                        id: id.to_owned(),
                        reason: "backend \"pure-rust\" is not compiled in (build with feature pure-rust)".into(),
                    })
                }
            }
        }
    }

    /// Key id (CloudFront key pair id).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// RSA or ECDSA.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// Digest.
    pub fn hash(&self) -> HashAlg {
        self.hash
    }

    /// Crypto backend that holds this key.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Key size in bits.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Metric handles labelled with this key, made when it was loaded.
    pub fn counters(&self) -> &KeyCounters {
        &self.counters
    }

    /// Signs `msg`. Only callable on a signing-pool thread: the [`OnPool`] token cannot be
    /// made anywhere else, so no tokio worker can ever run RSA.
    pub fn sign(&self, msg: &[u8], _on_pool: &OnPool) -> Result<Vec<u8>, CryptoError> {
        match &self.inner {
            #[cfg(feature = "openssl-backend")]
            Inner::Openssl(pkey) => {
                use openssl::hash::MessageDigest;
                let md = match self.hash {
                    HashAlg::Sha1 => MessageDigest::sha1(),
                    HashAlg::Sha256 => MessageDigest::sha256(),
                };
                let err = |e: openssl::error::ErrorStack| CryptoError {
                    backend: "openssl",
                    reason: e.to_string(),
                };
                let mut signer = openssl::sign::Signer::new(md, pkey).map_err(err)?;
                signer.update(msg).map_err(err)?;
                signer.sign_to_vec().map_err(err)
            }
            #[cfg(feature = "openssl-backend")]
            Inner::OpensslEc { .. } => self.sign_ecdsa_here(msg),
            #[cfg(feature = "pure-rust")]
            Inner::RustSha1(key) => rust_sign(key.as_ref(), msg),
            #[cfg(feature = "pure-rust")]
            Inner::RustSha256(key) => rust_sign(key.as_ref(), msg),
            #[cfg(feature = "pure-rust")]
            Inner::RustEcdsa(_) => self.sign_ecdsa_here(msg),
        }
    }
}

impl SigningKey {
    /// Signs `msg` with an ECDSA key on the calling thread (see [`Site::CallerThread`]).
    /// Contains no RSA code: an RSA key returns an error, so RSA stays on the pool.
    ///
    /// [`Site::CallerThread`]: super::pool::Site::CallerThread
    pub fn sign_ecdsa_here(&self, msg: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match &self.inner {
            #[cfg(feature = "openssl-backend")]
            Inner::OpensslEc { pkey, uid } => {
                openssl_ec_sign(pkey, *uid, self.hash, msg).map_err(|e| CryptoError {
                    backend: "openssl",
                    reason: e.to_string(),
                })
            }
            #[cfg(feature = "pure-rust")]
            Inner::RustEcdsa(key) => rust_sign_ecdsa(key, self.hash, msg),
            #[cfg(feature = "openssl-backend")]
            Inner::Openssl(_) => Err(rsa_off_pool()),
            #[cfg(feature = "pure-rust")]
            Inner::RustSha1(_) | Inner::RustSha256(_) => Err(rsa_off_pool()),
        }
    }
}

/// What [`SigningKey::sign_ecdsa_here`] answers for an RSA key (a bug in the caller).
fn rsa_off_pool() -> CryptoError {
    CryptoError {
        backend: "cdnsign",
        reason: "RSA keys sign only on the signing pool".to_owned(),
    }
}

/// Parses an EC P-256 private key from PKCS#8 (`BEGIN PRIVATE KEY`) or SEC1
/// (`BEGIN EC PRIVATE KEY`) PEM; keys on any other curve fail.
#[cfg(feature = "pure-rust")]
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
#[cfg(feature = "pure-rust")]
fn rust_sign_ecdsa(
    key: &p256::ecdsa::SigningKey,
    hash: HashAlg,
    msg: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    use p256::ecdsa::signature::hazmat::PrehashSigner as _;
    use sha1::Digest as _;
    let digest: Vec<u8> = match hash {
        HashAlg::Sha1 => sha1::Sha1::digest(msg).to_vec(),
        HashAlg::Sha256 => rsa::sha2::Sha256::digest(msg).to_vec(),
    };
    let sig: p256::ecdsa::Signature = key.sign_prehash(&digest).map_err(|e| CryptoError {
        backend: "pure-rust",
        reason: e.to_string(),
    })?;
    Ok(sig.to_der().as_bytes().to_vec())
}

/// Source of [`Inner::OpensslEc`] uids; never reused, so a cached context can never be
/// used with a different key, even when a reload frees a key and allocates another.
#[cfg(feature = "openssl-backend")]
static NEXT_KEY_UID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Most EC signing contexts one pool thread keeps (one per key; old keys age out).
#[cfg(feature = "openssl-backend")]
const EC_CTX_CACHE: usize = 16;

#[cfg(feature = "openssl-backend")]
thread_local! {
    /// Per-thread `EVP_PKEY_CTX`s, initialised for signing, by key uid. OpenSSL allows
    /// `EVP_PKEY_sign` to be called repeatedly on one initialised context.
    static EC_SIGN_CTX: std::cell::RefCell<Vec<(u64, openssl::pkey_ctx::PkeyCtx<openssl::pkey::Private>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// ECDSA over SHA-1 or SHA-256 of `msg`, DER-encoded: the bytes `EVP_DigestSign*` (and
/// `openssl dgst -sign`) produce, without `EVP_DigestSignInit`'s provider and digest
/// fetches on every call, which callgrind put at ~9% of an ECDSA signature.
#[cfg(feature = "openssl-backend")]
fn openssl_ec_sign(
    pkey: &openssl::pkey::PKey<openssl::pkey::Private>,
    uid: u64,
    hash: HashAlg,
    msg: &[u8],
) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    use openssl::md::Md;
    let (sha1, sha256);
    let (digest, md): (&[u8], _) = match hash {
        HashAlg::Sha1 => {
            sha1 = openssl::sha::sha1(msg);
            (&sha1, Md::sha1())
        }
        HashAlg::Sha256 => {
            sha256 = openssl::sha::sha256(msg);
            (&sha256, Md::sha256())
        }
    };
    EC_SIGN_CTX.with(|cell| {
        let mut ctxs = cell.borrow_mut();
        let at = match ctxs.iter().position(|(u, _)| *u == uid) {
            Some(i) => i,
            None => {
                let mut ctx = openssl::pkey_ctx::PkeyCtx::new(pkey)?;
                ctx.sign_init()?;
                ctx.set_signature_md(md)?;
                if ctxs.len() >= EC_CTX_CACHE {
                    ctxs.remove(0);
                }
                ctxs.push((uid, ctx));
                ctxs.len() - 1
            }
        };
        let mut sig = Vec::with_capacity(72);
        ctxs[at].1.sign_to_vec(digest, &mut sig)?;
        Ok(sig)
    })
}

#[cfg(feature = "pure-rust")]
fn rust_sign(
    key: &impl rsa::signature::Signer<rsa::pkcs1v15::Signature>,
    msg: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    use rsa::signature::SignatureEncoding as _;
    // `Signer` in rsa 0.10 blinds with the OS RNG (feature `getrandom`).
    key.try_sign(msg)
        .map(|s| s.to_vec())
        .map_err(|e| CryptoError {
            backend: "pure-rust",
            reason: e.to_string(),
        })
}

fn check_bits(id: &str, kind: KeyKind, bits: u32) -> Result<(), KeyError> {
    let ok = match kind {
        // CloudFront accepts RSA 2048 only; bigger keys are refused there, smaller are weak.
        KeyKind::Rsa => bits == 2048,
        KeyKind::EcdsaP256 => bits == 256,
    };
    if ok {
        Ok(())
    } else {
        Err(KeyError::Unsupported {
            id: id.to_owned(),
            reason: format!(
                "{}-bit {} key; CloudFront accepts RSA 2048 and ECDSA P-256 only",
                bits,
                kind.as_str()
            ),
        })
    }
}

/// An immutable set of parsed keys, looked up by id.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: HashMap<String, Arc<SigningKey>>,
}

impl KeySet {
    /// Reads and parses every key; any failure fails the whole set, so a reload never
    /// half-applies. The error is the first key that failed.
    pub fn load(specs: &[KeySpec], backend: Backend) -> Result<KeySet, KeyError> {
        Self::load_all(specs, backend).map_err(|mut errors| errors.swap_remove(0))
    }

    /// [`load`](Self::load), reporting every key that failed (never an empty list).
    pub fn load_all(specs: &[KeySpec], backend: Backend) -> Result<KeySet, Vec<KeyError>> {
        let mut keys = HashMap::with_capacity(specs.len());
        let mut errors = Vec::new();
        for spec in specs {
            let pem = match &spec.pem {
                PemSource::Builtin(text) => std::borrow::Cow::Borrowed(*text),
                PemSource::File(path) => match read_key_file(&spec.id, path) {
                    Ok(text) => std::borrow::Cow::Owned(text),
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                },
            };
            match SigningKey::from_pem(&spec.id, &pem, spec.hash, backend) {
                Ok(key) => {
                    if keys.insert(spec.id.clone(), Arc::new(key)).is_some() {
                        errors.push(KeyError::Duplicate(spec.id.clone()));
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(KeySet { keys })
        } else {
            Err(errors)
        }
    }

    /// Builds a set from already parsed keys (tests, benches).
    pub fn from_keys(keys: impl IntoIterator<Item = SigningKey>) -> KeySet {
        KeySet {
            keys: keys
                .into_iter()
                .map(|k| (k.id.clone(), Arc::new(k)))
                .collect(),
        }
    }

    /// The key with this id.
    pub fn get(&self, id: &str) -> Option<Arc<SigningKey>> {
        self.keys.get(id).cloned()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// No keys at all.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// All keys, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<SigningKey>> {
        self.keys.values()
    }
}

fn read_key_file(id: &str, path: &Path) -> Result<String, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        id: id.to_owned(),
        path: path.to_owned(),
        source,
    })?;
    warn_if_world_readable(id, path);
    Ok(text)
}

#[cfg(unix)]
fn warn_if_world_readable(id: &str, path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                key_id = id,
                path = %path.display(),
                mode = format_args!("{:o}", mode & 0o777),
                "private key file is readable by group or others; chmod 600 it"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_world_readable(_id: &str, _path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_body_skips_comment_lines() {
        assert_eq!(
            pem_body("# TEST ONLY\n-----BEGIN X-----\n"),
            "-----BEGIN X-----\n"
        );
        assert_eq!(pem_body("junk"), "junk");
    }

    /// TEST ONLY throwaway key on P-384, a curve CloudFront does not accept.
    const P384_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDBX9NwmKgksZ0HX9QAs
MvwjPEt8r+DbKMpUcWfDTGUKAWyJVAbWcDrl05zcfUQuIO2hZANiAASyU8fsArDw
foCCWhY+TRipijcMHKpW6JzXltDPvrasEpcMkC1AX3YWlTsGlqEK0NR3ZpSfl4+3
imyG4QygVeEU3+504PGxL1EpF7iE2Q4z6nJIrH9/pACx2jc/2eagB4Y=
-----END PRIVATE KEY-----
";

    fn compiled_backends() -> Vec<Backend> {
        let mut v = Vec::new();
        if cfg!(feature = "openssl-backend") {
            v.push(Backend::Openssl);
        }
        if cfg!(feature = "pure-rust") {
            v.push(Backend::PureRust);
        }
        v
    }

    #[test]
    fn ec_p256_keys_load_on_every_backend_and_other_curves_do_not() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys/ec-p256.pem");
        let pem = std::fs::read_to_string(path).expect("fixture key");
        for backend in compiled_backends() {
            let key = SigningKey::from_pem("KEC", &pem, HashAlg::Sha256, backend).expect("p256");
            assert_eq!(key.kind(), KeyKind::EcdsaP256, "{backend:?}");
            assert_eq!(key.bits(), 256, "{backend:?}");
            let err = SigningKey::from_pem("K384", P384_PEM, HashAlg::Sha256, backend)
                .expect_err("P-384 refused");
            assert!(
                matches!(err, KeyError::Unsupported { .. }),
                "{backend:?}: {err}"
            );
            assert!(err.to_string().contains("K384"), "{err}");
        }
    }

    #[test]
    fn garbage_is_a_parse_error_without_bytes() {
        let secretish =
            "-----BEGIN RSA PRIVATE KEY-----\nc2VjcmV0c2VjcmV0\n-----END RSA PRIVATE KEY-----\n";
        let err = SigningKey::from_pem("K1", secretish, HashAlg::Sha1, Backend::default())
            .expect_err("garbage");
        let text = format!("{err} {err:?}");
        assert!(text.contains("K1"), "{text}");
        assert!(!text.contains("c2VjcmV0"), "{text}");
    }
}
