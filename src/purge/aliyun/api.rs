//! The Alibaba Cloud CDN API (RPC API 2018-05-10, `cdn.aliyuncs.com`), hand-written over
//! HTTPS: RefreshObjectCaches, RefreshObjectCacheByCacheTag, PushObjectCache,
//! DescribeRefreshTaskById, DescribeRefreshTasks and DescribeRefreshQuota, signed as
//! [`super::sign`] says.

use std::collections::BTreeMap;
use std::time::Duration;
use tracing::Instrument as _;

use super::errors::{classify, perr};
use super::responses::{Quota, TaskStatus, int_field, str_field};
use super::sign::{
    AliyunCredentials, V3Request, canonical_query, iso8601, percent_encode, sha256_hex, sign_v1,
    sign_v3,
};
use crate::purge::config::SignatureVersion;
use crate::purge::error::{ErrorClass, ProviderError};

/// API version of every call.
pub const API_VERSION: &str = "2018-05-10";
/// Default endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://cdn.aliyuncs.com";
/// RefreshObjectCaches: most URLs per call (ObjectType File).
pub const MAX_URLS_PER_CALL: usize = 1_000;
/// RefreshObjectCaches: most directories per call (ObjectType Directory).
pub const MAX_DIRS_PER_CALL: usize = 100;
/// PushObjectCache: most URLs per call.
pub const MAX_PUSH_PER_CALL: usize = 100;
/// DescribeRefreshTaskById: most task ids per call.
pub const MAX_TASK_IDS_PER_CALL: usize = 10;

/// A signed request, ready to send (POST).
#[derive(Debug, Clone)]
pub struct SignedRequest {
    /// Full URL (with the query for V1).
    pub url: String,
    /// Headers to send, `authorization` included for V3.
    pub headers: Vec<(String, String)>,
    /// Form body.
    pub body: String,
}

/// Spaces calls of one action to Aliyun's documented per-account rate (DescribeRefreshTasks
/// 5 per second, DescribeRefreshTaskById 30). One account per process (the credentials
/// come from the environment), so one pacer per action per process.
struct Pacer {
    interval: Duration,
    next: tokio::sync::Mutex<Option<tokio::time::Instant>>,
}

impl Pacer {
    const fn new(interval: Duration) -> Pacer {
        Pacer {
            interval,
            next: tokio::sync::Mutex::const_new(None),
        }
    }

    /// Waits for this call's slot (pacing real traffic, not waiting for an event).
    async fn wait(&self) {
        let mut next = self.next.lock().await;
        let now = tokio::time::Instant::now();
        let slot = next.map_or(now, |n| n.max(now));
        *next = Some(slot + self.interval);
        drop(next);
        tokio::time::sleep_until(slot).await;
    }
}

static DESCRIBE_TASKS_PACE: Pacer = Pacer::new(Duration::from_millis(200));
static DESCRIBE_BY_ID_PACE: Pacer = Pacer::new(Duration::from_millis(34));

/// Client for one endpoint with one signature version.
#[derive(Clone)]
pub struct Aliyun {
    http: reqwest::Client,
    endpoint: String,
    host: String,
    signature: SignatureVersion,
    credentials: Option<AliyunCredentials>,
}

impl std::fmt::Debug for Aliyun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aliyun")
            .field("endpoint", &self.endpoint)
            .field("signature", &self.signature)
            .field("credentials", &self.credentials)
            .finish()
    }
}

