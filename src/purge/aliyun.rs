//! Alibaba Cloud CDN (RPC API 2018-05-10, `cdn.aliyuncs.com`), hand-written over HTTPS:
//! RefreshObjectCaches, PushObjectCache, DescribeRefreshTaskById, DescribeRefreshTasks and
//! DescribeRefreshQuota, signed with either
//!
//! - the RPC signature (`SignatureVersion=1.0`, HMAC-SHA1 over
//!   `METHOD&%2F&percentEncode(sorted query)`, key `secret + "&"`), or
//! - `ACS3-HMAC-SHA256` (V3, default): SHA-256 of the canonical request, HMAC-SHA256 with
//!   the secret, sent in the `Authorization` header.
//!
//! Both are pinned by vectors the official Python SDKs produced
//! (`tests/fixtures/aliyun_vectors.json`, `scripts/gen_aliyun_vectors.py`).

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use sha2::Digest as _;

use crate::purge::config::{ProviderKind, SignatureVersion};
use crate::purge::{ErrorClass, ProviderError};

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

/// An AccessKey secret. Its `Debug` and `Display` never show it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// AccessKey pair (`ALIBABA_CLOUD_ACCESS_KEY_ID` / `ALIBABA_CLOUD_ACCESS_KEY_SECRET`).
#[derive(Clone)]
pub struct AliyunCredentials {
    /// AccessKey id (shown abbreviated in Debug).
    pub access_key_id: String,
    /// AccessKey secret.
    pub secret: Secret,
}

impl std::fmt::Debug for AliyunCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: String = self.access_key_id.chars().take(4).collect();
        f.debug_struct("AliyunCredentials")
            .field("access_key_id", &format_args!("{shown}…"))
            .field("secret", &self.secret)
            .finish()
    }
}

impl AliyunCredentials {
    /// Reads `ALIBABA_CLOUD_ACCESS_KEY_ID` and `ALIBABA_CLOUD_ACCESS_KEY_SECRET`.
    pub fn from_env() -> Option<AliyunCredentials> {
        let id = std::env::var("ALIBABA_CLOUD_ACCESS_KEY_ID").ok()?;
        let secret = std::env::var("ALIBABA_CLOUD_ACCESS_KEY_SECRET").ok()?;
        if id.is_empty() || secret.is_empty() {
            return None;
        }
        Some(AliyunCredentials {
            access_key_id: id,
            secret: Secret(secret),
        })
    }
}

