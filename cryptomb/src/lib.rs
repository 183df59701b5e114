//! A run-time binding to Intel's multi-buffer crypto library, `crypto_mb` (part of the Intel
//! Cryptography Primitives Library, Apache-2.0), for cdnsign's signing backends.
//!
//! `crypto_mb` computes 8 independent RSA or ECDSA operations at once in AVX-512 IFMA lanes.
//! The library is opened with `dlopen` ([`CryptoMb::load`]) rather than linked, so the
//! binary runs where it is absent. What this crate offers is safe:
//!
//! - [`CryptoMb::applicable`]: whether the CPU has what the library needs
//!   (`mbx_is_crypto_mb_applicable`);
//! - [`CryptoMb::rsa2048_private_crt`] / [`CryptoMb::rsa2048_public`]: up to 8 raw RSA-2048
//!   operations (`mbx_rsa_private_crt_ssl_mb8`, `mbx_rsa_public_ssl_mb8`); padding is the
//!   caller's;
//! - [`CryptoMb::p256_sign`]: up to 8 ECDSA P-256 signatures of prehashed messages
//!   (`mbx_nistp256_ecdsa_sign_ssl_mb8`), with nonces from OpenSSL's private CSPRNG.
//!
//! Every `unsafe` block in cdnsign is in this crate, each with the reason it is sound.

mod ecdsa;
mod load;
mod rsa;

pub use ecdsa::{P256Key, P256Lane, P256Signature};
pub use load::{CryptoMb, DEFAULT_CANDIDATES, LoadError, RUNTIME_LIBS};
pub use rsa::{RSA2048_BYTES, Rsa2048Key, RsaLane};

/// Most operations one call computes: the library's 8 lanes.
pub const LANES: usize = 8;

/// Why one lane (or a whole call) produced no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MbError {
    /// More than [`LANES`] operations were passed to one call.
    #[error("{0} operations passed to one call; at most 8 fit")]
    TooManyLanes(usize),
    /// The library's per-lane status was not OK (`MBX_STATUS_*`: 1 mismatched parameter,
    /// 2 null parameter, 4 low order, 8 signature error, 10 unsupported ISA).
    #[error("crypto_mb lane status {0}")]
    Lane(u32),
    /// This CPU cannot run the library ([`CryptoMb::applicable`] is false); nothing was
    /// called.
    #[error("crypto_mb is not applicable on this CPU (no AVX-512 IFMA)")]
    NotApplicable,
    /// OpenSSL failed to make a nonce or read a key.
    #[error("openssl: {0}")]
    Openssl(String),
}

impl MbError {
    /// Stable short code for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            MbError::TooManyLanes(_) => "too_many_lanes",
            MbError::Lane(_) => "lane_status",
            MbError::NotApplicable => "not_applicable",
            MbError::Openssl(_) => "openssl",
        }
    }
}

impl From<openssl::error::ErrorStack> for MbError {
    fn from(e: openssl::error::ErrorStack) -> Self {
        MbError::Openssl(e.to_string())
    }
}

/// The 4-bit status of lane `i` in an `mbx_status` word.
pub(crate) fn lane_status(status: u32, i: usize) -> u32 {
    (status >> (4 * i)) & 0xF
}
