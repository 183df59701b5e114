//! HLS playlists (RFC 8216 and its draft successor, with Low-Latency HLS): every URI a
//! player fetches, found line by line without rewriting anything.
//!
//! A line is a tag (`#EXT...`), a comment (any other `#` line), blank, or a URI (a segment
//! in a media playlist, a variant in a master playlist). Lines end in LF or CRLF; a URI
//! line's surrounding whitespace is kept. The tags that carry a `URI` attribute
//! ([`URI_TAGS`]) are read with an attribute-list tokenizer that records where the value
//! is, so only the text between its quotes is ever replaced. Tags not listed (unknown,
//! `EXT-X-DATERANGE`'s client attributes...) are left as they are.

use url::Url;

use super::found::{Escape, Found, Target, UriErrorKind};
use super::hls_vars::Vars;
use super::{Format, PlaylistError};

/// Tags with a URI attribute: (tag, attribute, place name for messages).
pub const URI_TAGS: [(&str, &str, &str); 11] = [
    ("EXT-X-KEY", "URI", "EXT-X-KEY URI"),
    ("EXT-X-SESSION-KEY", "URI", "EXT-X-SESSION-KEY URI"),
    ("EXT-X-MAP", "URI", "EXT-X-MAP URI"),
    ("EXT-X-MEDIA", "URI", "EXT-X-MEDIA URI"),
    (
        "EXT-X-I-FRAME-STREAM-INF",
        "URI",
        "EXT-X-I-FRAME-STREAM-INF URI",
    ),
    // Trick-play image playlists (Roku's and the HLS image-media extension).
    (
        "EXT-X-IMAGE-STREAM-INF",
        "URI",
        "EXT-X-IMAGE-STREAM-INF URI",
    ),
    ("EXT-X-PART", "URI", "EXT-X-PART URI"),
    ("EXT-X-PRELOAD-HINT", "URI", "EXT-X-PRELOAD-HINT URI"),
    (
        "EXT-X-RENDITION-REPORT",
        "URI",
        "EXT-X-RENDITION-REPORT URI",
    ),
    ("EXT-X-SESSION-DATA", "URI", "EXT-X-SESSION-DATA URI"),
    (
        "EXT-X-CONTENT-STEERING",
        "SERVER-URI",
        "EXT-X-CONTENT-STEERING SERVER-URI",
    ),
];

/// Tags only a master playlist has.
const MASTER_TAGS: [&str; 6] = [
    "EXT-X-STREAM-INF",
    "EXT-X-I-FRAME-STREAM-INF",
    "EXT-X-IMAGE-STREAM-INF",
    "EXT-X-MEDIA",
    "EXT-X-SESSION-DATA",
    "EXT-X-SESSION-KEY",
];

/// Tags only a media playlist has.
const MEDIA_TAGS: [&str; 6] = [
    "EXTINF",
    "EXT-X-TARGETDURATION",
    "EXT-X-MEDIA-SEQUENCE",
    "EXT-X-PART",
    "EXT-X-MAP",
    "EXT-X-ENDLIST",
];

/// Whether the text starts like an HLS playlist: `#EXTM3U` (after an optional BOM).
pub fn is_hls(text: &str) -> bool {
    let t = text.strip_prefix('\u{feff}').unwrap_or(text);
    t.strip_prefix("#EXTM3U")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['\r', '\n', ' ', '\t']))
}

/// One attribute of an attribute list: name, where its value is (relative to the list),
/// and whether it was a quoted-string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr<'a> {
    /// `URI`, `METHOD`...
    pub name: &'a str,
    /// Byte range of the value (inside the quotes for a quoted-string).
    pub value: std::ops::Range<usize>,
    /// A quoted-string.
    pub quoted: bool,
}

