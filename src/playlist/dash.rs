//! DASH MPDs (ISO/IEC 23009-1): every URI a player fetches, found with quick-xml's reader
//! and located by byte offset in the original text, so a rewrite replaces only attribute
//! values and `BaseURL` text and leaves every other byte (declaration, comments, namespaces,
//! attribute order, indentation) as it was.
//!
//! URIs and where they are: `BaseURL` (text; one ending in `/` is a directory others
//! resolve against and is not itself fetched), `Location`, `SegmentTemplate@media`,
//! `@initialization`, `@index`, `@bitstreamSwitching`, `SegmentURL@media`, `@index`,
//! `Initialization@sourceURL`, `RepresentationIndex@sourceURL`,
//! `BitstreamSwitching@sourceURL`.
//!
//! Resolution is hierarchical, as the standard says: `base_url` (where the MPD is served),
//! then the first `BaseURL` of MPD, Period, AdaptationSet and Representation. A segment
//! description above the Representations (an AdaptationSet's `SegmentTemplate`) is
//! resolved for each Representation under it; if their `BaseURL`s differ, it stands for
//! several URLs.

use std::borrow::Cow;
use std::collections::HashSet;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use url::Url;

use super::found::{Escape, Found, Resolved, Target, UriErrorKind};
use super::resolve::resolve_as;
use super::template::{self, Kind as TemplateKind};
use super::{Lines, PlaylistError};

/// (element, attribute, place name, may hold template identifiers).
const URI_ATTRS: [(&str, &str, &str, bool); 9] = [
    ("SegmentTemplate", "media", "SegmentTemplate@media", true),
    (
        "SegmentTemplate",
        "initialization",
        "SegmentTemplate@initialization",
        true,
    ),
    ("SegmentTemplate", "index", "SegmentTemplate@index", true),
    (
        "SegmentTemplate",
        "bitstreamSwitching",
        "SegmentTemplate@bitstreamSwitching",
        true,
    ),
    ("SegmentURL", "media", "SegmentURL@media", false),
    ("SegmentURL", "index", "SegmentURL@index", false),
    (
        "Initialization",
        "sourceURL",
        "Initialization@sourceURL",
        false,
    ),
    (
        "RepresentationIndex",
        "sourceURL",
        "RepresentationIndex@sourceURL",
        false,
    ),
    (
        "BitstreamSwitching",
        "sourceURL",
        "BitstreamSwitching@sourceURL",
        false,
    ),
];

/// Elements that can hold a `BaseURL` and own segment descriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Mpd,
    Period,
    AdaptationSet,
    Representation,
    Other,
}

#[derive(Debug)]
struct Elem {
    level: Level,
    parent: Option<usize>,
    /// Text of its first `BaseURL` child.
    base_url: Option<String>,
}

/// What a URI's resolution depends on.
#[derive(Debug, Clone, Copy)]
enum Role {
    /// A `BaseURL` of element `owner`: resolves against the owner's parent chain.
    BaseUrl,
    /// `Location`: against `base_url`.
    Location,
    /// In a segment description: against the Representations that use it.
    Segment(TemplateKind),
}

#[derive(Debug)]
struct Pending {
    found: Found,
    /// The element the URI belongs to (for `BaseURL`/`Location`: the element holding it).
    elem: usize,
    role: Role,
}

/// Whether the text is XML whose root element is `MPD`.
pub fn is_mpd(text: &str) -> bool {
    let mut reader = Reader::from_str(text);
    loop {
        match reader.read_event() {
            Ok(Event::Start(e) | Event::Empty(e)) => return e.local_name().as_ref() == "MPD",
            Ok(Event::Eof) | Err(_) => return false,
            Ok(_) => {}
        }
    }
}

/// Byte offset of `part` (a slice borrowed from `text`) in `text`.
fn offset_in(text: &str, part: &str) -> Option<usize> {
    let start = (part.as_ptr() as usize).checked_sub(text.as_ptr() as usize)?;
    (start + part.len() <= text.len()).then_some(start)
}

/// A span of raw XML text: trimmed, unescaped.
fn read_value(at: usize, raw: &str) -> (std::ops::Range<usize>, Result<String, String>) {
    let lead = raw.len() - raw.trim_start().len();
    let trimmed = raw.trim();
    let span = at + lead..at + lead + trimmed.len();
    let value = if trimmed.contains(['\n', '\r', '\t']) {
        Err(
            "has a line break or tab inside; an XML reader turns it into a space, so \
             cdnsign does not guess which URL is meant"
                .into(),
        )
    } else if trimmed.contains('<') {
        Err(
            "has markup (a comment, CDATA or an element) inside; cdnsign reads plain text only"
                .into(),
        )
    } else {
        quick_xml::escape::unescape(trimmed)
            .map(Cow::into_owned)
            .map_err(|e| format!("bad XML escape: {e}"))
    };
    (span, value)
}

