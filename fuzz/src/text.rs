//! Free text: what `validate::clean_text` may let through, and its percent-encoding.

use cdnsign::signing::Field;
use cdnsign::signing::validate::{self, MAX_URL_BYTES};

/// A character `validate::clean_text` must never let through.
pub fn forbidden(c: char) -> bool {
    matches!(c, '"' | '\\' | '#') || c.is_control()
}

/// Length of `input` once `clean_text` has percent-encoded spaces and non-ASCII.
pub fn encoded_len(input: &str) -> usize {
    input
        .chars()
        .map(|c| match c {
            ' ' => 3,
            c if c.is_ascii() => 1,
            c => 3 * c.len_utf8(),
        })
        .sum()
}

/// Checks `clean_text` against a model of its rules; returns the cleaned text if any.
///
/// Invariants: never panics; accepts exactly the non-empty inputs with no forbidden
/// character whose encoded length is within the limit; its output holds only printable
/// ASCII other than `"`, `\`, `#` and space; it is idempotent; and without a `%` in the
/// input, percent-decoding the output gives the input back.
pub fn check_clean_text(field: Field, input: &str) -> Option<String> {
    let result = validate::clean_text(field, input);
    let should_accept =
        !input.is_empty() && !input.chars().any(forbidden) && encoded_len(input) <= MAX_URL_BYTES;
    match result {
        Err(e) => {
            assert!(!should_accept, "clean_text refused {input:?}: {e}");
            assert_eq!(e.field(), Some(field), "error names the wrong field: {e}");
            None
        }
        Ok(out) => {
            assert!(should_accept, "clean_text accepted {input:?} as {out:?}");
            let out = out.into_owned();
            assert_eq!(out.len(), encoded_len(input));
            assert_safe_text(&out);
            let again = validate::clean_text(field, &out).expect("cleaned text cleans again");
            assert!(
                matches!(again, std::borrow::Cow::Borrowed(_)) && again == out.as_str(),
                "clean_text is not idempotent: {out:?} -> {again:?}"
            );
            if !input.contains('%') {
                assert_eq!(percent_decode(&out), input, "encoding is not reversible");
            }
            Some(out)
        }
    }
}

/// Text that may go into a policy's JSON string and a URL verbatim.
pub fn assert_safe_text(text: &str) {
    for c in text.chars() {
        assert!(
            c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '#'),
            "unsafe character {c:?} in cleaned text {text:?}"
        );
    }
    assert!(text.len() <= MAX_URL_BYTES);
}

/// Percent-decodes `%XX` sequences (invalid ones are kept as they are).
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
        {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ASCII");
            out.push(u8::from_str_radix(hex, 16).expect("two hex digits"));
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).expect("percent-decoded output is UTF-8")
}
