//! Signing whole playlists: HLS (master and media) and DASH MPDs.
//!
//! Flow, all of it on the signing pool:
//!
//! 1. [`parse`]: the size limit, then [`hls`] or [`dash`] finds every URI the player will
//!    fetch, with the exact byte range where it is written, and [`resolve`] turns each into
//!    the absolute URL a player requests (relative URIs against `base_url`, DASH URIs
//!    through their `BaseURL`s), as browsers resolve them (the WHATWG URL standard).
//! 2. [`Parsed::check_mode`]: a DASH template with `$Number$` or `$Time$` names a URL per
//!    segment, which `PER_URI` cannot sign.
//! 3. [`plan::Plan`]: one signing item per URL ([`crate::signing::validate::ItemSpec`]),
//!    so validation, grants ([`crate::access::Grant::covers`]) and grouping are exactly
//!    those of `SignUrls`; in `SHARED_POLICY` and `COOKIES` every item carries the shared
//!    policy resource, so the whole playlist costs one signature.
//! 4. [`crate::signing::sign_batch`], then [`plan::Plan::finish`] ([`rewrite`]): each
//!    signed URI is replaced by its absolute signed URL; every other byte of the playlist
//!    (comments, unknown tags, attribute order, line endings, XML formatting) is copied
//!    as it was.
//!
//! Nothing here knows about gRPC: `grpc::playlist` adapts the protobuf, `cli` the command
//! line.

pub mod dash;
mod found;
pub mod hls;
mod hls_vars;
pub mod plan;
pub mod resolve;
pub mod rewrite;
pub mod template;

use std::fmt;

use tonic::Code;
use url::Url;

pub use found::{Escape, Found, Target, UriErrorKind};
pub use plan::{Outcome, Plan, SharedOptions, UriError};

use crate::signing::keys::KeySet;
use crate::signing::pool::Site;
use crate::signing::validate::BatchContext;
use crate::signing::{Field, SignError, sign_batch};

/// Default `[signing] max_playlist_bytes`: 8 MiB.
pub const DEFAULT_MAX_PLAYLIST_BYTES: usize = 8 * 1024 * 1024;

/// How a playlist is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Every URI gets its own signed URL (canned policy unless `not_before`/`ip_range`).
    #[default]
    PerUri,
    /// One custom policy for the whole playlist, its query appended to every URI.
    SharedPolicy,
    /// The playlist unchanged; `CloudFront-*` cookies for the shared policy.
    Cookies,
}

impl Mode {
    /// The proto enum value's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::PerUri => "PER_URI",
            Mode::SharedPolicy => "SHARED_POLICY",
            Mode::Cookies => "COOKIES",
        }
    }

    /// Whether the mode signs one shared policy.
    pub fn shared(self) -> bool {
        !matches!(self, Mode::PerUri)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of playlist it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// HLS master (multivariant) playlist.
    HlsMaster,
    /// HLS media playlist.
    HlsMedia,
    /// DASH MPD.
    Dash,
}

/// A whole playlist request is refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PlaylistError {
    /// Over `[signing] max_playlist_bytes`.
    #[error("playlist: {bytes} bytes exceeds the signing.max_playlist_bytes limit of {max}")]
    TooLarge {
        /// Size sent.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// More URIs than `[signing] max_batch`.
    #[error("playlist: {count} URIs exceeds the signing.max_batch limit of {max}")]
    TooManyUris {
        /// URIs found.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A DASH MPD whose URIs resolve, one URL per Representation, to more URLs than
    /// `[signing] max_batch`.
    #[error(
        "playlist: its URIs resolve, through the Representations' BaseURLs, to more than \
         {max} URLs (the signing.max_batch limit)"
    )]
    TooManyUrls {
        /// The limit.
        max: usize,
    },
    /// Neither HLS nor DASH.
    #[error(
        "playlist: neither an HLS playlist (first line #EXTM3U) nor a DASH MPD (root element <MPD>)"
    )]
    UnknownFormat,
    /// The playlist cannot be read (XML syntax, HLS structure).
    #[error("playlist: line {line}: {reason}")]
    Malformed {
        /// 1-based line.
        line: u32,
        /// What is wrong.
        reason: String,
    },
    /// A request field is wrong.
    #[error("{field}: {reason}")]
    Invalid {
        /// Field name, e.g. `base_url`.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// `PER_URI` on a DASH template that names a URL per segment.
    #[error(
        "mode: PER_URI cannot sign {place} {template:?} (line {line}): a template with \
         $Number$ or $Time$ names a different URL for every segment, which no single \
         signature covers; use SHARED_POLICY or COOKIES"
    )]
    NeedsSharedPolicy {
        /// 1-based line.
        line: u32,
        /// Element and attribute, e.g. `SegmentTemplate@media`.
        place: &'static str,
        /// The template as written.
        template: String,
    },
    /// The shared policy itself cannot be signed (bad resource, key, expiry, or outside
    /// the caller's grant).
    #[error("shared policy: {0}")]
    Policy(SignError),
    /// A request-wide field (key, expiry, start, IP range) that would fail every URI.
    #[error("{0}")]
    Request(SignError),
}

