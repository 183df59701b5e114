//! Configuration: a TOML file (or the built-in dev config), then `CDNSIGN_*` environment
//! overrides. Every key is documented in `config/example.toml`.
//!
//! Environment variables name a key as `CDNSIGN_<SECTION>__<KEY>`, e.g.
//! `CDNSIGN_SERVER__LISTEN=0.0.0.0:50051` or `CDNSIGN_SIGNING__MAX_BATCH=20000`.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};

use crate::purge::config::{PurgeConfig, TargetConfig};
use crate::signing::keys::{KeySpec, PemSource};

mod error;
mod redact;
mod sections;
mod unknown_keys;
pub use error::ConfigError;
pub use sections::{
    ClientConfig, KeyConfig, LogConfig, LogFormat, MetricsConfig, ServerConfig, SigningConfig,
    TlsConfig,
};
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

/// A figment error as text, with a hint when an environment variable's value was read as
/// a number or boolean for a text key: the environment's values are read as TOML values
/// are, so `CDNSIGN_SIGNING__DEFAULT_KEY_ID=12345` is a number; quoted, it is text.
fn with_hint(error: &figment::Error) -> String {
    let from_env = error
        .metadata
        .as_ref()
        .is_some_and(|m| m.name.contains("environment variable"));
    let figment::error::Kind::InvalidType(actual, expected) = &error.kind else {
        return error.to_string();
    };
    let value = match actual {
        figment::error::Actual::Unsigned(n) => n.to_string(),
        figment::error::Actual::Signed(n) => n.to_string(),
        figment::error::Actual::Float(n) => n.to_string(),
        figment::error::Actual::Bool(b) => b.to_string(),
        _ => return error.to_string(),
    };
    if !from_env || !(expected.contains("string") || expected.contains("path")) {
        return error.to_string();
    }
    let var = format!("CDNSIGN_{}", error.path.join("__").to_uppercase());
    format!(
        "{error}; an environment value that reads as a number or boolean is taken as one: for text, quote it ({var}='\"{value}\"')"
    )
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
            // A parse error quotes its line, which may hold the database URL's password.
            problems: errors
                .into_iter()
                .map(|e| redact::secrets(&with_hint(&e)))
                .collect(),
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
        if self.server.max_connections == 0 {
            problems.push("server.max_connections must be at least 1".into());
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
