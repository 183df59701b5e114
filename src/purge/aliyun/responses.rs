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
    /// When Aliyun created the task (`CreationTime`, by its clock, unix seconds); `None`
    /// when absent or not `YYYY-MM-DDTHH:MM:SSZ`.
    pub creation_time: Option<i64>,
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
                        creation_time: parse_time(&str_field(t, "CreationTime")),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Unix seconds of a UTC time as Aliyun writes it, `2024-01-02T03:04:05Z` (fractional
/// seconds, if any, are dropped); `None` for anything else.
pub(super) fn parse_time(s: &str) -> Option<i64> {
    let (main, rest) = (s.get(..19)?, s.get(19..)?);
    let fraction = rest.strip_suffix('Z')?;
    if !(fraction.is_empty()
        || fraction.len() > 1
            && fraction.starts_with('.')
            && fraction[1..].bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let b = main.as_bytes();
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = main.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss) = (n(11..13)?, n(14..16)?, n(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from the civil date (proleptic Gregorian), 1970-01-01 = 0.
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3_600 + mm * 60 + ss)
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
        assert_eq!(tasks[0].creation_time, None);
        assert!(TaskStatus::list_from(None).is_empty());
        assert!(TaskStatus::list_from(Some(&json!({"CDNTask": []}))).is_empty());
    }

    #[test]
    fn creation_times_are_read_as_aliyun_writes_them() {
        let tasks = TaskStatus::list_from(Some(&json!([
            {"TaskId": "1", "CreationTime": "2026-01-02T03:04:05Z"},
            {"TaskId": "2", "CreationTime": "2026-01-02T03:04:05.250Z"},
            {"TaskId": "3", "CreationTime": "2026-01-02 03:04:05"},
        ])));
        let times: Vec<Option<i64>> = tasks.iter().map(|t| t.creation_time).collect();
        assert_eq!(times, [Some(1_767_323_045), Some(1_767_323_045), None]);
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_time("2024-02-29T23:59:59Z"), Some(1_709_251_199));
        for bad in [
            "",
            "2026-13-02T03:04:05Z",
            "2026-01-02T03:04:05+08:00",
            "2026-01-02T03:04:0xZ",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
        assert_eq!(
            parse_time(&crate::purge::aliyun::iso8601(1_767_323_045)),
            Some(1_767_323_045)
        );
    }
}
