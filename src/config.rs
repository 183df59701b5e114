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
    /// Most messages in one `SignUrlsStream` call; 0 = unlimited.
    pub max_stream_batches: u64,
    /// Requests of at most this many items, all with ECDSA keys, are signed on the tokio
    /// worker that received them instead of the pool (an ECDSA signature costs less than
    /// the two thread hand-offs); 0 = always the pool. RSA always runs on the pool.
    pub inline_ecdsa_max_items: usize,
}

impl Default for SigningConfig {
    fn default() -> Self {
        SigningConfig {
            default_key_id: String::new(),
            max_ttl_seconds: 7 * 24 * 3600,
            max_batch: 10_000,
            threads: 0,
            backend: Backend::default(),
            max_stream_batches: 0,
            inline_ecdsa_max_items: 4,
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

/// The config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// TOML syntax, a wrong type, or a bad environment override.
    #[error("config: {0}")]
    Parse(#[from] Box<figment::Error>),
    /// Parsed, but inconsistent.
    #[error("config: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads `path`, or the built-in dev config when `None`, then applies `CDNSIGN_*`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
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
        Self::from_figment(figment.merge(Env::prefixed("CDNSIGN_").split("__")), source)
    }

    /// Parses TOML text (tests); relative paths resolve against `base_dir`.
    pub fn from_toml_str(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        Self::from_figment(
            Figment::new().merge(Toml::string(text)),
            ConfigSource::File(base_dir.join("inline.toml")),
        )
    }

    fn from_figment(figment: Figment, source: ConfigSource) -> Result<Config, ConfigError> {
        let mut config: Config = figment.extract().map_err(Box::new)?;
        config.source = source;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.signing;
        if s.max_batch == 0 {
            return Err(ConfigError::Invalid(
                "signing.max_batch must be at least 1".into(),
            ));
        }
        if s.max_ttl_seconds <= 0 {
            return Err(ConfigError::Invalid(
                "signing.max_ttl_seconds must be positive".into(),
            ));
        }
        if self.server.max_message_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "server.max_message_bytes must be at least 1024".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for k in &self.keys {
            if k.id.is_empty() || !k.id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(ConfigError::Invalid(format!(
                    "keys: id {:?} must be non-empty ASCII letters and digits (a CloudFront key id)",
                    k.id
                )));
            }
            if !seen.insert(&k.id) {
                return Err(ConfigError::Invalid(format!(
                    "keys: id {} appears twice",
                    k.id
                )));
            }
        }
        if self.clients.is_empty() && !self.server.allow_unauthenticated {
            return Err(ConfigError::Invalid(
                "no [[clients]] configured and server.allow_unauthenticated is not true: \
                 refusing to start a signing service anyone could call"
                    .into(),
            ));
        }
        if self.server.max_concurrent_requests == 0 {
            return Err(ConfigError::Invalid(
                "server.max_concurrent_requests must be at least 1".into(),
            ));
        }
        crate::auth::Authenticator::from_config(self).map_err(ConfigError::Invalid)?;
        if !s.default_key_id.is_empty() && !seen.contains(&s.default_key_id) {
            return Err(ConfigError::Invalid(format!(
                "signing.default_key_id {:?} is not one of the [[keys]] ids",
                s.default_key_id
            )));
        }
        crate::purge::config::validate(&self.targets, &self.purge).map_err(ConfigError::Invalid)?;
        Ok(())
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

    /// Re-reads the config source for a reload (keys only change on reload).
    pub fn reload(&self) -> Result<Config, ConfigError> {
        match &self.source {
            ConfigSource::File(p) => Config::load(Some(p)),
            ConfigSource::BuiltinDev => Config::load(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_dev_config_loads_and_uses_the_compiled_in_key() {
        let c = Config::load(None).expect("dev config");
        assert_eq!(c.server.listen.ip().to_string(), "127.0.0.1");
        assert!(c.server.allow_unauthenticated);
        let specs = c.key_specs();
        assert_eq!(specs.len(), 1);
        assert!(matches!(specs[0].pem, PemSource::Builtin(_)));
        assert!(DEV_KEY_PEM.contains("TEST ONLY"));
    }

    #[test]
    fn issue_keys_parse_and_relative_paths_resolve() {
        let toml = r#"
[server]
listen = "127.0.0.1:50051"
allow_unauthenticated = true
[metrics]
listen = "127.0.0.1:9464"
[signing]
default_key_id = "K2JCJMDEHXQW5F"
max_ttl_seconds = 604800
max_batch = 10000
threads = 0
[[keys]]
id = "K2JCJMDEHXQW5F"
path = "config/dev-keys/TEST-ONLY-cloudfront.pem"
"#;
        let c = Config::from_toml_str(toml, Path::new("/etc/cdnsign")).expect("parse");
        assert_eq!(c.signing.max_batch, 10000);
        assert_eq!(
            c.key_specs()[0].pem,
            PemSource::File(PathBuf::from(
                "/etc/cdnsign/config/dev-keys/TEST-ONLY-cloudfront.pem"
            ))
        );
    }

    #[test]
    fn example_config_documents_a_valid_config() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let text = std::fs::read_to_string(dir.join("example.toml")).expect("example");
        let c = Config::from_toml_str(&text, &dir).expect("example.toml parses");
        assert_eq!(c.keys.len(), 1);
        assert!(!c.server.allow_unauthenticated);
    }

    #[test]
    fn metrics_can_be_switched_off() {
        let c = Config::from_toml_str(
            "[server]\nallow_unauthenticated = true\n[metrics]\nlisten = \"\"\n",
            Path::new("."),
        )
        .expect("parse");
        assert_eq!(c.metrics.listen, None);
        let c = Config::from_toml_str("[server]\nallow_unauthenticated = true\n", Path::new("."))
            .expect("parse");
        assert_eq!(
            c.metrics.listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 9464)))
        );
    }

    #[test]
    fn inconsistent_configs_are_refused_with_the_key_named() {
        let err = Config::from_toml_str(
            "[server]\nallow_unauthenticated = true\n[signing]\ndefault_key_id = \"NOPE\"\n",
            Path::new("."),
        )
        .expect_err("unknown default key");
        assert!(err.to_string().contains("default_key_id"), "{err}");
        let err = Config::from_toml_str(
            "[server]\nallow_unauthenticated = true\n[signing]\nmax_batch = 0\n",
            Path::new("."),
        )
        .expect_err("zero batch");
        assert!(err.to_string().contains("max_batch"), "{err}");
        let err = Config::from_toml_str(
            "[server]\nallow_unauthenticated = true\n[signing]\nmax_batch = \"x\"\n",
            Path::new("."),
        )
        .expect_err("type");
        assert!(err.to_string().contains("max_batch"), "{err}");
        let err = Config::from_toml_str("[server]\nlisten = \"127.0.0.1:1\"\n", Path::new("."))
            .expect_err("nobody may call");
        assert!(err.to_string().contains("allow_unauthenticated"), "{err}");
        let err = Config::from_toml_str(
            "[[clients]]\nname = \"a\"\ntoken_sha256 = \"abc\"\n",
            Path::new("."),
        )
        .expect_err("bad hash");
        assert!(err.to_string().contains("64 hex digits"), "{err}");
    }

    #[test]
    fn purge_targets_parse_with_the_issue_keys_and_bad_ones_are_named() {
        let toml = r#"
[server]
allow_unauthenticated = true
[purge]
data_dir = "/var/lib/cdnsign"
[[targets]]
name = "site"
provider = "cloudfront"
distribution_id = "E2QWRUHAPOMQZL"
endpoint = "http://127.0.0.1:5000"
[[targets]]
name = "site"
provider = "aliyun"
domain = "cdn.example.com"
signature = "v1"
"#;
        let c = Config::from_toml_str(toml, Path::new(".")).expect("parse");
        assert_eq!(c.targets.len(), 2);
        assert_eq!(c.targets[0].resource(), "E2QWRUHAPOMQZL");
        assert_eq!(
            c.targets[1].signature,
            crate::purge::config::SignatureVersion::V1
        );
        assert_eq!(c.purge.data_dir, PathBuf::from("/var/lib/cdnsign"));
        assert_eq!(c.purge.cloudfront_max_files_in_progress, 3000);
        assert_eq!(
            c.purge.cloudfront_collapse_threshold, 0,
            "collapse is off by default"
        );
        let defaults =
            Config::from_toml_str("[server]\nallow_unauthenticated = true\n", Path::new("."))
                .expect("empty");
        assert_eq!(defaults.purge.data_dir, PathBuf::from("./data"));
        assert!(defaults.targets.is_empty());

        let err = Config::from_toml_str(
            "[server]\nallow_unauthenticated = true\n[[targets]]\nname = \"x\"\nprovider = \"cloudfront\"\n",
            Path::new("."),
        )
        .expect_err("no distribution");
        assert!(err.to_string().contains("distribution_id"), "{err}");
        let err = Config::from_toml_str(
            "[server]\nallow_unauthenticated = true\n[[targets]]\nname = \"x\"\nprovider = \"aliyun\"\n",
            Path::new("."),
        )
        .expect_err("no domain");
        assert!(err.to_string().contains("domain"), "{err}");
        let err = Config::from_toml_str(
            "[server]\nallow_unauthenticated = true\n[[targets]]\nname = \"x\"\nprovider = \"akamai\"\n",
            Path::new("."),
        )
        .expect_err("unknown provider");
        assert!(err.to_string().contains("provider"), "{err}");
    }
}
