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

mod actions;
mod auth;
mod oracle;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
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
    /// The `Message` of the `fail_next` refusals (default: a fixed English sentence).
    pub fail_message: Option<String>,
    /// The next refresh/push/tag calls make their task, then answer HTTP 200 with these
    /// raw bodies, in order (no task id in them: a body that is not JSON, or JSON without
    /// RefreshTaskId/PushTaskId).
    pub answer_without_task_id: Vec<String>,
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
            fail_message: None,
            answer_without_task_id: Vec::new(),
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

/// An error answer, as the API documents them: HTTP status, `Code` and `Message`.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    code: String,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    /// A 400 Bad Request, what most refusals are.
    fn bad(code: impl Into<String>, message: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// The error body the API answers with.
    fn body(&self) -> Value {
        json!({
            "RequestId": "FAKE-0000-ERROR",
            "HostId": "cdn.aliyuncs.com",
            "Code": self.code,
            "Message": self.message,
            "Recommend": "https://api.aliyun.com/troubleshoot",
        })
    }
}

type FakeState = (Arc<Mutex<AliyunState>>, Arc<tokio::sync::Notify>);

async fn handle(
    State((state, refreshed)): State<FakeState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (status, json, delay, raw) = {
        let mut st = state.lock().expect("state");
        let tasks_before = st.tasks.len();
        let request = auth::Request::new(&method, &uri, &headers, &body);
        let action = request.action();
        let (status, json) = match check(&mut st, &request, &action) {
            Ok(json) => (StatusCode::OK, json),
            Err(refusal) => (refusal.status, refusal.body()),
        };
        if status != StatusCode::OK {
            let code = json["Code"].as_str().unwrap_or_default().to_owned();
            st.refused.push((action, code));
        }
        let created = st.tasks.len() > tasks_before;
        if created {
            refreshed.notify_one();
        }
        let raw = (created && status == StatusCode::OK && !st.answer_without_task_id.is_empty())
            .then(|| st.answer_without_task_id.remove(0));
        (
            status,
            json,
            if created {
                st.refresh_delay
            } else {
                Duration::ZERO
            },
            raw,
        )
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(raw) = raw {
        return (status, raw).into_response();
    }
    (status, axum::Json(json)).into_response()
}

/// Authenticates `request`, admits it, answers `action` and records the accepted call.
fn check(
    st: &mut AliyunState,
    request: &auth::Request<'_>,
    action: &str,
) -> Result<Value, Refusal> {
    let signed = auth::authenticate(&st.keys, request)?;
    auth::admit(st, &signed, action)?;
    let result = actions::answer(st, action, &signed.params)?;
    let mut params = signed.params;
    params.remove("RegionId");
    st.calls.push(Call {
        action: action.to_owned(),
        signature: signed.signature,
        params,
    });
    Ok(result)
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

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}
