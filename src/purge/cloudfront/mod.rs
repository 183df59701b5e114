//! CloudFront behind [`Provider`] ([`CloudFrontProvider`]): its paths, batches, limits
//! (3,000 file and 15 wildcard paths in progress per distribution), CallerReferences and
//! statuses all live here; `api` is the SDK client.

mod api;

pub use api::{CloudFront, Invalidation, classify, sdk_config};

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::purge::config::{ProviderKind, TargetConfig};
use crate::purge::error::{ErrorClass, ProviderError, PurgeError, retry_class};
use crate::purge::model::{JobAction, JobRecord, PurgeKind, RejectedRecord};
use crate::purge::paths::CloudFrontPath;
use crate::purge::provider::{Admitted, Fit, Plan, Polled, Provider, Room, Submitted};
use crate::purge::retry::{Backoff, retry};

/// CloudFront's documented limits as configured (`[purge] cloudfront_*`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Paths in one CreateInvalidation (documented maximum 3,000).
    pub per_request: usize,
    /// File paths in progress per distribution (3,000).
    pub max_files: u32,
    /// Wildcard paths in progress per distribution (15).
    pub max_wildcards: u32,
    /// More than this many files of one purge in one directory become `dir/*` (0 = off).
    pub collapse_threshold: usize,
}

/// One CloudFront distribution of a target, as a [`Provider`].
pub struct CloudFrontProvider {
    target: TargetConfig,
    api: CloudFront,
    limits: Limits,
    backoff: Backoff,
    /// Path counts of other tools' in-progress invalidations (by id; pruned as they finish).
    foreign: Mutex<HashMap<String, (u32, u32)>>,
}

impl std::fmt::Debug for CloudFrontProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudFrontProvider")
            .field("distribution", &self.target.resource())
            .finish_non_exhaustive()
    }
}

impl CloudFrontProvider {
    /// A provider for `target` through `api`.
    pub fn new(target: TargetConfig, api: CloudFront, limits: Limits, backoff: Backoff) -> Self {
        CloudFrontProvider {
            target,
            api,
            limits,
            backoff,
            foreign: Mutex::new(HashMap::new()),
        }
    }

    fn dist(&self) -> &str {
        self.target.resource()
    }
}

/// The CallerReference of one request: from the purge's own id, the distribution, the
/// request's place and its paths; never from a caller's key.
fn caller_reference(purge_id: &str, dist: &str, place: &str, paths: &[String]) -> String {
    let mut text = format!("{purge_id}\n{dist}\n{place}\n");
    for p in paths {
        text.push_str(p);
        text.push('\n');
    }
    format!(
        "cdnsign-{}",
        &crate::purge::aliyun::sha256_hex(text.as_bytes())[..40]
    )
}

fn is_wildcard(path: &str) -> bool {
    path.ends_with('*')
}

/// Replaces more than `threshold` file paths directly under one directory by `dir/*`.
fn collapse(items: Vec<CloudFrontPath>, threshold: usize) -> Vec<CloudFrontPath> {
    if threshold == 0 {
        return items;
    }
    let parent = |p: &str| p.rsplit_once('/').map(|(d, _)| d.to_owned());
    let mut per_dir: HashMap<String, usize> = HashMap::new();
    for it in &items {
        if let CloudFrontPath::File(p) = it
            && let Some(d) = parent(p)
        {
            *per_dir.entry(d).or_default() += 1;
        }
    }
    let mut emitted = HashSet::new();
    let mut out = Vec::new();
    for it in items {
        match &it {
            CloudFrontPath::File(p) => match parent(p) {
                Some(d) if per_dir.get(&d).copied().unwrap_or(0) > threshold => {
                    if emitted.insert(d.clone()) {
                        out.push(CloudFrontPath::Wildcard(format!("{d}/*")));
                    }
                }
                _ => out.push(it),
            },
            _ => out.push(it),
        }
    }
    out
}

