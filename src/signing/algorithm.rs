//! The algorithms a key signs with and the backends that compute them: [`HashAlg`],
//! [`KeyKind`], their metric label ([`algorithm_label`]), [`Backend`], and the key sizes
//! CloudFront accepts (`check_bits`). Shared by the backends (`super::backend`) and the
//! key cache (`super::keys`), which re-exports them.

use serde::{Deserialize, Serialize};

use super::errors::KeyError;

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

/// Which crypto library signs. All give byte-identical RSA signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// The `openssl` crate (default; ~4x faster than `rsa` for RSA-2048 here).
    Openssl,
    /// Pure Rust, feature `pure-rust`: the `rsa` 0.10 crate for RSA, `p256` 0.14 for ECDSA.
    PureRust,
    /// Intel's crypto_mb in 8 AVX-512 IFMA lanes over OpenSSL keys (feature
    /// `openssl-backend`, chosen at run time by `[signing] multibuffer`, never named in
    /// `[signing] backend`).
    #[serde(skip)]
    Multibuffer,
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
            Backend::Multibuffer => "multibuffer",
        }
    }
}

/// Only the sizes CloudFront accepts: RSA 2048 and ECDSA P-256.
pub(crate) fn check_bits(id: &str, kind: KeyKind, bits: u32) -> Result<(), KeyError> {
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
