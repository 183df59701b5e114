//! Shared harness for the purge tests (kept apart from `common`): the test Python
//! (moto, boto3, Aliyun SDKs), moto on a free loopback port, the real server bound on
//! 127.0.0.1:0 or run as the real binary, and the local CloudFront / Aliyun fakes.
#![allow(dead_code, unreachable_pub)]

pub mod aliyun_fake;
pub mod cloudfront_fake;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cdnsign::config::Config;
use cdnsign::proto::purger_client::PurgerClient;
use cdnsign::purge::PurgeOptions;
use cdnsign::server::Server;
use tonic::transport::Channel;

/// The venv Python from `scripts/setup.sh` (or `CDNSIGN_TEST_PYTHON`). Fails loudly when it
/// is missing: these tests must not pass by skipping.
pub(crate) fn python() -> PathBuf {
    let p = std::env::var_os("CDNSIGN_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    assert!(
        p.exists(),
        "test Python {} not found: run scripts/setup.sh (creates .venv with moto, boto3 and the \
         Aliyun SDKs from scripts/requirements-test.txt) or set CDNSIGN_TEST_PYTHON",
        p.display()
    );
    p
}

/// A free TCP port on 127.0.0.1.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A moto server on 127.0.0.1; killed on drop.
pub(crate) struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
}

impl Moto {
    /// Starts `python -m moto.server -p PORT` with extra environment, waits until it answers.
    pub(crate) fn start(env: &[(&str, &str)]) -> Moto {
        let port = free_port();
        let mut cmd = Command::new(python());
        cmd.args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start moto (run scripts/setup.sh?)");
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "moto did not start on port {port} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a script under `tests/python/` with the test Python; returns its JSON stdout.
pub(crate) fn python_json(script: &str, args: &[&str]) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let out = Command::new(python())
        .arg(&path)
        .args(args)
        .output()
        .expect("run python helper");
    assert!(
        out.status.success(),
        "{script} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("helper prints JSON")
}

/// The real server, bound on 127.0.0.1:0, serving until [`TestServer::stop`].
pub(crate) struct TestServer {
    /// Bound address.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<Result<(), cdnsign::server::ServerError>>,
}

/// The common `[server]` + `[purge]` part of a test config, with fast polling.
pub(crate) fn base_config(data_dir: &Path) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
allow_unauthenticated = true
shutdown_grace_seconds = 1
[metrics]
listen = ""
[purge]
data_dir = "{}"
poll_interval_ms = 100
coalesce_window_ms = 0
watch_interval_ms = 100
retry_base_ms = 20
retry_max_ms = 200
background_deadline_seconds = 5
"#,
        data_dir.display()
    )
}

