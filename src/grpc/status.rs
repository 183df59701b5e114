//! The one place domain errors become gRPC: request-level errors become a
//! [`tonic::Status`], item-level errors a per-item [`proto::ItemError`]. Both matches are
//! exhaustive, so a new error variant does not compile until it has a code.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use crate::playlist::{PlaylistError, UriError, UriErrorKind};
use crate::proto;
use crate::proto::item_error::Code as ItemCode;
use crate::purge::{ErrorClass, PurgeError};
use crate::signing::SignError;
use crate::signing::pool::PoolError;

/// A whole request is refused (as opposed to one item in it).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// More items than `[signing] max_batch`.
    #[error("items: {count} items exceeds the signing.max_batch limit of {max}")]
    TooManyItems {
        /// Items sent.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A batch with no items.
    #[error("items: the request has no items; send at least one")]
    NoItems,
    /// More stream messages than `[signing] max_stream_batches`.
    #[error("stream sent more than the signing.max_stream_batches limit of {max} messages")]
    StreamTooLong {
        /// The limit.
        max: u64,
    },
    /// A request field that applies to the whole batch is malformed.
    #[error("{field}: {reason}")]
    InvalidField {
        /// Field path, e.g. `attributes.domain`.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The caller's rate limit refused the request (no work was done).
    #[error("client {client:?}: {source}")]
    RateLimited {
        /// Configured client name.
        client: String,
        /// Which limit (`urls_per_second`, `purge_paths_per_minute`).
        limit: &'static str,
        /// How much and when to retry.
        source: crate::access::RateError,
    },
    /// The signing pool has more work queued than `[signing] max_queued_items`.
    #[error(
        "signing queue is full ({queued} items queued, signing.max_queued_items is {limit}); retry in {:.1}s",
        retry_after.as_secs_f64()
    )]
    QueueFull {
        /// Items queued now.
        queued: usize,
        /// The limit.
        limit: usize,
        /// When the queue should have room again.
        retry_after: Duration,
    },
    /// The signing pool lost the job (a bug; logged where it happened).
    #[error("signing pool failed to complete the batch")]
    Pool(#[from] PoolError),
}

impl ApiError {
    /// The gRPC code for this refusal.
    pub fn code(&self) -> Code {
        match self {
            ApiError::TooManyItems { .. }
            | ApiError::NoItems
            | ApiError::StreamTooLong { .. }
            | ApiError::InvalidField { .. } => Code::InvalidArgument,
            ApiError::RateLimited { .. } | ApiError::QueueFull { .. } => Code::ResourceExhausted,
            ApiError::Pool(PoolError::Lost) => Code::Internal,
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let code = e.code();
        let message = e.to_string();
        let details = match &e {
            ApiError::RateLimited {
                client,
                limit,
                source,
            } => {
                // No hint for a wait that is not a finite, non-negative number of seconds.
                let wait = source
                    .retry_after()
                    .and_then(|s| Duration::try_from_secs_f64(s).ok());
                let mut d = match wait {
                    Some(wait) => ErrorDetails::with_retry_info(Some(wait)),
                    None => ErrorDetails::new(),
                };
                d.add_quota_failure_violation(
                    format!("client:{client}"),
                    format!("{limit}: {source}"),
                );
                d
            }
            ApiError::QueueFull { retry_after, .. } => {
                ErrorDetails::with_retry_info(Some(*retry_after))
            }
            ApiError::TooManyItems { .. } | ApiError::NoItems => {
                ErrorDetails::with_bad_request_violation("items", message.clone())
            }
            ApiError::StreamTooLong { .. } => {
                ErrorDetails::with_bad_request_violation("stream", message.clone())
            }
            ApiError::InvalidField { field, reason } => {
                ErrorDetails::with_bad_request_violation(*field, reason.clone())
            }
            ApiError::Pool(_) => return Status::new(code, message),
        };
        Status::with_error_details(code, message, details)
    }
}

/// Refusal by the concurrency limit (`[server] max_concurrent_requests`), with a retry hint.
pub fn shed(limit: usize) -> Status {
    Status::with_error_details(
        Code::ResourceExhausted,
        format!(
            "server is at its limit of {limit} concurrent calls (server.max_concurrent_requests); retry with backoff"
        ),
        ErrorDetails::with_retry_info(Some(Duration::from_millis(100))),
    )
}

/// A request message over `[server] max_message_bytes`, refused before it is read.
pub fn message_too_large(len: u64, limit: usize) -> Status {
    Status::resource_exhausted(format!(
        "request message is {len} bytes, over the server.max_message_bytes limit of {limit}"
    ))
}

/// Per-item error for item `index`; `field` is the full path, e.g. `items[3].url`.
pub fn item_error(index: usize, e: &SignError) -> proto::ItemError {
    let code = item_code(e);
    proto::ItemError {
        code: code.into(),
        field: e
            .field()
            .map(|f| format!("items[{index}].{f}"))
            .unwrap_or_default(),
        message: e.to_string(),
    }
}

/// A refused playlist: the code its error says (`INVALID_ARGUMENT` for limits and
/// malformed input, the shared policy's own code when that cannot be signed).
/// `INVALID_ARGUMENT` refusals carry a BadRequest detail naming the request field, as
/// `SignUrls`'s do.
impl From<PlaylistError> for Status {
    fn from(e: PlaylistError) -> Status {
        let code = e.code();
        let message = e.to_string();
        let field: Option<&str> = match &e {
            PlaylistError::TooLarge { .. }
            | PlaylistError::TooManyUris { .. }
            | PlaylistError::TooManyUrls { .. }
            | PlaylistError::UnknownFormat
            | PlaylistError::Malformed { .. } => Some("playlist"),
            PlaylistError::Invalid { field, .. } => Some(field),
            PlaylistError::NeedsSharedPolicy { .. } => Some("mode"),
            PlaylistError::Policy(SignError::Invalid { field, .. })
            | PlaylistError::Request(SignError::Invalid { field, .. }) => Some(field.as_str()),
            PlaylistError::Policy(_) | PlaylistError::Request(_) => None,
        };
        match field {
            Some(f) if code == Code::InvalidArgument => Status::with_error_details(
                code,
                message.clone(),
                ErrorDetails::with_bad_request_violation(f, message),
            ),
            _ => Status::new(code, message),
        }
    }
}

/// One unsigned URI of a playlist, with the code `SignUrls` would give its item.
pub fn uri_error(e: &UriError) -> proto::PlaylistUriError {
    let code = match &e.kind {
        UriErrorKind::Sign(sign) => item_code(sign),
        UriErrorKind::NotCovered { .. }
        | UriErrorKind::Malformed(_)
        | UriErrorKind::Several { .. } => ItemCode::InvalidArgument,
    };
    proto::PlaylistUriError {
        line: e.line,
        uri: e.uri.clone(),
        code: code.into(),
        message: e.kind.to_string(),
    }
}

fn item_code(e: &SignError) -> ItemCode {
    match e {
        SignError::Invalid { .. } => ItemCode::InvalidArgument,
        SignError::UnknownKey(_) | SignError::NoKey => ItemCode::NotFound,
        SignError::Denied { .. } => ItemCode::PermissionDenied,
        SignError::Crypto(_) => ItemCode::Internal,
    }
}

/// Bounded metric label for an item error.
pub fn item_error_label(e: &SignError) -> &'static str {
    match e {
        SignError::Invalid { .. } => "invalid_argument",
        SignError::UnknownKey(_) | SignError::NoKey => "not_found",
        SignError::Denied { .. } => "permission_denied",
        SignError::Crypto(_) => "internal",
    }
}

