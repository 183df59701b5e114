//! CloudFront signing: items in, signed URLs or cookies out.
//!
//! Flow for one batch, all of it on the signing pool:
//! [`validate::prepare`] each item (normalise, resolve key and expiry, write the policy) →
//! group items that share a key and an identical policy → one signature per group, in
//! parallel ([`keys::SigningKey::sign`]) → [`SignedItem`] per item, which renders as a URL
//! ([`SignedItem::signed_url`]) or cookies ([`SignedItem::cookies`]).

pub mod algorithm;
pub mod backend;
pub mod errors;
pub mod keys;
pub mod keyset;
pub mod lanes;
pub mod policy;
pub mod pool;
pub mod public_keys;
pub mod selection;
pub mod validate;
pub mod verify;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use rayon::prelude::*;

use keys::{CryptoError, HashAlg, KeySet, SigningKey};
use policy::cf_base64;
use pool::{OnPool, Site};
use validate::{BatchContext, ItemSpec, Prepared};

/// The request field an item error is about; names match the proto's `SignItem` fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `url`
    Url,
    /// `policy_resource`
    PolicyResource,
    /// `expires_at`
    ExpiresAt,
    /// `ttl_seconds`
    TtlSeconds,
    /// `not_before`
    NotBefore,
    /// `ip_range`
    IpRange,
    /// `key_id`
    KeyId,
}

impl Field {
    /// The proto field name.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Url => "url",
            Field::PolicyResource => "policy_resource",
            Field::ExpiresAt => "expires_at",
            Field::TtlSeconds => "ttl_seconds",
            Field::NotBefore => "not_before",
            Field::IpRange => "ip_range",
            Field::KeyId => "key_id",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why one item was not signed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SignError {
    /// The item breaks a rule; the message names it.
    #[error("{field}: {reason}")]
    Invalid {
        /// Offending field.
        field: Field,
        /// The rule and the value's problem (never a signature or key).
        reason: String,
    },
    /// No key with this id is loaded.
    #[error("key_id: no key {0:?} is loaded")]
    UnknownKey(String),
    /// No key id on the item or the request and no `[signing] default_key_id`.
    #[error("key_id: not set on the item or the request, and no default_key_id is configured")]
    NoKey,
    /// The caller may not sign this (issued by the authorization layer).
    #[error("{field}: permission denied: {reason}")]
    Denied {
        /// The field whose value is not allowed.
        field: Field,
        /// Which grant it is outside of.
        reason: String,
    },
    /// The crypto library failed; not the caller's fault.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

impl SignError {
    /// The field the error is about, if any.
    pub fn field(&self) -> Option<Field> {
        match self {
            SignError::Invalid { field, .. } | SignError::Denied { field, .. } => Some(*field),
            SignError::UnknownKey(_) | SignError::NoKey => Some(Field::KeyId),
            SignError::Crypto(_) => None,
        }
    }
}

/// Anything that can be viewed as an [`ItemSpec`] (the proto item, a CLI invocation).
pub trait AsItemSpec {
    /// Borrowed view of the item.
    fn item_spec(&self) -> ItemSpec<'_>;
}

impl AsItemSpec for ItemSpec<'_> {
    fn item_spec(&self) -> ItemSpec<'_> {
        *self
    }
}

/// One signed item; cheap parts are shared between items that share a policy.
#[derive(Debug, Clone)]
pub struct SignedItem {
    /// Normalised URL.
    pub url: String,
    /// `DateLessThan`.
    pub expires: i64,
    /// Signing key.
    pub key: Arc<SigningKey>,
    /// CloudFront base64 of the custom policy, `None` for a canned policy.
    pub policy_b64: Option<Arc<str>>,
    /// CloudFront base64 of the signature.
    pub signature_b64: Arc<str>,
}

impl SignedItem {
    /// The URL with `Expires`/`Policy`, `Signature`, `Key-Pair-Id` (and `Hash-Algorithm`
    /// for SHA-256) appended, after `&` when the URL already has a query.
    pub fn signed_url(&self) -> String {
        use fmt::Write as _;
        let mut out = String::with_capacity(
            self.url.len()
                + self.signature_b64.len()
                + self.policy_b64.as_ref().map_or(24, |p| p.len() + 8)
                + 64,
        );
        out.push_str(&self.url);
        out.push(if self.url.contains('?') { '&' } else { '?' });
        match &self.policy_b64 {
            Some(policy) => {
                out.push_str("Policy=");
                out.push_str(policy);
            }
            None => {
                let _ = write!(out, "Expires={}", self.expires);
            }
        }
        out.push_str("&Signature=");
        out.push_str(&self.signature_b64);
        out.push_str("&Key-Pair-Id=");
        out.push_str(self.key.id());
        if self.key.hash() == HashAlg::Sha256 {
            out.push_str("&Hash-Algorithm=SHA256");
        }
        out
    }