impl TestServer {
    /// Binds with `toml` and `opts` and serves in the background.
    pub(crate) async fn start(toml: &str, opts: PurgeOptions) -> TestServer {
        let config = Config::from_toml_str(toml, Path::new(".")).expect("test config");
        let server = Server::bind_with(config, opts).await.expect("bind");
        let addr = server.local_addr();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(server.serve(async {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            stop: Some(tx),
            handle,
        }
    }

    /// A gRPC client.
    pub(crate) async fn client(&self) -> PurgerClient<Channel> {
        PurgerClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect")
    }

    /// Shuts down and waits.
    pub(crate) async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let r = tokio::time::timeout(Duration::from_secs(10), &mut self.handle)
            .await
            .expect("server stops within 10 s");
        r.expect("join").expect("serve");
    }
}

/// Static AWS credentials for the SDK (moto accepts any unless IAM auth is on).
pub(crate) fn aws_credentials(key: &str, secret: &str) -> PurgeOptions {
    PurgeOptions {
        aws_credentials: Some(aws_sdk_cloudfront::config::SharedCredentialsProvider::new(
            aws_sdk_cloudfront::config::Credentials::new(key, secret, None, None, "test"),
        )),
        ..PurgeOptions::default()
    }
}

/// Follows WatchPurge until the stream ends; returns every message.
pub(crate) async fn watch_to_end(
    client: &mut PurgerClient<Channel>,
    purge_id: &str,
    limit: Duration,
) -> Vec<cdnsign::proto::WatchPurgeResponse> {
    let mut req = tonic::Request::new(cdnsign::proto::WatchPurgeRequest {
        purge_id: purge_id.to_owned(),
    });
    req.set_timeout(limit);
    let mut stream = client.watch_purge(req).await.expect("watch").into_inner();
    let mut seen = Vec::new();
    while let Some(msg) = stream.message().await.expect("watch message") {
        seen.push(msg);
    }
    seen
}

/// The real `cdnsign` binary, `serve --config FILE`, on a known loopback port; its stderr
/// (logs) is collected. Killed (SIGKILL) on drop.
pub struct Binary {
    child: Child,
    /// gRPC address.
    pub addr: SocketAddr,
    /// Everything it wrote to stderr so far, and a signal for each new chunk.
    stderr: std::sync::Arc<(std::sync::Mutex<String>, std::sync::Condvar)>,
}

impl Binary {
    /// Starts the binary and waits until its port accepts connections.
    pub fn start(config: &Path, port: u16, env: &[(&str, &str)]) -> Binary {
        use std::io::Read as _;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cdnsign"));
        cmd.args(["serve", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start cdnsign");
        let stderr = std::sync::Arc::new((
            std::sync::Mutex::new(String::new()),
            std::sync::Condvar::new(),
        ));
        let mut pipe = child.stderr.take().expect("stderr");
        let sink = std::sync::Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = sink.0.lock() {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
                sink.1.notify_all();
            }
        });
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "cdnsign exited with {status}: {}",
                    stderr.0.lock().map(|s| s.clone()).unwrap_or_default()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "cdnsign did not listen on {port} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Binary {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            stderr,
        }
    }

    /// A gRPC client.
    pub async fn client(&self) -> PurgerClient<Channel> {
        PurgerClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect")
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The logs so far.
    pub fn logs(&self) -> String {
        self.stderr.0.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits (woken by each new chunk of output, at most `limit`) until the logs contain
    /// `needle`; returns the logs then. Panics with the logs if they never do.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> String {
        self.wait_for(limit, |logs| logs.contains(needle))
    }

    /// Waits (woken by each new chunk of output, at most `limit`) until `done(logs)`;
    /// returns the logs then. Panics with the logs if it never is.
    pub fn wait_for(&self, limit: Duration, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        let (lock, signal) = &*self.stderr;
        let mut logs = lock.lock().expect("logs");
        while !done(&logs) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the logs did not show it within {limit:?}:\n{logs}"
            );
            logs = signal.wait_timeout(logs, left).expect("logs").0;
        }
        logs.clone()
    }

    /// The process id (for signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `HUP`, `TERM`) with `kill(1)`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// After SIGTERM: waits for the `cdnsign stopped` line (at most `limit`), then for the
    /// process, and returns how it exited.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        self.wait_for_log("cdnsign stopped", limit);
        self.child.wait().expect("wait")
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `[server]`, `[metrics]` and `[purge]` for the binary, listening on `port` (metrics off).
pub fn binary_config(data_dir: &Path, port: u16) -> String {
    binary_config_with_metrics(data_dir, port, None)
}

/// [`binary_config`] with `/metrics` on `metrics_port` when given.
pub fn binary_config_with_metrics(data_dir: &Path, port: u16, metrics_port: Option<u16>) -> String {
    let metrics = metrics_port.map_or_else(String::new, |p| format!("127.0.0.1:{p}"));
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
allow_unauthenticated = true
shutdown_grace_seconds = 1
[metrics]
listen = "{metrics}"
[purge]
data_dir = "{}"
poll_interval_ms = 100
coalesce_window_ms = 0
watch_interval_ms = 100
retry_base_ms = 20
retry_max_ms = 200
background_deadline_seconds = 5
"#,
        data_dir.display()
    )
}

