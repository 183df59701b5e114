//! Writing the playlist back: replacement text at given byte ranges, every other byte
//! copied as it was.

use std::borrow::Cow;
use std::ops::Range;

use super::Escape;

/// One replacement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// Bytes replaced.
    pub span: Range<usize>,
    /// New text (already escaped for its place).
    pub text: String,
}

/// `text` for its place: XML-escaped in an MPD, as is in HLS.
pub fn escaped(text: String, escape: Escape) -> String {
    match escape {
        Escape::None => text,
        Escape::Xml => match quick_xml::escape::escape(text.as_str()) {
            Cow::Borrowed(_) => text,
            Cow::Owned(s) => s,
        },
    }
}

/// Applies `edits` to `text`. Edits are sorted by position first; overlapping or
/// out-of-range edits are a bug in the scanner and are skipped rather than corrupting the
/// output.
pub fn apply(text: &str, mut edits: Vec<Edit>) -> String {
    edits.sort_by_key(|e| e.span.start);
    let extra: usize = edits.iter().map(|e| e.text.len()).sum();
    let mut out = String::with_capacity(text.len() + extra);
    let mut at = 0;
    for e in edits {
        let fits = e.span.start >= at
            && e.span.start <= e.span.end
            && e.span.end <= text.len()
            && text.is_char_boundary(e.span.start)
            && text.is_char_boundary(e.span.end);
        debug_assert!(fits, "bad edit {:?} after byte {at}", e.span);
        if !fits {
            continue;
        }
        out.push_str(&text[at..e.span.start]);
        out.push_str(&e.text);
        at = e.span.end;
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_the_spans() {
        let text = "a\r\nURI=\"x\"\r\ny\n";
        let out = apply(
            text,
            vec![
                Edit {
                    span: 12..13,
                    text: "Y?s=1".into(),
                },
                Edit {
                    span: 8..9,
                    text: "X".into(),
                },
            ],
        );
        assert_eq!(out, "a\r\nURI=\"X\"\r\nY?s=1\n");
        assert_eq!(apply(text, Vec::new()), text);
    }

    #[test]
    fn xml_escaping() {
        assert_eq!(
            escaped("https://d/a?x=1&Policy=p".into(), Escape::Xml),
            "https://d/a?x=1&amp;Policy=p"
        );
        assert_eq!(escaped("a&b".into(), Escape::None), "a&b");
    }
}
