//! What a purge is, as stored and as answered: one record per accepted purge with its
//! provider jobs. The store keeps these; the scheduler moves jobs through their states.

use serde::{Deserialize, Serialize};

use crate::purge::config::ProviderKind;

/// What the caller's items name. One enum from the API to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PurgeKind {
    /// Files (CloudFront also takes `/prefix*` and `#tag` here).
    File,
    /// Directories.
    Directory,
    /// Cache tags.
    CacheTag,
    /// Pre-warm (Aliyun only).
    Prewarm,
}

impl PurgeKind {
    /// Stable name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            PurgeKind::File => "file",
            PurgeKind::Directory => "directory",
            PurgeKind::CacheTag => "cache_tag",
            PurgeKind::Prewarm => "prewarm",
        }
    }
}

/// Lifecycle of a job.
///
/// `Waiting` → `Sending` (stored before the provider call, with the request's reference)
/// → `InProgress` (the provider accepted; its ids stored) → `Completed` or `Failed`. A job
/// found in `Sending` (a crash, a lost lease, a save that failed after the call) is
/// reconciled with the provider before anything is sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Not sent yet.
    Waiting,
    /// Being sent, or sent when the worker stopped: reconcile before sending again.
    Sending,
    /// Accepted by the provider.
    InProgress,
    /// Done.
    Completed,
    /// Given up.
    Failed,
}

impl JobState {
    /// Completed or failed.
    pub fn is_finished(self) -> bool {
        matches!(self, JobState::Completed | JobState::Failed)
    }

    /// Stable name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Waiting => "waiting",
            JobState::Sending => "sending",
            JobState::InProgress => "in_progress",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
        }
    }
}

/// What a job asks of its provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobAction {
    /// CloudFront CreateInvalidation.
    Invalidate,
    /// Aliyun RefreshObjectCaches, ObjectType File.
    RefreshFile,
    /// Aliyun RefreshObjectCaches, ObjectType Directory.
    RefreshDirectory,
    /// Aliyun PushObjectCache.
    Push,
    /// Aliyun RefreshObjectCacheByCacheTag.
    RefreshTag,
}

/// One provider request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Provider.
    pub provider: ProviderKind,
    /// Distribution id or domain.
    pub resource: String,
    /// What to ask.
    pub action: JobAction,
    /// Normalised paths (CloudFront) or URLs (Aliyun).
    pub paths: Vec<String>,
    /// How many of `paths` are wildcards.
    pub wildcards: u32,
    /// State.
    pub state: JobState,
    /// Provider's id(s), once accepted (Aliyun: task ids, comma-separated).
    pub provider_job_id: String,
    /// Provider's own status text.
    pub status_text: String,
    /// Why it waits / what failed.
    pub detail: String,
    /// CloudFront CallerReference (empty for Aliyun): from the purge id and the job, fixed
    /// before the first send, the same on every resend.
    pub caller_reference: String,
    /// Submission attempts so far.
    pub attempts: u32,
    /// After a retryable failure, not tried again before this (unix ms; backoff + jitter).
    #[serde(default)]
    pub not_before_ms: i64,
    /// When it was last put in `Sending`, unix ms (reconciliation looks from here).
    #[serde(default)]
    pub sent_at_ms: i64,
    /// Last change, unix ms.
    pub updated_at_ms: i64,
    /// When it was accepted, unix ms (it may wait `[purge] coalesce_window_ms` from then
    /// for other purges' jobs to share its request).
    #[serde(default)]
    pub accepted_at_ms: i64,
    /// When this job led a request merged from several jobs: the request's paths (its own
    /// and its followers', duplicates and covered paths dropped). Empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request: Vec<String>,
    /// When this job's paths went out in another job's request: that job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub led_by: Option<JobRef>,
    /// Never merge it again (a merged request with it was refused as invalid).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub solo: bool,
}

/// A job by its purge and place.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JobRef {
    /// The purge.
    pub purge_id: String,
    /// The job's index in it.
    pub index: u32,
}

impl JobRecord {
    /// A job for `paths`, not sent yet.
    pub fn waiting(
        provider: ProviderKind,
        resource: &str,
        action: JobAction,
        paths: Vec<String>,
        wildcards: u32,
        now_ms: i64,
    ) -> JobRecord {
        JobRecord {
            provider,
            resource: resource.to_owned(),
            action,
            paths,
            wildcards,
            state: JobState::Waiting,
            provider_job_id: String::new(),
            status_text: String::new(),
            detail: "accepted; not sent yet".into(),
            caller_reference: String::new(),
            attempts: 0,
            not_before_ms: 0,
            sent_at_ms: 0,
            updated_at_ms: now_ms,
            accepted_at_ms: now_ms,
            request: Vec::new(),
            led_by: None,
            solo: false,
        }
    }