/// A store that answers [`PurgeStore::get`] with `Unavailable` while `fail_get` is set (a
/// database that goes away right after a commit); everything else goes to `inner`.
#[derive(Debug)]
pub(crate) struct GetFails {
    /// The real store.
    pub inner: std::sync::Arc<dyn cdnsign::purge::store::PurgeStore>,
    /// `get` fails while set.
    pub fail_get: std::sync::atomic::AtomicBool,
}

mod get_fails {
    use super::GetFails;
    use cdnsign::purge::config::ProviderKind;
    use cdnsign::purge::model::{JobAction, JobRecord, PurgeRecord, QueueKey};
    use cdnsign::purge::store::{
        AdmissionLock, Inserted, Lease, PurgeStore, QueuedJob, StoreError,
    };
    use std::sync::atomic::Ordering;

    #[async_trait::async_trait]
    impl PurgeStore for GetFails {
        fn engine(&self) -> &'static str {
            self.inner.engine()
        }
        async fn insert(&self, record: PurgeRecord) -> Result<Inserted, StoreError> {
            self.inner.insert(record).await
        }
        async fn get(&self, id: &str) -> Result<Option<PurgeRecord>, StoreError> {
            if self.fail_get.load(Ordering::SeqCst) {
                return Err(StoreError::Unavailable("the test broke get".into()));
            }
            self.inner.get(id).await
        }
        async fn get_by_key(
            &self,
            client: &str,
            key: &str,
        ) -> Result<Option<PurgeRecord>, StoreError> {
            self.inner.get_by_key(client, key).await
        }
        async fn list(
            &self,
            before: Option<u64>,
            limit: usize,
            target: Option<&str>,
        ) -> Result<Vec<PurgeRecord>, StoreError> {
            self.inner.list(before, limit, target).await
        }
        async fn claim(
            &self,
            owner: &str,
            now: i64,
            lease_ms: i64,
            among: &[QueueKey],
        ) -> Result<Option<Lease>, StoreError> {
            self.inner.claim(owner, now, lease_ms, among).await
        }
        async fn claim_queue(
            &self,
            queue: &QueueKey,
            owner: &str,
            now: i64,
            lease_ms: i64,
        ) -> Result<Option<Lease>, StoreError> {
            self.inner.claim_queue(queue, owner, now, lease_ms).await
        }
        async fn renew(&self, lease: &Lease, now: i64, lease_ms: i64) -> Result<Lease, StoreError> {
            self.inner.renew(lease, now, lease_ms).await
        }
        async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
            self.inner.release(lease).await
        }
        async fn queue_jobs(&self, lease: &Lease) -> Result<Vec<QueuedJob>, StoreError> {
            self.inner.queue_jobs(lease).await
        }
        async fn update_job(
            &self,
            lease: &Lease,
            now: i64,
            purge_id: &str,
            index: u32,
            job: &JobRecord,
        ) -> Result<(), StoreError> {
            self.inner
                .update_job(lease, now, purge_id, index, job)
                .await
        }
        async fn split_job(
            &self,
            lease: &Lease,
            now: i64,
            purge_id: &str,
            index: u32,
            part: &JobRecord,
            rest: &JobRecord,
        ) -> Result<u32, StoreError> {
            self.inner
                .split_job(lease, now, purge_id, index, part, rest)
                .await
        }
        async fn take_tokens(
            &self,
            client: &str,
            bucket: &str,
            n: f64,
            rate: f64,
            burst: f64,
            now: i64,
        ) -> Result<Result<(), f64>, StoreError> {
            self.inner
                .take_tokens(client, bucket, n, rate, burst, now)
                .await
        }
        async fn delete_finished_before(&self, cutoff: i64) -> Result<u64, StoreError> {
            self.inner.delete_finished_before(cutoff).await
        }
        async fn lock_admission(&self, key: &str) -> Result<Box<dyn AdmissionLock>, StoreError> {
            self.inner.lock_admission(key).await
        }
        async fn unsent_paths(
            &self,
            provider: ProviderKind,
            action: JobAction,
            due_before_ms: i64,
        ) -> Result<u64, StoreError> {
            self.inner
                .unsent_paths(provider, action, due_before_ms)
                .await
        }
    }
}
