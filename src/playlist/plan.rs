//! From the URIs found to signing items, and from signed items back to a playlist.
//!
//! Every URL becomes an [`ItemSpec`] for [`crate::signing::sign_batch`], so validation,
//! the caller's grant and grouping are exactly `SignUrls`'s. In `SHARED_POLICY` and
//! `COOKIES` each item also carries the shared resource, and one more item stands for
//! the policy itself (its URL is the resource's literal prefix, so the grant judges the
//! resource and not where the playlist happens to be served): all of them write the same
//! policy, so the batch signs once. A URL the resource does not match is a per-URI error before signing.

use std::ops::Range;

use super::found::{Target, UriErrorKind};
use super::resolve::{covers, default_resource};
use super::rewrite::{Edit, apply, escaped};
use super::template::{self, Kind as TemplateKind};
use super::{Format, Mode, Parsed, PlaylistError};
use crate::access::{Grant, TextKind};
use crate::signing::validate::{ItemSpec, check_url_shape, clean_text};
use crate::signing::{BatchStats, Field, SignError, SignedItem};

/// Request options besides the batch context (key, expiry, grant).
#[derive(Debug, Clone, Copy, Default)]
pub struct SharedOptions<'a> {
    /// Signing mode.
    pub mode: Mode,
    /// Shared policy resource; empty for the directory of `base_url` followed by `*`.
    pub policy_resource: &'a str,
    /// Start of validity (unix seconds), 0 for none.
    pub not_before: i64,
    /// Client IP or CIDR, empty for none.
    pub ip_range: &'a str,
}

/// A URI that was not signed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriError {
    /// 1-based line.
    pub line: u32,
    /// The URI as written.
    pub uri: String,
    /// Why.
    pub kind: UriErrorKind,
}

/// The result of signing a playlist.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// HLS master, HLS media or DASH.
    pub format: Format,
    /// The rewritten playlist (unchanged in `COOKIES` mode).
    pub playlist: String,
    /// URIs not signed, in document order.
    pub errors: Vec<UriError>,
    /// `COOKIES` mode: the signed shared policy (render with [`SignedItem::cookies`]).
    pub cookies: Option<SignedItem>,
    /// Items signed, failed, and private-key operations.
    pub stats: BatchStats,
    /// URIs found.
    pub uris: usize,
    /// URIs replaced by signed URLs.
    pub rewritten: usize,
    /// The shared policy resource (`SHARED_POLICY`, `COOKIES`).
    pub resource: Option<String>,
    /// Expiry put in the policies; 0 when nothing was signed.
    pub expires: i64,
    /// Key id used; empty when nothing was signed.
    pub key_id: String,
}

/// How a signed URI is written back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    /// The absolute signed URL.
    Absolute,
    /// The URI as written with the signing query appended (a DASH URI that resolves
    /// differently per Representation keeps its relative form).
    AsWritten,
}

#[derive(Debug, Clone)]
enum Slot {
    /// Items `range` of the batch; written back as said.
    Items(Range<usize>, Write),
    /// Not for the CDN (`skd://`, `data:`): unchanged, no error.
    Leave,
    /// Unchanged, with this error.
    Error(UriErrorKind),
}

/// The signing items for one playlist.
#[derive(Debug)]
pub struct Plan<'p> {
    parsed: &'p Parsed,
    mode: Mode,
    resource: Option<String>,
    not_before: i64,
    ip_range: String,
    slots: Vec<Slot>,
    urls: Vec<String>,
    /// The policy item's URL is the resource's prefix (its errors are the resource's).
    policy_url_from_resource: bool,
}

/// The URL of the item that stands for the shared policy: the resource's text before its
/// first wildcard when that is an http(s) URL (`https://d/hls/abc/` for
/// `https://d/hls/abc/*`), else `base_url`. Its policy does not contain it; only the
/// validation and the grant check see it.
fn policy_item_url(resource: &str, base: &url::Url) -> (String, bool) {
    let prefix = resource
        .find(['*', '?'])
        .map_or(resource, |i| &resource[..i]);
    match check_url_shape(Field::Url, prefix) {
        Ok(()) => (prefix.to_owned(), true),
        Err(_) => (base.as_str().to_owned(), false),
    }
}

