//! A benchmark, not a test (ignored; `scripts/bench-purge.sh` runs it in release mode):
//! `Purge` latency (p50/p99) for 1, 100 and 3,000 paths, and purges accepted per second at
//! 100 paths, on the embedded store (one process) and on PostgreSQL with one and three
//! replicas, against the local CloudFront fake (invalidations complete at once). Prints a
//! Markdown table for docs/performance.md.

use std::path::Path;
use std::time::{Duration, Instant};

use cdnsign::proto::purger_client::PurgerClient;
use cdnsign::proto::{PurgeKind, PurgeRequest};
use tonic::transport::Channel;

use crate::purge_support::cloudfront_fake::CloudFrontFake;
use crate::purge_support::{Binary, free_port};

const DIST: &str = "EBENCH0000001";
const ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "AKIDBENCH"),
    ("AWS_SECRET_ACCESS_KEY", "bench-secret"),
    ("RUST_LOG", "warn"),
];

fn config(dir: &Path, name: &str, port: u16, store: &str, cf: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
allow_unauthenticated = true
shutdown_grace_seconds = 1
[metrics]
listen = ""
[purge]
{store}
max_paths = 10000
poll_interval_ms = 200
coalesce_window_ms = 0
[[targets]]
name = "site"
provider = "cloudfront"
distribution_id = "{DIST}"
endpoint = "{cf}"
"#
        ),
    )
    .expect("write config");
    path
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn latency(
    clients: &mut [PurgerClient<Channel>],
    paths: usize,
    n: usize,
    tag: &str,
) -> (Duration, Duration) {
    let mut took = Vec::with_capacity(n);
    for i in 0..n {
        let c = &mut clients[i % clients.len()];
        let req = PurgeRequest {
            target: "site".into(),
            paths: (0..paths).map(|p| format!("/{tag}/{i}/{p}.js")).collect(),
            kind: PurgeKind::File.into(),
            idempotency_key: format!("{tag}-{i}"),
            max_wait_seconds: 0,
        };
        let t = Instant::now();
        c.purge(req).await.expect("purge");
        took.push(t.elapsed());
    }
    took.sort();
    (percentile(&took, 0.5), percentile(&took, 0.99))
}

async fn throughput(clients: &[PurgerClient<Channel>], tag: &str, seconds: u64) -> f64 {
    let stop = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for w in 0..16 {
        let mut c = clients[w % clients.len()].clone();
        let tag = tag.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            let mut i = 0u64;
            while Instant::now() < stop && i < 100_000 {
                let req = PurgeRequest {
                    target: "site".into(),
                    paths: (0..100)
                        .map(|p| format!("/{tag}/{w}/{i}/{p}.css"))
                        .collect(),
                    kind: PurgeKind::File.into(),
                    idempotency_key: format!("{tag}-{w}-{i}"),
                    max_wait_seconds: 0,
                };
                if c.purge(req).await.is_ok() {
                    done += 1;
                }
                i += 1;
            }
            done
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("join");
    }
    total as f64 / seconds as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: scripts/bench-purge.sh"]
async fn purge_store_benchmark() {
    let pg = crate::pg::shared();
    let mut rows = Vec::new();
    for (label, replicas, pg_store) in [
        ("embedded, 1 process", 1usize, false),
        ("PostgreSQL, 1 replica", 1, true),
        ("PostgreSQL, 3 replicas", 3, true),
    ] {
        let cf = CloudFrontFake::start(DIST, Duration::ZERO).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = if pg_store {
            format!("database_url = \"{}\"", pg.url(&pg.create_db().await))
        } else {
            format!("data_dir = \"{}\"", dir.path().join("data").display())
        };
        let mut procs = Vec::new();
        let mut clients = Vec::new();
        for r in 0..replicas {
            let port = free_port();
            let cfg = config(dir.path(), &format!("r{r}"), port, &store, &cf.endpoint);
            let b = Binary::start(&cfg, port, &ENV);
            clients.push(b.client().await);
            procs.push(b);
        }
        let (p50_1, p99_1) = latency(&mut clients, 1, 200, "one").await;
        let (p50_100, p99_100) = latency(&mut clients, 100, 100, "hundred").await;
        let (p50_3k, p99_3k) = latency(&mut clients, 3_000, 20, "three-k").await;
        let rate = throughput(&clients, "rate", 10).await;
        let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e3);
        rows.push(format!(
            "| {label} | {} / {} | {} / {} | {} / {} | {rate:.0} |",
            ms(p50_1),
            ms(p99_1),
            ms(p50_100),
            ms(p99_100),
            ms(p50_3k),
            ms(p99_3k)
        ));
        drop(procs);
    }
    println!(
        "\n| store | 1 path p50 / p99 ms | 100 paths p50 / p99 ms | 3,000 paths p50 / p99 ms | purges/s accepted (100 paths, 16 callers) |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for r in rows {
        println!("{r}");
    }
}
