//! Aliyun API client unit tests: no secret shown, messages cut, answers without a task id.

use super::*;
use crate::purge::aliyun::sign::Secret;

#[test]
fn debug_never_shows_the_secret() {
    let c = AliyunCredentials {
        access_key_id: "LTAI5tExampleId".into(),
        secret: Secret::new("VerySecretValue123"),
    };
    let shown = format!(
        "{c:?} {:?}",
        Aliyun::new(None, SignatureVersion::V3, Some(c.clone()))
    );
    assert!(!shown.contains("VerySecretValue123"), "{shown}");
    assert!(!shown.contains("LTAI5tExampleId"), "{shown}");
    assert!(shown.contains("redacted"));
}

#[test]
fn long_messages_are_cut_on_a_character_boundary() {
    // 3-byte characters: byte 300 falls inside one for a 1-byte prefix.
    let message = format!("x{}", "刷新任务失败".repeat(30));
    let cut = clip(&message, MAX_MESSAGE_BYTES);
    assert!(cut.len() <= MAX_MESSAGE_BYTES && message.starts_with(&cut));
    assert_eq!(cut.len(), 298);
    assert_eq!(clip("short", MAX_MESSAGE_BYTES), "short");
}

#[test]
fn a_success_answer_without_a_task_id_is_an_unknown_outcome() {
    for json in [
        serde_json::Value::Null,
        serde_json::json!({"RequestId": "X"}),
        serde_json::json!({"RefreshTaskId": ""}),
    ] {
        let e = task_id("RefreshObjectCaches", &json, "RefreshTaskId").expect_err("no id");
        assert_eq!(e.class, ErrorClass::Unavailable, "{e}");
    }
    assert_eq!(
        task_id(
            "PushObjectCache",
            &serde_json::json!({"PushTaskId": 7}),
            "PushTaskId"
        )
        .expect("id"),
        "7"
    );
}
