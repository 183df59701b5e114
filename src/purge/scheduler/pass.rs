//! One pass of a worker over its queue (the numbered steps in the parent module's docs):
//! reconcile jobs found `Sending`, poll jobs in progress, send waiting jobs while the
//! provider has room (`super::send`), and store every change under the queue's lease.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::purge::coalesce;
use crate::purge::config::ProviderKind;
use crate::purge::model::{JobRecord, JobState, now_ms};
use crate::purge::provider::{Polled, Provider, Submitted};
use crate::purge::store::{Lease, PurgeStore, QueuedJob, StoreError};

use super::{PassReport, Scheduler};

/// How long after sending a job whose polls fail with an error retrying cannot mend stays in
/// progress before it ends `FAILED` with `status_text` `Unknown` (CloudFront and Aliyun
/// finish within minutes; an hour leaves room to fix credentials or permissions).
pub(crate) const POLL_GIVE_UP_MS: i64 = 60 * 60_000;

/// Makes the job and path counters of `provider` at 0 before anything happens, so a
/// first failure is an increase from 0 (Prometheus' `increase()` cannot see the first
/// sample of a series that starts at 1: `CdnsignPurgeJobsFailing` would miss it).
pub(super) fn register_counters(provider: ProviderKind) {
    use crate::metrics::{PURGE_JOBS, PURGE_PATHS};
    let provider = provider.as_str();
    for outcome in ["submitted", "completed", "failed"] {
        metrics::counter!(PURGE_JOBS, "provider" => provider, "outcome" => outcome).increment(0);
    }
    for outcome in ["completed", "failed", "rejected"] {
        metrics::counter!(PURGE_PATHS, "provider" => provider, "outcome" => outcome).increment(0);
    }
}

/// Counts a job's state change: jobs by outcome, and paths once it finished.
pub(super) fn count_transition(job: &JobRecord, from: JobState) {
    use crate::metrics::{PURGE_JOBS, PURGE_PATHS};
    let provider = job.provider.as_str();
    if from == JobState::Waiting && job.state == JobState::Sending {
        metrics::counter!(PURGE_JOBS, "provider" => provider, "outcome" => "submitted")
            .increment(1);
    }
    let outcome = match job.state {
        JobState::Completed => "completed",
        JobState::Failed => "failed",
        _ => return,
    };
    metrics::counter!(PURGE_JOBS, "provider" => provider, "outcome" => outcome).increment(1);
    metrics::counter!(PURGE_PATHS, "provider" => provider, "outcome" => outcome)
        .increment(job.paths.len() as u64);
}

/// Records what the provider said about a request it accepted, and counts what it bills.
pub(super) fn accept(qj: &mut QueuedJob, s: Submitted) {
    let job = &mut qj.job;
    job.provider_job_id = s.provider_job_id;
    job.state = if s.completed {
        JobState::Completed
    } else {
        JobState::InProgress
    };
    job.status_text = s.status_text;
    job.detail = String::new();
    job.not_before_ms = 0;
    let billed = job.paths_billed();
    if billed > 0 {
        metrics::counter!(crate::metrics::PURGE_PATHS_BILLED, "target" => qj.target.clone())
            .increment(u64::from(billed));
    }
}

impl Scheduler {
    /// Stores a job that changed, counts the transition and announces its purge.
    pub(super) async fn save(
        &self,
        store: &Arc<dyn PurgeStore>,
        lease: &Lease,
        qj: &QueuedJob,
        before: &JobRecord,
    ) -> Result<(), StoreError> {
        if qj.job == *before {
            return Ok(());
        }
        store
            .update_job(lease, now_ms(), &qj.purge_id, qj.index, &qj.job)
            .await?;
        if qj.job.state != before.state {
            count_transition(&qj.job, before.state);
        }
        let _ = self.changes.send(qj.purge_id.clone());
        Ok(())
    }

