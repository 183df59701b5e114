//! What each action answers once the request is admitted: refresh, push, tag, task queries, quota.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{AliyunState, Refusal, now_unix, parse_iso};

/// Answers `action` with `params`: refused first if the test queued a refusal for a
/// refresh/push/tag call (`fail_next`), then the action's own checks and answer.
pub(super) fn answer(
    st: &mut AliyunState,
    action: &str,
    params: &BTreeMap<String, String>,
) -> Result<Value, Refusal> {
    let business = matches!(
        action,
        "RefreshObjectCaches" | "PushObjectCache" | "RefreshObjectCacheByCacheTag"
    );
    if business && !st.fail_next.is_empty() {
        let (status, code) = st.fail_next.remove(0);
        let message = st
            .fail_message
            .clone()
            .unwrap_or_else(|| "Refused by the test (as the API documents this error).".into());
        return Err(Refusal::new(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            code,
            message,
        ));
    }
    let request_id = format!("FAKE-{:08}", st.calls.len());
    match action {
        "RefreshObjectCaches" | "PushObjectCache" => refresh(st, action, params, &request_id),
        "RefreshObjectCacheByCacheTag" => refresh_by_tag(st, params, &request_id),
        "DescribeRefreshTaskById" => describe_by_id(st, params, &request_id),
        "DescribeRefreshTasks" => describe_tasks(st, params, &request_id),
        "DescribeRefreshQuota" => Ok(quota(st, &request_id)),
        _ => Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "InvalidAction.NotFound",
            "Specified api is not found, please check your url and method.",
        )),
    }
}

/// RefreshObjectCaches and PushObjectCache: one task for the newline-separated paths,
/// within the per-call limits and the day's quota.
fn refresh(
    st: &mut AliyunState,
    action: &str,
    params: &BTreeMap<String, String>,
    request_id: &str,
) -> Result<Value, Refusal> {
    let Some(paths) = params.get("ObjectPath").filter(|p| !p.is_empty()) else {
        return Err(Refusal::bad(
            "MissingObjectPath",
            "ObjectPath is mandatory for this action.",
        ));
    };
    let urls: Vec<&str> = paths.split('\n').collect();
    let object_type = if action == "PushObjectCache" {
        "preload".to_owned()
    } else {
        params
            .get("ObjectType")
            .cloned()
            .unwrap_or_else(|| "File".into())
    };
    let (limit, remain) = match object_type.as_str() {
        "File" => (1_000, &mut st.url_remain),
        "Directory" => (100, &mut st.dir_remain),
        "preload" => (100, &mut st.preload_remain),
        _ => {
            return Err(Refusal::bad(
                "InvalidObjectType.Malformed",
                "Specified ObjectType is malformed.",
            ));
        }
    };
    if urls.len() > limit {
        return Err(Refusal::bad(
            "InvalidObjectPath.ExceedLimit",
            format!("At most {limit} per call."),
        ));
    }
    let mut domains = HashSet::new();
    for u in &urls {
        let Some(rest) = u
            .strip_prefix("http://")
            .or_else(|| u.strip_prefix("https://"))
        else {
            return Err(Refusal::bad(
                "InvalidObjectPath.Malformed",
                "Specified ObjectPath is malformed.",
            ));
        };
        // As documented: each URL at most 1,024 characters.
        if u.chars().count() > 1_024 {
            return Err(Refusal::bad(
                "InvalidObjectPath.Malformed",
                "Specified ObjectPath is malformed: each URL can be up to 1,024 characters.",
            ));
        }
        if object_type == "Directory" && !u.ends_with('/') {
            return Err(Refusal::bad(
                "InvalidObjectPath.Malformed",
                "A directory must end with /.",
            ));
        }
        domains.insert(rest.split('/').next().unwrap_or_default().to_owned());
    }
    if domains.len() > 10 {
        return Err(Refusal::bad(
            "InvalidObjectPath.ExceedLimit",
            "At most 10 domains per call.",
        ));
    }
    if *remain < urls.len() as i64 {
        return Err(Refusal::bad(
            "QuotaExceeded.Refresh",
            "Your refresh attempts have reached the daily upper limit.",
        ));
    }
    *remain -= urls.len() as i64;
    let id = st.next_task;
    st.next_task += 1;
    st.tasks.insert(
        id,
        (
            Instant::now(),
            now_unix(),
            urls.iter().map(|u| (*u).to_owned()).collect(),
            object_type.to_ascii_lowercase(),
        ),
    );
    if st.unavailable_after_record > 0 {
        st.unavailable_after_record -= 1;
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "The request has failed due to a temporary failure of the server.",
        ));
    }
    Ok(if action == "PushObjectCache" {
        json!({"RequestId": request_id, "PushTaskId": id.to_string()})
    } else {
        json!({"RequestId": request_id, "RefreshTaskId": id.to_string()})
    })
}

/// RefreshObjectCacheByCacheTag: one task for the comma-separated tags of a domain.
fn refresh_by_tag(
    st: &mut AliyunState,
    params: &BTreeMap<String, String>,
    request_id: &str,
) -> Result<Value, Refusal> {
    let (Some(domain), Some(tags)) = (
        params.get("DomainName").filter(|d| !d.is_empty()),
        params.get("CacheTag").filter(|t| !t.is_empty()),
    ) else {
        return Err(Refusal::bad(
            "MissingParameter",
            "DomainName and CacheTag are mandatory.",
        ));
    };
    if params
        .get("Force")
        .is_some_and(|f| f != "true" && f != "false")
    {
        return Err(Refusal::bad("InvalidParameter", "Force is a boolean."));
    }
    let _ = domain;
    let tags: Vec<String> = tags.split(',').map(str::to_owned).collect();
    let id = st.next_task;
    st.next_task += 1;
    st.tasks.insert(
        id,
        (Instant::now(), now_unix(), tags, "cachetag".to_owned()),
    );
    if st.unavailable_after_record > 0 {
        st.unavailable_after_record -= 1;
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "The request has failed due to a temporary failure of the server.",
        ));
    }
    Ok(json!({"RequestId": request_id, "RefreshTaskId": id.to_string()}))
}