impl PlaylistError {
    /// The gRPC code for this refusal.
    pub fn code(&self) -> Code {
        match self {
            PlaylistError::TooLarge { .. }
            | PlaylistError::TooManyUris { .. }
            | PlaylistError::TooManyUrls { .. }
            | PlaylistError::UnknownFormat
            | PlaylistError::Malformed { .. }
            | PlaylistError::Invalid { .. }
            | PlaylistError::NeedsSharedPolicy { .. } => Code::InvalidArgument,
            PlaylistError::Policy(e) | PlaylistError::Request(e) => match e {
                SignError::Invalid { .. } => Code::InvalidArgument,
                SignError::UnknownKey(_) | SignError::NoKey => Code::NotFound,
                SignError::Denied { .. } => Code::PermissionDenied,
                SignError::Crypto(_) => Code::Internal,
            },
        }
    }
}

/// A playlist read and its URIs found, ready to be planned in any mode.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// HLS master, HLS media or DASH.
    pub format: Format,
    /// `base_url`, parsed.
    pub base: Url,
    /// Every URI, in document order.
    pub found: Vec<Found>,
}

impl Parsed {
    /// Number of URIs found (what the `max_batch` limit and the rate limit count).
    pub fn uri_count(&self) -> usize {
        self.found.len()
    }

    /// Refuses `PER_URI` when a DASH template names a URL per segment.
    pub fn check_mode(&self, mode: Mode) -> Result<(), PlaylistError> {
        if mode != Mode::PerUri {
            return Ok(());
        }
        for f in &self.found {
            if let Target::Http(r) = &f.target
                && r.template == template::Kind::PerSegment
            {
                return Err(PlaylistError::NeedsSharedPolicy {
                    line: f.line,
                    place: f.place,
                    template: f.written.clone(),
                });
            }
        }
        Ok(())
    }
}

/// Reads a playlist: size limit, format, every URI with where it is written and what it
/// resolves to. `base_url` is where the playlist is served. For input from elsewhere, use
/// [`parse_bounded`], which also bounds what a DASH MPD's URIs resolve to.
pub fn parse(text: &str, base_url: &str, max_bytes: usize) -> Result<Parsed, PlaylistError> {
    parse_bounded(text, base_url, max_bytes, usize::MAX)
}

/// [`parse`], refusing a DASH MPD whose URIs would resolve to more than `max_urls` URLs
/// (a URI above the Representations stands for one per Representation):
/// [`PlaylistError::TooManyUrls`], found before that many are made.
pub fn parse_bounded(
    text: &str,
    base_url: &str,
    max_bytes: usize,
    max_urls: usize,
) -> Result<Parsed, PlaylistError> {
    if text.len() > max_bytes {
        return Err(PlaylistError::TooLarge {
            bytes: text.len(),
            max: max_bytes,
        });
    }
    let base = resolve::base_url(base_url)?;
    let (format, found) = if hls::is_hls(text) {
        hls::scan(text, &base)?
    } else if dash::is_mpd(text) {
        (Format::Dash, dash::scan(text, &base, max_urls)?)
    } else {
        return Err(PlaylistError::UnknownFormat);
    };
    Ok(Parsed {
        format,
        base,
        found,
    })
}

/// Checks the request-wide fields (key, expiry, `not_before`, `ip_range`) once, on a
/// probe item for `base_url`, without signing: a problem there would fail every URI, so
/// it fails the call instead. (The probe's URL and resource are not judged here: URIs
/// may be granted where the playlist itself is not.)
pub fn check_request(
    parsed: &Parsed,
    opts: &SharedOptions<'_>,
    ctx: &BatchContext,
    keys: &KeySet,
) -> Result<(), PlaylistError> {
    let probe = crate::signing::validate::ItemSpec {
        url: parsed.base.as_str(),
        not_before: opts.not_before,
        ip_range: opts.ip_range,
        ..Default::default()
    };
    match crate::signing::validate::prepare(&probe, ctx, keys) {
        Err(e) if !matches!(e.field(), Some(Field::Url | Field::PolicyResource)) => {
            Err(PlaylistError::Request(e))
        }
        _ => Ok(()),
    }
}

/// Plans, signs and rewrites `text` (already [`parse`]d) in one go, on `site`: what the
/// CLI and the benches call; the gRPC service runs the same three steps with its metrics in
/// between.
pub fn sign(
    text: &str,
    parsed: &Parsed,
    opts: &SharedOptions<'_>,
    ctx: &BatchContext,
    keys: &KeySet,
    site: Site<'_>,
) -> Result<Outcome, PlaylistError> {
    check_request(parsed, opts, ctx, keys)?;
    let plan = Plan::new(parsed, opts, ctx.grant.as_deref())?;
    let specs = plan.specs();
    let (results, stats) = sign_batch(&specs, ctx, keys, site);
    drop(specs);
    plan.finish(text, results, stats)
}

/// 1-based line numbers of byte offsets in a text.
#[derive(Debug)]
pub(crate) struct Lines {
    starts: Vec<usize>,
}

impl Lines {
    pub(crate) fn new(text: &str) -> Lines {
        let mut starts = vec![0];
        starts.extend(memchr_newlines(text));
        Lines { starts }
    }

    /// The line holding byte `offset`.
    pub(crate) fn line_of(&self, offset: usize) -> u32 {
        let i = self.starts.partition_point(|&s| s <= offset);
        u32::try_from(i.max(1)).unwrap_or(u32::MAX)
    }
}

fn memchr_newlines(text: &str) -> impl Iterator<Item = usize> + '_ {
    text.bytes()
        .enumerate()
        .filter(|&(_, b)| b == b'\n')
        .map(|(i, _)| i + 1)
}

#[cfg(test)]
mod dash_tests;
#[cfg(test)]
mod errors_tests;
#[cfg(test)]
mod tests;