    /// The CloudFront cookies, name and value, in the order CloudFront documents them.
    pub fn cookies(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::with_capacity(4);
        match &self.policy_b64 {
            Some(policy) => out.push(("CloudFront-Policy", policy.to_string())),
            None => out.push(("CloudFront-Expires", self.expires.to_string())),
        }
        out.push(("CloudFront-Signature", self.signature_b64.to_string()));
        out.push(("CloudFront-Key-Pair-Id", self.key.id().to_owned()));
        if self.key.hash() == HashAlg::Sha256 {
            out.push(("CloudFront-Hash-Algorithm", "SHA256".to_owned()));
        }
        out
    }
}

/// What one batch cost, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Items signed.
    pub signed: usize,
    /// Items refused.
    pub failed: usize,
    /// Private-key operations performed (≤ signed: identical policies share one).
    pub signatures: usize,
}

/// A batch after validation: every item prepared (or its error), and the distinct
/// (key, policy) pairs that need a signature.
pub(crate) struct Plan {
    prepared: Vec<Result<Prepared, SignError>>,
    /// For each item, its group (index into `groups`); `usize::MAX` for an error.
    group_of_item: Vec<usize>,
    /// For each group, the index of its first item in `prepared`.
    groups: Vec<usize>,
}

/// One group's signature and policy, CloudFront-base64 encoded.
pub(crate) type GroupOut = Result<(Arc<str>, Option<Arc<str>>), SignError>;

impl Plan {
    /// Validates every item and groups identical (key, policy) pairs. Keys are compared by
    /// identity: a snapshot holds one Arc per id.
    pub(crate) fn new<T: AsItemSpec + Sync>(
        items: &[T],
        ctx: &BatchContext,
        keys: &KeySet,
        site: Site<'_>,
    ) -> Plan {
        let prepared: Vec<Result<Prepared, SignError>> = map_at(site, items, |item| {
            validate::prepare(&item.item_spec(), ctx, keys)
        });
        let mut group_of_item: Vec<usize> = Vec::with_capacity(prepared.len());
        let mut groups: Vec<usize> = Vec::new();
        {
            let mut index: HashMap<(*const SigningKey, &str), usize> = HashMap::new();
            for (i, p) in prepared.iter().enumerate() {
                let group = match p {
                    Ok(p) => *index
                        .entry((Arc::as_ptr(&p.key), p.policy.as_str()))
                        .or_insert_with(|| {
                            groups.push(i);
                            groups.len() - 1
                        }),
                    Err(_) => usize::MAX,
                };
                group_of_item.push(group);
            }
        }
        Plan {
            prepared,
            group_of_item,
            groups,
        }
    }

    /// The groups: each one's key and the exact policy bytes to sign.
    pub(crate) fn groups(&self) -> impl Iterator<Item = (&Arc<SigningKey>, &[u8])> {
        self.groups.iter().filter_map(|&i| {
            self.prepared[i]
                .as_ref()
                .ok()
                .map(|p| (&p.key, p.policy.as_bytes()))
        })
    }

    /// Whether the policy of group `g` is a custom one (it then goes in the URL).
    fn custom(&self, g: usize) -> bool {
        self.prepared[self.groups[g]]
            .as_ref()
            .is_ok_and(|p| p.custom)
    }

    /// Encodes one group's signature (and custom policy) and counts it.
    pub(crate) fn group_out(
        &self,
        g: usize,
        key: &SigningKey,
        msg: &[u8],
        sig: Result<Vec<u8>, CryptoError>,
    ) -> GroupOut {
        let sig = sig?;
        key.counters().signatures.increment(1);
        let policy_b64 = self.custom(g).then(|| Arc::from(cf_base64(msg)));
        Ok((Arc::from(cf_base64(&sig)), policy_b64))
    }

