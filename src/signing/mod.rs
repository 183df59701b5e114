//! CloudFront signing: items in, signed URLs or cookies out.
//!
//! Flow for one batch, all of it on the signing pool:
//! [`validate::prepare`] each item (normalise, resolve key and expiry, write the policy) →
//! group items that share a key and an identical policy → one signature per group, in
//! parallel ([`keys::SigningKey::sign`]) → [`SignedItem`] per item, which renders as a URL
//! ([`SignedItem::signed_url`]) or cookies ([`SignedItem::cookies`]).

pub mod keys;
pub mod policy;
pub mod pool;
pub mod public_keys;
pub mod validate;
pub mod verify;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use rayon::prelude::*;

use keys::{CryptoError, HashAlg, KeySet, SigningKey};
use policy::cf_base64;
use pool::Site;
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

/// Signs a batch. Results are in input order; a bad item yields its own error and never
/// affects the others. Items with the same key and byte-identical policy share one
/// signature (a playlist under one wildcard policy costs one RSA operation).
///
/// On [`Site::Pool`] items and signatures spread over the pool's threads; on
/// [`Site::CallerThread`] they run in order on this thread and RSA keys refuse to sign
/// (their items get [`SignError::Crypto`]).
pub fn sign_batch<T: AsItemSpec + Sync>(
    items: &[T],
    ctx: &BatchContext,
    keys: &KeySet,
    site: Site<'_>,
) -> (Vec<Result<SignedItem, SignError>>, BatchStats) {
    let prepared: Vec<Result<Prepared, SignError>> = map_at(site, items, |item| {
        validate::prepare(&item.item_spec(), ctx, keys)
    });

    // Group by (key, policy). Keys are compared by identity: a snapshot holds one Arc
    // per id.
    let mut group_of_item: Vec<usize> = Vec::with_capacity(prepared.len());
    let mut groups: Vec<&Prepared> = Vec::new();
    {
        let mut index: HashMap<(*const SigningKey, &str), usize> = HashMap::new();
        for p in prepared.iter() {
            let group = match p {
                Ok(p) => *index
                    .entry((Arc::as_ptr(&p.key), p.policy.as_str()))
                    .or_insert_with(|| {
                        groups.push(p);
                        groups.len() - 1
                    }),
                Err(_) => usize::MAX,
            };
            group_of_item.push(group);
        }
    }

    type GroupOut = Result<(Arc<str>, Option<Arc<str>>), SignError>;
    let signed_groups: Vec<GroupOut> = map_at(site, &groups, |p| {
        let msg = p.policy.as_bytes();
        let sig = match site {
            Site::Pool(on_pool) => p.key.sign(msg, on_pool)?,
            Site::CallerThread => p.key.sign_ecdsa_here(msg)?,
        };
        p.key.counters().signatures.increment(1);
        let policy_b64 = p.custom.then(|| Arc::from(cf_base64(msg)));
        Ok((Arc::from(cf_base64(&sig)), policy_b64))
    });

    let mut stats = BatchStats {
        signatures: groups.len(),
        ..BatchStats::default()
    };
    let results: Vec<Result<SignedItem, SignError>> = prepared
        .into_iter()
        .zip(group_of_item)
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
