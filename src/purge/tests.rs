//! Purge service unit tests: error labels are a fixed set that carries no request data.

use super::*;
use crate::purge::config::ProviderKind;
use crate::purge::error::ErrorClass;

#[test]
fn error_labels_are_a_fixed_set_and_carry_no_request_data() {
    let secret = "SecretValue-should-never-be-a-label";
    let provider = |class| {
        PurgeError::Provider(ProviderError {
            provider: ProviderKind::Aliyun,
            operation: secret.into(),
            code: secret.into(),
            message: secret.into(),
            http_status: Some(400),
            class,
        })
    };
    let errors = [
        PurgeError::UnknownTarget(secret.into()),
        PurgeError::Invalid {
            field: "paths",
            reason: secret.into(),
        },
        PurgeError::NotFound(secret.into()),
        PurgeError::KeyReused(secret.into()),
        PurgeError::QuotaExhausted {
            domain: secret.into(),
            what: "URLs",
            needed: 1,
            remain: 0,
        },
        PurgeError::Store(StoreError::Unavailable(secret.into())),
        provider(ErrorClass::Throttled),
        provider(ErrorClass::Busy),
        provider(ErrorClass::Unavailable),
        provider(ErrorClass::Denied),
        provider(ErrorClass::NotFound),
        provider(ErrorClass::Invalid),
        provider(ErrorClass::Conflict),
        provider(ErrorClass::QuotaExhausted),
        provider(ErrorClass::Clock),
        provider(ErrorClass::Credentials),
        provider(ErrorClass::NotSent),
        provider(ErrorClass::Other),
    ];
    let mut labels = HashSet::new();
    for e in &errors {
        let l = e.label();
        assert!(!l.contains("Secret"));
        assert!(
            l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{l}"
        );
        labels.insert(l);
    }
    assert_eq!(labels.len(), errors.len(), "one label per kind of error");
}
