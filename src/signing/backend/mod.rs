//! The crypto backends behind one internal trait, one file each: [`openssl`] (the default),
//! [`pure_rust`] (feature `pure-rust`, for builds without OpenSSL) and [`multibuffer`]
//! (Intel's crypto_mb in 8 AVX-512 IFMA lanes, over OpenSSL, when the library loads and
//! the CPU runs it).
//!
//! A backend parses a PEM into a `PrivateKey` (and, for verification, into a `PublicKey`); [`super::keys::SigningKey`] wraps it with
//! the key's id, kind, digest and metric handles. Backends know nothing of batches, pools or
//! requests: they sign one message, or up to `PrivateKey::lanes` at once.

#[cfg(feature = "openssl-backend")]
pub mod multibuffer;
#[cfg(feature = "openssl-backend")]
pub mod openssl;
#[cfg(feature = "pure-rust")]
pub mod pure_rust;

use std::path::Path;
use std::sync::Arc;

use super::algorithm::{Backend, HashAlg, KeyKind};
use super::errors::{CryptoError, KeyError};

/// The environment variable naming the crypto_mb library file to load instead of the
/// default locations (`/usr/local/lib/cdnsign/libcrypto_mb.so.13`, then the system
/// loader's search for `libcrypto_mb.so.13`, `.so.11`, `.so`).
pub const LIB_ENV: &str = "CDNSIGN_CRYPTO_MB_LIB";

/// A parsed private key of one backend.
pub(crate) trait PrivateKey: Send + Sync {
    /// Signs `msg` (hashing it with `hash`): PKCS#1 v1.5 for RSA, DER ECDSA for EC. Runs
    /// on a signing-pool thread.
    fn sign(&self, hash: HashAlg, msg: &[u8]) -> Result<Vec<u8>, CryptoError>;

    /// Signs with an ECDSA key on the calling thread; RSA keys refuse (RSA only runs on
    /// the pool).
    fn sign_ecdsa_here(&self, hash: HashAlg, msg: &[u8]) -> Result<Vec<u8>, CryptoError>;

    /// How many messages one [`sign_lanes`](Self::sign_lanes) call signs for the price of
    /// one: 8 for the multi-buffer backend, 1 otherwise.
    fn lanes(&self) -> usize {
        1
    }

    /// Signs several messages; one result per message, in order. At most
    /// [`lanes`](Self::lanes) messages share one private-key computation.
    fn sign_lanes(&self, hash: HashAlg, msgs: &[&[u8]]) -> Vec<Result<Vec<u8>, CryptoError>> {
        msgs.iter().map(|m| self.sign(hash, m)).collect()
    }

    /// The fewest messages for which one lane computation costs less than signing them one
    /// at a time ([`sign_one_by_one`](Self::sign_one_by_one)); 1 without lanes.
    fn min_lane_fill(&self) -> usize {
        1
    }

    /// Signs each message on its own with the key's scalar path (OpenSSL for the
    /// multi-buffer backend): cheaper than a lane computation for a few messages.
    fn sign_one_by_one(&self, hash: HashAlg, msgs: &[&[u8]]) -> Vec<Result<Vec<u8>, CryptoError>> {
        msgs.iter().map(|m| self.sign(hash, m)).collect()
    }
}

/// A parsed public key of one backend: checks signatures (`cdnsign verify`, the
/// `VerifyUrls` / `VerifyCookies` RPCs, tests).
pub(crate) trait PublicKey: Send + Sync {
    /// Whether `sig` is a valid signature of `msg` with digest `hash` under this key:
    /// PKCS#1 v1.5 for RSA, DER ECDSA for EC. Never panics on any `sig`.
    fn verify(&self, hash: HashAlg, msg: &[u8], sig: &[u8]) -> bool;
}

/// The multi-buffer engine (crypto_mb, loaded once per process). Builds without OpenSSL
/// have none: there it is uninhabited, so no code path can hold one.
#[cfg(feature = "openssl-backend")]
pub(crate) type Engine = multibuffer::Engine;
/// The multi-buffer engine: none in a build without OpenSSL.
#[cfg(not(feature = "openssl-backend"))]
#[derive(Debug)]
pub(crate) enum Engine {}

