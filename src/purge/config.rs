//! `[[targets]]` and `[purge]`: what a purge can reach and how hard it may push.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Which CDN a `[[targets]]` entry talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Amazon CloudFront (API 2020-05-31).
    Cloudfront,
    /// Alibaba Cloud CDN (RPC API 2018-05-10).
    Aliyun,
}

impl ProviderKind {
    /// Lower-case name, as in the config and the gRPC `provider` field.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Cloudfront => "cloudfront",
            ProviderKind::Aliyun => "aliyun",
        }
    }
}

/// Alibaba Cloud request signature version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureVersion {
    /// `ACS3-HMAC-SHA256` header signature (default).
    #[default]
    V3,
    /// RPC `HMAC-SHA1` query signature, `SignatureVersion=1.0`.
    V1,
}

/// One `[[targets]]` entry. Several entries may share a `name`: a purge of that name then
/// fans out to each of them (one site served by CloudFront and Aliyun).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetConfig {
    /// Name callers use in `PurgeRequest.target`.
    pub name: String,
    /// `cloudfront` or `aliyun`.
    pub provider: ProviderKind,
    /// CloudFront distribution id (cloudfront only).
    #[serde(default)]
    pub distribution_id: Option<String>,
    /// Accelerated domain (aliyun, required); for CloudFront, the domain whose full URLs
    /// callers may pass instead of paths (e.g. `d111111abcdef8.cloudfront.net`).
    #[serde(default)]
    pub domain: Option<String>,
    /// More domains whose full URLs are accepted (CNAMEs of the distribution).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// API endpoint override, e.g. `http://127.0.0.1:5000` (tests, other partitions).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Aliyun signature: `v3` (ACS3-HMAC-SHA256, default) or `v1` (RPC HMAC-SHA1).
    #[serde(default)]
    pub signature: SignatureVersion,
    /// Aliyun: scheme put in front of the domain in `ObjectPath` (`http` or `https`).
    #[serde(default = "default_scheme")]
    pub scheme: String,
    /// CloudFront: the distribution has a CacheTagConfig, so `CACHE_TAG` purges (and `#tag`
    /// items) are accepted. cdnsign cannot read that setting through the API yet: declare
    /// it. Aliyun domains need no setting for tags.
    #[serde(default)]
    pub cache_tags: bool,
}

fn default_scheme() -> String {
    "https".into()
}

impl TargetConfig {
    /// The provider-side resource: distribution id or domain.
    pub fn resource(&self) -> &str {
        match self.provider {
            ProviderKind::Cloudfront => self.distribution_id.as_deref().unwrap_or_default(),
            ProviderKind::Aliyun => self.domain.as_deref().unwrap_or_default(),
        }
    }
}

/// A PostgreSQL URL; it may hold a password, so `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The URL itself, for the driver only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabaseUrl(<redacted>)")
    }
}

/// `[purge]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PurgeConfig {
    /// PostgreSQL shared by every replica (`postgres://user@host:5432/db`; the password
    /// from the URL or `PGPASSWORD`). Unset: the embedded store in `data_dir`.
    pub database_url: Option<DatabaseUrl>,
    /// Directory of the embedded purge store (redb), for one process. Relative to the
    /// working directory; empty: no embedded store (PostgreSQL or no purges).
    pub data_dir: PathBuf,
    /// Seconds a replica's hold on a queue lasts unless renewed; a replica that dies loses
    /// its queues after this, and another replica finishes their jobs.
    pub lease_seconds: u64,
    /// Days finished purges (and their idempotency keys) are kept.
    pub retention_days: u32,
    /// Jobs waiting for the same distribution or domain within this many milliseconds are
    /// merged into one provider request (duplicates and covered paths sent once); 0: off.
    pub coalesce_window_ms: u64,
    /// Seconds a job waits after Aliyun says "try again later" for its short window
    /// (`QuotaPerMinuteExceeded.Refresh`, `TooMany.Refresh`).
    pub aliyun_quota_backoff_seconds: u64,
    /// Most paths in one `Purge` call.
    pub max_paths: usize,
    /// How often in-progress jobs are polled and waiting jobs retried, milliseconds.
    pub poll_interval_ms: u64,
    /// Deadline for one background submission or poll, retries included, seconds.
    pub background_deadline_seconds: u64,
    /// First retry delay, milliseconds (doubles per attempt, full jitter).
    pub retry_base_ms: u64,
    /// Largest retry delay, milliseconds.
    pub retry_max_ms: u64,
    /// CloudFront: file paths in progress per distribution (documented limit 3,000).
    pub cloudfront_max_files_in_progress: u32,
    /// CloudFront: wildcard paths in progress per distribution (documented limit 15).
    pub cloudfront_max_wildcards_in_progress: u32,
    /// CloudFront: most paths in one CreateInvalidation (documented maximum 3,000).
    pub cloudfront_max_paths_per_request: u32,
    /// CloudFront cost option: when more than this many file paths of one purge sit directly
    /// in one directory, send `dir/*` instead (one billed path). 0 = off (default).
    pub cloudfront_collapse_threshold: usize,
    /// Seconds WatchPurge waits between checks when nothing is announced.
    pub watch_interval_ms: u64,
}

