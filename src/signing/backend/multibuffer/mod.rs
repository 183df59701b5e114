//! The multi-buffer backend: Intel's crypto_mb ([`cdnsign_cryptomb`]) signs RSA-2048 and
//! ECDSA P-256 in 8 AVX-512 IFMA lanes, on top of OpenSSL keys.
//!
//! - `engine`: the library, loaded once per process (path from `CDNSIGN_CRYPTO_MB_LIB`,
//!   else the default locations) and only used when `mbx_is_crypto_mb_applicable` says this
//!   CPU runs it.
//! - [`key`]: [`MbKey`], a key that signs up to 8 digests per library call, checks every
//!   RSA signature with the public key before releasing it, and re-signs with OpenSSL any
//!   lane that failed (`cdnsign_multibuffer_fallbacks_total`, an error log line).
//! - [`pkcs1`]: the PKCS#1 v1.5 block the RSA lanes exponentiate.
//!
//! Filling lanes across requests (single-URL calls arriving together) is the signing
//! layer's job: `crate::signing::lanes`.

pub mod calibrate;
pub mod engine;
pub mod key;
pub mod pkcs1;

pub use engine::{Engine, Unavailable, engine};
pub use key::MbKey;

#[cfg(test)]
pub(crate) mod tests;
