//! Caller identity: the `authorization` metadata and the client certificate, through
//! `auth::Authenticator::authenticate` (one configured client, see `cdnsign_fuzz`).
//!
//! Input: the first byte picks what the rest is: even, an `authorization` header value;
//! odd, a client certificate in DER (x509-parser).
//!
//! Invariants: never panics; a header authenticates only when it is `Bearer ` or
//! `bearer ` followed by exactly the fuzz client's token (surrounding whitespace
//! trimmed), and then as that client; a certificate that authenticates names the client
//! in its subject or a SAN.
#![no_main]

use cdnsign_fuzz::{FUZZ_TOKEN, authenticator};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let Ok(value) = http::HeaderValue::from_bytes(rest) else {
            return;
        };
        let result = authenticator().authenticate(Some(&value), None);
        let expected = value.to_str().ok().and_then(|t| {
            t.strip_prefix("Bearer ")
                .or_else(|| t.strip_prefix("bearer "))
                .map(str::trim)
        }) == Some(FUZZ_TOKEN);
        match result {
            Ok(caller) => {
                assert!(expected, "authenticated {value:?}");
                assert_eq!(caller.name(), "fuzz-client");
            }
            Err(_) => assert!(!expected, "refused the right token in {value:?}"),
        }
    } else if let Ok(caller) = authenticator().authenticate(None, Some(rest)) {
        assert_eq!(caller.name(), "fuzz-client");
        // The name is in the DER as text: UTF-8/ASCII, or UTF-16BE for a BMPString.
        let lower = rest.to_ascii_lowercase();
        let utf16: Vec<u8> = "fuzz-client".bytes().flat_map(|b| [0, b]).collect();
        assert!(
            lower.windows(11).any(|w| w == b"fuzz-client")
                || lower.windows(22).any(|w| w == utf16.as_slice()),
            "a certificate without the client's name authenticated"
        );
    }
});
