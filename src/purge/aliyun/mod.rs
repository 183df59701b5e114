//! Alibaba Cloud CDN behind [`Provider`] ([`AliyunProvider`]): its URLs, per-call limits
//! (1,000 URLs, 100 directories, 100 pre-warms), actions, task ids and statuses all live
//! here; `api` is the HTTPS client, [`sign`] its signatures and `errors` what its error
//! codes mean.
//!
//! Aliyun has no idempotency token, so a refresh whose answer was lost (a timeout, a
//! crash between the call and the save) is never sent again blindly: the job stays
//! `Sending` and [`AliyunProvider::reconcile`] looks for its tasks with
//! DescribeRefreshTasks (by domain, type and time window, matched by ObjectPath) first.

mod api;
mod errors;
mod responses;
pub mod sign;

pub use api::{
    API_VERSION, Aliyun, DEFAULT_ENDPOINT, MAX_DIRS_PER_CALL, MAX_PUSH_PER_CALL,
    MAX_TASK_IDS_PER_CALL, MAX_URLS_PER_CALL, SignedRequest,
};
pub use errors::classify;
pub use responses::{Quota, TaskStatus};
pub use sign::{
    AliyunCredentials, Secret, V3Request, canonical_query, iso8601, percent_encode, sha256_hex,
    sign_v1, sign_v3,
};

use std::collections::HashSet;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::purge::config::{ProviderKind, TargetConfig};
use crate::purge::error::{ErrorClass, ProviderError, PurgeError, retry_class};
use crate::purge::model::{JobAction, JobRecord, PurgeKind, QuotaRecord, RejectedRecord, now_ms};
use crate::purge::provider::{Admitted, Plan, Polled, Provider, Room, Submitted, Unlimited};
use crate::purge::retry::{Backoff, retry};

/// RefreshObjectCacheByCacheTag: most tags cdnsign puts in one call (Aliyun documents a
/// comma list and no count; a call never carries more than this).
pub const MAX_TAGS_PER_CALL: usize = 100;

/// Most pages of 100 tasks reconciliation reads.
const RECONCILE_PAGES: u32 = 20;
/// How far past now reconciliation's DescribeRefreshTasks window reaches (a clock of ours
/// behind Aliyun's). The window starts at the second the job was marked `Sending`.
const RECONCILE_SLACK_SECONDS: i64 = 120;

/// Aliyun's daily refresh quotas reset at midnight China Standard Time (UTC+8).
const QUOTA_RESET_OFFSET_MS: i64 = 8 * 3_600_000;

/// The next daily quota reset after `now_ms` (unix ms).
pub fn next_quota_reset(now_ms: i64) -> i64 {
    let day = 86_400_000;
    let local = now_ms + QUOTA_RESET_OFFSET_MS;
    (local.div_euclid(day) + 1) * day - QUOTA_RESET_OFFSET_MS
}

/// One Aliyun domain of a target, as a [`Provider`].
pub struct AliyunProvider {
    target: TargetConfig,
    api: Aliyun,
    backoff: Backoff,
    /// How long a "try again later" refusal (`QuotaPerMinuteExceeded.Refresh`,
    /// `TooMany.Refresh`) waits (`[purge] aliyun_quota_backoff_seconds`).
    window_ms: i64,
}

impl std::fmt::Debug for AliyunProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AliyunProvider")
            .field("domain", &self.target.resource())
            .finish_non_exhaustive()
    }
}

impl AliyunProvider {
    /// A provider for `target` through `api`.
    pub fn new(
        target: TargetConfig,
        api: Aliyun,
        backoff: Backoff,
        window: std::time::Duration,
    ) -> AliyunProvider {
        AliyunProvider {
            target,
            api,
            backoff,
            window_ms: i64::try_from(window.as_millis()).unwrap_or(i64::MAX),
        }
    }

    fn domain(&self) -> &str {
        self.target.resource()
    }