impl From<PurgeError> for Status {
    fn from(e: PurgeError) -> Status {
        let code = match &e {
            PurgeError::UnknownTarget(_) | PurgeError::NotFound(_) => Code::NotFound,
            PurgeError::Invalid { .. } => Code::InvalidArgument,
            PurgeError::KeyReused(_) => Code::AlreadyExists,
            PurgeError::QuotaExhausted { .. } => Code::ResourceExhausted,
            PurgeError::Store(_) => Code::Unavailable,
            PurgeError::Provider(p) => match p.class {
                ErrorClass::Throttled
                | ErrorClass::Busy
                | ErrorClass::Unavailable
                | ErrorClass::RateWindow
                | ErrorClass::NotSent => Code::Unavailable,
                ErrorClass::Denied => Code::PermissionDenied,
                ErrorClass::NotFound | ErrorClass::Clock | ErrorClass::Credentials => {
                    Code::FailedPrecondition
                }
                ErrorClass::Invalid => Code::InvalidArgument,
                ErrorClass::Conflict => Code::AlreadyExists,
                ErrorClass::QuotaExhausted => Code::ResourceExhausted,
                ErrorClass::Other => Code::Unknown,
            },
        };
        let message = e.to_string();
        let details = match &e {
            PurgeError::Invalid { field, reason } => {
                ErrorDetails::with_bad_request_violation(*field, reason.clone())
            }
            PurgeError::QuotaExhausted { domain, what, .. } => {
                let mut d = ErrorDetails::new();
                d.add_quota_failure_violation(
                    format!("aliyun:{domain}"),
                    format!("daily refresh quota ({what}): {message}"),
                );
                d
            }
            _ => return Status::new(code, message),
        };
        Status::with_error_details(code, message, details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::rate::RateError;

    #[test]
    fn a_rate_refusal_with_no_finite_wait_has_no_retry_hint_and_does_not_panic() {
        for retry_after in [f64::INFINITY, f64::NAN, -1.0] {
            let status = Status::from(ApiError::RateLimited {
                client: "gen".into(),
                limit: "urls_per_second",
                source: RateError::Exceeded {
                    rate: 0.0,
                    retry_after,
                },
            });
            assert_eq!(status.code(), tonic::Code::ResourceExhausted);
            let details = tonic_types::StatusExt::get_error_details(&status);
            assert!(details.retry_info().is_none(), "{retry_after}");
            assert!(details.quota_failure().is_some());
        }
    }
}