fn form_encode(params: &[(&str, String)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

impl Aliyun {
    /// A client for `endpoint` (default `https://cdn.aliyuncs.com`).
    pub fn new(
        endpoint: Option<&str>,
        signature: SignatureVersion,
        credentials: Option<AliyunCredentials>,
    ) -> Result<Aliyun, String> {
        let endpoint = endpoint
            .unwrap_or(DEFAULT_ENDPOINT)
            .trim_end_matches('/')
            .to_owned();
        let host = endpoint
            .split_once("://")
            .map(|(_, rest)| rest.split('/').next().unwrap_or_default().to_owned())
            .ok_or_else(|| format!("endpoint {endpoint:?} has no scheme"))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(20))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Aliyun {
            http,
            endpoint,
            host,
            signature,
            credentials,
        })
    }

    /// Builds and signs a request for `action` with business `params` in the form body,
    /// with the given nonce and timestamp (`YYYY-MM-DDTHH:MM:SSZ`).
    pub fn build_request(
        &self,
        action: &str,
        params: &[(&str, String)],
        nonce: &str,
        timestamp: &str,
    ) -> Result<SignedRequest, ProviderError> {
        let creds = self.credentials.as_ref().ok_or_else(|| {
            perr(
                action,
                "MissingCredentials",
                "ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET are not set".into(),
                None,
                ErrorClass::Credentials,
            )
        })?;
        let body = form_encode(params);
        let url = format!("{}/", self.endpoint);
        let content_type = "application/x-www-form-urlencoded".to_owned();
        Ok(match self.signature {
            SignatureVersion::V1 => {
                let mut system: BTreeMap<String, String> = BTreeMap::new();
                for (k, v) in [
                    ("Action", action),
                    ("Version", API_VERSION),
                    ("Format", "JSON"),
                    ("AccessKeyId", creds.access_key_id.as_str()),
                    ("SignatureMethod", "HMAC-SHA1"),
                    ("SignatureVersion", "1.0"),
                    ("SignatureNonce", nonce),
                    ("Timestamp", timestamp),
                ] {
                    system.insert(k.to_owned(), v.to_owned());
                }
                let mut all = system.clone();
                for (k, v) in params {
                    all.insert((*k).to_owned(), v.clone());
                }
                let (_, sig) = sign_v1("POST", &all, creds.secret.expose());
                system.insert("Signature".into(), sig);
                let query = canonical_query(system.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                SignedRequest {
                    url: format!("{url}?{query}"),
                    headers: vec![
                        ("host".into(), self.host.clone()),
                        ("content-type".into(), content_type),
                        ("accept".into(), "application/json".into()),
                    ],
                    body,
                }
            }
            SignatureVersion::V3 => {
                let payload_hash = sha256_hex(body.as_bytes());
                let mut headers: Vec<(String, String)> = vec![
                    ("host".into(), self.host.clone()),
                    ("x-acs-action".into(), action.to_owned()),
                    ("x-acs-version".into(), API_VERSION.to_owned()),
                    ("x-acs-date".into(), timestamp.to_owned()),
                    ("x-acs-signature-nonce".into(), nonce.to_owned()),
                    ("x-acs-content-sha256".into(), payload_hash.clone()),
                    ("content-type".into(), content_type),
                ];
                let (_, authorization) = sign_v3(
                    &V3Request {
                        method: "POST",
                        path: "/",
                        query: &[],
                        headers: &headers,
                        payload_hash: &payload_hash,
                    },
                    &creds.access_key_id,
                    creds.secret.expose(),
                );
                headers.push(("accept".into(), "application/json".into()));
                headers.push(("authorization".into(), authorization));
                SignedRequest { url, headers, body }
            }
        })
    }

    /// Calls `action` with business `params` (fresh nonce, current time); returns the JSON
    /// body.
    pub async fn call(
        &self,
        action: &str,
        params: &[(&str, String)],
    ) -> Result<serde_json::Value, ProviderError> {
        match action {
            "DescribeRefreshTasks" => DESCRIBE_TASKS_PACE.wait().await,
            "DescribeRefreshTaskById" => DESCRIBE_BY_ID_PACE.wait().await,
            _ => {}
        }
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        let signed = self.build_request(action, params, &nonce, &iso8601(now))?;
        let span = tracing::info_span!(
            "aliyun.request",
            otel.kind = "client",
            rpc.system = "aliyun-rpc",
            rpc.service = "Cdn",
            rpc.method = operation_label(action)
        );
        let mut req = self.http.post(&signed.url);
        for (k, v) in &signed.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let mut trace = http::HeaderMap::new();
        span.in_scope(|| crate::trace_context::inject(&mut trace));
        let req = req.headers(trace).body(signed.body);
        let started = std::time::Instant::now();
        let resp = req.send().instrument(span).await.map_err(|e| {
            let what = if e.is_timeout() {
                "request timed out"
            } else if e.is_connect() {
                "connection failed"
            } else {
                "request failed"
            };
            perr(
                action,
                "Transport",
                what.into(),
                None,
                ErrorClass::Unavailable,
            )
        })?;
        metrics::histogram!(
            crate::metrics::UPSTREAM_DURATION,
            "provider" => "aliyun",
            "operation" => operation_label(action)
        )
        .record(started.elapsed().as_secs_f64());
        let status = resp.status().as_u16();
        let bytes = read_limited(resp, MAX_ANSWER_BYTES).await.map_err(|why| {
            perr(
                action,
                "Transport",
                format!("response body {why}"),
                Some(status),
                ErrorClass::Unavailable,
            )
        })?;
        let json: serde_json::Value =
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        if (200..300).contains(&status) {
            return Ok(json);
        }
        let code = json
            .get("Code")
            .and_then(|c| c.as_str())
            .unwrap_or("Unknown")
            .to_owned();
        let message = clip(
            json.get("Message")
                .and_then(|c| c.as_str())
                .unwrap_or_default(),
            MAX_MESSAGE_BYTES,
        );
        let class = classify(&code, Some(status));
        Err(perr(action, &code, message, Some(status), class))
    }

    /// RefreshObjectCaches; returns the task id(s) (comma-separated when several).
    pub async fn refresh(&self, urls: &[String], directory: bool) -> Result<String, ProviderError> {
        let json = self
            .call(
                "RefreshObjectCaches",
                &[
                    ("ObjectPath", urls.join("\n")),
                    (
                        "ObjectType",
                        if directory { "Directory" } else { "File" }.to_owned(),
                    ),
                ],
            )
            .await?;
        task_id("RefreshObjectCaches", &json, "RefreshTaskId")
    }

    /// PushObjectCache (pre-warm); returns the task id(s).
    pub async fn push(&self, urls: &[String]) -> Result<String, ProviderError> {
        let json = self
            .call("PushObjectCache", &[("ObjectPath", urls.join("\n"))])
            .await?;
        task_id("PushObjectCache", &json, "PushTaskId")
    }

    /// DescribeRefreshTaskById for up to 10 ids.
    pub async fn tasks_by_id(&self, ids: &[&str]) -> Result<Vec<TaskStatus>, ProviderError> {
        let json = self
            .call("DescribeRefreshTaskById", &[("TaskId", ids.join(","))])
            .await?;
        Ok(TaskStatus::list_from(json.get("Tasks")))
    }

    /// DescribeRefreshTasks for one task id (older tasks, or when by-id finds none).
    pub async fn tasks(&self, task_id: &str) -> Result<Vec<TaskStatus>, ProviderError> {
        let json = self
            .call("DescribeRefreshTasks", &[("TaskId", task_id.to_owned())])
            .await?;
        Ok(TaskStatus::list_from(
            json.get("Tasks").and_then(|t| t.get("CDNTask")),
        ))
    }

    /// DescribeRefreshTasks for a domain between two times (unix seconds), of one
    /// `ObjectType` (`file`, `directory`, `preload`, ...): what reconciliation looks for.
    /// Reads at most `max_pages` pages of 100.
    pub async fn tasks_in_window(
        &self,
        domain: &str,
        object_type: &str,
        start: i64,
        end: i64,
        max_pages: u32,
    ) -> Result<Vec<TaskStatus>, ProviderError> {
        let mut out = Vec::new();
        for page in 1..=max_pages {
            let json = self
                .call(
                    "DescribeRefreshTasks",
                    &[
                        ("DomainName", domain.to_owned()),
                        ("ObjectType", object_type.to_owned()),
                        ("StartTime", iso8601(start)),
                        ("EndTime", iso8601(end)),
                        ("PageNumber", page.to_string()),
                        ("PageSize", "100".to_owned()),
                    ],
                )
                .await?;
            let tasks = TaskStatus::list_from(json.get("Tasks").and_then(|t| t.get("CDNTask")));
            let total = int_field(&json, "TotalCount");
            let n = tasks.len();
            out.extend(tasks);
            if n < 100 || out.len() as i64 >= total {
                break;
            }
        }
        Ok(out)
    }

    /// RefreshObjectCacheByCacheTag: tags (comma-separated) on one domain; returns the
    /// task id.
    pub async fn refresh_tags(
        &self,
        domain: &str,
        tags: &[String],
        force: bool,
    ) -> Result<String, ProviderError> {
        let json = self
            .call(
                "RefreshObjectCacheByCacheTag",
                &[
                    ("DomainName", domain.to_owned()),
                    ("CacheTag", tags.join(",")),
                    ("Force", force.to_string()),
                ],
            )
            .await?;
        task_id("RefreshObjectCacheByCacheTag", &json, "RefreshTaskId")
    }

    /// DescribeRefreshQuota.
    pub async fn quota(&self) -> Result<Quota, ProviderError> {
        let json = self.call("DescribeRefreshQuota", &[]).await?;
        Ok(Quota::from_json(&json))
    }
}

/// Most bytes of an error `Message` kept (Aliyun's messages can be long, and Chinese).
const MAX_MESSAGE_BYTES: usize = 300;

/// `s` cut to at most `max` bytes, on a character boundary (never inside a multi-byte
/// character).
fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// The task id(s) of a refresh/push answer. A success answer without one (a body that is
/// not JSON, no `field`) says nothing about whether the refresh was recorded: it is an
/// unknown outcome, like a lost answer (class `Unavailable`), so the job is reconciled
/// (looked up with DescribeRefreshTasks) and never taken as done.
fn task_id(action: &str, json: &serde_json::Value, field: &str) -> Result<String, ProviderError> {
    let id = str_field(json, field);
    if id.trim().is_empty() {
        return Err(perr(
            action,
            "NoTaskId",
            format!("a success answer without {field}: the outcome is unknown"),
            None,
            ErrorClass::Unavailable,
        ));
    }
    Ok(id)
}

/// A bounded metric label for an action name.
fn operation_label(action: &str) -> &'static str {
    match action {
        "RefreshObjectCaches" => "RefreshObjectCaches",
        "PushObjectCache" => "PushObjectCache",
        "DescribeRefreshTaskById" => "DescribeRefreshTaskById",
        "DescribeRefreshTasks" => "DescribeRefreshTasks",
        "DescribeRefreshQuota" => "DescribeRefreshQuota",
        "RefreshObjectCacheByCacheTag" => "RefreshObjectCacheByCacheTag",
        _ => "other",
    }
}

/// Largest answer read from Aliyun (a page of 100 tasks is a few tens of KiB): a bigger one
/// (a proxy's page, a broken stream) is an error, not memory.
const MAX_ANSWER_BYTES: usize = 4 << 20;

/// The body, or why not: unreadable, or over `max` bytes (read no further).
async fn read_limited(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|_| "could not be read".to_owned())?
    {
        if body.len() + chunk.len() > max {
            return Err(format!("is over {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests;
