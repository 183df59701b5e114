//! What the scheduler needs of a CDN, behind one trait: plan a purge into requests, say how
//! much room a queue has, submit, reconcile a request whose fate is unknown, and poll.
//! [`crate::purge::cloudfront`] and [`crate::purge::aliyun`] implement it and own every
//! provider-specific string and limit; nothing else matches on the provider.

use async_trait::async_trait;
use tokio::time::Instant;

use crate::purge::config::{ProviderKind, TargetConfig};
use crate::purge::error::{ProviderError, PurgeError};
use crate::purge::model::{JobRecord, PurgeKind, QuotaRecord, RejectedRecord};

/// A purge planned for one target entry: the jobs to store, the items refused.
#[derive(Debug, Default)]
pub struct Plan {
    /// Provider requests, not sent yet.
    pub jobs: Vec<JobRecord>,
    /// Items that cannot be purged here, with the reason.
    pub rejected: Vec<RejectedRecord>,
}

/// What the provider said when a request was accepted (or found, on reconciliation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// Invalidation id, or task ids (comma-separated).
    pub provider_job_id: String,
    /// The provider's status text.
    pub status_text: String,
    /// Already finished.
    pub completed: bool,
}

/// A request's state at the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Polled {
    /// Still working; the provider's words.
    InProgress(String),
    /// Done.
    Completed(String),
    /// The provider failed it (or some of its paths); why.
    Failed(String),
    /// The provider no longer reports it (it keeps tasks for a limited time); why.
    Gone(String),
}

/// What admission decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admitted {
    /// The provider's quota as seen.
    pub quota: Option<QuotaRecord>,
    /// The jobs wait until then (unix ms) for the quota to reset; `None`: now.
    pub not_before_ms: Option<i64>,
    /// Why they wait, for their `detail`.
    pub why: String,
}

/// How much of a waiting job may be sent now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// All of it.
    All,
    /// Only its first `n` paths (each part is a request of its own).
    First(usize),
    /// Nothing yet; wait for room.
    Wait,
}

/// Room on one queue at the provider, as the scheduler spends it within a pass.
pub trait Room: Send {
    /// How much of `job` fits now.
    fn fit(&self, job: &JobRecord) -> Fit;
    /// Takes the room `job` needs (it was just sent).
    fn take(&mut self, job: &JobRecord);
    /// The provider said it is full: nothing more this pass.
    fn exhaust(&mut self);
    /// Why a job waits, for its `detail`.
    fn describe(&self, job: &JobRecord) -> String;
}

/// One CDN provider for one configured target entry.
#[async_trait]
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// Which provider.
    fn kind(&self) -> ProviderKind;

    /// The target entry this provider instance serves.
    fn target(&self) -> &TargetConfig;

    /// Normalises the caller's items for this provider and splits them into requests that
    /// respect its per-request limits. `purge_id` seeds stable request references.
    fn plan(&self, kind: PurgeKind, items: &[String], purge_id: &str, now_ms: i64) -> Plan;

    /// A name for what admission of these jobs reserves (Aliyun: the account's day quota
    /// of their kind), if anything: purges with the same key are admitted one at a time,
    /// across replicas.
    fn admission_key(&self, jobs: &[JobRecord]) -> Option<String> {
        let _ = jobs;
        None
    }

    /// When the quota admission reserves (see [`admission_key`](Self::admission_key)) next
    /// resets after `now_ms`: jobs put off to then or later reserve the next day's quota,
    /// not today's. Never, for a provider without a day quota.
    fn quota_resets_at(&self, now_ms: i64) -> i64 {
        let _ = now_ms;
        i64::MAX
    }

    /// Checks, before the purge is accepted, what must hold at the provider (Aliyun: the
    /// day's quota, less `reserved` paths of accepted purges not sent yet): when the jobs
    /// can go (now, or after a quota reset) and the quota seen.
    async fn admit(
        &self,
        jobs: &[JobRecord],
        reserved: u64,
        deadline: Instant,
    ) -> Result<Admitted, PurgeError>;

    /// The queue's room now, given its requests in progress (from the store, every
    /// replica's).
    async fn room(&self, in_progress: &[&JobRecord], deadline: Instant) -> Box<dyn Room>;

    /// Sends one request. Called once per attempt: the scheduler decides about retries.
    async fn submit(&self, job: &JobRecord, deadline: Instant) -> Result<Submitted, ProviderError>;

    /// A request found `Sending` (its answer was lost): what the provider has for it, or
    /// `None` when it never arrived and it may be sent.
    async fn reconcile(
        &self,
        job: &JobRecord,
        deadline: Instant,
    ) -> Result<Option<Submitted>, ProviderError>;

    /// The request's state now.
    async fn poll(&self, job: &JobRecord, deadline: Instant) -> Result<Polled, ProviderError>;

    /// Whether a queue's jobs must go out strictly in order (CloudFront: its room is
    /// shared, so a later job must not overtake one that waits). Otherwise a job that waits
    /// for its own reason (a quota reset) lets later ones go.
    fn strict_order(&self) -> bool {
        true
    }

    /// When a request the provider refused for now may be sent again (unix ms), for the
    /// refusals whose wait the provider documents (a per-minute window, a daily quota);
    /// `None`: the scheduler's backoff.
    fn retry_at(&self, e: &ProviderError, now_ms: i64) -> Option<i64> {
        let _ = (e, now_ms);
        None
    }

    /// Most paths one request of `action` may carry.
    fn request_capacity(&self, action: crate::purge::model::JobAction) -> usize;

    /// The paths of one request merged from several jobs: duplicates once, paths another
    /// path of the request covers dropped (CloudFront: a file under a wildcard).
    fn merge(&self, jobs: &[&JobRecord]) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        jobs.iter()
            .flat_map(|j| j.paths.iter())
            .filter(|p| seen.insert(p.as_str()))
            .cloned()
            .collect()
    }

    /// Gives the part of a waiting job that fits now its own request identity (CloudFront:
    /// a CallerReference of its own), before it is stored and sent.
    fn name_part(&self, part: &mut JobRecord, purge_id: &str, index: u32) {
        let _ = (part, purge_id, index);
    }
}

/// Room for a provider that only limits by refusing (Aliyun): everything fits until it
/// says otherwise.
#[derive(Debug, Default)]
pub struct Unlimited {
    exhausted: bool,
}

impl Room for Unlimited {
    fn fit(&self, _job: &JobRecord) -> Fit {
        if self.exhausted { Fit::Wait } else { Fit::All }
    }

    fn take(&mut self, _job: &JobRecord) {}

    fn exhaust(&mut self) {
        self.exhausted = true;
    }

    fn describe(&self, _job: &JobRecord) -> String {
        "waiting: the provider asked to slow down".into()
    }
}
