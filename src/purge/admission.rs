//! Admission: before a purge is stored, each provider leg's quota is checked and reserved,
//! one purge at a time per quota (the store's admission lock, held until the purge is
//! stored, so two replicas cannot both spend the last of a day's quota).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::time::Instant;

use super::PurgeError;
use super::model::{JobRecord, QuotaRecord, RejectedRecord};
use super::provider::Provider;
use super::store::{AdmissionLock, PurgeStore};

/// What admission let through.
pub(super) struct Admission {
    /// The jobs to store, with `not_before_ms` set where they wait for a quota reset.
    pub(super) jobs: Vec<JobRecord>,
    /// The providers' quotas as seen.
    pub(super) quota: Vec<QuotaRecord>,
    /// Planning's refusals and every path of a leg admission refused.
    pub(super) rejected: Vec<RejectedRecord>,
    /// Admission locks, to hold until the purge is stored.
    pub(super) guards: Vec<Box<dyn AdmissionLock>>,
}

/// Admits the planned `legs` (jobs per index into `providers`). A quota that cannot serve a
/// leg (exhausted, or not before `max_wait_ms` from `now` when that is set) refuses that
/// leg's paths and keeps the others when the target fans out to several providers; with
/// one provider, or when no leg is left, the purge is refused with the first reason.
pub(super) async fn admit(
    store: &dyn PurgeStore,
    providers: &[Arc<dyn Provider>],
    mut legs: Vec<(usize, Vec<JobRecord>)>,
    mut rejected: Vec<RejectedRecord>,
    max_wait_ms: i64,
    now: i64,
    deadline: Instant,
) -> Result<Admission, PurgeError> {
    let mut guards = Vec::new();
    let mut jobs = Vec::new();
    let mut quota = Vec::new();
    let mut refused: Option<PurgeError> = None;
    // Locks are always taken in the same order, so two purges cannot wait on each other;
    // each key once (two legs may share a quota: two Aliyun domains of one account), and
    // the paths this purge's earlier legs took from it count as reserved for the next.
    legs.sort_by_key(|(i, jobs)| providers[*i].admission_key(jobs));
    let mut taken_today: HashMap<String, u64> = HashMap::new();
    for (i, mut leg_jobs) in legs {
        let provider = &providers[i];
        let key = provider.admission_key(&leg_jobs);
        let reserved = match &key {
            Some(key) => {
                let earlier = match taken_today.get(key) {
                    Some(n) => *n,
                    None => {
                        guards.push(store.lock_admission(key).await?);
                        taken_today.insert(key.clone(), 0);
                        0
                    }
                };
                // Jobs already put off past the next reset reserve that day's quota.
                store
                    .unsent_paths(
                        provider.kind(),
                        leg_jobs[0].action,
                        provider.quota_resets_at(now),
                    )
                    .await?
                    .saturating_add(earlier)
            }
            None => 0,
        };
        let admitted = match provider.admit(&leg_jobs, reserved, deadline).await {
            Ok(a) => a,
            // A quota that cannot serve this leg refuses its paths, never the others'.
            Err(e @ PurgeError::QuotaExhausted { .. }) if providers.len() > 1 => {
                reject_leg(&mut rejected, provider.as_ref(), &leg_jobs, &e.to_string());
                refused.get_or_insert(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        quota.extend(admitted.quota);
        if let Some(at) = admitted.not_before_ms {
            if max_wait_ms > 0 && at > now.saturating_add(max_wait_ms) {
                let e = PurgeError::QuotaExhausted {
                    domain: provider.target().resource().to_owned(),
                    what: "paths (not before the quota resets, past max_wait_seconds)",
                    needed: leg_jobs.iter().map(|j| j.paths.len() as i64).sum(),
                    remain: 0,
                };
                if providers.len() == 1 {
                    return Err(e);
                }
                reject_leg(&mut rejected, provider.as_ref(), &leg_jobs, &admitted.why);
                refused.get_or_insert(e);
                continue;
            }
            for j in &mut leg_jobs {
                j.not_before_ms = at;
                j.detail = admitted.why.clone();
            }
        } else if let Some(n) = key.and_then(|k| taken_today.get_mut(&k)) {
            *n = n.saturating_add(leg_jobs.iter().map(|j| j.paths.len() as u64).sum());
        }
        jobs.extend(leg_jobs);
    }
    if jobs.is_empty() {
        return Err(refused.unwrap_or(PurgeError::Invalid {
            field: "paths",
            reason: "nothing can be purged as given".into(),
        }));
    }
    Ok(Admission {
        jobs,
        quota,
        rejected,
        guards,
    })
}

/// Lists every path of a leg that admission refused, naming the provider.
fn reject_leg(
    rejected: &mut Vec<RejectedRecord>,
    provider: &dyn Provider,
    jobs: &[JobRecord],
    why: &str,
) {
    for j in jobs {
        for p in &j.paths {
            rejected.push(RejectedRecord {
                path: p.clone(),
                reason: format!(
                    "{} {}: {why}",
                    provider.kind().as_str(),
                    provider.target().resource()
                ),
            });
        }
    }
}
