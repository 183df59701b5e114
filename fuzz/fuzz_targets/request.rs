//! Request validation: arbitrary bytes decoded as a `SignUrlsRequest` (prost), then every
//! item through `validate::prepare` with a batch context built as the server builds it.
//!
//! Each request runs twice: as an anonymous caller (authentication off) and as the fuzz
//! client with a grant (one key, two URL prefixes, 1 h TTL).
//!
//! Invariants: decoding never panics; every item either fails with a per-item error
//! naming a field, or yields a policy that parses back to what was asked and, with the
//! grant, stays inside it (the same checks as the `policy` target,
//! `cdnsign_fuzz::check_prepared`).
#![no_main]

use cdnsign::proto::SignUrlsRequest;
use cdnsign::signing::AsItemSpec;
use cdnsign_fuzz::{DEFAULT_MAX_TTL, KEY_SHA1, batch_context, grant, prepare_and_check};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = SignUrlsRequest::decode(data) else {
        return;
    };
    for g in [None, Some(grant())] {
        let ctx = batch_context(
            &req.key_id,
            KEY_SHA1,
            req.expires_at,
            req.ttl_seconds,
            req.custom_policy,
            DEFAULT_MAX_TTL,
            g,
        );
        for item in &req.items {
            prepare_and_check(&item.item_spec(), &ctx);
        }
    }
});
