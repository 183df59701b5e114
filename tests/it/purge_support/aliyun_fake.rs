//! A local Alibaba Cloud CDN (RPC API 2018-05-10) that checks each request the way the API
//! documents it and answers with the documented JSON.
//!
//! Written in Rust inside the test crate (axum on 127.0.0.1:0) so its state (calls, tasks,
//! quota) can be asserted on directly. Signatures are checked by Alibaba Cloud's official
//! Python SDK (`alibabacloud-tea-openapi`'s `Utils.get_authorization` and
//! `get_rpcsignature`, in `tests/python/aliyun_signer.py`), never by cdnsign's own signing
//! code, on the request as it arrived on the wire (headers, query, body bytes).
//!
//! Checked: AccessKey known; signature (RPC HMAC-SHA1 or ACS3-HMAC-SHA256, whichever the
//! request uses; ACS3 must sign host and every x-acs-* header, and the body must hash to
//! x-acs-content-sha256); SignatureNonce never reused; timestamp within 15 minutes;
//! Action/Version and each action's required parameters; per-call limits (1,000 URLs or 100
//! directories per RefreshObjectCaches, 10 domains, 100 per PushObjectCache, 10 task ids);
//! the day's quota. Tasks report `Refreshing` until `complete_after` has passed, then
//! `Complete`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use cdnsign::purge::aliyun::sha256_hex;
use serde_json::{Value, json};

/// One accepted call.
#[derive(Debug, Clone)]
pub struct Call {
    /// Action.
    pub action: String,
    /// `v1` or `v3`.
    pub signature: &'static str,
    /// Business parameters.
    pub params: BTreeMap<String, String>,
}

/// Fake state, shared with the test.
#[derive(Debug)]
pub struct AliyunState {
    /// AccessKey id → secret.
    pub keys: HashMap<String, String>,
    /// Nonces seen.
    pub nonces: HashSet<String>,
    /// Accepted calls, in order.
    pub calls: Vec<Call>,
    /// Refused calls: (action, error code).
    pub refused: Vec<(String, String)>,
    /// Task id → (created, unix seconds created, object paths, object type). One refresh
    /// call is one task id; DescribeRefresh* list one entry per path.
    pub tasks: BTreeMap<u64, (Instant, i64, Vec<String>, String)>,
    /// Refresh/push calls are recorded, then answered only after this (a process killed
    /// meanwhile has sent them without learning the task id).
    pub refresh_delay: Duration,
    /// The next refresh/push/tag calls are refused with these (HTTP status, code), in order,
    /// as the API documents them ("try again later", a domain it does not know...).
    pub fail_next: Vec<(u16, String)>,
    /// The next N refresh calls make their task and then answer 503 ServiceUnavailable:
    /// the caller cannot know whether it went through.
    pub unavailable_after_record: u32,
    /// Tasks for paths containing one of these report `Failed`.
    pub fail_paths: Vec<String>,
    /// Next task id.
    pub next_task: u64,
    /// Quota left today.
    pub url_remain: i64,
    /// Directories left today.
    pub dir_remain: i64,
    /// Pre-warms left today.
    pub preload_remain: i64,
    /// How long a task stays `Refreshing`.
    pub complete_after: Duration,
    /// Answer the next N business calls with `Throttling.User`.
    pub throttle_next: u32,
}

/// The official SDK's signer, in a Python process of its own
/// (`tests/python/aliyun_signer.py`), asked one JSON line per request.
struct Oracle(
    std::sync::OnceLock<
        Mutex<(
            std::process::Child,
            std::io::BufReader<std::process::ChildStdout>,
        )>,
    >,
);

static ORACLE: Oracle = Oracle(std::sync::OnceLock::new());

impl Oracle {
    fn ask(&self, query: Value) -> Value {
        use std::io::{BufRead as _, Write as _};
        let cell = self.0.get_or_init(|| {
            let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/python/aliyun_signer.py");
            let mut child = std::process::Command::new(super::python())
                .arg(script)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("start the Aliyun SDK signer (scripts/setup.sh installs its venv)");
            let out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
            Mutex::new((child, out))
        });
        let mut guard = cell.lock().expect("oracle");
        let (child, out) = &mut *guard;
        let stdin = child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{query}").expect("ask the SDK signer");
        stdin.flush().expect("flush");
        let mut line = String::new();
        out.read_line(&mut line).expect("the SDK signer answers");
        let v: Value = serde_json::from_str(&line).expect("JSON from the SDK signer");
        assert!(v.get("error").is_none(), "SDK signer: {v}");
        v
    }
}

