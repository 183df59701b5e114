//! Errors of the purge service: what a provider said ([`ProviderError`], classified by
//! [`ErrorClass`]) and why a purge call failed as a whole ([`PurgeError`]).

use crate::purge::config::ProviderKind;
use crate::purge::retry::Retry;
use crate::purge::store::StoreError;

/// What a provider error means for the caller and for retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Rate limited: retry with backoff.
    Throttled,
    /// CloudFront `TooManyInvalidationsInProgress`: wait for room.
    Busy,
    /// 5xx, timeouts, connection failures: retry.
    Unavailable,
    /// Credentials refused or not allowed.
    Denied,
    /// The distribution / domain does not exist.
    NotFound,
    /// The provider refused the request as malformed.
    Invalid,
    /// CloudFront `InvalidationBatchAlreadyExists`.
    Conflict,
    /// Daily quota used up: wait for the provider's daily reset.
    QuotaExhausted,
    /// The provider's short window is used up ("try again later": Aliyun's
    /// `QuotaPerMinuteExceeded.Refresh`, `TooMany.Refresh`): wait for the window.
    RateWindow,
    /// Our clock is too far from the provider's.
    Clock,
    /// No credentials configured.
    Credentials,
    /// Nothing reached the provider: its credentials could not be loaded for now (a
    /// credential service that timed out or failed). Retry after a backoff.
    NotSent,
    /// Anything else.
    Other,
}

impl ErrorClass {
    /// Retrying can help.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorClass::Throttled
                | ErrorClass::Busy
                | ErrorClass::Unavailable
                | ErrorClass::NotSent
        )
    }
}

/// An error a CDN API returned. Holds the provider's code and message, never a secret.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} {operation} failed: {code}{}: {message}", provider.as_str(), http_status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
pub struct ProviderError {
    /// Which CDN.
    pub provider: ProviderKind,
    /// API operation.
    pub operation: String,
    /// Provider error code.
    pub code: String,
    /// Provider message (truncated).
    pub message: String,
    /// HTTP status, when there was a response.
    pub http_status: Option<u16>,
    /// What it means.
    pub class: ErrorClass,
}

/// Whether a provider error is worth retrying within one call (not a full distribution,
/// nor credentials that did not load: the scheduler waits a backoff for those).
pub fn retry_class(e: &ProviderError) -> Retry {
    if e.class.is_retryable() && !matches!(e.class, ErrorClass::Busy | ErrorClass::NotSent) {
        Retry::After(None)
    } else {
        Retry::Never
    }
}

/// A purge request failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    /// `target` names no `[[targets]]` entry.
    #[error("target {0:?} is not configured")]
    UnknownTarget(String),
    /// A request field is malformed.
    #[error("{field}: {reason}")]
    Invalid {
        /// Field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// No purge with this id.
    #[error("purge {0:?} not found")]
    NotFound(String),
    /// The idempotency key belongs to a different request.
    #[error("idempotency_key was already used for a different request (purge {0}); use a new key")]
    KeyReused(String),
    /// Aliyun's daily quota cannot cover this purge; nothing was sent.
    #[error(
        "aliyun refresh quota for {domain} is exhausted: {needed} {what} needed, {remain} left today; nothing was sent"
    )]
    QuotaExhausted {
        /// Domain.
        domain: String,
        /// `URLs`, `directories` or `pre-warm URLs`.
        what: &'static str,
        /// Needed by this purge.
        needed: i64,
        /// Left today.
        remain: i64,
    },
    /// The provider refused (after retries where they help).
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The store failed or has not opened yet (database down, disk full, data file held
    /// by another process): purge calls answer UNAVAILABLE; signing is not affected.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PurgeError {
    /// Bounded label for metrics and logs (never request data or secrets).
    pub fn label(&self) -> &'static str {
        match self {
            PurgeError::UnknownTarget(_) => "unknown_target",
            PurgeError::Invalid { .. } => "invalid_argument",
            PurgeError::NotFound(_) => "not_found",
            PurgeError::KeyReused(_) => "key_reused",
            PurgeError::QuotaExhausted { .. } => "quota_exhausted",
            PurgeError::Provider(e) => match e.class {
                ErrorClass::Throttled => "provider_throttled",
                ErrorClass::Busy => "provider_busy",
                ErrorClass::Unavailable => "provider_unavailable",
                ErrorClass::Denied => "provider_denied",
                ErrorClass::NotFound => "provider_not_found",
                ErrorClass::Invalid => "provider_invalid",
                ErrorClass::Conflict => "provider_conflict",
                ErrorClass::QuotaExhausted => "provider_quota",
                ErrorClass::RateWindow => "provider_rate_window",
                ErrorClass::Clock => "provider_clock",
                ErrorClass::Credentials => "provider_credentials",
                ErrorClass::NotSent => "provider_not_sent",
                ErrorClass::Other => "provider_other",
            },
            PurgeError::Store(_) => "store",
        }
    }
}