    /// One pass over a queue (see the module docs): whether it still has unfinished work.
    pub(super) async fn pass(
        &self,
        store: &Arc<dyn PurgeStore>,
        lease: &Lease,
        poll: bool,
    ) -> Result<(bool, PassReport), StoreError> {
        let mut report = PassReport::default();
        let mut jobs = store.queue_jobs(lease).await?;
        if jobs.is_empty() {
            return Ok((false, report));
        }
        let Some(provider) = self.providers.queue(&lease.queue).cloned() else {
            // Not a queue this replica serves (it never claims one; kept as a guard): its
            // jobs are left untouched for a replica whose config has the target, and the
            // lease is given up.
            tracing::warn!(queue = %lease.queue, jobs = jobs.len(), "purge jobs wait for a replica configured with this queue's target; this replica has no [[targets]] entry for it");
            return Ok((false, report));
        };
        let deadline =
            Instant::now() + Duration::from_secs(self.cfg.background_deadline_seconds.min(86_400));

        // 1. Reconcile what was being sent (a merged request by its leader), unless an
        //    earlier try failed and its backoff has not ended.
        let started = now_ms();
        for qj in jobs.iter_mut().filter(|j| {
            j.job.state == JobState::Sending
                && j.job.led_by.is_none()
                && j.job.not_before_ms <= started
        }) {
            let before = qj.job.clone();
            match provider.reconcile(&qj.job, deadline).await {
                Ok(Some(s)) => {
                    tracing::info!(queue = %lease.queue, purge_id = %qj.purge_id, provider_job_id = %s.provider_job_id, "reconciled a request whose answer was lost");
                    accept(qj, s);
                }
                Ok(None) if qj.job.request.is_empty() => {
                    qj.job.state = JobState::Waiting;
                    qj.job.not_before_ms = 0;
                    qj.job.detail =
                        "the provider has no record of an earlier send; sending again".into();
                }
                // A merged request that was never made: its followers wait again on their
                // own (`follow_leaders`), and so does the leader, under a reference of its
                // own, without the merged paths (never a stale batch sent again).
                Ok(None) => {
                    let mut own = qj.job.clone();
                    provider.name_part(&mut own, &qj.purge_id, qj.index);
                    crate::purge::coalesce::unlink(
                        &mut qj.job,
                        own.caller_reference,
                        "the provider has no record of its merged request; sending it on its own",
                        now_ms(),
                    );
                    qj.job.not_before_ms = 0;
                    qj.job.solo = true;
                }
                // Asked again after as long as it has been since sending (at least the
                // base retry delay, at most the longest): a provider that stays busy, or
                // credentials that stay unavailable, are not asked once a pass for ever.
                Err(e) if e.class.is_retryable() => {
                    let now = now_ms();
                    let since = u64::try_from(now.saturating_sub(qj.job.sent_at_ms)).unwrap_or(0);
                    let wait = since.clamp(self.cfg.retry_base_ms, self.cfg.retry_max_ms);
                    qj.job.not_before_ms =
                        now.saturating_add(i64::try_from(wait).unwrap_or(i64::MAX));
                    qj.job.detail = format!(
                        "answer lost; reconciling before sending again, next try in {wait} ms: {e}"
                    );
                }
                Err(e) => {
                    qj.job.state = JobState::Failed;
                    qj.job.detail = e.to_string();
                    report.failures.entry(qj.purge_id.clone()).or_insert(e);
                }
            }
            if qj.job != before {
                qj.job.updated_at_ms = now_ms();
            }
            self.save(store, lease, qj, &before).await?;
        }

        // 2. Poll what is in progress (every poll interval; a merged request by its leader).
        for qj in jobs
            .iter_mut()
            .filter(|j| poll && j.job.state == JobState::InProgress && j.job.led_by.is_none())
        {
            let before = qj.job.clone();
            match provider.poll(&qj.job, deadline).await {
                Ok(Polled::Completed(text)) => {
                    qj.job.state = JobState::Completed;
                    qj.job.status_text = text;
                }
                Ok(Polled::InProgress(text)) => qj.job.status_text = text,
                Ok(Polled::Failed(why)) => {
                    qj.job.state = JobState::Failed;
                    qj.job.status_text = "Failed".into();
                    qj.job.detail = why;
                }
                Ok(Polled::Gone(why)) => {
                    qj.job.state = JobState::Failed;
                    qj.job.status_text = "Unknown".into();
                    qj.job.detail = why;
                }
                // An error retrying cannot mend (the distribution deleted, the credentials
                // no longer allowed to read it) would keep the job in progress, and its lease
                // held, for ever: past POLL_GIVE_UP_MS after sending, its outcome is unknown.
                Err(e)
                    if !e.class.is_retryable()
                        && now_ms().saturating_sub(qj.job.sent_at_ms) > POLL_GIVE_UP_MS =>
                {
                    tracing::warn!(error = %e, "cannot poll purge job; giving up: its outcome is unknown");
                    qj.job.state = JobState::Failed;
                    qj.job.status_text = "Unknown".into();
                    qj.job.detail = format!(
                        "cannot poll it more than {} minutes after it was sent ({e}): its outcome is unknown",
                        POLL_GIVE_UP_MS / 60_000
                    );
                }
                Err(e) => tracing::warn!(error = %e, "cannot poll purge job"),
            }
            if qj.job != before {
                qj.job.updated_at_ms = now_ms();
            }
            self.save(store, lease, qj, &before).await?;
        }

        // Followers take their leader's state (or wait again when it never went out).
        self.follow_leaders(store, lease, &*provider, &mut jobs)
            .await?;

        // 3. Send what waits, in order, while there is room.
        let (parts_open, hold_until) = self
            .send_waiting(store, lease, &*provider, &mut jobs, &mut report, deadline)
            .await?;
        let unfinished = jobs.iter().any(|j| !j.job.state.is_finished()) || parts_open;
        report.next_due_ms = jobs
            .iter()
            .filter(|j| {
                matches!(j.job.state, JobState::Waiting | JobState::Sending)
                    && j.job.not_before_ms > 0
            })
            .map(|j| j.job.not_before_ms)
            .chain(hold_until)
            .chain(report.next_due_ms)
            .min();
        Ok((unfinished, report))
    }

