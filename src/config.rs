//! Configuration: a TOML file (or the built-in dev config), then `CDNSIGN_*` environment
//! overrides. Every key is documented in `config/example.toml`.
//!
//! Environment variables name a key as `CDNSIGN_<SECTION>__<KEY>`, e.g.
//! `CDNSIGN_SERVER__LISTEN=0.0.0.0:50051` or `CDNSIGN_SIGNING__MAX_BATCH=20000`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};

use crate::purge::config::{PurgeConfig, TargetConfig};
use crate::signing::keys::{Backend, HashAlg, KeySpec, PemSource};
use crate::signing::selection::MultibufferMode;

mod unknown_keys;
use unknown_keys::unknown_keys;

/// Default `[signing] multibuffer_flush_us` (docs/performance.md has the measurements).
pub const DEFAULT_FLUSH_US: u64 = 100;

/// The dev config compiled into the binary (`cdnsign serve` with no `--config`).
pub const DEV_CONFIG_TOML: &str = include_str!("../config/dev.toml");
/// The dev config's key path, relative to `config/`.
const DEV_KEY_PATH: &str = "dev-keys/TEST-ONLY-cloudfront.pem";
/// TEST ONLY key shipped in the repository and compiled in for the dev config. It is public:
/// never let CloudFront trust it.
const DEV_KEY_PEM: &str = include_str!("../config/dev-keys/TEST-ONLY-cloudfront.pem");

/// Whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// `[server]`
    #[serde(default)]
    pub server: ServerConfig,
    /// `[metrics]`
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// `[signing]`
    #[serde(default)]
    pub signing: SigningConfig,
    /// `[[keys]]`
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// `[log]`
    #[serde(default)]
    pub log: LogConfig,
    /// `[[clients]]`: who may call, and what each may sign and purge.
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    /// `[[targets]]`: CDNs a purge can reach (see `docs/purge.md`).
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
    /// `[purge]`
    #[serde(default)]
    pub purge: PurgeConfig,
    /// Where this config came from; relative key paths resolve against its directory.
    #[serde(skip)]
    pub source: ConfigSource,
}

/// Where the config was read from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ConfigSource {
    /// The built-in dev config.
    #[default]
    BuiltinDev,
    /// A file.
    File(PathBuf),
}

/// `[server]`: the gRPC listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Largest request message accepted, bytes. Up to 4x this the server answers
    /// INVALID_ARGUMENT naming the limit; beyond that the transport refuses the message
    /// (RESOURCE_EXHAUSTED) without reading it into memory.
    pub max_message_bytes: usize,
    /// Seconds to let in-flight requests finish after SIGTERM/SIGINT.
    pub shutdown_grace_seconds: u64,
    /// Seconds between SIGTERM and closing the listener, during which health reports
    /// NOT_SERVING but calls are still served, so load balancers stop sending first.
    pub drain_seconds: u64,
    /// Serve without authenticating callers (dev only; logs a warning).
    pub allow_unauthenticated: bool,
    /// Most signing/purge calls in flight at once; more are refused with
    /// RESOURCE_EXHAUSTED before any work (health and reflection are exempt).
    pub max_concurrent_requests: usize,
    /// Seconds a client connection may live before the server asks it to reconnect
    /// (HTTP/2 GOAWAY), so long-lived gRPC connections spread over replicas added since;
    /// 0: forever. Calls in flight finish first, for up to `max_connection_age_grace_seconds`.
    #[serde(alias = "max_connection_age")]
    pub max_connection_age_seconds: u64,
    /// Seconds a connection past its age may keep running calls (long streams) before it
    /// is closed; 0: until they end.
    #[serde(alias = "max_connection_age_grace")]
    pub max_connection_age_grace_seconds: u64,
    /// TLS (and mTLS when `client_ca` is set); absent for plaintext.
    pub tls: Option<TlsConfig>,
}

/// `[server.tls]`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TlsConfig {
    /// Server certificate chain, PEM.
    pub cert: PathBuf,
    /// Server private key, PEM.
    pub key: PathBuf,
    /// CA bundle that client certificates must chain to; enables mTLS.
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: also accept connections without a client certificate (they
    /// must then present a bearer token).
    #[serde(default)]
    pub client_auth_optional: bool,
}

