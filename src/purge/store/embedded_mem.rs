//! What the embedded store keeps in memory next to its file: queue leases, the index of
//! unfinished jobs per queue, and rate buckets. One process owns the file, so these need
//! not be durable, but they keep the shared engine's contract: a lease expires unless
//! renewed, its epoch rises at every claim, and every write is fenced by it. The index is
//! rebuilt from the file's unfinished purges at open.

use std::collections::{BTreeSet, HashMap};

use super::{Lease, StoreError, bucket_take};
use crate::purge::config::ProviderKind;
use crate::purge::model::{PurgeRecord, QueueKey};

/// A job's place in its queue: (purge sequence, purge id, job index), FIFO by sequence.
pub(super) type Entry = (u64, String, u32);

#[derive(Debug, Clone)]
struct LeaseState {
    owner: String,
    epoch: i64,
    until_ms: i64,
}

/// Leases, queue index and rate buckets of one process (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Mem {
    leases: HashMap<QueueKey, LeaseState>,
    /// Unfinished jobs per queue, in FIFO order.
    queues: HashMap<QueueKey, BTreeSet<Entry>>,
    /// Token buckets by (client, bucket): (tokens, updated at ms).
    buckets: HashMap<(String, String), (f64, i64)>,
}

impl Mem {
    /// Indexes `rec`'s unfinished jobs under their queues (and drops its finished ones).
    pub(super) fn index(&mut self, rec: &PurgeRecord) {
        for (i, job) in rec.jobs.iter().enumerate() {
            let entry = (rec.seq, rec.id.clone(), i as u32);
            let set = self.queues.entry(job.queue()).or_default();
            if job.state.is_finished() {
                set.remove(&entry);
            } else {
                set.insert(entry);
            }
        }
    }

    /// Drops every job of `rec` from the index (the purge was deleted).
    pub(super) fn unindex(&mut self, rec: &PurgeRecord) {
        for (i, job) in rec.jobs.iter().enumerate() {
            if let Some(set) = self.queues.get_mut(&job.queue()) {
                set.remove(&(rec.seq, rec.id.clone(), i as u32));
            }
        }
    }

    /// `Ok` while `lease` is still the queue's current lease (same owner and epoch;
    /// expiry is the owner's to watch, as with the shared engine).
    pub(super) fn fence(&self, lease: &Lease) -> Result<(), StoreError> {
        match self.leases.get(&lease.queue) {
            Some(l) if l.owner == lease.owner && l.epoch == lease.epoch => Ok(()),
            _ => Err(StoreError::LeaseLost(lease.queue.clone())),
        }
    }

    /// Takes `queue`'s lease for `owner` unless someone holds it unexpired.
    fn take(&mut self, queue: &QueueKey, owner: &str, now: i64, lease_ms: i64) -> Option<Lease> {
        let epoch = match self.leases.get(queue) {
            Some(l) if l.until_ms > now => return None,
            Some(l) => l.epoch + 1,
            None => 1,
        };
        let until_ms = now.saturating_add(lease_ms);
        self.leases.insert(
            queue.clone(),
            LeaseState {
                owner: owner.to_owned(),
                epoch,
                until_ms,
            },
        );
        Some(Lease {
            queue: queue.clone(),
            owner: owner.to_owned(),
            epoch,
            until_ms,
        })
    }

    /// Claims the first free queue (in queue order) of `among` that has unfinished jobs.
    pub(super) fn claim(
        &mut self,
        owner: &str,
        now: i64,
        lease_ms: i64,
        among: &[QueueKey],
    ) -> Option<Lease> {
        let mut candidates: Vec<QueueKey> = self
            .queues
            .iter()
            .filter(|(q, jobs)| !jobs.is_empty() && among.contains(q))
            .map(|(q, _)| q.clone())
            .collect();
        candidates.sort();
        candidates
            .iter()
            .find_map(|q| self.take(q, owner, now, lease_ms))
    }

