//! Alibaba Cloud CDN behind [`Provider`] ([`AliyunProvider`]): its URLs, per-call limits
//! (1,000 URLs, 100 directories, 100 pre-warms), actions, task ids and statuses all live
//! here; [`api`] is the HTTPS client and [`sign`] its signatures.
//!
//! Aliyun has no idempotency token, so a refresh whose answer was lost (a timeout, a
//! crash between the call and the save) is never sent again blindly: the job stays
//! `Sending` and [`AliyunProvider::reconcile`] looks for its tasks with
//! DescribeRefreshTasks (by domain, type and time window, matched by ObjectPath) first.

mod api;
pub mod sign;

pub use api::{
    API_VERSION, Aliyun, DEFAULT_ENDPOINT, MAX_DIRS_PER_CALL, MAX_PUSH_PER_CALL,
    MAX_TASK_IDS_PER_CALL, MAX_URLS_PER_CALL, Quota, SignedRequest, TaskStatus, classify,
};
pub use sign::{
    AliyunCredentials, Secret, V3Request, canonical_query, iso8601, percent_encode, sha256_hex,
    sign_v1, sign_v3,
};

use std::collections::HashSet;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::purge::config::{ProviderKind, TargetConfig};
use crate::purge::error::{ProviderError, PurgeError, retry_class};
use crate::purge::model::{JobAction, JobRecord, PurgeKind, QuotaRecord, RejectedRecord, now_ms};
use crate::purge::provider::{Plan, Polled, Provider, Room, Submitted, Unlimited};
use crate::purge::retry::{Backoff, retry};

/// Most pages of 100 tasks reconciliation reads.
const RECONCILE_PAGES: u32 = 20;
/// How far before the recorded send time reconciliation looks (clock differences).
const RECONCILE_SLACK_SECONDS: i64 = 120;

/// One Aliyun domain of a target, as a [`Provider`].
pub struct AliyunProvider {
    target: TargetConfig,
    api: Aliyun,
    backoff: Backoff,
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
    pub fn new(target: TargetConfig, api: Aliyun, backoff: Backoff) -> AliyunProvider {
        AliyunProvider {
            target,
            api,
            backoff,
        }
    }

    fn domain(&self) -> &str {
        self.target.resource()
    }

    /// DescribeRefreshTasks' `ObjectType` for an action.
    fn object_type(action: JobAction) -> &'static str {
        match action {
            JobAction::RefreshDirectory => "directory",
            JobAction::Push => "preload",
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
                    if seen.insert(u.clone()) {
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

    async fn admit(
        &self,
        jobs: &[JobRecord],
        deadline: Instant,
    ) -> Result<Option<QuotaRecord>, PurgeError> {
        let Some(action) = jobs.first().map(|j| j.action) else {
            return Ok(None);
        };
        let needed: usize = jobs.iter().map(|j| j.paths.len()).sum();
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
        let (remain, what) = match action {
            JobAction::Push => (q.preload_remain, "pre-warm URLs"),
            JobAction::RefreshDirectory => (q.dir_remain, "directories"),
            _ => (q.url_remain, "URLs"),
        };
        if remain < needed as i64 {
            return Err(PurgeError::QuotaExhausted {
                domain: self.domain().to_owned(),
                what,
                needed: needed as i64,
                remain,
            });
        }
        Ok(Some(QuotaRecord {
            provider: ProviderKind::Aliyun,
            resource: self.domain().to_owned(),
            url_remain: q.url_remain,
            dir_remain: q.dir_remain,
            preload_remain: q.preload_remain,
        }))
    }

    async fn room(&self, _in_progress: &[&JobRecord], _deadline: Instant) -> Box<dyn Room> {
        Box::new(Unlimited::default())
    }

    async fn submit(
        &self,
        job: &JobRecord,
        _deadline: Instant,
    ) -> Result<Submitted, ProviderError> {
        let id = match job.action {
            JobAction::Push => self.api.push(&job.paths).await?,
            JobAction::RefreshDirectory => self.api.refresh(&job.paths, true).await?,
            JobAction::RefreshTag => {
                self.api
                    .refresh_tags(self.domain(), &job.paths, false)
                    .await?
            }
            JobAction::RefreshFile | JobAction::Invalidate => {
                self.api.refresh(&job.paths, false).await?
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
        let start = job.sent_at_ms / 1000 - RECONCILE_SLACK_SECONDS;
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
        let wanted: HashSet<&str> = job.paths.iter().map(String::as_str).collect();
        let mut ids: Vec<String> = found?
            .into_iter()
            .filter(|t| wanted.contains(t.object_path.as_str()))
            .map(|t| t.task_id)
            .collect();
        ids.sort();
        ids.dedup();
        Ok((!ids.is_empty()).then(|| Submitted {
            provider_job_id: ids.join(","),
            status_text: "Refreshing".into(),
            completed: false,
        }))
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
            let mut t = r?;
            if t.is_empty()
                && let Ok(more) = self.api.tasks(chunk[0]).await
            {
                t = more;
            }
            tasks.extend(t);
        }
        if tasks.is_empty() {
            return Ok(Polled::InProgress("Refreshing".into()));
        }
        Ok(
            if let Some(f) = tasks.iter().find(|t| t.status == "Failed") {
                Polled::Failed(format!("task {} failed: {}", f.task_id, f.description))
            } else if tasks.iter().all(|t| t.status == "Complete") {
                Polled::Completed("Complete".into())
            } else {
                let done = tasks.iter().filter(|t| t.status == "Complete").count();
                Polled::InProgress(format!(
                    "Refreshing ({done} of {} tasks complete)",
                    tasks.len()
                ))
            },
        )
    }
}