/// One `[[clients]]` entry: an identity and its grants.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientConfig {
    /// Name used in logs, audit events and metric labels.
    pub name: String,
    /// Hex SHA-256 of the client's bearer token (`authorization: Bearer <token>`).
    pub token_sha256: String,
    /// Client certificate subject (RFC 4514 form, e.g. `CN=playlist-generator`), mTLS.
    pub cert_subject: String,
    /// Or a DNS/URI/email subject alternative name of the client certificate.
    pub cert_san: String,
    /// Key ids this client may sign with.
    pub keys: Vec<String>,
    /// URL prefixes the signed resource must fall under (after normalisation).
    pub url_prefixes: Vec<String>,
    /// Longest TTL this client may ask for (capped by `signing.max_ttl_seconds`).
    pub max_ttl_seconds: Option<i64>,
    /// Purge targets this client may purge.
    pub purge_targets: Vec<String>,
    /// Sustained URL signing rate (URLs/s); absent for unlimited.
    pub urls_per_second: Option<u32>,
    /// Largest burst of URLs (default: one second's worth, at least one max_batch).
    pub urls_burst: Option<u32>,
    /// Sustained purge rate, paths per minute; absent for unlimited.
    pub purge_paths_per_minute: Option<u32>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            max_message_bytes: 16 * 1024 * 1024,
            shutdown_grace_seconds: 20,
            drain_seconds: 0,
            allow_unauthenticated: false,
            max_concurrent_requests: 512,
            max_connection_age_seconds: 600,
            max_connection_age_grace_seconds: 60,
            tls: None,
        }
    }
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct MetricsConfig {
    /// Address serving `/metrics`; `""` disables metrics serving.
    #[serde(deserialize_with = "addr_or_empty")]
    pub listen: Option<SocketAddr>,
}

/// `""` means "off"; anything else must be a socket address.
fn addr_or_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(serde::de::Error::custom)
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
        }
    }
}

/// `[signing]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SigningConfig {
    /// Key used when neither item nor request names one; empty for none.
    pub default_key_id: String,
    /// Longest allowed validity, seconds from now.
    pub max_ttl_seconds: i64,
    /// Most items in one request (or one stream message).
    pub max_batch: usize,
    /// Signing pool threads; 0 = one per core.
    pub threads: usize,
    /// Crypto backend: "openssl" (default) or "pure-rust".
    pub backend: Backend,
    /// Multi-buffer signing (crypto_mb, AVX-512 IFMA) over the OpenSSL backend: "auto"
    /// (default: when the library loads and the CPU runs it), "off", or "required" (refuse
    /// to start without it, naming what is missing). `CDNSIGN_CRYPTO_MB_LIB` names the
    /// library file.
    pub multibuffer: MultibufferMode,
    /// How long a signature waits for others to share its 8-lane computation while every
    /// pool thread is busy, microseconds (a queue also flushes as soon as it holds 8, and
    /// as the lane flush ahead of it ends; `crate::signing::lanes`).
    pub multibuffer_flush_us: u64,
    /// Most messages in one `SignUrlsStream` call; 0 = unlimited.
    pub max_stream_batches: u64,
    /// Requests of at most this many items, all with ECDSA keys, are signed on the tokio
    /// worker that received them instead of the pool (an ECDSA signature costs less than
    /// the two thread hand-offs); 0 = always the pool. RSA always runs on the pool.
    pub inline_ecdsa_max_items: usize,
    /// Most items admitted to the signing pool and not yet finished; past it a request is
    /// refused with RESOURCE_EXHAUSTED (and a RetryInfo) before any work. A request that
    /// finds the pool idle is always admitted, so a batch of `max_batch` can always run.
    pub max_queued_items: usize,
    /// With the pure-Rust backend, `serve` refuses RSA keys unless this is true: the `rsa`
    /// crate's private-key operation is not constant-time (RUSTSEC-2023-0071, Marvin), and a
    /// signing server is exactly what an attacker can time over the network.
    pub allow_variable_time_rsa: bool,
    /// Largest playlist `SignPlaylist` takes, bytes (default 8 MiB).
    pub max_playlist_bytes: usize,
}