    /// Followers (of a merged request) take their leader's state; a follower whose leader
    /// never went out (it is waiting, or gone) waits again on its own.
    async fn follow_leaders(
        &self,
        store: &Arc<dyn PurgeStore>,
        lease: &Lease,
        provider: &dyn Provider,
        jobs: &mut [QueuedJob],
    ) -> Result<(), StoreError> {
        for f in 0..jobs.len() {
            let Some(lead) = jobs[f].job.led_by.clone() else {
                continue;
            };
            if jobs[f].job.state == JobState::Waiting {
                continue;
            }
            let leader = match jobs
                .iter()
                .find(|j| j.purge_id == lead.purge_id && j.index == lead.index)
            {
                Some(l) => Some(l.job.clone()),
                None => store
                    .get(&lead.purge_id)
                    .await?
                    .and_then(|r| r.jobs.get(lead.index as usize).cloned()),
            };
            let before = jobs[f].job.clone();
            let now = now_ms();
            match leader {
                Some(l)
                    if l.caller_reference == before.caller_reference
                        && l.state != JobState::Waiting =>
                {
                    coalesce::follow(&mut jobs[f].job, &l, now);
                }
                _ => {
                    let mut own = jobs[f].job.clone();
                    provider.name_part(&mut own, &jobs[f].purge_id, jobs[f].index);
                    coalesce::unlink(
                        &mut jobs[f].job,
                        own.caller_reference,
                        "its merged request never went out; waiting to be sent again",
                        now,
                    );
                }
            }
            self.save(store, lease, &jobs[f], &before).await?;
        }
        Ok(())
    }
}
