//! Alibaba Cloud CDN's error codes and what each means for a purge job: wait and retry,
//! fail the job, or say the caller's request or credentials are wrong.

use crate::purge::config::ProviderKind;
use crate::purge::error::{ErrorClass, ProviderError};

/// A provider error from an Aliyun call.
pub(super) fn perr(
    op: &str,
    code: &str,
    message: String,
    status: Option<u16>,
    class: ErrorClass,
) -> ProviderError {
    ProviderError {
        provider: ProviderKind::Aliyun,
        operation: op.to_owned(),
        code: code.to_owned(),
        message,
        http_status: status,
        class,
    }
}

/// Maps an Aliyun error code / HTTP status to what to do about it. The "try again
/// later" answers documented for RefreshObjectCaches (`QuotaPerMinuteExceeded.Refresh`,
/// `TooMany.Refresh`), throttling and `ServiceUnavailable` never fail a job: it waits.
pub fn classify(code: &str, status: Option<u16>) -> ErrorClass {
    if code.starts_with("QuotaPerMinuteExceeded") || code.starts_with("TooMany.") {
        return ErrorClass::RateWindow;
    }
    if code.starts_with("Throttling") || code == "ServiceBusy" {
        return ErrorClass::Throttled;
    }
    // The day's quota (QuotaExceeded.Refresh / .Push); a per-call limit is a bad request.
    if code.starts_with("QuotaExceeded") {
        return ErrorClass::QuotaExhausted;
    }
    if code.starts_with("InvalidDomain") || code.ends_with(".NotFound") && code.contains("Domain") {
        return ErrorClass::NotFound;
    }
    match code {
        // A fresh nonce is drawn per attempt, so a retry fixes a collision.
        "SignatureNonceUsed" => ErrorClass::Unavailable,
        "ServiceUnavailable" | "InternalError" | "Transport" => ErrorClass::Unavailable,
        "SignatureDoesNotMatch"
        | "IncompleteSignature"
        | "InvalidAccessKeyId.NotFound"
        | "InvalidAccessKeyId.Inactive"
        | "Forbidden.RAM"
        | "Forbidden"
        | "NoPermission" => ErrorClass::Denied,
        "InvalidTimeStamp.Expired" | "InvalidTimeStamp.Format" => ErrorClass::Clock,
        c if c.starts_with("Missing")
            || c.starts_with("Invalid")
            || c.contains("ExceedLimit")
            || c.contains("OverLimit") =>
        {
            ErrorClass::Invalid
        }
        c if c.contains("NotFound") => ErrorClass::NotFound,
        _ => match status {
            Some(429) => ErrorClass::Throttled,
            Some(s) if s >= 500 => ErrorClass::Unavailable,
            Some(401 | 403) => ErrorClass::Denied,
            _ => ErrorClass::Other,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_codes_map_to_what_a_job_does() {
        let cases = [
            // "Try again later": the job waits its window, never fails.
            (
                "QuotaPerMinuteExceeded.Refresh",
                Some(400),
                ErrorClass::RateWindow,
            ),
            ("TooMany.Refresh", Some(400), ErrorClass::RateWindow),
            ("Throttling.User", Some(400), ErrorClass::Throttled),
            ("Throttling", Some(400), ErrorClass::Throttled),
            ("ServiceBusy", Some(503), ErrorClass::Throttled),
            ("ServiceUnavailable", Some(503), ErrorClass::Unavailable),
            ("InternalError", Some(500), ErrorClass::Unavailable),
            ("SignatureNonceUsed", Some(400), ErrorClass::Unavailable),
            // The day's quota.
            (
                "QuotaExceeded.Refresh",
                Some(400),
                ErrorClass::QuotaExhausted,
            ),
            ("QuotaExceeded.Push", Some(400), ErrorClass::QuotaExhausted),
            // The domain.
            ("InvalidDomain.NotFound", Some(404), ErrorClass::NotFound),
            ("InvalidDomain.Offline", Some(400), ErrorClass::NotFound),
            // Credentials and clock.
            ("SignatureDoesNotMatch", Some(400), ErrorClass::Denied),
            ("InvalidAccessKeyId.NotFound", Some(404), ErrorClass::Denied),
            ("Forbidden.RAM", Some(403), ErrorClass::Denied),
            ("InvalidTimeStamp.Expired", Some(400), ErrorClass::Clock),
            // The request itself.
            (
                "InvalidObjectPath.Malformed",
                Some(400),
                ErrorClass::Invalid,
            ),
            ("MissingParameter", Some(400), ErrorClass::Invalid),
            ("Urls.ExceedLimit", Some(400), ErrorClass::Invalid),
            // Unknown codes by their HTTP status.
            ("Something.New", Some(429), ErrorClass::Throttled),
            ("Something.New", Some(502), ErrorClass::Unavailable),
            ("Something.New", Some(403), ErrorClass::Denied),
            ("Something.New", Some(400), ErrorClass::Other),
            ("Something.New", None, ErrorClass::Other),
        ];
        for (code, status, want) in cases {
            assert_eq!(classify(code, status), want, "{code} {status:?}");
        }
    }

    #[test]
    fn errors_name_the_provider_operation_and_code() {
        let e = perr(
            "RefreshObjectCaches",
            "TooMany.Refresh",
            "slow down".into(),
            Some(400),
            ErrorClass::RateWindow,
        );
        assert_eq!(e.provider, ProviderKind::Aliyun);
        assert_eq!(
            (e.operation.as_str(), e.code.as_str()),
            ("RefreshObjectCaches", "TooMany.Refresh")
        );
        let text = e.to_string();
        assert!(
            text.contains("RefreshObjectCaches")
                && text.contains("TooMany.Refresh")
                && text.contains("HTTP 400"),
            "{text}"
        );
    }
}