impl Default for SigningConfig {
    fn default() -> Self {
        SigningConfig {
            default_key_id: String::new(),
            max_ttl_seconds: 7 * 24 * 3600,
            max_batch: 10_000,
            threads: 0,
            backend: Backend::default(),
            multibuffer: MultibufferMode::Auto,
            multibuffer_flush_us: DEFAULT_FLUSH_US,
            max_stream_batches: 0,
            inline_ecdsa_max_items: 4,
            max_queued_items: 20_000,
            allow_variable_time_rsa: false,
            max_playlist_bytes: crate::playlist::DEFAULT_MAX_PLAYLIST_BYTES,
        }
    }
}

impl SigningConfig {
    /// What the signing backends are chosen from (`backend`, `multibuffer`,
    /// `multibuffer_flush_us`).
    pub fn selection_wanted(&self) -> crate::signing::selection::Wanted {
        crate::signing::selection::Wanted {
            backend: self.backend,
            multibuffer: self.multibuffer,
            flush_after: std::time::Duration::from_micros(self.multibuffer_flush_us),
        }
    }
}

/// One `[[keys]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyConfig {
    /// CloudFront public key id (key pair id).
    pub id: String,
    /// PEM file (PKCS#1 or PKCS#8); relative to the config file's directory.
    pub path: PathBuf,
    /// Digest: "sha1" (default) or "sha256".
    #[serde(default)]
    pub algorithm: HashAlg,
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// "text" (human) or "json".
    pub format: LogFormat,
    /// `RUST_LOG`-style filter, used when `RUST_LOG` is unset.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            filter: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// The config could not be loaded: every problem found, each naming the key and where it
/// came from. Printed once, as a list.
#[derive(Debug, thiserror::Error)]
#[error("{}", render_problems(origin, problems))]
pub struct ConfigError {
    /// The file (or "the built-in dev config").
    pub origin: String,
    /// One line per problem.
    pub problems: Vec<String>,
}

fn render_problems(origin: &str, problems: &[String]) -> String {
    match problems {
        [one] => format!("config {origin}: {one}"),
        many => {
            let mut out = format!("config {origin}: {} problems:", many.len());
            for p in many {
                out.push_str("\n  - ");
                out.push_str(p);
            }
            out
        }
    }
}

impl ConfigSource {
    /// The file, if it is one (what `load` takes).
    pub fn path(&self) -> Option<&Path> {
        match self {
            ConfigSource::File(p) => Some(p),
            ConfigSource::BuiltinDev => None,
        }
    }

    /// How messages name this source.
    pub fn describe(&self) -> String {
        match self {
            ConfigSource::BuiltinDev => "the built-in dev config".into(),
            ConfigSource::File(p) => p.display().to_string(),
        }
    }
}

/// Environment variables that set config keys: `CDNSIGN_<SECTION>__<KEY>`. Other
/// `CDNSIGN_*` variables (tools and tests use a few) are not config and are left alone.
fn env_overrides() -> Env {
    Env::prefixed("CDNSIGN_")
        .filter(|key| key.as_str().contains("__"))
        .split("__")
}

