//! URL / resource normaliser: `validate::clean_text` then `validate::check_url_shape`.
//!
//! Input: arbitrary bytes, read as UTF-8 (invalid sequences become U+FFFD, which is
//! non-ASCII and so exercises the percent-encoding path).
//!
//! Invariants (see `cdnsign_fuzz::check_clean_text`): never panics; accepts exactly the
//! inputs with no `"`, `\`, `#` or control character and an encoded length within
//! `MAX_URL_BYTES`; the output holds no `"`, `\`, control character, space or non-ASCII;
//! cleaning it again returns it unchanged (borrowed); and `check_url_shape` only accepts
//! `http(s)://` URLs with a host and no user info.
//!
//! Then the grant check, `access::Grant::covers`, on the cleaned text as a URL and as a
//! pattern (see `cdnsign_fuzz::check_grant_text`: nothing approved lies outside a prefix by
//! an independent model, or has a dot segment) and, for no-panic only, the dot-segment
//! finder on the raw text.
#![no_main]

use cdnsign::access::TextKind;
use cdnsign::access::resource::find_dot_segment;
use cdnsign::signing::Field;
use cdnsign::signing::validate;
use cdnsign_fuzz::{check_clean_text, check_grant_text, check_url_shape};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);
    // The raw text too: check_url_shape documents that it wants cleaned text, but it must
    // not panic on anything.
    let _ = validate::check_url_shape(Field::Url, &input);
    let _ = find_dot_segment(&input, TextKind::Url);
    let _ = find_dot_segment(&input, TextKind::Pattern);
    let _ = cdnsign::access::Prefix::parse(&input);
    if let Some(clean) = check_clean_text(Field::Url, &input) {
        check_url_shape(&clean);
        check_grant_text(&clean);
    }
    // Resources go through the same cleaner under another field name.
    let _ = check_clean_text(Field::PolicyResource, &input);
});
