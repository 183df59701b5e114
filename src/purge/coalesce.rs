//! Merged work: jobs of one queue waiting at the same time, from any callers, go out as one
//! provider request (`[purge] coalesce_window_ms`): duplicate paths once, paths covered by a
//! wildcard of the same request dropped (the provider says which, [`Provider::merge`]).
//!
//! The first job is the request's *leader*: it stores the request's paths and is the job
//! that is sent, polled and reconciled; the others are its *followers* (`led_by`), sharing
//! its reference, ids and state, each still reporting its own paths. The provider bills the
//! request once, to the leader ([`JobRecord::paths_billed`](crate::purge::model::JobRecord::paths_billed)).
//!
//! Followers are stored as `Sending` before the leader, so a crash in between leaves
//! followers whose leader is not sending: they go back to waiting ([`unlink`]).
//!
//! [`Provider::merge`]: crate::purge::provider::Provider::merge

use crate::purge::model::{JobRecord, JobState};
use crate::purge::store::QueuedJob;

/// Later waiting jobs that can share the request of the waiting job at `head`: same action,
/// due, not refused together before, while their paths (counted before duplicates are
/// dropped) stay within the provider's `capacity` for one request.
pub fn pick_followers(jobs: &[QueuedJob], head: usize, capacity: usize, now: i64) -> Vec<usize> {
    let lead = &jobs[head].job;
    let mut total = lead.paths.len();
    let mut out = Vec::new();
    for (i, qj) in jobs.iter().enumerate().skip(head + 1) {
        let j = &qj.job;
        if j.state != JobState::Waiting
            || j.solo
            || j.action != lead.action
            || j.not_before_ms > now
            || j.led_by.is_some()
        {
            continue;
        }
        if total + j.paths.len() > capacity {
            break;
        }
        total += j.paths.len();
        out.push(i);
    }
    out
}

/// Whether the job should wait for others to join: its window is not over and its request
/// is not full yet.
pub fn hold(
    head: &JobRecord,
    followers_paths: usize,
    capacity: usize,
    window_ms: i64,
    now: i64,
) -> bool {
    window_ms > 0
        && !head.solo
        && head.accepted_at_ms.saturating_add(window_ms) > now
        && head.paths.len() + followers_paths < capacity
}

/// Copies the leader's provider-side state onto a follower.
pub fn follow(follower: &mut JobRecord, leader: &JobRecord, now: i64) {
    follower.state = leader.state;
    follower.provider_job_id.clone_from(&leader.provider_job_id);
    follower.status_text.clone_from(&leader.status_text);
    follower.detail.clone_from(&leader.detail);
    follower.not_before_ms = leader.not_before_ms;
    follower.sent_at_ms = leader.sent_at_ms;
    follower.updated_at_ms = now;
}

/// Sends a follower back to waiting on its own, under its own `reference`.
pub fn unlink(follower: &mut JobRecord, reference: String, why: &str, now: i64) {
    follower.led_by = None;
    follower.request.clear();
    follower.state = JobState::Waiting;
    follower.provider_job_id.clear();
    follower.caller_reference = reference;
    follower.detail = why.to_owned();
    follower.updated_at_ms = now;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::purge::config::ProviderKind;
    use crate::purge::model::JobAction;

    fn q(paths: usize, action: JobAction) -> QueuedJob {
        QueuedJob {
            purge_id: "p".into(),
            index: 0,
            target: "t".into(),
            job: JobRecord::waiting(
                ProviderKind::Cloudfront,
                "E1",
                action,
                (0..paths).map(|i| format!("/{i}")).collect(),
                0,
                1_000,
            ),
        }
    }

    #[test]
    fn followers_share_a_request_within_capacity() {
        let mut jobs = vec![
            q(10, JobAction::Invalidate),
            q(20, JobAction::Invalidate),
            q(5, JobAction::RefreshDirectory),
            q(50, JobAction::Invalidate),
            q(10, JobAction::Invalidate),
        ];
        jobs[4].job.not_before_ms = 5_000;
        assert_eq!(pick_followers(&jobs, 0, 100, 2_000), [1, 3]);
        assert_eq!(
            pick_followers(&jobs, 0, 40, 2_000),
            [1],
            "the next would pass 40"
        );
        jobs[1].job.solo = true;
        assert_eq!(pick_followers(&jobs, 0, 100, 2_000), [3]);
    }

    #[test]
    fn a_job_holds_for_its_window_unless_its_request_is_full() {
        let head = q(10, JobAction::Invalidate).job;
        assert!(hold(&head, 0, 100, 1_000, 1_500));
        assert!(!hold(&head, 0, 100, 1_000, 2_000), "window over");
        assert!(!hold(&head, 90, 100, 1_000, 1_500), "full");
        assert!(!hold(&head, 0, 100, 0, 1_500), "merging off");
    }
}
