//! Aliyun provider unit tests: judging a job from its tasks, and the daily quota reset.

use super::*;

fn task(id: &str, status: &str, path: &str) -> TaskStatus {
    TaskStatus {
        task_id: id.into(),
        status: status.into(),
        process: String::new(),
        description: String::new(),
        object_path: path.into(),
        creation_time: None,
    }
}

#[test]
fn a_job_completes_only_when_every_task_has() {
    let both = ["1", "2"];
    assert_eq!(
        judge(&both, &[task("1", "Complete", "a")], 1_000),
        Polled::InProgress("Refreshing".into()),
        "task 2 not seen yet"
    );
    assert_eq!(
        judge(
            &both,
            &[task("1", "Complete", "a"), task("2", "Complete", "b")],
            1_000
        ),
        Polled::Completed("Complete".into())
    );
    assert!(matches!(
        judge(&both, &[task("1", "Complete", "a"), task("2", "Failed", "https://d/b")], 1_000),
        Polled::Failed(why) if why.contains("https://d/b")
    ));
    assert!(matches!(
        judge(&["1"], &[task("1", "Timeout", "a")], 1_000),
        Polled::Failed(_)
    ));
    assert!(matches!(
        judge(&both, &[], TASK_MEMORY_MS + 1),
        Polled::Gone(_)
    ));
    assert!(matches!(
        judge(&["1"], &[], UNKNOWN_AFTER_MS + 1),
        Polled::Gone(_)
    ));
    assert_eq!(
        judge(&["1"], &[], 1_000),
        Polled::InProgress("Refreshing".into())
    );
}

#[test]
fn a_job_without_task_ids_is_never_completed() {
    for age in [0, 1_000, UNKNOWN_AFTER_MS + 1] {
        assert!(
            matches!(judge(&[], &[], age), Polled::Gone(ref why) if why.contains("no task id")),
            "{:?}",
            judge(&[], &[], age)
        );
    }
}

#[test]
fn quotas_reset_at_midnight_in_china() {
    // 2026-01-02T15:59:59Z is 23:59:59 in Beijing: the reset is one second later.
    let before = 1_767_369_599_000;
    assert_eq!(next_quota_reset(before), 1_767_369_600_000);
    // Right at the reset, the next one is a day later.
    assert_eq!(next_quota_reset(1_767_369_600_000), 1_767_456_000_000);
}