    /// DescribeRefreshTasks' `ObjectType` for an action (also naming its quota's admission
    /// lock). Aliyun documents no type for cache-tag tasks: `cachetag` is never sent to it.
    fn object_type(action: JobAction) -> &'static str {
        match action {
            JobAction::RefreshDirectory => "directory",
            JobAction::Push => "preload",
            JobAction::RefreshTag => "cachetag",
            _ => "file",
        }
    }
}

fn count_retries(operation: &'static str, attempts: u32) {
    if attempts > 1 {
        metrics::counter!(crate::metrics::UPSTREAM_RETRIES, "provider" => "aliyun", "operation" => operation)
            .increment(u64::from(attempts - 1));
    }
}

#[async_trait]
impl Provider for AliyunProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Aliyun
    }

    fn target(&self) -> &TargetConfig {
        &self.target
    }

    fn plan(&self, kind: PurgeKind, items: &[String], _purge_id: &str, now_ms: i64) -> Plan {
        let mut plan = Plan::default();
        let mut seen = HashSet::new();
        let mut urls = Vec::new();
        for item in items {
            match crate::purge::paths::aliyun(&self.target, kind, item) {
                Ok(u) => {
                    let key = if kind == PurgeKind::CacheTag {
                        u.to_ascii_lowercase()
                    } else {
                        u.clone()
                    };
                    if seen.insert(key) {
                        urls.push(u);
                    }
                }
                Err(reason) => plan.rejected.push(RejectedRecord {
                    path: item.clone(),
                    reason,
                }),
            }
        }
        let (action, per_call) = match kind {
            PurgeKind::Prewarm => (JobAction::Push, MAX_PUSH_PER_CALL),
            PurgeKind::CacheTag => (JobAction::RefreshTag, MAX_TAGS_PER_CALL),
            PurgeKind::Directory => (JobAction::RefreshDirectory, MAX_DIRS_PER_CALL),
            _ => (JobAction::RefreshFile, MAX_URLS_PER_CALL),
        };
        for chunk in urls.chunks(per_call) {
            plan.jobs.push(JobRecord::waiting(
                ProviderKind::Aliyun,
                self.domain(),
                action,
                chunk.to_vec(),
                0,
                now_ms,
            ));
        }
        plan
    }

    fn admission_key(&self, jobs: &[JobRecord]) -> Option<String> {
        // One account (the credentials come from the environment), one quota per kind.
        jobs.first()
            .map(|j| format!("aliyun-quota:{}", Self::object_type(j.action)))
    }

    fn quota_resets_at(&self, now_ms: i64) -> i64 {
        next_quota_reset(now_ms)
    }

    async fn admit(
        &self,
        jobs: &[JobRecord],
        reserved: u64,
        deadline: Instant,
    ) -> Result<Admitted, PurgeError> {
        let Some(action) = jobs.first().map(|j| j.action) else {
            return Ok(Admitted::default());
        };
        if action == JobAction::RefreshTag {
            // Cache-tag refreshes draw on no documented day quota.
            return Ok(Admitted::default());
        }
        let needed: i64 = jobs.iter().map(|j| j.paths.len() as i64).sum();
        let (q, attempts) = retry(self.backoff, deadline, |_| self.api.quota(), retry_class).await;
        count_retries("DescribeRefreshQuota", attempts);
        let q = q?;
        for (kind, v) in [
            ("url", q.url_remain),
            ("dir", q.dir_remain),
            ("preload", q.preload_remain),
        ] {
            metrics::gauge!(crate::metrics::ALIYUN_QUOTA_REMAINING, "kind" => kind).set(v as f64);
        }
        let (remain, per_day, what) = match action {
            JobAction::Push => (q.preload_remain, q.preload_quota, "pre-warm URLs"),
            JobAction::RefreshDirectory => (q.dir_remain, q.dir_quota, "directories"),
            _ => (q.url_remain, q.url_quota, "URLs"),
        };
        let quota = Some(QuotaRecord {
            provider: ProviderKind::Aliyun,
            resource: self.domain().to_owned(),
            url_remain: q.url_remain,
            dir_remain: q.dir_remain,
            preload_remain: q.preload_remain,
        });
        let available = remain - i64::try_from(reserved).unwrap_or(i64::MAX);
        if needed <= available {
            return Ok(Admitted {
                quota,
                ..Admitted::default()
            });
        }
        // Never fits in one day: waiting would not help.
        if per_day > 0 && needed > per_day {
            return Err(PurgeError::QuotaExhausted {
                domain: self.domain().to_owned(),
                what,
                needed,
                remain: per_day,
            });
        }
        let reset = next_quota_reset(now_ms());
        Ok(Admitted {
            quota,
            not_before_ms: Some(reset),
            why: format!(
                "waiting for Aliyun's daily quota to reset at {}: {needed} {what} needed, {remain} left today, {reserved} of them reserved by purges not sent yet",
                sign::iso8601(reset / 1000)
            ),
        })
    }

    async fn room(&self, _in_progress: &[&JobRecord], _deadline: Instant) -> Box<dyn Room> {
        Box::new(Unlimited::default())
    }

    async fn submit(
        &self,
        job: &JobRecord,
        _deadline: Instant,
    ) -> Result<Submitted, ProviderError> {
        let paths = job.request_paths();
        let id = match job.action {
            JobAction::Push => self.api.push(paths).await?,
            JobAction::RefreshDirectory => self.api.refresh(paths, true).await?,
            JobAction::RefreshTag => self.api.refresh_tags(self.domain(), paths, false).await?,
            JobAction::RefreshFile | JobAction::Invalidate => {
                self.api.refresh(paths, false).await?
            }
        };
        Ok(Submitted {
            provider_job_id: id,
            status_text: "Refreshing".into(),
            completed: false,
        })
    }

    async fn reconcile(
        &self,
        job: &JobRecord,
        deadline: Instant,
    ) -> Result<Option<Submitted>, ProviderError> {
        // DescribeRefreshTasks has no ObjectType for cache-tag tasks (file, directory, regex,
        // preload, block, unblock): a cache-tag refresh whose answer was lost cannot be
        // looked up, and is sent again (it costs quota; a refresh twice purges the same).
        if job.action == JobAction::RefreshTag {
            tracing::info!(domain = %self.domain(), "a cache-tag refresh's answer was lost; Aliyun lists no cache-tag tasks to look it up: sending it again");
            return Ok(None);
        }
        // Only a task Aliyun created at or after the second the job was marked Sending can
        // be its request: an earlier one (an earlier purge of the same URL) proves nothing
        // about this one. CreationTime is Aliyun's clock at second resolution; with our
        // clock ahead of Aliyun's the job's own task may be missed, and the job is then sent
        // again (a second refresh of its URLs), never taken as done by an older task.
        let sent = job.sent_at_ms.div_euclid(1000);
        let start = sent;
        let end = now_ms() / 1000 + RECONCILE_SLACK_SECONDS;
        let object_type = Self::object_type(job.action);
        let (found, attempts) = retry(
            self.backoff,
            deadline,
            |_| {
                self.api
                    .tasks_in_window(self.domain(), object_type, start, end, RECONCILE_PAGES)
            },
            retry_class,
        )
        .await;
        count_retries("DescribeRefreshTasks", attempts);
        let wanted: HashSet<&str> = job.request_paths().iter().map(String::as_str).collect();
        let mut covered: HashSet<String> = HashSet::new();
        let mut ids: Vec<String> = Vec::new();
        for t in found? {
            if wanted.contains(t.object_path.as_str())
                && t.creation_time.is_some_and(|created| created >= sent)
            {
                covered.insert(t.object_path);
                ids.push(t.task_id);
            }
        }
        if !ids.is_empty() && covered.len() < wanted.len() {
            // A request is one task for all its URLs: some found and some not means the
            // found ones are not (all) this request's. Sent again, as a whole.
            tracing::warn!(
                domain = %self.domain(),
                found = covered.len(),
                paths = wanted.len(),
                "reconciling a lost refresh: Aliyun has tasks for only some of its URLs; sending it again"
            );
            return Ok(None);
        }
        ids.sort();
        ids.dedup();
        Ok((!ids.is_empty()).then(|| Submitted {
            provider_job_id: ids.join(","),
            status_text: "Refreshing".into(),
            completed: false,
        }))
    }

    fn strict_order(&self) -> bool {
        false
    }

    fn request_capacity(&self, action: JobAction) -> usize {
        match action {
            JobAction::Push => MAX_PUSH_PER_CALL,
            JobAction::RefreshDirectory => MAX_DIRS_PER_CALL,
            JobAction::RefreshTag => MAX_TAGS_PER_CALL,
            JobAction::RefreshFile | JobAction::Invalidate => MAX_URLS_PER_CALL,
        }
    }

    fn retry_at(&self, e: &ProviderError, now_ms: i64) -> Option<i64> {
        match e.class {
            ErrorClass::RateWindow => Some(now_ms.saturating_add(self.window_ms)),
            ErrorClass::QuotaExhausted => Some(next_quota_reset(now_ms)),
            _ => None,
        }
    }

    async fn poll(&self, job: &JobRecord, deadline: Instant) -> Result<Polled, ProviderError> {
        let ids: Vec<&str> = job
            .provider_job_id
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let mut tasks = Vec::new();
        for chunk in ids.chunks(MAX_TASK_IDS_PER_CALL) {
            let (r, attempts) = retry(
                self.backoff,
                deadline,
                |_| self.api.tasks_by_id(chunk),
                retry_class,
            )
            .await;
            count_retries("DescribeRefreshTaskById", attempts);
            tasks.extend(r?);
        }
        let age_ms = now_ms().saturating_sub(job.sent_at_ms);
        Ok(judge(&ids, &tasks, age_ms))
    }
}

