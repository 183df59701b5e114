//! Planning a purge before it is stored: its fingerprint (what an idempotency key is
//! checked against), and its items turned into provider jobs, per target entry, with the
//! items no provider can take.

use crate::purge::model::{JobRecord, PurgeKind, RejectedRecord};
use crate::purge::provider::Provider;

/// SHA-256 over target, kind and items: the same key with a different request is refused.
pub fn fingerprint(target: &str, kind: PurgeKind, items: &[String]) -> String {
    let mut text = format!("{target}\n{}\n", kind.as_str());
    for p in items {
        // One line per item: a newline or backslash inside one is escaped, so `["/x\n/y"]`
        // is not `["/x", "/y"]` (items without them read as before: stored keys still match).
        if p.contains(['\n', '\\']) {
            text.push_str(&p.replace('\\', "\\\\").replace('\n', "\\n"));
        } else {
            text.push_str(p);
        }
        text.push('\n');
    }
    crate::purge::aliyun::sha256_hex(text.as_bytes())
}

/// A purge planned for every provider of its target.
#[derive(Debug, Default)]
pub struct PlannedPurge {
    /// Jobs per provider (the index of the provider in the target's list), in order.
    pub legs: Vec<(usize, Vec<JobRecord>)>,
    /// Items refused, each reason naming the provider when the target fans out.
    pub rejected: Vec<RejectedRecord>,
    /// Rejected items per provider kind, for metrics.
    pub rejected_per_provider: Vec<(crate::purge::config::ProviderKind, u64)>,
}

impl PlannedPurge {
    /// No job at all.
    pub fn is_empty(&self) -> bool {
        self.legs.iter().all(|(_, jobs)| jobs.is_empty())
    }
}

/// Plans `items` for each provider of a target.
pub fn plan(
    providers: &[std::sync::Arc<dyn Provider>],
    kind: PurgeKind,
    items: &[String],
    purge_id: &str,
    now_ms: i64,
) -> PlannedPurge {
    let multi = providers.len() > 1;
    let mut out = PlannedPurge::default();
    for (i, p) in providers.iter().enumerate() {
        let planned = p.plan(kind, items, purge_id, now_ms);
        out.rejected_per_provider
            .push((p.kind(), planned.rejected.len() as u64));
        for mut r in planned.rejected {
            if multi {
                r.reason = format!(
                    "{} {}: {}",
                    p.kind().as_str(),
                    p.target().resource(),
                    r.reason
                );
            }
            out.rejected.push(r);
        }
        if !planned.jobs.is_empty() {
            out.legs.push((i, planned.jobs));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_differ_by_every_part() {
        let items = vec!["/a".to_owned(), "/b".to_owned()];
        let f = fingerprint("site", PurgeKind::File, &items);
        assert_eq!(f.len(), 64);
        assert_ne!(f, fingerprint("other", PurgeKind::File, &items));
        assert_ne!(f, fingerprint("site", PurgeKind::Directory, &items));
        assert_ne!(f, fingerprint("site", PurgeKind::File, &items[..1]));
        // Pinned: fingerprints stored by earlier versions still match.
        assert_eq!(
            f,
            "cfee42790dce83a5894d7ba273fa8d052fa4a11480096dfd2f22039f43cf93e8"
        );
        // An item holding a newline is not two items.
        let joined = vec!["/x\n/y".to_owned(), "/z".to_owned()];
        let split = vec!["/x".to_owned(), "/y".to_owned(), "/z".to_owned()];
        assert_ne!(
            fingerprint("site", PurgeKind::File, &joined),
            fingerprint("site", PurgeKind::File, &split)
        );
        let escaped = vec!["/x\\n/y".to_owned(), "/z".to_owned()];
        assert_ne!(
            fingerprint("site", PurgeKind::File, &joined),
            fingerprint("site", PurgeKind::File, &escaped)
        );
    }
}