/// Loads the multi-buffer engine from `lib` (`None`: `CDNSIGN_CRYPTO_MB_LIB`'s default
/// locations), or says why it cannot be used here: the library or the CPU feature is
/// missing, or this build has no OpenSSL backend.
pub(crate) fn load_engine(lib: Option<&Path>) -> Result<Arc<Engine>, String> {
    #[cfg(feature = "openssl-backend")]
    {
        multibuffer::engine::engine_at(lib).map_err(|e| e.to_string())
    }
    #[cfg(not(feature = "openssl-backend"))]
    {
        let _ = lib;
        Err("this build has no OpenSSL backend (feature openssl-backend)".into())
    }
}

/// The file the engine's library was loaded from.
pub(crate) fn engine_path(engine: &Engine) -> &Path {
    #[cfg(feature = "openssl-backend")]
    {
        engine.path()
    }
    #[cfg(not(feature = "openssl-backend"))]
    {
        match *engine {}
    }
}

/// Parses a private key PEM with `backend`: the one place that knows which backends this
/// build has. [`Backend::Multibuffer`] uses `engine`, or loads it as `cdnsign serve` would
/// (and fails, naming what is missing, when it cannot be used here).
pub(crate) fn parse(
    id: &str,
    pem: &str,
    hash: HashAlg,
    backend: Backend,
    engine: Option<&Arc<Engine>>,
) -> Result<Parsed, KeyError> {
    let unsupported = |reason: String| KeyError::Unsupported {
        id: id.to_owned(),
        reason,
    };
    match backend {
        #[cfg(feature = "openssl-backend")]
        Backend::Openssl => openssl::parse(id, pem),
        #[cfg(feature = "pure-rust")]
        Backend::PureRust => pure_rust::parse(id, pem, hash),
        Backend::Multibuffer => {
            let loaded;
            let engine = match engine {
                Some(engine) => engine,
                None => {
                    loaded = load_engine(None)
                        .map_err(|e| unsupported(format!("backend \"multibuffer\": {e}")))?;
                    &loaded
                }
            };
            parse_multibuffer(id, pem, hash, engine)
        }
        #[allow(unreachable_patterns)] // reachable when one backend is left out of the build
        other => Err(unsupported(format!(
            "backend \"{}\" is not compiled in (build with feature {})",
            other.as_str(),
            match other {
                Backend::PureRust => "pure-rust",
                _ => "openssl-backend",
            }
        ))),
    }
}

/// Parses a key into crypto_mb's lanes (over OpenSSL).
fn parse_multibuffer(
    id: &str,
    pem: &str,
    hash: HashAlg,
    engine: &Arc<Engine>,
) -> Result<Parsed, KeyError> {
    #[cfg(feature = "openssl-backend")]
    {
        multibuffer::key::parse(id, pem, hash, engine)
    }
    #[cfg(not(feature = "openssl-backend"))]
    {
        let _ = (id, pem, hash);
        match **engine {}
    }
}

/// Parses a public key PEM (or a private key's public half) with `backend`'s verifier;
/// the multi-buffer backend, which signs over OpenSSL keys, verifies with OpenSSL.
/// `Ok(None)`: not a key; `Err(backend)`: that backend is not compiled in.
pub(crate) fn parse_public(
    backend: Backend,
    pem: &str,
) -> Result<Option<Box<dyn PublicKey>>, Backend> {
    match backend {
        #[cfg(feature = "openssl-backend")]
        Backend::Openssl | Backend::Multibuffer => Ok(openssl::parse_public(pem)),
        #[cfg(feature = "pure-rust")]
        Backend::PureRust => Ok(pure_rust::parse_public(pem)),
        #[allow(unreachable_patterns)] // reachable when one backend is left out of the build
        other => Err(other),
    }
}

/// What a backend made of a PEM.
pub(crate) struct Parsed {
    pub(crate) kind: KeyKind,
    pub(crate) bits: u32,
    pub(crate) key: Box<dyn PrivateKey>,
}

/// What [`PrivateKey::sign_ecdsa_here`] answers for an RSA key (a bug in the caller).
pub(crate) fn rsa_off_pool() -> CryptoError {
    CryptoError::new(
        "cdnsign",
        "RSA keys sign only on the signing pool".to_owned(),
    )
}

/// PEM "explanatory text" before the first `-----BEGIN` line (our TEST ONLY key carries a
/// warning there) is dropped; strict PEM parsers refuse it.
pub(crate) fn pem_body(pem: &str) -> &str {
    pem.find("-----BEGIN").map_or(pem, |i| &pem[i..])
}

/// The error for a PEM that is no private key at all.
pub(crate) const NOT_A_KEY: &str = "not a PEM private key (expected BEGIN RSA PRIVATE KEY, BEGIN PRIVATE KEY or BEGIN EC PRIVATE KEY)";
