//! Drives a real cdnsign (in this process, on 127.0.0.1:0, with the load test's TEST ONLY
//! keys) with the `cdnsign-loadtest` binary for a fraction of a second, closed-loop and
//! paced, then turns the results into the report and plot. Bounded by `--duration` and
//! `--max-requests`; no timing is asserted, only that the numbers are there and coherent.

use std::path::{Path, PathBuf};
use std::process::Command;

use cdnsign::config::Config;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn loadtest(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_cdnsign-loadtest"))
        .args(args)
        .output()
        .expect("run cdnsign-loadtest");
    assert!(
        out.status.success(),
        "cdnsign-loadtest {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_closed_loop_and_paced_and_writes_the_report() {
    let mut config = Config::load(Some(&repo().join("loadtest/config.toml"))).expect("config");
    config.server.listen = "127.0.0.1:0".parse().expect("addr");
    config.metrics.listen = None;
    let server = cdnsign::server::Server::bind(config).await.expect("bind");
    let addr = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));

    let dir = std::env::temp_dir().join(format!("cdnsign-loadtest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let json = dir.join("results.jsonl");
    let svg = dir.join("plot.svg");
    let pid = std::process::id().to_string();
    let (addr2, json2, pid2) = (addr.clone(), json.clone(), pid.clone());
    let runs = tokio::task::spawn_blocking(move || {
        let json = json2.to_str().expect("utf-8 path");
        let common = [
            "run",
            "--addr",
            &addr2,
            "--duration",
            "0.5",
            "--openssl-alg",
            "none",
            "--server-pid",
            &pid2,
            "--json-out",
            json,
        ];
        let with = |extra: &[&str]| {
            let mut a: Vec<&str> = common.to_vec();
            a.extend_from_slice(extra);
            String::from_utf8(loadtest(&a).stdout).expect("utf-8")
        };
        [
            with(&[
                "--key-id",
                "K2JCJMDEHXQW5F",
                "--warmup",
                "0.1",
                "--batch",
                "20",
                "--concurrency",
                "2",
            ]),
            with(&[
                "--key-id",
                "KECP256TESTONLY",
                "--batch",
                "1",
                "--concurrency",
                "4",
                "--warmup",
                "0.1",
                "--rate",
                "200",
                "--client-threads",
                "1",
                "--label",
                "paced",
            ]),
            with(&[
                "--batch",
                "500",
                "--playlist",
                "--concurrency",
                "1",
                "--mode",
                "stream",
                // --max-requests counts warm-up requests too.
                "--warmup",
                "0",
                "--max-requests",
                "5",
            ]),
        ]
    })
    .await
    .expect("loadtest runs");

    let _ = stop.send(());
    handle.await.expect("server task").expect("clean stop");

    for out in &runs {
        assert!(out.contains("0 failed items, 0 RPC errors"), "{out}");
        assert!(out.contains("latency: p50"), "{out}");
    }
    assert!(
        runs[1].contains("lateness"),
        "paced run reports its own lateness: {}",
        runs[1]
    );

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&json)
        .expect("results")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 3);
    for r in &lines {
        let urls = r["urls"].as_u64().expect("urls");
        let requests = r["requests"].as_u64().expect("requests");
        let batch = r["batch"].as_u64().expect("batch");
        assert!(requests > 0, "{r}");
        assert_eq!(
            urls,
            requests * batch,
            "every URL of every request signed: {r}"
        );
        assert!(
            r["latency_us"]["p99"].as_u64().expect("p99")
                >= r["latency_us"]["p50"].as_u64().expect("p50")
        );
        assert!(
            r["rss_kib"]["max"].as_u64().expect("rss sampled") > 0,
            "{r}"
        );
    }
    // Paced at 200/s for 0.5 s: about 100 requests, never more than the schedule allows.
    let paced = lines[1]["requests"].as_u64().expect("requests");
    assert!(
        paced <= 101,
        "paced run sent {paced} requests in 0.5 s at 200/s"
    );
    assert!(
        lines[1]["send_lag_us"]["p50"].as_u64().is_some(),
        "{}",
        lines[1]
    );
    assert_eq!(
        lines[2]["requests"].as_u64(),
        Some(5),
        "--max-requests caps the run"
    );

    let report = loadtest(&[
        "report",
        "--input",
        json.to_str().expect("utf-8"),
        "--svg",
        svg.to_str().expect("utf-8"),
    ]);
    let table = String::from_utf8(report.stdout).expect("utf-8");
    assert!(table.contains("paced"), "{table}");
    let plot = std::fs::read_to_string(&svg).expect("svg written");
    assert!(
        plot.starts_with("<svg") || plot.starts_with("<?xml"),
        "{}",
        &plot[..80.min(plot.len())]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
