//! Shared helpers for integration tests: start the real server on 127.0.0.1:0 with a
//! config written from TOML, and stop it with our own shutdown future.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use cdnsign::config::Config;
use cdnsign::server::{Server, ServerError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const KEY_ID: &str = "K2JCJMDEHXQW5F";

/// Lower-case hex SHA-256 of `s` (a client's `token_sha256`).
pub fn sha256_hex(s: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A config on an ephemeral loopback port with the TEST ONLY key; `extra` is appended.
pub fn test_config(extra_signing: &str, extra: &str) -> Config {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
allow_unauthenticated = true
[metrics]
listen = ""
[signing]
default_key_id = "{KEY_ID}"
threads = 2
{extra_signing}
[[keys]]
id = "{KEY_ID}"
path = "{key}"
{extra}
"#,
        key = repo("config/dev-keys/TEST-ONLY-cloudfront.pem").display()
    );
    Config::from_toml_str(&text, &repo(".")).expect("test config")
}

pub struct Running {
    pub addr: SocketAddr,
    /// The metrics listener, when the config has one.
    pub metrics: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    pub handle: JoinHandle<Result<(), ServerError>>,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Triggers shutdown and waits for the server to exit.
    pub async fn stop(mut self) -> Result<(), ServerError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.handle.await.expect("server task")
    }
}

pub async fn start(config: Config) -> Running {
    let server = Server::bind(config).await.expect("bind");
    let addr = server.local_addr();
    let metrics = server.metrics_addr();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(server.serve(async {
        let _ = rx.await;
    }));
    Running {
        addr,
        metrics,
        stop: Some(tx),
        handle,
    }
}

/// The backends to run a signing test on: every compiled one, plus the multi-buffer backend
/// where crypto_mb loads and the CPU runs it; otherwise a "SKIPPED <test> on multibuffer"
/// line goes to stderr past the harness's capture, so the suite's output shows it.
pub fn signing_backends(test: &str) -> Vec<cdnsign::signing::keys::Backend> {
    let mut backends = cdnsign::signing::keys::Backend::compiled();
    #[cfg(feature = "openssl-backend")]
    match cdnsign::signing::backend::multibuffer::engine() {
        Ok(_) => backends.push(cdnsign::signing::keys::Backend::Multibuffer),
        Err(why) => skip(&format!("{test} on multibuffer"), &why.to_string()),
    }
    #[cfg(not(feature = "openssl-backend"))]
    skip(
        &format!("{test} on multibuffer"),
        "no openssl-backend feature",
    );
    backends
}

/// Says a multi-buffer test (or part of one) is skipped, on stderr past the harness's
/// capture; with `CDNSIGN_TEST_REQUIRE_MULTIBUFFER=1` (scripts/test.sh sets it on CPUs with
/// AVX-512 IFMA) it fails instead, so a library that stopped loading cannot pass as a skip.
pub fn skip(test: &str, why: &str) {
    use std::io::Write as _;
    if std::env::var_os("CDNSIGN_TEST_REQUIRE_MULTIBUFFER").is_some_and(|v| v == "1") {
        panic!(
            "{test}: CDNSIGN_TEST_REQUIRE_MULTIBUFFER=1, but the multi-buffer backend is unavailable: {why}"
        );
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}
