//! The sections of the configuration file, `[server]` to `[log]`, with their defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::DEFAULT_FLUSH_US;
use crate::signing::keys::{Backend, HashAlg};
use crate::signing::selection::MultibufferMode;

/// `[server]`: the gRPC listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Largest request message accepted, bytes (at least 1024). A larger one is refused
    /// from its frame header with RESOURCE_EXHAUSTED naming the limit, never read.
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
    /// Most client connections open at once (TLS handshakes included); a connection past it
    /// is closed as soon as it is accepted. A reload applies to the next connection.
    pub max_connections: usize,
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
            max_connections: 10_000,
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