/// A running fake.
pub struct AliyunFake {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    /// Shared state.
    pub state: Arc<Mutex<AliyunState>>,
    /// Signalled each time a refresh or push task is created.
    pub refreshed: Arc<tokio::sync::Notify>,
}

impl AliyunFake {
    /// Starts on 127.0.0.1:0 knowing one AccessKey pair.
    pub async fn start(access_key_id: &str, secret: &str) -> AliyunFake {
        let state = Arc::new(Mutex::new(AliyunState {
            keys: HashMap::from([(access_key_id.to_owned(), secret.to_owned())]),
            nonces: HashSet::new(),
            calls: Vec::new(),
            refused: Vec::new(),
            tasks: BTreeMap::new(),
            next_task: 17_000_000_000,
            url_remain: 10_000,
            dir_remain: 100,
            preload_remain: 1_000,
            complete_after: Duration::from_millis(300),
            throttle_next: 0,
            refresh_delay: Duration::ZERO,
            fail_next: Vec::new(),
            unavailable_after_record: 0,
            fail_paths: Vec::new(),
        }));
        let refreshed = Arc::new(tokio::sync::Notify::new());
        let app = Router::new()
            .route("/", axum::routing::any(handle))
            .with_state((Arc::clone(&state), Arc::clone(&refreshed)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        AliyunFake {
            endpoint: format!("http://{addr}"),
            state,
            refreshed,
        }
    }

    /// Accepted calls of one action.
    pub fn calls(&self, action: &str) -> Vec<Call> {
        self.state
            .lock()
            .expect("state")
            .calls
            .iter()
            .filter(|c| c.action == action)
            .cloned()
            .collect()
    }

    /// Error codes the fake answered.
    pub fn refused(&self) -> Vec<String> {
        self.state
            .lock()
            .expect("state")
            .refused
            .iter()
            .map(|(_, c)| c.clone())
            .collect()
    }
}

fn form_decode(s: &str) -> Vec<(String, String)> {
    fn dec(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    let h = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz");
                    match u8::from_str_radix(h, 16) {
                        Ok(v) => {
                            out.push(v);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (dec(k), dec(v)),
            None => (dec(p), String::new()),
        })
        .collect()
}

/// Unix seconds of `YYYY-MM-DDTHH:MM:SSZ`.
fn parse_iso(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss) = (n(11..13)?, n(14..16)?, n(17..19)?);
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
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

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn error(status: StatusCode, code: &str, message: &str) -> (StatusCode, Value) {
    (
        status,
        json!({
            "RequestId": "FAKE-0000-ERROR",
            "HostId": "cdn.aliyuncs.com",
            "Code": code,
            "Message": message,
            "Recommend": "https://api.aliyun.com/troubleshoot",
        }),
    )
}

type FakeState = (Arc<Mutex<AliyunState>>, Arc<tokio::sync::Notify>);

async fn handle(
    State((state, refreshed)): State<FakeState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (status, json, delay) = {
        let mut st = state.lock().expect("state");
        let tasks_before = st.tasks.len();
        let (status, json, action) = check(&mut st, &method, &uri, &headers, &body);
        if status != StatusCode::OK {
            let code = json["Code"].as_str().unwrap_or_default().to_owned();
            st.refused.push((action, code));
        }
        let created = st.tasks.len() > tasks_before;
        if created {
            refreshed.notify_one();
        }
        (
            status,
            json,
            if created {
                st.refresh_delay
            } else {
                Duration::ZERO
            },
        )
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    (status, axum::Json(json)).into_response()
}

fn check(
    st: &mut AliyunState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> (StatusCode, Value, String) {
    let query = form_decode(uri.query().unwrap_or_default());
    let body_str = String::from_utf8_lossy(body).into_owned();
    let form = if headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
    {
        form_decode(&body_str)
    } else {
        Vec::new()
    };
    let header = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let bad = StatusCode::BAD_REQUEST;

    // --- authentication
    let auth = header("authorization");
    let (version_used, action, version, nonce, timestamp, mut params) = if !auth.is_empty() {
        let Some(rest) = auth.strip_prefix("ACS3-HMAC-SHA256 ") else {
            let (s, j) = error(
                bad,
                "IncompleteSignature",
                "The request signature does not conform to Aliyun standards.",
            );
            return (s, j, String::new());
        };
        let mut fields = HashMap::new();
        for part in rest.split(',') {
            if let Some((k, v)) = part.trim().split_once('=') {
                fields.insert(k.to_owned(), v.to_owned());
            }
        }
        let action = header("x-acs-action").to_owned();
        let (Some(ak), Some(signed), Some(sig)) = (
            fields.get("Credential"),
            fields.get("SignedHeaders"),
            fields.get("Signature"),
        ) else {
            let (s, j) = error(
                bad,
                "IncompleteSignature",
                "Authorization lacks Credential, SignedHeaders or Signature.",
            );
            return (s, j, action);
        };
        let signed: Vec<&str> = signed.split(';').collect();
        for required in [
            "host",
            "x-acs-action",
            "x-acs-version",
            "x-acs-date",
            "x-acs-signature-nonce",
            "x-acs-content-sha256",
        ] {
            if !signed.contains(&required) {
                let (s, j) = error(
                    bad,
                    "IncompleteSignature",
                    &format!("SignedHeaders must include {required}."),
                );
                return (s, j, action);
            }
        }
        for (name, _) in headers.iter() {
            let n = name.as_str();
            if n.starts_with("x-acs-") && !signed.contains(&n) {
                let (s, j) = error(
                    bad,
                    "IncompleteSignature",
                    &format!("Header {n} is not signed."),
                );
                return (s, j, action);
            }
        }
        let Some(secret) = st.keys.get(ak.as_str()).cloned() else {
            let (s, j) = error(
                StatusCode::NOT_FOUND,
                "InvalidAccessKeyId.NotFound",
                "Specified access key is not found.",
            );
            return (s, j, action);
        };
        let payload = sha256_hex(body);
        if payload != header("x-acs-content-sha256") {
            let (s, j) = error(
                bad,
                "SignatureDoesNotMatch",
                "The request body does not match x-acs-content-sha256.",
            );
            return (s, j, action);
        }
        // The official SDK computes what the signature must be, from the request as received.
        let signed_headers: serde_json::Map<String, Value> = signed
            .iter()
            .map(|h| ((*h).to_owned(), Value::from(header(h))))
            .collect();
        let query_map: serde_json::Map<String, Value> = query
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect();
        let expected = ORACLE.ask(json!({
            "kind": "v3",
            "method": method.as_str(),
            "path": uri.path(),
            "query": query_map,
            "headers": signed_headers,
            "payload_hash": payload,
            "ak": ak,
            "secret": secret,
        }));
        let expected = expected["authorization"].as_str().unwrap_or_default();
        if !expected.ends_with(&format!("Signature={sig}")) {
            let (s, j) = error(
                bad,
                "SignatureDoesNotMatch",
                "Specified signature is not matched with our calculation.",
            );
            return (s, j, action);
        }
        let mut params: BTreeMap<String, String> = query.into_iter().collect();
        params.extend(form);
        (
            "v3",
            action,
            header("x-acs-version").to_owned(),
            header("x-acs-signature-nonce").to_owned(),
            header("x-acs-date").to_owned(),
            params,
        )
    } else {
        let mut all: BTreeMap<String, String> = query.into_iter().collect();
        all.extend(form);
        let action = all.get("Action").cloned().unwrap_or_default();
        for required in [
            "AccessKeyId",
            "Signature",
            "SignatureMethod",
            "SignatureVersion",
            "SignatureNonce",
            "Timestamp",
            "Version",
            "Action",
        ] {
            if all.get(required).is_none_or(|v| v.is_empty()) {
                let (s, j) = error(
                    bad,
                    &format!("Missing{required}"),
                    &format!("{required} is mandatory for this action."),
                );
                return (s, j, action);
            }
        }
        if all["SignatureMethod"] != "HMAC-SHA1" || all["SignatureVersion"] != "1.0" {
            let (s, j) = error(
                bad,
                "InvalidSignatureMethod",
                "Specified signature method is not supported.",
            );
            return (s, j, action);
        }
        let Some(secret) = st.keys.get(&all["AccessKeyId"]).cloned() else {
            let (s, j) = error(
                StatusCode::NOT_FOUND,
                "InvalidAccessKeyId.NotFound",
                "Specified access key is not found.",
            );
            return (s, j, action);
        };
        let sig = all.remove("Signature").unwrap_or_default();
        let expected = ORACLE.ask(json!({
            "kind": "v1",
            "method": method.as_str(),
            "params": all,
            "secret": secret,
        }));
        if expected["signature"].as_str() != Some(sig.as_str()) {
            let (s, j) = error(
                bad,
                "SignatureDoesNotMatch",
                "Specified signature is not matched with our calculation.",
            );
            return (s, j, action);
        }
        let version = all["Version"].clone();
        let nonce = all["SignatureNonce"].clone();
        let timestamp = all["Timestamp"].clone();
        for k in [
            "AccessKeyId",
            "SignatureMethod",
            "SignatureVersion",
            "SignatureNonce",
            "Timestamp",
            "Version",
            "Action",
            "Format",
            "SignatureType",
        ] {
            all.remove(k);
        }
        ("v1", action, version, nonce, timestamp, all)
    };

    // --- replay and clock
    match parse_iso(&timestamp) {
        None => {
            let (s, j) = error(
                bad,
                "InvalidTimeStamp.Format",
                "Specified time stamp or date value is not well formatted.",
            );
            return (s, j, action);
        }
        Some(t) if (t - now_unix()).abs() > 15 * 60 => {
            let (s, j) = error(
                bad,
                "InvalidTimeStamp.Expired",
                "Specified time stamp or date value is expired.",
            );
            return (s, j, action);
        }
        Some(_) => {}
    }
    if nonce.is_empty() || !st.nonces.insert(nonce) {
        let (s, j) = error(
            bad,
            "SignatureNonceUsed",
            "Specified signature nonce was used already.",
        );
        return (s, j, action);
    }
    if version != "2018-05-10" {
        let (s, j) = error(
            bad,
            "InvalidVersion",
            "Specified parameter Version is not valid.",
        );
        return (s, j, action);
    }
    if st.throttle_next > 0 && action != "DescribeRefreshQuota" {
        st.throttle_next -= 1;
        let (s, j) = error(
            bad,
            "Throttling.User",
            "Request was denied due to user flow control.",
        );
        return (s, j, action);
    }

    let business = matches!(
        action.as_str(),
        "RefreshObjectCaches" | "PushObjectCache" | "RefreshObjectCacheByCacheTag"
    );
    if business && !st.fail_next.is_empty() {
        let (status, code) = st.fail_next.remove(0);
        let (s, j) = error(
            StatusCode::from_u16(status).unwrap_or(bad),
            &code,
            "Refused by the test (as the API documents this error).",
        );
        return (s, j, action);
    }

    // --- the actions
    let request_id = format!("FAKE-{:08}", st.calls.len());
    let result = match action.as_str() {
        "RefreshObjectCaches" | "PushObjectCache" => {
            let Some(paths) = params.get("ObjectPath").filter(|p| !p.is_empty()) else {
                let (s, j) = error(
                    bad,
                    "MissingObjectPath",
                    "ObjectPath is mandatory for this action.",
                );
                return (s, j, action);
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
                    let (s, j) = error(
                        bad,
                        "InvalidObjectType.Malformed",
                        "Specified ObjectType is malformed.",
                    );
                    return (s, j, action);
                }
            };
            if urls.len() > limit {
                let (s, j) = error(
                    bad,
                    "InvalidObjectPath.ExceedLimit",
                    &format!("At most {limit} per call."),
                );
                return (s, j, action);
            }
            let mut domains = HashSet::new();
            for u in &urls {
                let Some(rest) = u
                    .strip_prefix("http://")
                    .or_else(|| u.strip_prefix("https://"))
                else {
                    let (s, j) = error(
                        bad,
                        "InvalidObjectPath.Malformed",
                        "Specified ObjectPath is malformed.",
                    );
                    return (s, j, action);
                };
                if object_type == "Directory" && !u.ends_with('/') {
                    let (s, j) = error(
                        bad,
                        "InvalidObjectPath.Malformed",
                        "A directory must end with /.",
                    );
                    return (s, j, action);
                }
                domains.insert(rest.split('/').next().unwrap_or_default().to_owned());
            }
            if domains.len() > 10 {
                let (s, j) = error(
                    bad,
                    "InvalidObjectPath.ExceedLimit",
                    "At most 10 domains per call.",
                );
                return (s, j, action);
            }
            if *remain < urls.len() as i64 {
                let (s, j) = error(
                    bad,
                    "QuotaExceeded.Refresh",
                    "Your refresh attempts have reached the daily upper limit.",
                );
                return (s, j, action);
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
                let (s, j) = error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "The request has failed due to a temporary failure of the server.",
                );
                return (s, j, action);
            }
            if action == "PushObjectCache" {
                json!({"RequestId": request_id, "PushTaskId": id.to_string()})
            } else {
                json!({"RequestId": request_id, "RefreshTaskId": id.to_string()})
            }
        }
        "RefreshObjectCacheByCacheTag" => {
            let (Some(domain), Some(tags)) = (
                params.get("DomainName").filter(|d| !d.is_empty()),
                params.get("CacheTag").filter(|t| !t.is_empty()),
            ) else {
                let (s, j) = error(
                    bad,
                    "MissingParameter",
                    "DomainName and CacheTag are mandatory.",
                );
                return (s, j, action);
            };
            if params
                .get("Force")
                .is_some_and(|f| f != "true" && f != "false")
            {
                let (s, j) = error(bad, "InvalidParameter", "Force is a boolean.");
                return (s, j, action);
            }
            let _ = domain;
            let tags: Vec<String> = tags.split(',').map(str::to_owned).collect();
            let id = st.next_task;
            st.next_task += 1;
            st.tasks.insert(
                id,
                (Instant::now(), now_unix(), tags, "cachetag".to_owned()),
            );
            json!({"RequestId": request_id, "RefreshTaskId": id.to_string()})
        }
        "DescribeRefreshTaskById" => {
            let Some(ids) = params.get("TaskId").filter(|p| !p.is_empty()) else {
                let (s, j) = error(bad, "MissingTaskId", "TaskId is mandatory for this action.");
                return (s, j, action);
            };
            let ids: Vec<&str> = ids.split(',').collect();
            if ids.len() > 10 {
                let (s, j) = error(bad, "InvalidTaskId.ExceedLimit", "At most 10 task ids.");
                return (s, j, action);
            }
            let mut tasks = Vec::new();
            for id in ids {
                if let Some(t) = id.parse::<u64>().ok().and_then(|i| st.tasks.get(&i)) {
                    tasks.extend(task_entries(id, t, st.complete_after, &st.fail_paths));
                }
            }
            json!({"RequestId": request_id, "TotalCount": tasks.len(), "Tasks": tasks})
        }
        "DescribeRefreshTasks" => {
            // By TaskId or ObjectPath, or by DomainName (ObjectType then required) and a
            // time window; pages of at most 100.
            let domain = params.get("DomainName").cloned();
            let object_type = params.get("ObjectType").cloned();
            if domain.is_some() && object_type.is_none() {
                let (s, j) = error(
                    bad,
                    "MissingObjectType",
                    "ObjectType is mandatory when DomainName is given.",
                );
                return (s, j, action);
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
                let (s, j) = error(
                    bad,
                    "InvalidParameter",
                    "PageSize is 1-100, PageNumber from 1.",
                );
                return (s, j, action);
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
            json!({"RequestId": request_id, "PageNumber": page, "PageSize": page_size, "TotalCount": total, "Tasks": {"CDNTask": tasks}})
        }
        "DescribeRefreshQuota" => json!({
            "RequestId": request_id,
            "UrlQuota": "10000", "UrlRemain": st.url_remain.to_string(),
            "DirQuota": "100", "DirRemain": st.dir_remain.to_string(),
            "PreloadQuota": "1000", "PreloadRemain": st.preload_remain.to_string(),
            "BlockQuota": "100", "BlockRemain": "100",
            "RegexQuota": "20", "RegexRemain": "20",
        }),
        _ => {
            let (s, j) = error(
                StatusCode::NOT_FOUND,
                "InvalidAction.NotFound",
                "Specified api is not found, please check your url and method.",
            );
            return (s, j, action);
        }
    };
    params.remove("RegionId");
    st.calls.push(Call {
        action: action.clone(),
        signature: version_used,
        params,
    });
    (StatusCode::OK, result, action)
}