/// RFC 3986 percent-encoding: everything but `A-Z a-z 0-9 - _ . ~`, UTF-8, upper-case hex.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `k=v&…` over sorted keys, both percent-encoded.
pub fn canonical_query<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut pairs: Vec<(String, String)> = params
        .into_iter()
        .map(|(k, v)| (percent_encode(k), percent_encode(v)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// RPC signature (SignatureVersion 1.0): string to sign and base64 HMAC-SHA1.
pub fn sign_v1(method: &str, params: &BTreeMap<String, String>, secret: &str) -> (String, String) {
    let canonical = canonical_query(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let string_to_sign = format!("{method}&%2F&{}", percent_encode(&canonical));
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(format!("{secret}&").as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(string_to_sign.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (string_to_sign, sig)
}

/// Lower-case hex of SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&sha2::Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A request to sign with ACS3-HMAC-SHA256.
#[derive(Debug, Clone)]
pub struct V3Request<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Path, `/` for RPC APIs.
    pub path: &'a str,
    /// Query parameters (unencoded).
    pub query: &'a [(String, String)],
    /// Headers to sign (any case; all of them are signed).
    pub headers: &'a [(String, String)],
    /// Hex SHA-256 of the body (`x-acs-content-sha256`).
    pub payload_hash: &'a str,
}

/// The canonical request, the signed header list and the `Authorization` value.
pub fn sign_v3(req: &V3Request<'_>, access_key_id: &str, secret: &str) -> (String, String) {
    let query = canonical_query(req.query.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in req.headers {
        headers
            .entry(k.to_ascii_lowercase())
            .or_default()
            .push(v.trim().to_owned());
    }
    let mut canonical_headers = String::new();
    for (k, vs) in &mut headers {
        vs.sort();
        canonical_headers.push_str(&format!("{k}:{}\n", vs.join(",")));
    }
    let signed: Vec<&str> = headers.keys().map(String::as_str).collect();
    let signed = signed.join(";");
    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method, req.path, query, canonical_headers, signed, req.payload_hash
    );
    let string_to_sign = format!(
        "ACS3-HMAC-SHA256\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(string_to_sign.as_bytes());
    let sig = hex(&mac.finalize().into_bytes());
    (
        canonical_request,
        format!(
            "ACS3-HMAC-SHA256 Credential={access_key_id},SignedHeaders={signed},Signature={sig}"
        ),
    )
}

/// UTC `YYYY-MM-DDTHH:MM:SSZ` for unix seconds.
pub fn iso8601(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

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
}

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

fn perr(
    op: &str,
    code: &str,
    message: String,
    status: Option<u16>,
    class: ErrorClass,
) -> ProviderError {
    ProviderError {
        provider: ProviderKind::Aliyun,
        operation: op.to_owned(),
        code: code.to_owned(),
        message,
        http_status: status,
        class,
    }
}

/// Maps an Aliyun error code / HTTP status to what to do about it.
pub fn classify(code: &str, status: Option<u16>) -> ErrorClass {
    if code.starts_with("Throttling") || code == "ServiceBusy" {
        return ErrorClass::Throttled;
    }
    if code.starts_with("QuotaExceeded") || code.contains("ExceedLimit") {
        return ErrorClass::QuotaExhausted;
    }
    match code {
        // A fresh nonce is drawn per attempt, so a retry fixes a collision.
        "SignatureNonceUsed" => ErrorClass::Unavailable,
        "ServiceUnavailable" | "InternalError" | "Transport" => ErrorClass::Unavailable,
        "SignatureDoesNotMatch"
        | "IncompleteSignature"
        | "InvalidAccessKeyId.NotFound"
        | "InvalidAccessKeyId.Inactive"
        | "Forbidden.RAM"
        | "Forbidden"
        | "NoPermission" => ErrorClass::Denied,
        "InvalidTimeStamp.Expired" | "InvalidTimeStamp.Format" => ErrorClass::Clock,
        c if c.starts_with("Missing") || c.starts_with("Invalid") => ErrorClass::Invalid,
        c if c.starts_with("InvalidDomain") || c.contains("NotFound") => ErrorClass::NotFound,
        _ => match status {
            Some(429) => ErrorClass::Throttled,
            Some(s) if s >= 500 => ErrorClass::Unavailable,
            Some(401 | 403) => ErrorClass::Denied,
            _ => ErrorClass::Other,
        },
    }
}

fn int_field(v: &serde_json::Value, key: &str) -> i64 {
    match v.get(key) {
        Some(serde_json::Value::String(s)) => s.trim().parse().unwrap_or(0),
        Some(serde_json::Value::Number(n)) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn str_field(v: &serde_json::Value, key: &str) -> String {
    match v.get(key) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => String::new(),
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
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        let signed = self.build_request(action, params, &nonce, &iso8601(now))?;
        let mut req = self.http.post(&signed.url);
        for (k, v) in &signed.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req.body(signed.body);
        let started = std::time::Instant::now();
        let resp = req.send().await.map_err(|e| {
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
        let bytes = resp.bytes().await.map_err(|_| {
            perr(
                action,
                "Transport",
                "response body could not be read".into(),
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
        let mut message = json
            .get("Message")
            .and_then(|c| c.as_str())
            .unwrap_or_default()
            .to_owned();
        message.truncate(300);
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
        Ok(str_field(&json, "RefreshTaskId"))
    }

    /// PushObjectCache (pre-warm); returns the task id(s).
    pub async fn push(&self, urls: &[String]) -> Result<String, ProviderError> {
        let json = self
            .call("PushObjectCache", &[("ObjectPath", urls.join("\n"))])
            .await?;
        Ok(str_field(&json, "PushTaskId"))
    }

    /// DescribeRefreshTaskById for up to 10 ids.
    pub async fn tasks_by_id(&self, ids: &[&str]) -> Result<Vec<TaskStatus>, ProviderError> {
        let json = self
            .call("DescribeRefreshTaskById", &[("TaskId", ids.join(","))])
            .await?;
        Ok(parse_tasks(json.get("Tasks")))
    }

    /// DescribeRefreshTasks for one task id (older tasks, or when by-id finds none).
    pub async fn tasks(&self, task_id: &str) -> Result<Vec<TaskStatus>, ProviderError> {
        let json = self
            .call("DescribeRefreshTasks", &[("TaskId", task_id.to_owned())])
            .await?;
        Ok(parse_tasks(
            json.get("Tasks").and_then(|t| t.get("CDNTask")),
        ))
    }

    /// DescribeRefreshQuota.
    pub async fn quota(&self) -> Result<Quota, ProviderError> {
        let json = self.call("DescribeRefreshQuota", &[]).await?;
        Ok(Quota {
            url_remain: int_field(&json, "UrlRemain"),
            dir_remain: int_field(&json, "DirRemain"),
            preload_remain: int_field(&json, "PreloadRemain"),
        })
    }
}

/// A bounded metric label for an action name.
fn operation_label(action: &str) -> &'static str {
    match action {
        "RefreshObjectCaches" => "RefreshObjectCaches",
        "PushObjectCache" => "PushObjectCache",
        "DescribeRefreshTaskById" => "DescribeRefreshTaskById",
        "DescribeRefreshTasks" => "DescribeRefreshTasks",
        "DescribeRefreshQuota" => "DescribeRefreshQuota",
        _ => "other",
    }
}

fn parse_tasks(v: Option<&serde_json::Value>) -> Vec<TaskStatus> {
    v.and_then(|t| t.as_array())
        .map(|a| {
            a.iter()
                .map(|t| TaskStatus {
                    task_id: str_field(t, "TaskId"),
                    status: str_field(t, "Status"),
                    process: str_field(t, "Process"),
                    description: str_field(t, "Description"),
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_rpc_signature_example() {
        let mut p = BTreeMap::new();
        for (k, v) in [
            ("AccessKeyId", "testid"),
            ("Action", "DescribeRegions"),
            ("Format", "XML"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
            ("SignatureVersion", "1.0"),
            ("Timestamp", "2016-02-23T12:46:24Z"),
            ("Version", "2014-05-26"),
        ] {
            p.insert(k.to_owned(), v.to_owned());
        }
        let (sts, sig) = sign_v1("GET", &p, "testsecret");
        assert!(sts.starts_with("GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions"));
        assert_eq!(sig, "OLeaidS1JvxuMvnyHOwuJ+uX5qY=");
    }

    #[test]
    fn encoding_and_dates() {
        assert_eq!(percent_encode("a b*~/+é"), "a%20b%2A~%2F%2B%C3%A9");
        assert_eq!(iso8601(1_456_231_584), "2016-02-23T12:46:24Z");
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
    }

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
}