    /// Claims `queue` if it has unfinished jobs and is free.
    pub(super) fn claim_queue(
        &mut self,
        queue: &QueueKey,
        owner: &str,
        now: i64,
        lease_ms: i64,
    ) -> Option<Lease> {
        if self.queues.get(queue).is_none_or(BTreeSet::is_empty) {
            return None;
        }
        self.take(queue, owner, now, lease_ms)
    }

    /// Extends a lease still held to `now + lease_ms`.
    pub(super) fn renew(
        &mut self,
        lease: Lease,
        now: i64,
        lease_ms: i64,
    ) -> Result<Lease, StoreError> {
        self.fence(&lease)?;
        let until_ms = now.saturating_add(lease_ms);
        if let Some(l) = self.leases.get_mut(&lease.queue) {
            l.until_ms = until_ms;
        }
        Ok(Lease { until_ms, ..lease })
    }

    /// Lets a lease go now (a lease already lost is left to its new owner).
    pub(super) fn release(&mut self, lease: &Lease) {
        if self.fence(lease).is_ok()
            && let Some(l) = self.leases.get_mut(&lease.queue)
        {
            l.until_ms = 0;
        }
    }

    /// The unfinished jobs of a queue whose lease `lease` still is, in FIFO order.
    pub(super) fn queue_entries(&self, lease: &Lease) -> Result<Vec<Entry>, StoreError> {
        self.fence(lease)?;
        Ok(self
            .queues
            .get(&lease.queue)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default())
    }

    /// Takes `n` tokens from a client's bucket (see [`bucket_take`]); `Err(seconds)` to
    /// wait when there are not enough.
    pub(super) fn take_tokens(
        &mut self,
        key: (String, String),
        n: f64,
        rate: f64,
        burst: f64,
        now: i64,
    ) -> Result<(), f64> {
        let state = self.buckets.get(&key).copied();
        let next = bucket_take(state, n, rate, burst, now)?;
        self.buckets.insert(key, next);
        Ok(())
    }