/// Finds every URI of an MPD, resolved against `base`. A URI above the Representations
/// stands for one URL per Representation; when the URIs would resolve to more than
/// `max_urls` URLs in all, the MPD is refused before they are resolved (so a small MPD
/// cannot make a URI for each of many thousand `BaseURL`s: URIs times Representations).
pub fn scan(text: &str, base: &Url, max_urls: usize) -> Result<Vec<Found>, PlaylistError> {
    let lines = Lines::new(text);
    let mut reader = Reader::from_str(text);
    let mut elems: Vec<Elem> = Vec::new();
    let mut stack: Vec<usize> = Vec::new();
    let mut pending: Vec<Pending> = Vec::new();
    // An open `BaseURL` or `Location`: (element holding it, text start, is BaseURL).
    let mut open_text: Option<(usize, usize, bool, usize)> = None;
    loop {
        let before = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        let event = reader.read_event().map_err(|e| PlaylistError::Malformed {
            line: lines.line_of(usize::try_from(reader.error_position()).unwrap_or(0)),
            reason: format!("XML: {e}"),
        })?;
        let after = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        let (e, empty) = match event {
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            Event::End(_) => {
                stack.pop();
                if let Some((holder, from, is_base, depth)) = open_text
                    && depth == stack.len()
                {
                    open_text = None;
                    pending.push(text_uri(text, &lines, from..before, holder, is_base));
                    if is_base
                        && elems[holder].base_url.is_none()
                        && let Some(p) = pending.last()
                    {
                        elems[holder].base_url = Some(p.found.written.clone());
                    }
                }
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        let name = e.local_name().as_ref().to_owned();
        let parent = stack.last().copied();
        let level = match name.as_str() {
            "MPD" => Level::Mpd,
            "Period" => Level::Period,
            "AdaptationSet" => Level::AdaptationSet,
            "Representation" => Level::Representation,
            _ => Level::Other,
        };
        let idx = elems.len();
        elems.push(Elem {
            level,
            parent,
            base_url: None,
        });
        uri_attributes(text, &lines, &e, &name, idx, &mut pending);
        let is_base = name == "BaseURL";
        if (is_base || name == "Location") && !empty {
            let holder = parent.unwrap_or(idx);
            open_text = Some((holder, after, is_base, stack.len()));
        }
        if !empty {
            stack.push(idx);
        }
    }
    if !stack.is_empty() {
        return Err(PlaylistError::Malformed {
            line: lines.line_of(text.len()),
            reason: "XML: the document ends inside an element".into(),
        });
    }
    resolve_all(base, &elems, pending, max_urls)
}

/// The URI in the text of a `BaseURL` or `Location` element.
fn text_uri(
    text: &str,
    lines: &Lines,
    content: std::ops::Range<usize>,
    holder: usize,
    is_base: bool,
) -> Pending {
    let raw = &text[content.clone()];
    let (span, value) = read_value(content.start, raw);
    let (written, target) = match value {
        Ok(v) => (v, Target::Other),
        Err(why) => (
            raw.trim().to_owned(),
            Target::Broken(UriErrorKind::Malformed(why)),
        ),
    };
    Pending {
        found: Found {
            line: lines.line_of(span.start),
            span,
            written,
            place: if is_base { "BaseURL" } else { "Location" },
            escape: Escape::Xml,
            target,
        },
        elem: holder,
        role: if is_base {
            Role::BaseUrl
        } else {
            Role::Location
        },
    }
}

/// Records the URI attributes of one element.
fn uri_attributes(
    text: &str,
    lines: &Lines,
    e: &BytesStart<'_>,
    name: &str,
    idx: usize,
    pending: &mut Vec<Pending>,
) {
    for attr in e.attributes().with_checks(false).flatten() {
        let Some(&(_, _, place, may_template)) = URI_ATTRS
            .iter()
            .find(|(el, at, _, _)| *el == name && *at == attr.key.local_name().as_ref())
        else {
            continue;
        };
        let raw: &str = &attr.value;
        let Some(at) = offset_in(text, raw) else {
            continue;
        };
        let (span, value) = read_value(at, raw);
        let line = lines.line_of(span.start);
        let (written, target, kind) = match value {
            Ok(v) => {
                let kind = if may_template {
                    template::classify(&v)
                } else {
                    Ok(TemplateKind::None)
                };
                match kind {
                    Ok(k) => (v, Target::Other, k),
                    Err(why) => (
                        v,
                        Target::Broken(UriErrorKind::Malformed(why)),
                        TemplateKind::None,
                    ),
                }
            }
            Err(why) => (
                raw.trim().to_owned(),
                Target::Broken(UriErrorKind::Malformed(why)),
                TemplateKind::None,
            ),
        };
        pending.push(Pending {
            found: Found {
                line,
                span,
                written,
                place,
                escape: Escape::Xml,
                target,
            },
            elem: idx,
            role: Role::Segment(kind),
        });
    }
}

/// Resolves every pending URI through the `BaseURL` hierarchy. `Target::Other` on a
/// pending URI means "not resolved yet"; `Broken` stays broken. Refuses, before making
/// them, more than `max_urls` URLs in all.
fn resolve_all(
    base: &Url,
    elems: &[Elem],
    pending: Vec<Pending>,
    max_urls: usize,
) -> Result<Vec<Found>, PlaylistError> {
    // chain[i]: the base URL in force inside element i (after its own BaseURL).
    let mut chain: Vec<Url> = Vec::with_capacity(elems.len());
    // Representations under each element.
    let mut reps: Vec<Vec<usize>> = vec![Vec::new(); elems.len()];
    for (i, e) in elems.iter().enumerate() {
        let outer = e.parent.map_or(base, |p| &chain[p]);
        let own = e
            .base_url
            .as_deref()
            .and_then(|b| outer.join(b).ok())
            .unwrap_or_else(|| outer.clone());
        chain.push(own);
        if e.level == Level::Representation {
            let mut up = Some(i);
            while let Some(a) = up {
                reps[a].push(i);
                up = elems[a].parent;
            }
        }
    }
    let mut out = Vec::with_capacity(pending.len());
    // URLs the URIs may still resolve to.
    let mut budget = max_urls;
    let too_many = || PlaylistError::TooManyUrls { max: max_urls };
    for p in pending {
        let mut found = p.found;
        if matches!(found.target, Target::Broken(_)) {
            out.push(found);
            continue;
        }
        let bases: Vec<&Url> = match p.role {
            Role::Location => vec![base],
            Role::BaseUrl => {
                // A directory is what others resolve against; it is never fetched itself.
                if found.written.ends_with('/') {
                    continue;
                }
                vec![elems[p.elem].parent.map_or(base, |q| &chain[q])]
            }
            Role::Segment(_) => {
                let mut owner = p.elem;
                while elems[owner].level == Level::Other {
                    match elems[owner].parent {
                        Some(q) => owner = q,
                        None => break,
                    }
                }
                let users = &reps[owner];
                if users.len() > budget {
                    return Err(too_many());
                }
                if users.is_empty() {
                    vec![&chain[owner]]
                } else {
                    users.iter().map(|&r| &chain[r]).collect()
                }
            }
        };
        let kind = match p.role {
            Role::Segment(k) => k,
            _ => TemplateKind::None,
        };
        found.target = resolve_many(&bases, &found.written, kind);
        if let Target::Http(r) = &found.target {
            budget = budget.checked_sub(r.urls.len()).ok_or_else(too_many)?;
        }
        out.push(found);
    }
    Ok(out)
}

fn resolve_many(bases: &[&Url], written: &str, kind: TemplateKind) -> Target {
    // One base (the usual case): nothing to merge.
    if let [base] = bases {
        return resolve_as(base, written, kind);
    }
    let mut urls: Vec<String> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut other = false;
    for b in bases {
        match resolve_as(b, written, kind) {
            Target::Http(r) => {
                for u in r.urls {
                    if seen.insert(u.clone()) {
                        urls.push(u);
                    }
                }
            }
            Target::Other => other = true,
            broken @ Target::Broken(_) => return broken,
        }
    }
    if urls.is_empty() || other {
        return if urls.is_empty() {
            Target::Other
        } else {
            Target::Broken(UriErrorKind::Malformed(
                "resolves to http(s) for some Representations and to another scheme for others"
                    .into(),
            ))
        };
    }
    Target::Http(Resolved {
        urls,
        template: kind,
    })
}