/// Room on one distribution: free file and wildcard paths under the in-progress limits.
#[derive(Debug)]
struct CfRoom {
    dist: String,
    files: u32,
    wildcards: u32,
    max_files: u32,
    max_wildcards: u32,
    exhausted: bool,
}

impl Room for CfRoom {
    fn fit(&self, job: &JobRecord) -> Fit {
        if self.exhausted {
            return Fit::Wait;
        }
        let (mut files, mut wild) = (self.files, self.wildcards);
        let mut n = 0;
        for p in &job.paths {
            if is_wildcard(p) {
                if wild >= self.max_wildcards {
                    break;
                }
                wild += 1;
            } else {
                if files >= self.max_files {
                    break;
                }
                files += 1;
            }
            n += 1;
        }
        match n {
            0 => Fit::Wait,
            n if n == job.paths.len() => Fit::All,
            n => Fit::First(n),
        }
    }

    fn take(&mut self, job: &JobRecord) {
        let wild = job.paths.iter().filter(|p| is_wildcard(p)).count() as u32;
        self.wildcards += wild;
        self.files += job.paths.len() as u32 - wild;
    }

    fn exhaust(&mut self) {
        self.exhausted = true;
    }

    fn describe(&self, job: &JobRecord) -> String {
        format!(
            "waiting for room on distribution {}: {} of {} file paths and {} of {} wildcard paths in progress; this job needs {} and {}",
            self.dist,
            self.files,
            self.max_files,
            self.wildcards,
            self.max_wildcards,
            job.paths.len() as u32 - job.wildcards,
            job.wildcards
        )
    }
}

