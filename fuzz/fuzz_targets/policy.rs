//! Policy builder: arbitrary item and batch fields through `validate::prepare`.
//!
//! Input is text, one field per line (missing lines are empty), so seeds are readable:
//!
//! ```text
//! url
//! policy_resource
//! ip_range
//! key_id            (empty: the batch default)
//! expires_at        (empty/0: unset; "@N": now + N; else an integer)
//! ttl_seconds       (same syntax)
//! not_before        (same syntax)
//! flags             ('c' custom_policy, 'b' bare_resource, 'C' batch custom_policy,
//!                    'g' the caller is the fuzz client with a grant)
//! batch key_id      (empty: the configured default, the SHA-1 TEST ONLY key)
//! batch expires_at
//! batch ttl_seconds
//! max_ttl_seconds   (empty or not positive: the 7-day default)
//! ```
//!
//! Invariants (see `cdnsign_fuzz::check_prepared`): never panics; an accepted item's
//! policy is JSON that parses back to exactly the resource, times and IP range asked for,
//! and a canned policy equals `canned_json(url, expires)`; with a grant, the key is a
//! granted one and the URL and the policy's Resource are inside a granted prefix and free
//! of dot segments (checked by a model independent of `access::resource`).
#![no_main]

use cdnsign::signing::validate::ItemSpec;
use cdnsign_fuzz::{DEFAULT_MAX_TTL, KEY_SHA1, NOW, batch_context, grant, prepare_and_check};
use libfuzzer_sys::fuzz_target;

/// `""` → 0, `"@N"` → NOW + N (saturating), else the integer (garbage → a fixed odd value
/// so the fuzzer still sees a change).
fn time(field: &str) -> i64 {
    if field.is_empty() {
        0
    } else if let Some(rel) = field.strip_prefix('@') {
        rel.parse::<i64>().map_or(-1, |n| NOW.saturating_add(n))
    } else {
        field.parse().unwrap_or(-1)
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let mut next = || lines.next().unwrap_or("");
    let (url, resource, ip, key_id) = (next(), next(), next(), next());
    let (expires_at, ttl, not_before, flags) = (time(next()), time(next()), time(next()), next());
    let (batch_key, batch_expires, batch_ttl) = (next(), time(next()), time(next()));
    let max_ttl = match time(next()) {
        n if n > 0 => n,
        _ => DEFAULT_MAX_TTL,
    };

    let ctx = batch_context(
        batch_key,
        KEY_SHA1,
        batch_expires,
        batch_ttl,
        flags.contains('C'),
        max_ttl,
        flags.contains('g').then(grant),
    );
    let spec = ItemSpec {
        url,
        policy_resource: resource,
        expires_at,
        ttl_seconds: ttl,
        not_before,
        ip_range: ip,
        key_id,
        custom_policy: flags.contains('c'),
        bare_resource: flags.contains('b'),
    };
    prepare_and_check(&spec, &ctx);
});