/// Aliyun keeps tasks for 3 days; a task it no longer reports after that is gone.
const TASK_MEMORY_MS: i64 = 3 * 86_400_000;
/// A task id Aliyun has never reported this long after it was given is unknown to it.
const UNKNOWN_AFTER_MS: i64 = 10 * 60_000;

/// A job's state from its tasks: COMPLETED only when every task id was seen, all
/// `Complete`; a `Failed` (or timed-out, cancelled) task fails the job, naming its paths; a
/// task no longer reported ends the job with a status that says so. A job with no task id
/// at all is never completed (nothing proves it was sent): its outcome is unknown.
fn judge(ids: &[&str], tasks: &[TaskStatus], age_ms: i64) -> Polled {
    if ids.is_empty() {
        return Polled::Gone(
            "Aliyun gave no task id for this request: its outcome is unknown".into(),
        );
    }
    let failed: Vec<&TaskStatus> = tasks
        .iter()
        .filter(|t| matches!(t.status.as_str(), "Failed" | "Timeout" | "Canceled"))
        .collect();
    if !failed.is_empty() {
        let paths: Vec<String> = failed
            .iter()
            .take(5)
            .map(|t| {
                format!(
                    "{} ({}{})",
                    if t.object_path.is_empty() {
                        &t.task_id
                    } else {
                        &t.object_path
                    },
                    t.status,
                    if t.description.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", t.description)
                    }
                )
            })
            .collect();
        return Polled::Failed(format!(
            "{} of its paths failed at Aliyun: {}{}",
            failed.len(),
            paths.join(", "),
            if failed.len() > 5 { ", ..." } else { "" }
        ));
    }
    let missing: Vec<&str> = ids
        .iter()
        .copied()
        .filter(|id| !tasks.iter().any(|t| t.task_id == *id))
        .collect();
    if !missing.is_empty() {
        if age_ms > TASK_MEMORY_MS || (tasks.is_empty() && age_ms > UNKNOWN_AFTER_MS) {
            return Polled::Gone(format!(
                "Aliyun no longer reports task(s) {} (it keeps tasks for 3 days): their outcome is unknown",
                missing.join(",")
            ));
        }
        return Polled::InProgress("Refreshing".into());
    }
    let done = tasks.iter().filter(|t| t.status == "Complete").count();
    if done == tasks.len() {
        Polled::Completed("Complete".into())
    } else {
        Polled::InProgress(format!(
            "Refreshing ({done} of {} paths complete)",
            tasks.len()
        ))
    }
}

#[cfg(test)]
mod tests;