impl Default for PurgeConfig {
    fn default() -> Self {
        PurgeConfig {
            database_url: None,
            data_dir: PathBuf::from("./data"),
            lease_seconds: 30,
            retention_days: 30,
            aliyun_quota_backoff_seconds: 60,
            coalesce_window_ms: 1_000,
            max_paths: 10_000,
            poll_interval_ms: 5_000,
            background_deadline_seconds: 30,
            retry_base_ms: 200,
            retry_max_ms: 20_000,
            cloudfront_max_files_in_progress: 3_000,
            cloudfront_max_wildcards_in_progress: 15,
            cloudfront_max_paths_per_request: 3_000,
            cloudfront_collapse_threshold: 0,
            watch_interval_ms: 1_000,
        }
    }
}

/// Checks `[[targets]]` and `[purge]`, adding one message per problem, each naming the key
/// at fault.
pub fn validate(targets: &[TargetConfig], purge: &PurgeConfig, problems: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    for (i, t) in targets.iter().enumerate() {
        if t.name.is_empty() {
            problems.push(format!("targets[{i}].name must not be empty"));
        }
        match t.provider {
            ProviderKind::Cloudfront => {
                let id = t.distribution_id.as_deref().unwrap_or_default();
                if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    problems.push(format!(
                        "targets[{i}] ({}): provider \"cloudfront\" needs distribution_id (ASCII letters and digits)",
                        t.name
                    ));
                }
            }
            ProviderKind::Aliyun => {
                let d = t.domain.as_deref().unwrap_or_default();
                if d.is_empty() || d.contains('/') || d.contains(char::is_whitespace) {
                    problems.push(format!(
                        "targets[{i}] ({}): provider \"aliyun\" needs domain (a host name, no scheme or path)",
                        t.name
                    ));
                }
                if t.scheme != "http" && t.scheme != "https" {
                    problems.push(format!(
                        "targets[{i}] ({}): scheme must be \"http\" or \"https\"",
                        t.name
                    ));
                }
            }
        }
        if let Some(e) = &t.endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            problems.push(format!(
                "targets[{i}] ({}): endpoint {e:?} must start with http:// or https://",
                t.name
            ));
        }
        if !seen.insert((t.name.clone(), t.provider, t.resource().to_owned())) {
            problems.push(format!(
                "targets[{i}] ({}): the same {} {} appears twice",
                t.name,
                t.provider.as_str(),
                t.resource()
            ));
        }
    }
    if purge.max_paths == 0 {
        problems.push("purge.max_paths must be at least 1".into());
    }
    if purge.poll_interval_ms == 0 || purge.watch_interval_ms == 0 {
        problems.push("purge.poll_interval_ms and purge.watch_interval_ms must be positive".into());
    }
    if purge.cloudfront_max_paths_per_request == 0
        || purge.cloudfront_max_files_in_progress == 0
        || purge.cloudfront_max_wildcards_in_progress == 0
    {
        problems.push("purge.cloudfront_max_* limits must be at least 1".into());
    }
    if purge.lease_seconds == 0 {
        problems.push("purge.lease_seconds must be at least 1".into());
    }
    if purge.retention_days == 0 {
        problems.push("purge.retention_days must be at least 1".into());
    }
    if let Some(url) = &purge.database_url
        && let Err(e) = crate::purge::store::pg_url::connection_config(url.expose())
    {
        problems.push(e);
    }
    if purge.retry_base_ms == 0 || purge.retry_max_ms < purge.retry_base_ms {
        problems.push("purge.retry_base_ms must be positive and at most purge.retry_max_ms".into());
    }
}