    /// The results in request order, from one [`GroupOut`] per group.
    pub(crate) fn finish(
        self,
        signed_groups: Vec<GroupOut>,
    ) -> (Vec<Result<SignedItem, SignError>>, BatchStats) {
        let mut stats = BatchStats {
            signatures: self.groups.len(),
            ..BatchStats::default()
        };
        let results: Vec<Result<SignedItem, SignError>> = self
            .prepared
            .into_iter()
            .zip(self.group_of_item)
            .map(|(p, group)| {
                let p = p?;
                let (signature_b64, policy_b64) = signed_groups[group].clone()?;
                Ok(SignedItem {
                    url: p.url,
                    expires: p.expires,
                    key: p.key,
                    policy_b64,
                    signature_b64,
                })
            })
            .collect();
        for r in &results {
            if r.is_ok() {
                stats.signed += 1;
            } else {
                stats.failed += 1;
            }
        }
        (results, stats)
    }
}

/// Signs a batch. Results are in input order; a bad item yields its own error and never
/// affects the others. Items with the same key and byte-identical policy share one
/// signature (a playlist under one wildcard policy costs one RSA operation).
///
/// On [`Site::Pool`] items and signatures spread over the pool's threads, and a key that
/// signs in lanes (multi-buffer) gets its signatures in chunks of 8, one computation each;
/// on [`Site::CallerThread`] they run in order on this thread and RSA keys refuse to sign
/// (their items get [`SignError::Crypto`]).
pub fn sign_batch<T: AsItemSpec + Sync>(
    items: &[T],
    ctx: &BatchContext,
    keys: &KeySet,
    site: Site<'_>,
) -> (Vec<Result<SignedItem, SignError>>, BatchStats) {
    let plan = Plan::new(items, ctx, keys, site);
    let signed_groups = match site {
        Site::CallerThread => plan
            .groups()
            .enumerate()
            .map(|(g, (key, msg))| plan.group_out(g, key, msg, key.sign_ecdsa_here(msg)))
            .collect(),
        Site::Pool(on_pool) => sign_groups_in_lanes(&plan, on_pool),
    };
    plan.finish(signed_groups)
}

/// Signs every group on the pool: groups of one key in chunks of its lane count (8 for
/// the multi-buffer backend, else 1), the chunks in parallel; a chunk smaller than the
/// key's [`SigningKey::min_lane_fill`] is signed one by one.
fn sign_groups_in_lanes(plan: &Plan, on_pool: &OnPool) -> Vec<GroupOut> {
    let groups: Vec<(&Arc<SigningKey>, &[u8])> = plan.groups().collect();
    // Group indices by key, in first-seen order.
    let mut by_key: Vec<(&Arc<SigningKey>, Vec<usize>)> = Vec::new();
    for (g, (key, _)) in groups.iter().enumerate() {
        match by_key.iter_mut().find(|(k, _)| Arc::ptr_eq(k, key)) {
            Some((_, v)) => v.push(g),
            None => by_key.push((key, vec![g])),
        }
    }
    let chunks: Vec<(&Arc<SigningKey>, &[usize])> = by_key
        .iter()
        .flat_map(|(key, gs)| gs.chunks(key.lanes().max(1)).map(move |c| (*key, c)))
        .collect();
    let signed: Vec<Vec<(usize, GroupOut)>> = chunks
        .par_iter()
        .map(|(key, gs)| {
            let msgs: Vec<&[u8]> = gs.iter().map(|&g| groups[g].1).collect();
            // Too few for a lane computation (a playlist's one signature, a remainder):
            // one by one is cheaper.
            let sigs = if msgs.len() < key.min_lane_fill() {
                key.sign_one_by_one(&msgs, on_pool)
            } else {
                key.sign_lanes(&msgs, on_pool)
            };
            gs.iter()
                .zip(sigs)
                .map(|(&g, sig)| (g, plan.group_out(g, key, groups[g].1, sig)))
                .collect()
        })
        .collect();
    let mut out: Vec<Option<GroupOut>> = vec![None; groups.len()];
    for (g, o) in signed.into_iter().flatten() {
        out[g] = Some(o);
    }
    out.into_iter()
        .map(|o| {
            o.unwrap_or_else(|| {
                Err(SignError::Crypto(CryptoError::new(
                    "cdnsign",
                    "a signature group was not signed".into(),
                )))
            })
        })
        .collect()
}

/// `items.map(f)`, in parallel on the pool, in order on the caller's thread (where rayon's
/// `par_iter` would hand the work to rayon's global pool and block).
fn map_at<T: Sync, R: Send>(
    site: Site<'_>,
    items: &[T],
    f: impl Fn(&T) -> R + Sync + Send,
) -> Vec<R> {
    match site {
        Site::Pool(_) => items.par_iter().map(f).collect(),
        Site::CallerThread => items.iter().map(f).collect(),
    }
}

#[cfg(test)]
mod tests;