impl Config {
    /// Loads `path`, or the built-in dev config when `None`, then applies `CDNSIGN_*`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (config, problems) = Self::load_reporting(path)?;
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError {
                origin: config.source.describe(),
                problems,
            })
        }
    }

    /// [`load`](Self::load), returning the config with its problems (unknown keys, broken
    /// rules) instead of failing on them, so a caller can add the problems it finds in
    /// keys, clients and TLS files and report them all at once. Fails only when the
    /// sources do not parse into a config at all.
    pub fn load_reporting(path: Option<&Path>) -> Result<(Config, Vec<String>), ConfigError> {
        let (figment, source) = match path {
            Some(p) => (
                Figment::new().merge(Toml::file_exact(p)),
                ConfigSource::File(p.to_owned()),
            ),
            None => (
                Figment::new().merge(Toml::string(DEV_CONFIG_TOML)),
                ConfigSource::BuiltinDev,
            ),
        };
        Self::parse(figment.merge(env_overrides()), source)
    }

    /// Parses TOML text (tests); relative paths resolve against `base_dir`.
    pub fn from_toml_str(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        Self::from_figment(
            Figment::new().merge(Toml::string(text)),
            ConfigSource::File(base_dir.join("inline.toml")),
        )
    }

    fn from_figment(figment: Figment, source: ConfigSource) -> Result<Config, ConfigError> {
        let (config, problems) = Self::parse(figment, source)?;
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError {
                origin: config.source.describe(),
                problems,
            })
        }
    }

    fn parse(figment: Figment, source: ConfigSource) -> Result<(Config, Vec<String>), ConfigError> {
        let mut config: Config = figment.extract().map_err(|errors| ConfigError {
            origin: source.describe(),
            problems: errors.into_iter().map(|e| e.to_string()).collect(),
        })?;
        let mut problems = unknown_keys(&figment, &source);
        config.source = source;
        config.validate(&mut problems);
        Ok((config, problems))
    }

    /// Consistency rules the types cannot express; one message per problem.
    fn validate(&self, problems: &mut Vec<String>) {
        let s = &self.signing;
        if s.max_batch == 0 {
            problems.push("signing.max_batch must be at least 1".into());
        }
        if s.max_ttl_seconds <= 0 {
            problems.push("signing.max_ttl_seconds must be positive".into());
        }
        if s.multibuffer_flush_us == 0 || s.multibuffer_flush_us > 100_000 {
            problems.push(format!(
                "signing.multibuffer_flush_us must be 1 to 100000 (microseconds), not {}",
                s.multibuffer_flush_us
            ));
        }
        if s.max_queued_items == 0 {
            problems.push("signing.max_queued_items must be at least 1".into());
        }
        if s.max_playlist_bytes == 0 {
            problems.push("signing.max_playlist_bytes must be at least 1".into());
        }
        if self.server.max_message_bytes < 1024 {
            problems.push("server.max_message_bytes must be at least 1024".into());
        }
        let mut seen = std::collections::HashSet::new();
        for (i, k) in self.keys.iter().enumerate() {
            if k.id.is_empty() || !k.id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                problems.push(format!(
                    "keys[{i}]: id {:?} must be non-empty ASCII letters and digits (a CloudFront key id)",
                    k.id
                ));
            }
            if !seen.insert(&k.id) {
                problems.push(format!("keys[{i}]: id {} appears twice", k.id));
            }
        }
        if self.clients.is_empty() && !self.server.allow_unauthenticated {
            problems.push(
                "no [[clients]] configured and server.allow_unauthenticated is not true: \
                 refusing to start a signing service anyone could call"
                    .into(),
            );
        }
        if self.server.max_concurrent_requests == 0 {
            problems.push("server.max_concurrent_requests must be at least 1".into());
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.filter) {
            problems.push(format!(
                "log.filter {:?} is not a valid filter: {e}",
                self.log.filter
            ));
        }
        if !s.default_key_id.is_empty() && !seen.contains(&s.default_key_id) {
            problems.push(format!(
                "signing.default_key_id {:?} is not one of the [[keys]] ids",
                s.default_key_id
            ));
        }
        for (i, c) in self.clients.iter().enumerate() {
            for k in &c.keys {
                if !seen.contains(k) {
                    problems.push(format!(
                        "clients[{i}] ({:?}): keys names {k:?}, which is not one of the [[keys]] ids",
                        c.name
                    ));
                }
            }
        }
        crate::purge::config::validate(&self.targets, &self.purge, problems);
    }

    /// Directory relative paths resolve against.
    pub fn base_dir(&self) -> PathBuf {
        match &self.source {
            ConfigSource::File(p) => p
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(".")),
            ConfigSource::BuiltinDev => PathBuf::from("config"),
        }
    }

    /// Resolves a possibly relative path against the config file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.base_dir().join(path)
        }
    }

    /// The keys to load. The built-in dev config's TEST ONLY key is compiled in, so
    /// `cdnsign serve` works from any directory.
    pub fn key_specs(&self) -> Vec<KeySpec> {
        self.keys
            .iter()
            .map(|k| KeySpec {
                id: k.id.clone(),
                pem: if self.source == ConfigSource::BuiltinDev && k.path == Path::new(DEV_KEY_PATH)
                {
                    PemSource::Builtin(DEV_KEY_PEM)
                } else {
                    PemSource::File(self.resolve(&k.path))
                },
                hash: k.algorithm,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
