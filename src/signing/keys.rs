//! The pre-parsed key cache.
//!
//! Every key is parsed once, when the server starts or reloads, into a [`SigningKey`]
//! held in an immutable [`KeySet`]; the live configuration (`crate::live`) swaps whole sets
//! atomically, so a request sees either the old set or the new one, never a mix, and never
//! waits for a reload.
//! Private key material never leaves the signing module: `Debug` prints the id, kind and
//! size, and errors name the key id and file, never the bytes.
//!
//! The crypto is a backend's (`super::backend`: OpenSSL, pure Rust, multi-buffer), behind
//! one trait; the set of keys is [`KeySet`] (`super::keyset`).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use super::backend::{Engine, Parsed, PrivateKey, pem_body};
use super::pool::OnPool;
use crate::metrics::KeyCounters;

pub use super::algorithm::{Backend, HashAlg, KeyKind, algorithm_label};
pub use super::errors::{CryptoError, KeyError};
pub use super::keyset::KeySet;

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

/// A parsed private key, ready to sign on the pool.
pub struct SigningKey {
    id: String,
    kind: KeyKind,
    hash: HashAlg,
    backend: Backend,
    bits: u32,
    counters: KeyCounters,
    min_lane_fill: usize,
    inner: Box<dyn PrivateKey>,
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

/// The multi-buffer engine keys are parsed with (`None`: none).
pub(crate) type EngineRef<'a> = Option<&'a Arc<Engine>>;

impl SigningKey {
    /// Parses a PKCS#1 or PKCS#8 PEM private key (RSA or EC P-256) for `backend`.
    /// [`Backend::Multibuffer`] loads crypto_mb as `cdnsign serve` would
    /// (`CDNSIGN_CRYPTO_MB_LIB` or the default locations) and fails, naming what is missing,
    /// when it cannot be used here.
    pub fn from_pem(
        id: &str,
        pem: &str,
        hash: HashAlg,
        backend: Backend,
    ) -> Result<SigningKey, KeyError> {
        Self::parse(id, pem, hash, backend, None)
    }

    /// Parses with `engine` for [`Backend::Multibuffer`] (the selection made at start;
    /// `None`: load it as `serve` would).
    pub(crate) fn parse(
        id: &str,
        pem: &str,
        hash: HashAlg,
        backend: Backend,
        engine: EngineRef<'_>,
    ) -> Result<SigningKey, KeyError> {
        let parsed: Parsed = super::backend::parse(id, pem_body(pem), hash, backend, engine)?;
        Ok(SigningKey {
            id: id.to_owned(),
            kind: parsed.kind,
            hash,
            backend,
            bits: parsed.bits,
            counters: KeyCounters::new(id, algorithm_label(parsed.kind, hash)),
            min_lane_fill: parsed.key.min_lane_fill(),
            inner: parsed.key,
        })
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
        self.inner.sign(self.hash, msg)
    }

    /// How many signatures one [`sign_lanes`](Self::sign_lanes) computation makes at once:
    /// 8 with the multi-buffer backend, 1 otherwise.
    pub fn lanes(&self) -> usize {
        self.inner.lanes()
    }

    /// Signs several messages on the pool, up to [`lanes`](Self::lanes) per private-key
    /// computation; one result per message, in order.
    pub fn sign_lanes(
        &self,
        msgs: &[&[u8]],
        _on_pool: &OnPool,
    ) -> Vec<Result<Vec<u8>, CryptoError>> {
        self.inner.sign_lanes(self.hash, msgs)
    }

    /// The fewest signatures worth one lane computation: fewer are signed one by one (see
    /// [`sign_one_by_one`](Self::sign_one_by_one)), in batches and in cross-request
    /// flushes alike. For the multi-buffer backend measured on this CPU when the first key of
    /// its algorithm loads (3 to 5 on the CPUs measured so far); 1 for keys without lanes.
    pub fn min_lane_fill(&self) -> usize {
        self.min_lane_fill
    }

    /// The same key with another [`min_lane_fill`](Self::min_lane_fill) (1 to
    /// [`lanes`](Self::lanes)): 1 puts even a lone signature through the lanes, which is
    /// how the vector tests pin the multi-buffer backend's bytes.
    pub fn with_min_lane_fill(mut self, fill: usize) -> SigningKey {
        self.min_lane_fill = fill.clamp(1, self.lanes().max(1));
        self
    }

    /// Signs each message on its own on the pool, with the key's scalar path (OpenSSL for
    /// a multi-buffer key): for a few messages, cheaper than a lane computation.
    pub fn sign_one_by_one(
        &self,
        msgs: &[&[u8]],
        _on_pool: &OnPool,
    ) -> Vec<Result<Vec<u8>, CryptoError>> {
        self.inner.sign_one_by_one(self.hash, msgs)
    }

    /// Signs `msg` with an ECDSA key on the calling thread (see [`Site::CallerThread`]).
    /// Contains no RSA code: an RSA key returns an error, so RSA stays on the pool.
    ///
    /// [`Site::CallerThread`]: super::pool::Site::CallerThread
    pub fn sign_ecdsa_here(&self, msg: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.inner.sign_ecdsa_here(self.hash, msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::signing::backend::pem_body;

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
        Backend::compiled()
    }

    #[test]
    fn ec_p256_keys_load_on_every_backend_and_other_curves_do_not() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/keys/ec-p256.pem");
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
