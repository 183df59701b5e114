//! The signing module's key and crypto errors: [`KeyError`] (a key that cannot be loaded)
//! and [`CryptoError`] (a crypto library failing to sign). Neither ever carries key bytes
//! or the message signed.

use std::path::PathBuf;

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

impl KeyError {
    /// Stable short code for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            KeyError::Read { .. } => "read",
            KeyError::Parse { .. } => "parse",
            KeyError::Duplicate(_) => "duplicate",
            KeyError::Unsupported { .. } => "unsupported",
        }
    }
}

/// Errors from a signing operation itself (a crypto library failure, not bad input).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{backend} signing failed: {reason}")]
pub struct CryptoError {
    backend: &'static str,
    reason: String,
}

impl CryptoError {
    /// A failure of `backend`, in words that carry no key material or message.
    pub(crate) fn new(backend: &'static str, reason: String) -> CryptoError {
        CryptoError { backend, reason }
    }

    /// Stable short code for logs and metrics.
    pub fn code(&self) -> &'static str {
        "crypto"
    }
}
