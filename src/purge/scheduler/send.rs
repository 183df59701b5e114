//! Step 3 of a pass (the parent module's docs): send what waits, in FIFO order, while the
//! provider has room: a job whole, its first part when only part fits, or merged with
//! other purges' jobs into one request; a batch refused as invalid is halved until the
//! offending paths are alone. Every job is stored `Sending` before its call, so a lost
//! answer is reconciled on the next pass, never sent twice.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::pass::{accept, count_transition};
use super::{PassReport, Scheduler};
use crate::purge::coalesce;
use crate::purge::error::{ErrorClass, ProviderError};
use crate::purge::model::{JobRecord, JobState, now_ms};
use crate::purge::provider::{Fit, Provider};
use crate::purge::store::{Lease, PurgeStore, QueuedJob, StoreError};

/// How long a job that could not be sent (its credentials never loaded) keeps trying,
/// from its acceptance, before it fails.
pub(crate) const NOT_SENT_GIVE_UP_MS: i64 = 60 * 60_000;

impl Scheduler {
    /// Sends the waiting `jobs` of the queue `lease` holds while there is room. Returns
    /// whether parts of a split job are still open, and the earliest time (unix ms) a job
    /// held back to share its request must be looked at again.
    pub(super) async fn send_waiting(
        &self,
        store: &Arc<dyn PurgeStore>,
        lease: &Lease,
        provider: &dyn Provider,
        jobs: &mut [QueuedJob],
        report: &mut PassReport,
        deadline: Instant,
    ) -> Result<(bool, Option<i64>), StoreError> {
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
                    coalesce::pick_followers(jobs, i, capacity, now)
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
                                provider,
                                jobs,
                                (i, &followers),
                                request,
                                &mut *room,
                                report,
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
                        self.isolate(store, lease, provider, &mut sending, &e)
                            .await?;
                        parts_open = true;
                        report.next_due_ms = Some(now_ms());
                        if fit == Fit::All {
                            jobs[i].job = sending.job.clone();
                        }
                        continue;
                    }
                    Err(e) => self.refused(provider, &mut sending, e, report),
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
        Ok((parts_open, hold_until))
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
            // Never sent for an hour (credentials that never load): its outcome is known.
            ErrorClass::NotSent
                if now_ms().saturating_sub(job.accepted_at_ms) > NOT_SENT_GIVE_UP_MS =>
            {
                tracing::warn!(error = %e, "purge request never sent for an hour; failing it");
                job.state = JobState::Failed;
                job.detail = format!("not sent for an hour since it was accepted: {e}");
                report.failures.entry(qj.purge_id.clone()).or_insert(e);
                false
            }
            // The provider refused it for now: it was not taken, so it goes again later,
            // after the wait the provider documents or a backoff; it never fails for it.
            ErrorClass::Busy
            | ErrorClass::Throttled
            | ErrorClass::QuotaExhausted
            | ErrorClass::RateWindow
            | ErrorClass::NotSent => {
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
