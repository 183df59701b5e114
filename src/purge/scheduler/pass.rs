//! One pass of a worker over its queue (the numbered steps in the parent module's docs):
//! reconcile jobs found `Sending`, poll jobs in progress, send waiting jobs while the
//! provider has room, and store every change under the queue's lease.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::purge::coalesce;
use crate::purge::error::{ErrorClass, ProviderError};
use crate::purge::model::{JobRecord, JobState, now_ms};
use crate::purge::provider::{Fit, Polled, Provider, Submitted};
use crate::purge::store::{Lease, PurgeStore, QueuedJob, StoreError};

use super::{PassReport, Scheduler};

/// Counts a job's state change: jobs by outcome, and paths once it finished.
fn count_transition(job: &JobRecord, from: JobState) {
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
fn accept(qj: &mut QueuedJob, s: Submitted) {
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
    let billed = crate::purge::paths_billed(job);
    if billed > 0 {
        metrics::counter!(crate::metrics::PURGE_PATHS_BILLED, "target" => qj.target.clone())
            .increment(u64::from(billed));
    }
}

impl Scheduler {
    /// Stores a job that changed, counts the transition and announces its purge.
    async fn save(
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
            for qj in &mut jobs {
                let before = qj.job.clone();
                qj.job.state = JobState::Failed;
                qj.job.detail = format!("{} is no longer configured in [[targets]]", lease.queue);
                qj.job.updated_at_ms = now_ms();
                self.save(store, lease, qj, &before).await?;
            }
            return Ok((false, report));
        };
        let deadline =
            Instant::now() + Duration::from_secs(self.cfg.background_deadline_seconds.min(86_400));

        // 1. Reconcile what was being sent (a merged request by its leader).
        for qj in jobs
            .iter_mut()
            .filter(|j| j.job.state == JobState::Sending && j.job.led_by.is_none())
        {
            let before = qj.job.clone();
            match provider.reconcile(&qj.job, deadline).await {
                Ok(Some(s)) => {
                    tracing::info!(queue = %lease.queue, purge_id = %qj.purge_id, provider_job_id = %s.provider_job_id, "reconciled a request whose answer was lost");
                    accept(qj, s);
                }
                Ok(None) => {
                    qj.job.state = JobState::Waiting;
                    qj.job.detail =
                        "the provider has no record of an earlier send; sending again".into();
                }
                Err(e) if e.class.is_retryable() => {
                    qj.job.detail = format!("answer lost; reconciling before sending again: {e}");
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
        let mut parts_open = false;
        let mut hold_until: Option<i64> = None;
        let window = i64::try_from(self.cfg.coalesce_window_ms).unwrap_or(i64::MAX);
        let waiting: Vec<usize> = (0..jobs.len())
            .filter(|&i| jobs[i].job.state == JobState::Waiting)
            .collect();
        if !waiting.is_empty() {
            let busy: Vec<&JobRecord> = jobs
                .iter()
                .filter(|j| matches!(j.job.state, JobState::InProgress | JobState::Sending))
                .map(|j| &j.job)
                .collect();
            let mut room = provider.room(&busy, deadline).await;
            for i in waiting {
                let now = now_ms();
                if jobs[i].job.state != JobState::Waiting {
                    // Went out in an earlier job's request in this pass.
                    continue;
                }
                let before = jobs[i].job.clone();
                if before.not_before_ms > now {
                    if provider.strict_order() {
                        // The head backs off; the jobs behind it keep their place.
                        break;
                    }
                    continue;
                }
                // Merged work: wait a little for other purges' jobs, then send them as one.
                let capacity = provider.request_capacity(before.action);
                let followers = if window > 0 && !before.solo {
                    coalesce::pick_followers(&jobs, i, capacity, now)
                } else {
                    Vec::new()
                };
                let extra: usize = followers.iter().map(|&f| jobs[f].job.paths.len()).sum();
                if coalesce::hold(&before, extra, capacity, window, now) {
                    let why = format!(
                        "waiting up to {window} ms for other purges' paths to share its request"
                    );
                    if jobs[i].job.detail != why {
                        jobs[i].job.detail = why;
                        jobs[i].job.updated_at_ms = now;
                        self.save(store, lease, &jobs[i], &before).await?;
                    }
                    let until = before.accepted_at_ms.saturating_add(window);
                    hold_until = Some(hold_until.map_or(until, |h| h.min(until)));
                    if provider.strict_order() {
                        break;
                    }
                    continue;
                }
                if !followers.is_empty() {
                    let members: Vec<&JobRecord> = std::iter::once(&jobs[i].job)
                        .chain(followers.iter().map(|&f| &jobs[f].job))
                        .collect();
                    let merged = provider.merge(&members);
                    let mut request = jobs[i].job.clone();
                    request.paths.clone_from(&merged);
                    request.wildcards = merged.iter().filter(|p| p.ends_with('*')).count() as u32;
                    if room.fit(&request) == Fit::All {
                        provider.name_part(&mut request, &jobs[i].purge_id, jobs[i].index);
                        let stop = self
                            .send_merged(
                                store,
                                lease,
                                &*provider,
                                &mut jobs,
                                (i, &followers),
                                request,
                                &mut *room,
                                &mut report,
                                deadline,
                            )
                            .await?;
                        if stop {
                            room.exhaust();
                            break;
                        }
                        continue;
                    }
                }
                let fit = room.fit(&before);
                let mut sending = match fit {
                    Fit::Wait => {
                        let why = room.describe(&before);
                        if jobs[i].job.detail != why {
                            jobs[i].job.detail = why;
                            jobs[i].job.updated_at_ms = now;
                            self.save(store, lease, &jobs[i], &before).await?;
                        }
                        break;
                    }
                    Fit::All => jobs[i].clone(),
                    Fit::First(n) => {
                        let qj = &mut jobs[i];
                        let mut part = qj.job.clone();
                        part.paths.truncate(n);
                        part.wildcards =
                            part.paths.iter().filter(|p| p.ends_with('*')).count() as u32;
                        provider.name_part(&mut part, &qj.purge_id, qj.index);
                        mark_sending(&mut part, now);
                        qj.job.paths.drain(..n);
                        qj.job.wildcards =
                            qj.job.paths.iter().filter(|p| p.ends_with('*')).count() as u32;
                        qj.job.detail = format!(
                            "{n} of its paths went out as a request of their own (the room there was); the rest wait"
                        );
                        qj.job.updated_at_ms = now;
                        let index = store
                            .split_job(lease, now, &qj.purge_id, qj.index, &part, &qj.job)
                            .await?;
                        count_transition(&part, JobState::Waiting);
                        QueuedJob {
                            purge_id: qj.purge_id.clone(),
                            index,
                            target: qj.target.clone(),
                            job: part,
                        }
                    }
                };
                if fit == Fit::All {
                    let unsent = sending.job.clone();
                    mark_sending(&mut sending.job, now);
                    self.save(store, lease, &sending, &unsent).await?;
                }
                // Stored as Sending: from here a lost answer is reconciled, never resent.
                let stored = sending.job.clone();
                let stop = match provider.submit(&sending.job, deadline).await {
                    Ok(s) => {
                        accept(&mut sending, s);
                        room.take(&sending.job);
                        tracing::info!(
                            queue = %lease.queue,
                            purge_id = %sending.purge_id,
                            provider_job_id = %sending.job.provider_job_id,
                            paths = sending.job.paths.len(),
                            "purge request sent"
                        );
                        false
                    }
                    // One bad item refuses a whole batch: halve it, so the offending paths
                    // end up alone (and fail) while the rest goes out.
                    Err(e) if e.class == ErrorClass::Invalid && sending.job.paths.len() > 1 => {
                        self.isolate(store, lease, &*provider, &mut sending, &e)
                            .await?;
                        parts_open = true;
                        report.next_due_ms = Some(now_ms());
                        if fit == Fit::All {
                            jobs[i].job = sending.job.clone();
                        }
                        continue;
                    }
                    Err(e) => self.refused(&*provider, &mut sending, e, &mut report),
                };
                sending.job.updated_at_ms = now_ms();
                self.save(store, lease, &sending, &stored).await?;
                if fit == Fit::All {
                    jobs[i].job = sending.job.clone();
                } else if !sending.job.state.is_finished() {
                    parts_open = true;
                }
                if stop {
                    room.exhaust();
                    break;
                }
            }
        }
        let unfinished = jobs.iter().any(|j| !j.job.state.is_finished()) || parts_open;
        report.next_due_ms = jobs
            .iter()
            .filter(|j| j.job.state == JobState::Waiting && j.job.not_before_ms > 0)
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

    /// Sends one request for the waiting job `lead` and its `followers` (see
    /// [`coalesce`]): followers stored as `Sending` first, the leader last, then one call.
    /// Whether to stop sending to this queue for the rest of the pass.
    #[allow(clippy::too_many_arguments)] // One pass's state, handed down whole.
    async fn send_merged(
        &self,
        store: &Arc<dyn PurgeStore>,
        lease: &Lease,
        provider: &dyn Provider,
        jobs: &mut [QueuedJob],
        (lead, followers): (usize, &[usize]),
        request: JobRecord,
        room: &mut dyn crate::purge::provider::Room,
        report: &mut PassReport,
        deadline: Instant,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let leader = crate::purge::model::JobRef {
            purge_id: jobs[lead].purge_id.clone(),
            index: jobs[lead].index,
        };
        let mut stored = Vec::with_capacity(followers.len());
        for &f in followers {
            let before = jobs[f].job.clone();
            let j = &mut jobs[f].job;
            j.led_by = Some(leader.clone());
            j.caller_reference.clone_from(&request.caller_reference);
            mark_sending(j, now);
            self.save(store, lease, &jobs[f], &before).await?;
            stored.push(jobs[f].job.clone());
        }
        let before = jobs[lead].job.clone();
        {
            let j = &mut jobs[lead].job;
            j.request.clone_from(&request.paths);
            j.caller_reference.clone_from(&request.caller_reference);
            mark_sending(j, now);
        }
        self.save(store, lease, &jobs[lead], &before).await?;
        let lead_stored = jobs[lead].job.clone();
        let members: usize = jobs[lead].job.paths.len()
            + followers
                .iter()
                .map(|&f| jobs[f].job.paths.len())
                .sum::<usize>();
        let stop = match provider.submit(&jobs[lead].job, deadline).await {
            Ok(s) => {
                accept(&mut jobs[lead], s);
                room.take(&request);
                let saved = members.saturating_sub(request.paths.len());
                metrics::counter!(crate::metrics::PURGE_PATHS_MERGED, "provider" => request.provider.as_str())
                    .increment(saved as u64);
                tracing::info!(
                    queue = %lease.queue,
                    purge_id = %jobs[lead].purge_id,
                    provider_job_id = %jobs[lead].job.provider_job_id,
                    jobs = followers.len() + 1,
                    paths = request.paths.len(),
                    paths_saved = saved,
                    "purge request sent"
                );
                false
            }
            Err(e) if e.class == ErrorClass::Invalid => {
                // Refused together: each goes out on its own (and is split if need be).
                for k in std::iter::once(lead).chain(followers.iter().copied()) {
                    let mut own = jobs[k].job.clone();
                    provider.name_part(&mut own, &jobs[k].purge_id, jobs[k].index);
                    coalesce::unlink(
                        &mut jobs[k].job,
                        own.caller_reference,
                        &format!("its merged request was refused ({e}); sending it on its own"),
                        now,
                    );
                    jobs[k].job.solo = true;
                }
                report.next_due_ms = Some(now);
                false
            }
            Err(e) => self.refused(provider, &mut jobs[lead], e, report),
        };
        let now = now_ms();
        jobs[lead].job.updated_at_ms = now;
        if jobs[lead].job.state == JobState::Waiting {
            jobs[lead].job.request.clear();
        }
        for (k, &f) in followers.iter().enumerate() {
            if jobs[f].job.state == JobState::Sending {
                if jobs[lead].job.state == JobState::Waiting {
                    let mut own = jobs[f].job.clone();
                    provider.name_part(&mut own, &jobs[f].purge_id, jobs[f].index);
                    let why = jobs[lead].job.detail.clone();
                    coalesce::unlink(&mut jobs[f].job, own.caller_reference, &why, now);
                } else {
                    let l = jobs[lead].job.clone();
                    coalesce::follow(&mut jobs[f].job, &l, now);
                }
            }
            self.save(store, lease, &jobs[f], &stored[k]).await?;
        }
        self.save(store, lease, &jobs[lead], &lead_stored).await?;
        Ok(stop)
    }

    /// Splits a batch the provider refused as invalid into two halves that wait to be sent
    /// at once, each a request of its own (CloudFront: its own CallerReference).
    async fn isolate(
        &self,
        store: &Arc<dyn PurgeStore>,
        lease: &Lease,
        provider: &dyn Provider,
        qj: &mut QueuedJob,
        e: &ProviderError,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let half = qj.job.paths.len() / 2;
        let wildcards = |paths: &[String]| paths.iter().filter(|p| p.ends_with('*')).count() as u32;
        let mut first = qj.job.clone();
        first.paths.truncate(half);
        let mut second = qj.job.clone();
        second.paths.drain(..half);
        for part in [&mut first, &mut second] {
            part.wildcards = wildcards(&part.paths);
            part.state = JobState::Waiting;
            part.not_before_ms = 0;
            part.updated_at_ms = now;
            part.detail =
                format!("its batch was refused ({e}); split in two to find the offending paths");
            provider.name_part(part, &qj.purge_id, qj.index);
        }
        tracing::warn!(error = %e, paths = qj.job.paths.len(), "purge batch refused as invalid; splitting it");
        store
            .split_job(lease, now, &qj.purge_id, qj.index, &first, &second)
            .await?;
        qj.job = second;
        let _ = self.changes.send(qj.purge_id.clone());
        Ok(())
    }

    /// A send that failed: wait and retry, reconcile first, or give up. Whether to stop
    /// sending to this queue for the rest of the pass.
    fn refused(
        &self,
        provider: &dyn Provider,
        qj: &mut QueuedJob,
        e: ProviderError,
        report: &mut PassReport,
    ) -> bool {
        let job = &mut qj.job;
        match e.class {
            // The provider refused it for now: it was not taken, so it goes again later,
            // after the wait the provider documents or a backoff; it never fails for it.
            ErrorClass::Busy
            | ErrorClass::Throttled
            | ErrorClass::QuotaExhausted
            | ErrorClass::RateWindow => {
                let now = now_ms();
                let floor = if e.class == ErrorClass::Busy {
                    1_000
                } else {
                    0
                };
                let backoff = self
                    .backoff
                    .delay(job.attempts)
                    .max(Duration::from_millis(floor));
                let at = provider
                    .retry_at(&e, now)
                    .unwrap_or_else(|| now + backoff.as_millis() as i64);
                job.state = JobState::Waiting;
                job.not_before_ms = at;
                job.detail = format!("not sent yet, next try in {} ms: {e}", at - now);
                tracing::warn!(error = %e, "purge request refused for now; will retry");
                true
            }
            // No answer (timeout, 5xx): it may have arrived. Reconcile before any resend.
            ErrorClass::Unavailable => {
                job.detail = format!("answer lost; reconciling before sending again: {e}");
                tracing::warn!(error = %e, "purge request answer lost; will reconcile");
                true
            }
            _ => {
                tracing::warn!(error = %e, "purge request failed");
                job.state = JobState::Failed;
                job.detail = e.to_string();
                report.failures.entry(qj.purge_id.clone()).or_insert(e);
                false
            }
        }
    }
}

fn mark_sending(job: &mut JobRecord, now: i64) {
    job.state = JobState::Sending;
    job.sent_at_ms = now;
    job.attempts += 1;
    job.detail = String::new();
    job.updated_at_ms = now;
}