impl<'p> Plan<'p> {
    /// Plans `parsed` in `opts.mode`. `grant` is the caller's (checks templates, which
    /// the batch sees only as their literal text).
    pub fn new(
        parsed: &'p Parsed,
        opts: &SharedOptions<'_>,
        grant: Option<&Grant>,
    ) -> Result<Plan<'p>, PlaylistError> {
        parsed.check_mode(opts.mode)?;
        let resource = if opts.mode.shared() {
            Some(match opts.policy_resource {
                "" => default_resource(&parsed.base),
                r => clean_text(Field::PolicyResource, r)
                    .map_err(PlaylistError::Policy)?
                    .into_owned(),
            })
        } else if !opts.policy_resource.is_empty() {
            return Err(PlaylistError::Invalid {
                field: "policy_resource",
                reason: "applies to SHARED_POLICY and COOKIES; PER_URI signs each URI with a \
                         policy of its own"
                    .into(),
            });
        } else {
            None
        };
        let mut plan = Plan {
            parsed,
            mode: opts.mode,
            resource,
            not_before: opts.not_before,
            ip_range: opts.ip_range.to_owned(),
            slots: Vec::with_capacity(parsed.found.len()),
            urls: Vec::with_capacity(parsed.found.len() + 1),
            policy_url_from_resource: false,
        };
        for f in &parsed.found {
            let slot = match &f.target {
                Target::Other => Slot::Leave,
                Target::Broken(kind) => Slot::Error(kind.clone()),
                Target::Http(r) => plan.slot_for(&r.urls, r.template, grant),
            };
            plan.slots.push(slot);
        }
        if let Some(resource) = &plan.resource {
            let (url, from_resource) = policy_item_url(resource, &parsed.base);
            plan.urls.push(url);
            plan.policy_url_from_resource = from_resource;
        }
        Ok(plan)
    }

    fn slot_for(&mut self, urls: &[String], template: TemplateKind, grant: Option<&Grant>) -> Slot {
        let Some(resource) = &self.resource else {
            return match (urls, template) {
                ([url], TemplateKind::None) => {
                    self.items(std::slice::from_ref(url), Write::Absolute)
                }
                (_, TemplateKind::None) => Slot::Error(UriErrorKind::Several {
                    why: format!(
                        "resolves to {} different URLs through its Representations' BaseURLs",
                        urls.len()
                    ),
                }),
                _ => Slot::Error(UriErrorKind::Several {
                    why: "has template identifiers ($RepresentationID$, $Bandwidth$) that \
                          expand per Representation"
                        .into(),
                }),
            };
        };
        for url in urls {
            if !covers(resource, url, template) {
                return Slot::Error(UriErrorKind::NotCovered {
                    resource: resource.clone(),
                    hint: if template == TemplateKind::None {
                        ""
                    } else {
                        " (a template is covered by a resource that is a literal prefix of it followed by '*')"
                    },
                });
            }
            if template != TemplateKind::None
                && let Some(g) = grant
                && let Err(d) = g.covers(&template::to_pattern(url), TextKind::Pattern)
            {
                return Slot::Error(UriErrorKind::Sign(SignError::Denied {
                    field: Field::Url,
                    reason: d.to_string(),
                }));
            }
        }
        let write = if urls.len() == 1 {
            Write::Absolute
        } else {
            Write::AsWritten
        };
        self.items(urls, write)
    }

    fn items(&mut self, urls: &[String], write: Write) -> Slot {
        let from = self.urls.len();
        self.urls.extend(urls.iter().cloned());
        Slot::Items(from..self.urls.len(), write)
    }

    /// Items to sign, in order (the policy item last in the shared modes).
    pub fn specs(&self) -> Vec<ItemSpec<'_>> {
        let resource = self.resource.as_deref().unwrap_or("");
        self.urls
            .iter()
            .map(|url| ItemSpec {
                url,
                policy_resource: resource,
                not_before: self.not_before,
                ip_range: &self.ip_range,
                ..ItemSpec::default()
            })
            .collect()
    }

    /// Number of items [`specs`](Self::specs) returns.
    pub fn item_count(&self) -> usize {
        self.urls.len()
    }

    /// Whether [`specs`](Self::specs) ends with the shared policy's item (the shared modes):
    /// it signs the policy, and is neither a URI of the playlist nor one returned.
    pub fn has_policy_item(&self) -> bool {
        self.resource.is_some()
    }

    /// Writes the playlist back from the batch's `results` (one per [`specs`](Self::specs)
    /// item, in order). A failed policy item fails the whole request.
    pub fn finish(
        self,
        text: &str,
        mut results: Vec<Result<SignedItem, SignError>>,
        stats: BatchStats,
    ) -> Result<Outcome, PlaylistError> {
        let policy = match self.resource {
            Some(_) => match results.pop() {
                Some(Ok(item)) => Some(item),
                Some(Err(e)) => {
                    return Err(PlaylistError::Policy(
                        match (e, self.policy_url_from_resource) {
                            // Its URL is the resource's prefix: say what the caller sent.
                            (
                                SignError::Denied {
                                    field: Field::Url,
                                    reason,
                                },
                                true,
                            ) => SignError::Denied {
                                field: Field::PolicyResource,
                                reason,
                            },
                            (
                                SignError::Invalid {
                                    field: Field::Url,
                                    reason,
                                },
                                true,
                            ) => SignError::Invalid {
                                field: Field::PolicyResource,
                                reason,
                            },
                            (e, _) => e,
                        },
                    ));
                }
                None => None,
            },
            None => None,
        };
        let mut edits = Vec::new();
        let mut errors = Vec::new();
        for (f, slot) in self.parsed.found.iter().zip(self.slots) {
            let error = |kind| UriError {
                line: f.line,
                uri: f.written.clone(),
                kind,
            };
            let (range, write) = match slot {
                Slot::Leave => continue,
                Slot::Error(kind) => {
                    errors.push(error(kind));
                    continue;
                }
                Slot::Items(range, write) => (range, write),
            };
            let Some(items) = results.get(range) else {
                continue;
            };
            if let Some(Err(e)) = items.iter().find(|r| r.is_err()) {
                errors.push(error(UriErrorKind::Sign(e.clone())));
                continue;
            }
            if self.mode == Mode::Cookies {
                continue;
            }
            let signed = match (write, items.first()) {
                (Write::Absolute, Some(Ok(item))) => item.signed_url(),
                (Write::AsWritten, Some(Ok(item))) => {
                    let full = item.signed_url();
                    let query = full.get(item.url.len() + 1..).unwrap_or_default();
                    let sep = if f.written.contains('?') { '&' } else { '?' };
                    format!("{}{sep}{query}", f.written)
                }
                _ => continue,
            };
            edits.push(Edit {
                span: f.span.clone(),
                text: escaped(signed, f.escape),
            });
        }
        let first = results
            .iter()
            .flatten()
            .next()
            .or(policy.as_ref())
            .map(|i| (i.expires, i.key.id().to_owned()));
        let rewritten = edits.len();
        Ok(Outcome {
            format: self.parsed.format,
            playlist: apply(text, edits),
            errors,
            cookies: if self.mode == Mode::Cookies {
                policy
            } else {
                None
            },
            stats,
            uris: self.parsed.found.len(),
            rewritten,
            resource: self.resource,
            expires: first.as_ref().map_or(0, |f| f.0),
            key_id: first.map(|f| f.1).unwrap_or_default(),
        })
    }
}