    /// Paths the provider bills for this job (CloudFront: each path of the request, a
    /// wildcard or a tag counting once; a request merged from several purges' jobs is billed
    /// once, to the job that led it, so a merged duplicate costs nothing). Aliyun's
    /// refreshes draw on a daily quota and are not billed per path.
    pub fn paths_billed(&self) -> u32 {
        if self.provider != ProviderKind::Cloudfront || self.led_by.is_some() {
            return 0;
        }
        self.request_paths().len() as u32
    }

    /// The paths of the request this job sends: its merged request when it leads one, else
    /// its own.
    pub fn request_paths(&self) -> &[String] {
        if self.request.is_empty() {
            &self.paths
        } else {
            &self.request
        }
    }

    /// The queue this job belongs to.
    pub fn queue(&self) -> QueueKey {
        QueueKey {
            provider: self.provider,
            resource: self.resource.clone(),
        }
    }
}

/// A path that could not be purged as given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedRecord {
    /// As the caller sent it.
    pub path: String,
    /// Why.
    pub reason: String,
}

/// Aliyun quota seen when the purge was accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaRecord {
    /// Provider.
    pub provider: ProviderKind,
    /// Domain.
    pub resource: String,
    /// URLs left today.
    pub url_remain: i64,
    /// Directories left today.
    pub dir_remain: i64,
    /// Pre-warms left today.
    pub preload_remain: i64,
}

/// One accepted purge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeRecord {
    /// `pg_` + 32 hex digits.
    pub id: String,
    /// Acceptance order; set by the store.
    pub seq: u64,
    /// The client that made it (its configured name; empty when authentication is off).
    /// Idempotency keys are scoped to it.
    #[serde(default)]
    pub client: String,
    /// Caller's key, or the id when the caller gave none.
    pub idempotency_key: String,
    /// SHA-256 of target, kind and paths: the same key with another request is refused.
    pub fingerprint: String,
    /// Target name.
    pub target: String,
    /// Kind.
    pub kind: PurgeKind,
    /// Accepted, unix ms.
    pub created_at_ms: i64,
    /// Rejected items.
    pub rejected: Vec<RejectedRecord>,
    /// Provider requests, in the order they were made (a batch sized to the room there
    /// was when it was sent is a job of its own).
    pub jobs: Vec<JobRecord>,
    /// Aliyun quota at acceptance.
    pub quota: Vec<QuotaRecord>,
}

impl PurgeRecord {
    /// Every job finished.
    pub fn is_finished(&self) -> bool {
        self.jobs.iter().all(|j| j.state.is_finished())
    }

    /// Finished, and every job failed: the idempotency key is free again, so the caller
    /// can retry with the same key.
    pub fn wholly_failed(&self) -> bool {
        !self.jobs.is_empty() && self.jobs.iter().all(|j| j.state == JobState::Failed)
    }
}

/// Jobs of one provider resource are sent in order and limited together: one queue per
/// CloudFront distribution or Aliyun domain, worked by one replica at a time (its lease).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QueueKey {
    /// Provider.
    pub provider: ProviderKind,
    /// Distribution id or domain.
    pub resource: String,
}

impl std::fmt::Display for QueueKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.provider.as_str(), self.resource)
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(provider: ProviderKind, paths: &[&str]) -> JobRecord {
        let paths = paths.iter().map(|p| (*p).to_owned()).collect();
        JobRecord::waiting(provider, "E1", JobAction::Invalidate, paths, 0, 1)
    }

    #[test]
    fn cloudfront_bills_the_request_paths_once_to_its_leader_and_aliyun_none() {
        let alone = job(ProviderKind::Cloudfront, &["/a", "/b/*"]);
        assert_eq!(alone.paths_billed(), 2);

        // A leader sends the merged request (its paths and a follower's): billed for all.
        let mut leader = job(ProviderKind::Cloudfront, &["/a"]);
        leader.request = vec!["/a".into(), "/c".into(), "/d".into()];
        assert_eq!(leader.paths_billed(), 3);
        let mut follower = job(ProviderKind::Cloudfront, &["/c", "/d"]);
        follower.led_by = Some(JobRef {
            purge_id: "p1".into(),
            index: 0,
        });
        assert_eq!(follower.paths_billed(), 0);

        // Aliyun draws on the daily quota instead.
        assert_eq!(job(ProviderKind::Aliyun, &["/a", "/b"]).paths_billed(), 0);
    }
}
