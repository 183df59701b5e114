//! A PostgreSQL cluster of the tests' own: `initdb` in a temporary directory, the server on
//! a free 127.0.0.1 port, run as the unprivileged `postgres` user when the tests run as
//! root. The server is a child of a thread that lives as long as the test process and is
//! started with a parent-death signal, so it stops when the tests end, however they end.
//! Nothing depends on a database already running; `scripts/setup.sh` installs Debian's
//! `postgresql` package (its binaries are found under `/usr/lib/postgresql/*/bin`, or
//! `CDNSIGN_PG_BIN`).

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead as _, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The password of the tests' database user (TEST ONLY; the cluster listens on loopback).
pub const PASSWORD: &str = "cdnsign-test-only-pw";

fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("CDNSIGN_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop().unwrap_or_else(|| {
        panic!("PostgreSQL server binaries not found under /usr/lib/postgresql (run scripts/setup.sh, or set CDNSIGN_PG_BIN)")
    })
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// A command that runs as `postgres` when we are root (initdb refuses root).
fn as_db_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--clear-groups",
            "--pdeathsig=INT",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Removes the directories of earlier runs' clusters whose server is gone (the shared
/// cluster's directory outlives its process).
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let is_ours = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("cdnsign-pg-"));
        if !is_ours {
            continue;
        }
        let pid = std::fs::read_to_string(path.join("data/postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<u32>().ok()));
        let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        // A cluster another thread is creating right now has no pid yet: only old ones.
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(600));
        if !alive && old {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// One cluster: its data directory, port and server process.
pub struct PgCluster {
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
}

impl PgCluster {
    /// `initdb` and start a new cluster (a second or two).
    pub fn start() -> PgCluster {
        remove_stale();
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("cdnsign-pg-")
            .tempdir()
            .expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("data dir");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).expect("pwfile");
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown")
                .success();
            assert!(ok, "chown the test cluster's directory to postgres");
        }
        let out = as_db_user(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "cdnsign",
                "--auth=scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = PgCluster {
            dir,
            port: free_port(),
            bin,
        };
        cluster.run();
        cluster
    }

    /// Starts the server and returns once it accepts connections (its own log says so).
    fn run(&self) {
        let mut cmd = as_db_user(&self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        // The server's parent is this thread, which lives until the process exits (it
        // waits on the server): the parent-death signal then stops the server.
        std::thread::spawn(move || {
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("cannot start postgres: {e}")));
                    return;
                }
            };
            let stderr = child.stderr.take().expect("stderr");
            let tx = ready_tx.clone();
            std::thread::spawn(move || {
                let mut log = String::new();
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("ready to accept connections") {
                        let _ = tx.send(Ok(()));
                    }
                    log.push_str(&line);
                    log.push('\n');
                }
                let _ = tx.send(Err(format!("postgres stopped:\n{log}")));
            });
            let _ = child.wait();
        });
        match ready_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => panic!("postgres did not become ready within 60 s"),
        }
    }

    /// Stops the server (fast shutdown), waiting until it is down.
    pub fn stop(&self) {
        let out = as_db_user(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["stop", "-m", "fast", "-w", "-t", "30"])
            .output()
            .expect("pg_ctl stop");
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the server again on the same port after [`stop`](Self::stop).
    pub fn restart(&self) {
        self.run();
    }

    /// A URL for `db`, with the password in it.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://cdnsign:{PASSWORD}@127.0.0.1:{}/{db}", self.port)
    }

    /// A URL for `db` without the password (it comes from `PGPASSWORD`).
    pub fn url_without_password(&self, db: &str) -> String {
        format!("postgres://cdnsign@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a fresh database and returns its name.
    pub async fn create_db(&self) -> String {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let (client, conn) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .expect("connect to the test cluster");
        let task = tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        drop(client);
        let _ = task.await;
        name
    }
}

/// The cluster shared by the tests of this process (started on first use).
pub fn shared() -> &'static PgCluster {
    static SHARED: OnceLock<PgCluster> = OnceLock::new();
    SHARED.get_or_init(PgCluster::start)
}