    /// Ids of the purges with unfinished jobs on `provider`'s queues, sorted, once each.
    pub(super) fn unfinished_purges(&self, provider: ProviderKind) -> Vec<String> {
        let mut ids: Vec<String> = self
            .queues
            .iter()
            .filter(|(q, _)| q.provider == provider)
            .flat_map(|(_, set)| set.iter().map(|(_, id, _)| id.clone()))
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::purge::model::{JobAction, JobRecord, JobState, PurgeKind};

    fn job(provider: ProviderKind, resource: &str) -> JobRecord {
        JobRecord::waiting(
            provider,
            resource,
            JobAction::Invalidate,
            vec!["/a".into()],
            0,
            0,
        )
    }

    fn purge(seq: u64, id: &str, jobs: Vec<JobRecord>) -> PurgeRecord {
        PurgeRecord {
            id: id.into(),
            seq,
            client: String::new(),
            idempotency_key: id.into(),
            fingerprint: String::new(),
            target: "t".into(),
            kind: PurgeKind::File,
            created_at_ms: 0,
            rejected: Vec::new(),
            jobs,
            quota: Vec::new(),
        }
    }

    fn queue(provider: ProviderKind, resource: &str) -> QueueKey {
        QueueKey {
            provider,
            resource: resource.into(),
        }
    }

    #[test]
    fn a_lease_is_exclusive_until_it_expires_and_its_epoch_fences_the_old_owner() {
        let mut mem = Mem::default();
        mem.index(&purge(1, "p1", vec![job(ProviderKind::Cloudfront, "E1")]));
        let q = queue(ProviderKind::Cloudfront, "E1");

        let a = mem
            .claim("a", 1_000, 100, std::slice::from_ref(&q))
            .expect("free queue");
        assert_eq!(
            (a.queue.clone(), a.epoch, a.until_ms),
            (q.clone(), 1, 1_100)
        );
        assert!(
            mem.claim("b", 1_099, 100, std::slice::from_ref(&q))
                .is_none(),
            "held until 1100"
        );
        assert!(mem.claim_queue(&q, "b", 1_099, 100).is_none());
        mem.fence(&a).expect("a holds it");

        let b = mem
            .claim_queue(&q, "b", 1_100, 100)
            .expect("expired at 1100");
        assert_eq!(b.epoch, 2);
        assert!(matches!(mem.fence(&a), Err(StoreError::LeaseLost(_))));
        assert!(mem.renew(a.clone(), 1_100, 100).is_err(), "a lost it");
        assert!(mem.queue_entries(&a).is_err(), "a may not read the queue");
        mem.release(&a);
        mem.fence(&b).expect("a's release does not free b's lease");

        let b = mem.renew(b, 1_150, 100).expect("b renews");
        assert_eq!(b.until_ms, 1_250);
        assert!(
            mem.claim("c", 1_200, 100, std::slice::from_ref(&q))
                .is_none(),
            "renewed"
        );
        mem.release(&b);
        let c = mem
            .claim("c", 1_200, 100, std::slice::from_ref(&q))
            .expect("released");
        assert_eq!(c.epoch, 3);
    }

    #[test]
    fn only_queues_with_unfinished_jobs_are_claimed_in_fifo_order() {
        let mut mem = Mem::default();
        let cf = queue(ProviderKind::Cloudfront, "E1");
        let ali = queue(ProviderKind::Aliyun, "cdn.example.com");
        let both = [cf.clone(), ali.clone()];
        assert!(mem.claim("a", 0, 100, &both).is_none(), "nothing to do");

        let mut p2 = purge(
            2,
            "p2",
            vec![
                job(ProviderKind::Cloudfront, "E1"),
                job(ProviderKind::Aliyun, "cdn.example.com"),
            ],
        );
        mem.index(&p2);
        mem.index(&purge(1, "p1", vec![job(ProviderKind::Cloudfront, "E1")]));

        assert!(
            mem.claim("a", 0, 100, &[]).is_none(),
            "a queue not among those served is never claimed"
        );
        let lease = mem
            .claim("a", 0, 100, std::slice::from_ref(&cf))
            .expect("only cloudfront is served");
        assert_eq!(lease.queue, cf);
        let entries = mem.queue_entries(&lease).expect("held");
        assert_eq!(entries, vec![(1, "p1".into(), 0), (2, "p2".into(), 0)]);
        assert_eq!(
            mem.unfinished_purges(ProviderKind::Cloudfront),
            ["p1", "p2"]
        );
        assert_eq!(mem.unfinished_purges(ProviderKind::Aliyun), ["p2"]);

        // A finished job leaves its queue; a queue left empty is not claimed.
        p2.jobs[1].state = JobState::Completed;
        mem.index(&p2);
        assert!(mem.unfinished_purges(ProviderKind::Aliyun).is_empty());
        assert!(mem.claim_queue(&ali, "a", 0, 100).is_none());

        mem.unindex(&p2);
        assert_eq!(
            mem.queue_entries(&lease).expect("held"),
            vec![(1, "p1".into(), 0)]
        );
    }

    #[test]
    fn buckets_are_per_client_and_bucket() {
        let mut mem = Mem::default();
        let key = |c: &str| (c.to_owned(), "purge".to_owned());
        // 1 token a second, burst 2.
        assert_eq!(mem.take_tokens(key("a"), 2.0, 1.0, 2.0, 0), Ok(()));
        let wait = mem
            .take_tokens(key("a"), 1.0, 1.0, 2.0, 0)
            .expect_err("empty");
        assert!(wait > 0.0 && wait <= 1.0, "{wait}");
        assert_eq!(
            mem.take_tokens(key("b"), 2.0, 1.0, 2.0, 0),
            Ok(()),
            "b's own bucket"
        );
        assert_eq!(
            mem.take_tokens(key("a"), 1.0, 1.0, 2.0, 1_000),
            Ok(()),
            "refilled"
        );
    }
}