/// Tokenizes an attribute list (`NAME=VALUE,NAME="quoted, with commas"`), tolerating
/// spaces around names. Fails on a name without `=` or an unterminated quoted-string.
pub fn attributes(list: &str) -> Result<Vec<Attr<'_>>, String> {
    let b = list.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let skip_ws = |mut i: usize| {
        while i < b.len() && matches!(b[i], b' ' | b'\t') {
            i += 1;
        }
        i
    };
    loop {
        i = skip_ws(i);
        if i >= b.len() {
            break;
        }
        let start = i;
        while i < b.len() && b[i] != b'=' && b[i] != b',' {
            i += 1;
        }
        if i >= b.len() || b[i] != b'=' {
            return Err(format!("attribute {:?} has no '='", list[start..i].trim()));
        }
        let name = list[start..i].trim();
        i += 1;
        if b.get(i) == Some(&b'"') {
            let from = i + 1;
            let Some(len) = list[from..].find('"') else {
                return Err(format!(
                    "attribute {name} has an unterminated quoted-string"
                ));
            };
            out.push(Attr {
                name,
                value: from..from + len,
                quoted: true,
            });
            i = skip_ws(from + len + 1);
            if i < b.len() {
                if b[i] != b',' {
                    return Err(format!("attribute {name}: text after its quoted-string"));
                }
                i += 1;
            }
        } else {
            let from = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            let end = from + list[from..i].trim_end().len();
            out.push(Attr {
                name,
                value: from..end,
                quoted: false,
            });
            if i < b.len() {
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Finds every URI of an HLS playlist, resolved against `base`.
pub fn scan(text: &str, base: &Url) -> Result<(Format, Vec<Found>), PlaylistError> {
    let mut found = Vec::new();
    let mut vars = Vars::default();
    let (mut master_line, mut media_line) = (None, None);
    let mut offset = 0;
    for (index, raw) in text.split_inclusive('\n').enumerate() {
        let line_no = u32::try_from(index + 1).unwrap_or(u32::MAX);
        let start = offset;
        offset += raw.len();
        let content = raw.strip_suffix('\n').unwrap_or(raw);
        let mut content = content.strip_suffix('\r').unwrap_or(content);
        let mut skip = 0;
        if index == 0
            && let Some(rest) = content.strip_prefix('\u{feff}')
        {
            skip = '\u{feff}'.len_utf8();
            content = rest;
        }
        let trimmed = content.trim();
        if trimmed.is_empty() {
            continue;
        }
        // Byte offset of `trimmed` in the text.
        let at = start + skip + (content.len() - content.trim_start().len());
        if let Some(tag_line) = trimmed.strip_prefix('#') {
            if !tag_line.starts_with("EXT") {
                continue; // a comment
            }
            let (name, list) = match tag_line.split_once(':') {
                Some((n, l)) => (n, Some(l)),
                None => (tag_line, None),
            };
            if MASTER_TAGS.contains(&name) {
                master_line.get_or_insert(line_no);
            }
            if MEDIA_TAGS.contains(&name) {
                media_line.get_or_insert(line_no);
            }
            if name == "EXT-X-DEFINE"
                && let Some(list) = list
                && let Ok(attrs) = attributes(list)
            {
                vars.define(
                    attrs
                        .iter()
                        .filter(|a| a.quoted)
                        .map(|a| (a.name, &list[a.value.clone()])),
                );
                continue;
            }
            let Some(&(_, attr, place)) = URI_TAGS.iter().find(|(t, _, _)| *t == name) else {
                continue;
            };
            let Some(list) = list else {
                continue;
            };
            let list_at = at + 1 + name.len() + 1;
            if let Some(f) = uri_attribute(list, list_at, attr, place, line_no, base, &vars) {
                found.push(f);
            }
        } else {
            found.push(Found {
                line: line_no,
                span: at..at + trimmed.len(),
                written: trimmed.to_owned(),
                place: "",
                escape: Escape::None,
                target: vars.resolve(base, trimmed),
            });
        }
    }
    let format = match (master_line, media_line) {
        (Some(m), Some(s)) => {
            return Err(PlaylistError::Malformed {
                line: m.max(s),
                reason: format!(
                    "has both master playlist tags (line {m}) and media playlist tags (line {s}); \
                     a playlist is one or the other"
                ),
            });
        }
        (Some(_), None) => Format::HlsMaster,
        _ => Format::HlsMedia,
    };
    let uri_line_place = match format {
        Format::HlsMaster => "variant",
        _ => "segment",
    };
    for f in &mut found {
        if f.place.is_empty() {
            f.place = uri_line_place;
        }
    }
    Ok((format, found))
}

/// The URI attribute `attr` of a tag's attribute list at byte `list_at`, if it has one.
fn uri_attribute(
    list: &str,
    list_at: usize,
    attr: &str,
    place: &'static str,
    line: u32,
    base: &Url,
    vars: &Vars,
) -> Option<Found> {
    let broken = |span: std::ops::Range<usize>, written: &str, why: String| Found {
        line,
        span,
        written: written.to_owned(),
        place,
        escape: Escape::None,
        target: Target::Broken(UriErrorKind::Malformed(why)),
    };
    let whole = list_at..list_at + list.len();
    let attrs = match attributes(list) {
        Ok(a) => a,
        Err(why) => {
            // Only a tag whose text mentions the attribute is reported.
            return list.contains(&format!("{attr}=")).then(|| {
                broken(
                    whole,
                    list,
                    format!("{place}: malformed attribute list: {why}"),
                )
            });
        }
    };
    let mut uris = attrs.iter().filter(|a| a.name == attr);
    let a = uris.next()?;
    let written = &list[a.value.clone()];
    let span = list_at + a.value.start..list_at + a.value.end;
    if uris.next().is_some() {
        return Some(broken(
            span,
            written,
            format!("{place}: the tag has two {attr} attributes"),
        ));
    }
    if !a.quoted {
        return Some(broken(
            span,
            written,
            format!("{place}: {attr} must be a quoted-string"),
        ));
    }
    Some(Found {
        line,
        span,
        written: written.to_owned(),
        place,
        escape: Escape::None,
        target: vars.resolve(base, written),
    })
}
