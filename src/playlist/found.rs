//! One URI found in a playlist: where it is written, how to write a replacement there, and
//! what it resolves to.

use std::ops::Range;

use super::template;
use crate::signing::SignError;

/// How replacement text must be written at a URI's place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// HLS: as is (a signed URL has no `"`, CR or LF).
    None,
    /// XML attribute value or text: `&`, `<`, `>`, `"` and `'` as entities.
    Xml,
}

/// What a URI resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// http(s): the URL(s) a player requests.
    Http(Resolved),
    /// Another scheme (`skd://`, `data:`...): not fetched from the CDN, left alone.
    Other,
    /// Cannot be used; reported as a per-URI error and left as written.
    Broken(UriErrorKind),
}

/// The absolute URLs a URI stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Absolute, normalised URLs (at least one). More than one for a DASH URI under an
    /// element whose Representations each add their own `BaseURL`.
    pub urls: Vec<String>,
    /// Whether the URI is a DASH template and what its identifiers expand per.
    pub template: template::Kind,
}

/// One URI in a playlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// 1-based line where the URI is written.
    pub line: u32,
    /// Byte range of the URI's text in the playlist (inside the quotes of an attribute;
    /// without surrounding whitespace), the part a rewrite replaces.
    pub span: Range<usize>,
    /// The URI as written (XML entities decoded).
    pub written: String,
    /// Tag or element and attribute, for messages: `segment`, `EXT-X-KEY URI`,
    /// `SegmentURL@media`...
    pub place: &'static str,
    /// How a replacement must be escaped.
    pub escape: Escape,
    /// What it resolves to.
    pub target: Target,
}

/// Why one URI was not signed. The rest of the playlist is unaffected.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UriErrorKind {
    /// Validation, key, grant or crypto, exactly as `SignUrls` reports it.
    #[error(transparent)]
    Sign(#[from] SignError),
    /// The shared policy's resource does not match this URI.
    #[error("not covered by the shared policy resource {resource:?}{hint}")]
    NotCovered {
        /// The resource.
        resource: String,
        /// How to fix it, for templates.
        hint: &'static str,
    },
    /// The URI cannot be resolved or read.
    #[error("{0}")]
    Malformed(String),
    /// A DASH URI that stands for several URLs, which `PER_URI` cannot sign one by one.
    #[error("{why}; PER_URI signs one URL per URI: use SHARED_POLICY or COOKIES")]
    Several {
        /// What it stands for.
        why: String,
    },
}

impl PartialEq for UriErrorKind {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for UriErrorKind {}