/// DescribeRefreshTaskById: the entries of at most 10 comma-separated task ids.
fn describe_by_id(
    st: &AliyunState,
    params: &BTreeMap<String, String>,
    request_id: &str,
) -> Result<Value, Refusal> {
    let Some(ids) = params.get("TaskId").filter(|p| !p.is_empty()) else {
        return Err(Refusal::bad(
            "MissingTaskId",
            "TaskId is mandatory for this action.",
        ));
    };
    let ids: Vec<&str> = ids.split(',').collect();
    if ids.len() > 10 {
        return Err(Refusal::bad(
            "InvalidTaskId.ExceedLimit",
            "At most 10 task ids.",
        ));
    }
    let mut tasks = Vec::new();
    for id in ids {
        if let Some(t) = id.parse::<u64>().ok().and_then(|i| st.tasks.get(&i)) {
            tasks.extend(task_entries(id, t, st.complete_after, &st.fail_paths));
        }
    }
    Ok(json!({"RequestId": request_id, "TotalCount": tasks.len(), "Tasks": tasks}))
}

/// DescribeRefreshTasks: by TaskId or ObjectPath, or by DomainName (ObjectType then
/// required) and a time window; pages of at most 100.
fn describe_tasks(
    st: &AliyunState,
    params: &BTreeMap<String, String>,
    request_id: &str,
) -> Result<Value, Refusal> {
    let domain = params.get("DomainName").cloned();
    let object_type = params.get("ObjectType").cloned();
    if domain.is_some() && object_type.is_none() {
        return Err(Refusal::bad(
            "MissingObjectType",
            "ObjectType is mandatory when DomainName is given.",
        ));
    }
    // The values Aliyun documents for this parameter (no cache-tag type among them).
    if let Some(t) = &object_type
        && !["file", "directory", "regex", "preload", "block", "unblock"].contains(&t.as_str())
    {
        return Err(Refusal::bad(
            "InvalidParameter",
            "ObjectType is one of file, directory, regex, preload, block, unblock.",
        ));
    }
    let page_size: usize = params
        .get("PageSize")
        .and_then(|p| p.parse().ok())
        .unwrap_or(20);
    let page: usize = params
        .get("PageNumber")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1);
    if !(1..=100).contains(&page_size) || page == 0 {
        return Err(Refusal::bad(
            "InvalidParameter",
            "PageSize is 1-100, PageNumber from 1.",
        ));
    }
    let start = params.get("StartTime").and_then(|t| parse_iso(t));
    let end = params.get("EndTime").and_then(|t| parse_iso(t));
    let mut all = Vec::new();
    for (id, t) in &st.tasks {
        let (_, created_unix, _, kind) = t;
        if params
            .get("TaskId")
            .is_some_and(|want| *want != id.to_string())
            || object_type.as_ref().is_some_and(|o| o != kind)
            || start.is_some_and(|s| *created_unix < s)
            || end.is_some_and(|e| *created_unix > e)
        {
            continue;
        }
        for entry in task_entries(&id.to_string(), t, st.complete_after, &st.fail_paths) {
            let path = entry["ObjectPath"].as_str().unwrap_or_default().to_owned();
            let host = path
                .split("://")
                .nth(1)
                .and_then(|r| r.split('/').next())
                .unwrap_or_default()
                .to_owned();
            if domain.as_ref().is_some_and(|d| *d != host)
                || params.get("ObjectPath").is_some_and(|p| *p != path)
            {
                continue;
            }
            all.push(entry);
        }
    }
    let total = all.len();
    let tasks: Vec<Value> = all
        .into_iter()
        .skip((page - 1) * page_size)
        .take(page_size)
        .collect();
    Ok(json!({
        "RequestId": request_id,
        "PageNumber": page,
        "PageSize": page_size,
        "TotalCount": total,
        "Tasks": {"CDNTask": tasks},
    }))
}

/// DescribeRefreshQuota: the day's quotas and what is left of them.
fn quota(st: &AliyunState, request_id: &str) -> Value {
    json!({
        "RequestId": request_id,
        "UrlQuota": "10000", "UrlRemain": st.url_remain.to_string(),
        "DirQuota": "100", "DirRemain": st.dir_remain.to_string(),
        "PreloadQuota": "1000", "PreloadRemain": st.preload_remain.to_string(),
        "BlockQuota": "100", "BlockRemain": "100",
        "RegexQuota": "20", "RegexRemain": "20",
    })
}

/// One entry per path of a task, as DescribeRefresh* list them.
fn task_entries(
    id: &str,
    t: &(Instant, i64, Vec<String>, String),
    complete_after: Duration,
    fail_paths: &[String],
) -> Vec<Value> {
    let (created, created_unix, paths, kind) = t;
    let done = created.elapsed() >= complete_after;
    paths
        .iter()
        .map(|path| {
            let failed = done && fail_paths.iter().any(|f| path.contains(f.as_str()));
            json!({
                "TaskId": id,
                "ObjectPath": path,
                "ObjectType": kind,
                "Status": if failed { "Failed" } else if done { "Complete" } else { "Refreshing" },
                "Process": if done { "100%" } else { "40%" },
                "CreationTime": cdnsign::purge::aliyun::iso8601(*created_unix),
                "Description": if failed { "Origin Timeout" } else { "" },
            })
        })
        .collect()
}