#[async_trait]
impl Provider for CloudFrontProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Cloudfront
    }

    fn target(&self) -> &TargetConfig {
        &self.target
    }

    fn plan(&self, kind: PurgeKind, items: &[String], purge_id: &str, now_ms: i64) -> Plan {
        let mut plan = Plan::default();
        let mut seen = HashSet::new();
        let mut normalised = Vec::new();
        for item in items {
            match crate::purge::paths::cloudfront(&self.target, kind, item) {
                Ok(n) => {
                    // Tags compare without case: one that differs only in case goes once.
                    let key = match &n {
                        CloudFrontPath::Tag(t) => t.to_ascii_lowercase(),
                        other => other.as_str().to_owned(),
                    };
                    if seen.insert(key) {
                        normalised.push(n);
                    }
                }
                Err(reason) => plan.rejected.push(RejectedRecord {
                    path: item.clone(),
                    reason,
                }),
            }
        }
        let normalised = collapse(normalised, self.limits.collapse_threshold);
        // Batches as large as one request may be and the in-progress limits allow; when a
        // batch is sent it is cut again to the room there is then.
        let mut batch: Vec<String> = Vec::new();
        let (mut files, mut wild) = (0u32, 0u32);
        let mut flush = |batch: &mut Vec<String>, wild: u32| {
            if batch.is_empty() {
                return;
            }
            let paths = std::mem::take(batch);
            let place = plan.jobs.len().to_string();
            let mut job = JobRecord::waiting(
                ProviderKind::Cloudfront,
                self.dist(),
                JobAction::Invalidate,
                paths,
                wild,
                now_ms,
            );
            job.caller_reference = caller_reference(purge_id, self.dist(), &place, &job.paths);
            plan.jobs.push(job);
        };
        for item in normalised {
            let w = matches!(item, CloudFrontPath::Wildcard(_));
            let full = batch.len() >= self.limits.per_request
                || (w && wild >= self.limits.max_wildcards)
                || (!w && files >= self.limits.max_files);
            if full {
                flush(&mut batch, wild);
                (files, wild) = (0, 0);
            }
            if w {
                wild += 1;
            } else {
                files += 1;
            }
            batch.push(item.as_str().to_owned());
        }
        flush(&mut batch, wild);
        plan
    }

    async fn admit(
        &self,
        _jobs: &[JobRecord],
        _reserved: u64,
        _deadline: Instant,
    ) -> Result<Admitted, PurgeError> {
        Ok(Admitted::default())
    }

    async fn room(&self, in_progress: &[&JobRecord], deadline: Instant) -> Box<dyn Room> {
        let dist = self.dist();
        let ours: HashMap<&str, (u32, u32)> = in_progress
            .iter()
            // A merged request counts once: its followers share the leader's id.
            .filter(|j| !j.provider_job_id.is_empty() && j.led_by.is_none())
            .map(|j| {
                let paths = j.request_paths();
                let wild = paths.iter().filter(|p| is_wildcard(p)).count() as u32;
                (
                    j.provider_job_id.as_str(),
                    (paths.len() as u32 - wild, wild),
                )
            })
            .collect();
        let (listed, attempts) = retry(
            self.backoff,
            deadline,
            |_| self.api.in_progress(dist, 5),
            retry_class,
        )
        .await;
        count_retries("ListInvalidations", attempts);
        let mut total = (0u32, 0u32);
        match listed {
            Ok(ids) => {
                if let Ok(mut m) = self.foreign.lock() {
                    m.retain(|id, _| ids.contains(id));
                }
                for id in &ids {
                    let cached = ours
                        .get(id.as_str())
                        .copied()
                        .or_else(|| self.foreign.lock().ok().and_then(|m| m.get(id).copied()));
                    let c = match cached {
                        Some(c) => c,
                        None => match self.api.get(dist, id).await {
                            Ok(inv) => {
                                let wild =
                                    inv.paths.iter().filter(|p| is_wildcard(p)).count() as u32;
                                let c = (inv.paths.len() as u32 - wild, wild);
                                if let Ok(mut m) = self.foreign.lock() {
                                    m.insert(id.clone(), c);
                                }
                                c
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "GetInvalidation failed while counting room");
                                continue;
                            }
                        },
                    };
                    total = (total.0 + c.0, total.1 + c.1);
                }
                // Ours that the list does not show yet (just created).
                for (id, c) in &ours {
                    if !ids.iter().any(|i| i == id) {
                        total = (total.0 + c.0, total.1 + c.1);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "ListInvalidations failed; counting our own invalidations only");
                total = ours.values().fold((0, 0), |(f, w), (a, b)| (f + a, w + b));
            }
        }
        Box::new(CfRoom {
            dist: dist.to_owned(),
            files: total.0,
            wildcards: total.1,
            max_files: self.limits.max_files,
            max_wildcards: self.limits.max_wildcards,
            exhausted: false,
        })
    }

    async fn submit(
        &self,
        job: &JobRecord,
        _deadline: Instant,
    ) -> Result<Submitted, ProviderError> {
        let inv = self
            .api
            .create(self.dist(), &job.caller_reference, job.request_paths())
            .await?;
        Ok(Submitted {
            completed: inv.is_completed(),
            provider_job_id: inv.id,
            status_text: inv.status,
        })
    }

    async fn reconcile(
        &self,
        job: &JobRecord,
        deadline: Instant,
    ) -> Result<Option<Submitted>, ProviderError> {
        // CloudFront answers a repeat of the same CallerReference and batch with the
        // invalidation it already made (or makes it, if the first never arrived).
        match self.submit(job, deadline).await {
            Ok(s) => Ok(Some(s)),
            // Refused as malformed: had the first arrived, CloudFront would have answered
            // with its invalidation, so nothing was made. Sent again as unsent, where a
            // refused batch is split to find the paths at fault (the rest still go).
            Err(e) if e.class == ErrorClass::Invalid => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn poll(&self, job: &JobRecord, deadline: Instant) -> Result<Polled, ProviderError> {
        let (r, attempts) = retry(
            self.backoff,
            deadline,
            |_| self.api.get(self.dist(), &job.provider_job_id),
            retry_class,
        )
        .await;
        count_retries("GetInvalidation", attempts);
        let inv = r?;
        Ok(if inv.is_completed() {
            Polled::Completed(inv.status)
        } else {
            Polled::InProgress(inv.status)
        })
    }

    fn request_capacity(&self, _action: JobAction) -> usize {
        self.limits.per_request
    }

    fn merge(&self, jobs: &[&JobRecord]) -> Vec<String> {
        let mut seen = HashSet::new();
        let all: Vec<&String> = jobs
            .iter()
            .flat_map(|j| j.paths.iter())
            .filter(|p| {
                let key = if p.starts_with('#') {
                    p.to_ascii_lowercase()
                } else {
                    (*p).clone()
                };
                seen.insert(key)
            })
            .collect();
        let wildcards: Vec<&str> = all
            .iter()
            .filter(|p| is_wildcard(p))
            .map(|p| p.trim_end_matches('*'))
            .collect();
        all.into_iter()
            .filter(|p| {
                // CloudFront's `/img/*` invalidates `/img/a.png` and `/img/b*` too.
                !wildcards
                    .iter()
                    .any(|w| p.starts_with(w) && p.len() > w.len() + usize::from(is_wildcard(p)))
            })
            .cloned()
            .collect()
    }

    fn name_part(&self, part: &mut JobRecord, purge_id: &str, index: u32) {
        part.caller_reference =
            caller_reference(purge_id, self.dist(), &format!("part {index}"), &part.paths);
    }
}

/// Counts the retries a CloudFront call needed (`attempts - 1`).
fn count_retries(operation: &'static str, attempts: u32) {
    if attempts > 1 {
        metrics::counter!(crate::metrics::UPSTREAM_RETRIES, "provider" => "cloudfront", "operation" => operation)
            .increment(u64::from(attempts - 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collapse_is_off_by_default_and_groups_only_past_the_threshold() {
        let items = |v: &[&str]| {
            v.iter()
                .map(|p| CloudFrontPath::File((*p).to_owned()))
                .collect::<Vec<_>>()
        };
        let many = items(&["/img/1.png", "/img/2.png", "/img/3.png", "/css/a.css"]);
        assert_eq!(collapse(many.clone(), 0), many);
        assert_eq!(collapse(many.clone(), 3), many, "3 is not more than 3");
        assert_eq!(
            collapse(many, 2),
            vec![
                CloudFrontPath::Wildcard("/img/*".into()),
                CloudFrontPath::File("/css/a.css".into()),
            ]
        );
    }

    fn room(files: u32, wildcards: u32) -> CfRoom {
        CfRoom {
            dist: "E1".into(),
            files,
            wildcards,
            max_files: 3000,
            max_wildcards: 15,
            exhausted: false,
        }
    }

    fn job(paths: &[&str]) -> JobRecord {
        let paths: Vec<String> = paths.iter().map(|p| (*p).to_owned()).collect();
        let wild = paths.iter().filter(|p| is_wildcard(p)).count() as u32;
        JobRecord::waiting(
            ProviderKind::Cloudfront,
            "E1",
            JobAction::Invalidate,
            paths,
            wild,
            0,
        )
    }

    #[test]
    fn room_cuts_a_job_to_what_fits_in_order() {
        assert_eq!(room(0, 0).fit(&job(&["/a", "/b"])), Fit::All);
        assert_eq!(room(2999, 0).fit(&job(&["/a", "/b"])), Fit::First(1));
        assert_eq!(room(3000, 0).fit(&job(&["/a"])), Fit::Wait);
        assert_eq!(room(0, 15).fit(&job(&["/a", "/w*", "/b"])), Fit::First(1));
        let mut r = room(0, 14);
        assert_eq!(r.fit(&job(&["/w*", "/x*"])), Fit::First(1));
        r.take(&job(&["/w*"]));
        assert_eq!(r.fit(&job(&["/a"])), Fit::All);
        r.exhaust();
        assert_eq!(r.fit(&job(&["/a"])), Fit::Wait);
    }
}
