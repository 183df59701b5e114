//! What Alibaba Cloud CDN answers: task statuses and the daily quota, read from its JSON
//! (counts arrive as strings or numbers).

/// Status of one refresh or pre-warm task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskStatus {
    /// Task id.
    pub task_id: String,
    /// `Complete`, `Refreshing`, `Pending` or `Failed`.
    pub status: String,
    /// e.g. `100%`.
    pub process: String,
    /// Error description when failed.
    pub description: String,
    /// The URL or directory (DescribeRefreshTasks says; by-id lookups may not).
    pub object_path: String,
}

/// Remaining daily quota (DescribeRefreshQuota).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// URLs left.
    pub url_remain: i64,
    /// Directories left.
    pub dir_remain: i64,
    /// Pre-warms left.
    pub preload_remain: i64,
    /// URLs a day.
    pub url_quota: i64,
    /// Directories a day.
    pub dir_quota: i64,
    /// Pre-warms a day.
    pub preload_quota: i64,
}

impl Quota {
    /// DescribeRefreshQuota's answer.
    pub(super) fn from_json(json: &serde_json::Value) -> Quota {
        Quota {
            url_remain: int_field(json, "UrlRemain"),
            dir_remain: int_field(json, "DirRemain"),
            preload_remain: int_field(json, "PreloadRemain"),
            url_quota: int_field(json, "UrlQuota"),
            dir_quota: int_field(json, "DirQuota"),
            preload_quota: int_field(json, "PreloadQuota"),
        }
    }
}

impl TaskStatus {
    /// The tasks of a `Tasks` array (DescribeRefreshTaskById) or `Tasks.CDNTask`
    /// (DescribeRefreshTasks); none when absent.
    pub(super) fn list_from(v: Option<&serde_json::Value>) -> Vec<TaskStatus> {
        v.and_then(|t| t.as_array())
            .map(|a| {
                a.iter()
                    .map(|t| TaskStatus {
                        task_id: str_field(t, "TaskId"),
                        status: str_field(t, "Status"),
                        process: str_field(t, "Process"),
                        description: str_field(t, "Description"),
                        object_path: str_field(t, "ObjectPath"),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// An integer field, which Aliyun sends as a string or a number; 0 when absent or not a
/// number.
pub(super) fn int_field(v: &serde_json::Value, key: &str) -> i64 {
    match v.get(key) {
        Some(serde_json::Value::String(s)) => s.trim().parse().unwrap_or(0),
        Some(serde_json::Value::Number(n)) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

/// A text field (a number is given as its digits); empty when absent.
pub(super) fn str_field(v: &serde_json::Value, key: &str) -> String {
    match v.get(key) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn quota_numbers_come_as_strings_or_numbers_and_absent_ones_are_zero() {
        // DescribeRefreshQuota's documented answer gives the counts as strings.
        let q = Quota::from_json(&json!({
            "RequestId": "42E0554B-80F4-4921-AED6-ACFB22CAAAD0",
            "UrlRemain": "2000", "DirRemain": "100", "PreloadRemain": "500",
            "UrlQuota": 2000, "DirQuota": "100", "PreloadQuota": " 500 ",
        }));
        assert_eq!(
            (q.url_remain, q.dir_remain, q.preload_remain),
            (2000, 100, 500)
        );
        assert_eq!(
            (q.url_quota, q.dir_quota, q.preload_quota),
            (2000, 100, 500)
        );
        let none = Quota::from_json(&json!({"UrlRemain": "many", "DirRemain": null}));
        assert_eq!(
            (none.url_remain, none.dir_remain, none.url_quota),
            (0, 0, 0)
        );
    }

    #[test]
    fn tasks_are_read_from_the_array_and_missing_fields_are_empty() {
        let tasks = TaskStatus::list_from(Some(&json!([
            {"TaskId": 704222904, "Status": "Complete", "Process": "100%",
             "ObjectPath": "https://example.com/a.ts", "ObjectType": "file"},
            {"TaskId": "704222905", "Status": "Failed", "Description": "InternalError"},
        ])));
        assert_eq!(tasks.len(), 2);
        assert_eq!(tasks[0].task_id, "704222904");
        assert_eq!(tasks[0].object_path, "https://example.com/a.ts");
        assert_eq!(tasks[1].status, "Failed");
        assert_eq!(tasks[1].description, "InternalError");
        assert_eq!(tasks[1].process, "");
        assert!(TaskStatus::list_from(None).is_empty());
        assert!(TaskStatus::list_from(Some(&json!({"CDNTask": []}))).is_empty());
    }
}
