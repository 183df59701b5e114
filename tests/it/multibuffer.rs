//! The multi-buffer backend through the server and the binary: concurrent single-URL calls
//! sharing lane flushes, the backend gauge, and the start-up choice (`multibuffer = "auto"`
//! falling back when the library is missing, `"off"`, `"required"` refusing to start and
//! naming what is missing). Tests that need crypto_mb and AVX-512 IFMA report themselves
//! skipped, by name, elsewhere.

use std::process::Command;

use cdnsign::proto::SignItem;
use cdnsign::proto::SignUrlsRequest;
use cdnsign::proto::sign_url_result::Outcome;
use cdnsign::proto::signer_client::SignerClient;
use cdnsign::signing::verify::{VerifyKey, verify_url};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::common::{repo, skip, start, test_config};

const BIN: &str = env!("CARGO_BIN_EXE_cdnsign");
const MISSING: &str = "/nonexistent/cdnsign-it/libcrypto_mb.so.13";

async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect metrics");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}

fn value(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().expect("number"))
}

/// Sixteen single-URL RSA calls at once: all share lane flushes (`site="shared_lanes"`),
/// and all verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_single_url_calls_share_lane_flushes_through_the_server() {
    let test = "multibuffer::concurrent_single_url_calls_share_lane_flushes_through_the_server";
    if let Err(why) = cdnsign::signing::backend::multibuffer::engine() {
        skip(test, &why.to_string());
        return;
    }
    let mut config = test_config("multibuffer = \"required\"", "");
    config.metrics.listen = Some("127.0.0.1:0".parse().expect("addr"));
    let server = start(config).await;
    let metrics = server.metrics.expect("metrics");
    let before = scrape(metrics).await;
    // The lane break-even measured on this CPU, published on every server start.
    let fill = cdnsign::signing::backend::multibuffer::calibrate::min_lane_fill(
        "rsa_sha1",
        || panic!("measured when the server loaded its key"),
        || panic!("measured when the server loaded its key"),
    );
    assert_eq!(
        value(
            &before,
            r#"cdnsign_multibuffer_min_lane_fill{algorithm="rsa_sha1"}"#
        ),
        fill as f64,
        "{before}"
    );
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(16));
    let calls: Vec<_> = (0..16)
        .map(|i| {
            let (url, barrier) = (server.url(), std::sync::Arc::clone(&barrier));
            tokio::spawn(async move {
                let mut c = SignerClient::connect(url).await.expect("connect");
                barrier.wait().await;
                c.sign_urls(SignUrlsRequest {
                    items: vec![SignItem {
                        url: format!("https://d.example/mb/{i}.ts"),
                        ..SignItem::default()
                    }],
                    ttl_seconds: 60,
                    ..SignUrlsRequest::default()
                })
                .await
                .expect("sign")
                .into_inner()
            })
        })
        .collect();
    let vk = VerifyKey::from_pem(
        &std::fs::read_to_string(repo("config/dev-keys/TEST-ONLY-cloudfront.pub.pem"))
            .expect("pub"),
    )
    .expect("key");
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs(),
    )
    .expect("now");
    for call in calls {
        let resp = call.await.expect("task");
        let Some(Outcome::SignedUrl(url)) = &resp.results[0].outcome else {
            panic!("{resp:?}");
        };
        assert!(verify_url(url, &vk, now, None).valid(), "{url}");
    }
    let after = scrape(metrics).await;
    let delta = |s: &str| value(&after, s) - value(&before, s);
    // Other servers in this process may sign small RSA requests too (the recorder is
    // process-wide): at least these sixteen.
    let shared = delta(r#"cdnsign_sign_batches_total{site="shared_lanes"}"#);
    assert!(shared >= 16.0, "{shared}");
    // Every signature went through a flush (full or timer), none was re-signed.
    let flushed = delta(r#"cdnsign_multibuffer_flush_lanes_sum"#);
    assert!(flushed >= 16.0, "{after}");
    server.stop().await.expect("stop");
}

fn config_file(dir: &std::path::Path, signing: &str) -> std::path::PathBuf {
    let path = dir.join("cdnsign.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nallow_unauthenticated = true\nlisten = \"127.0.0.1:0\"\n[metrics]\nlisten = \"\"\n\
             [signing]\n{signing}\n[[keys]]\nid = \"K1\"\npath = \"{}\"\n",
            repo("config/dev-keys/TEST-ONLY-cloudfront.pem").display()
        ),
    )
    .expect("write config");
    path
}

fn check_config(config: &std::path::Path, lib: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("check-config").arg("--config").arg(config);
    match lib {
        Some(lib) => cmd.env("CDNSIGN_CRYPTO_MB_LIB", lib),
        None => cmd.env_remove("CDNSIGN_CRYPTO_MB_LIB"),
    };
    cmd.output().expect("run cdnsign")
}

#[test]
fn a_missing_library_falls_back_to_openssl_under_auto() {
    let dir = tempfile::tempdir().expect("dir");
    let out = check_config(&config_file(dir.path(), ""), Some(MISSING));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("signing with openssl"), "{stdout}");
}

#[test]
fn multibuffer_off_signs_with_openssl() {
    let dir = tempfile::tempdir().expect("dir");
    let out = check_config(&config_file(dir.path(), "multibuffer = \"off\""), None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("signing with openssl"), "{stdout}");
}

#[test]
fn required_refuses_to_start_naming_what_is_missing() {
    let dir = tempfile::tempdir().expect("dir");
    let config = config_file(dir.path(), "multibuffer = \"required\"");
    let out = check_config(&config, Some(MISSING));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr.contains("signing.multibuffer = \"required\"") && stderr.contains(MISSING),
        "{stderr}"
    );
    // `serve` refuses the same way, before binding anything.
    let out = Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("CDNSIGN_CRYPTO_MB_LIB", MISSING)
        .output()
        .expect("run cdnsign serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(MISSING), "{stderr}");
}

#[test]
fn auto_and_required_use_the_lanes_where_the_library_runs() {
    let test = "multibuffer::auto_and_required_use_the_lanes_where_the_library_runs";
    if let Err(why) = cdnsign::signing::backend::multibuffer::engine() {
        skip(test, &why.to_string());
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    for mode in ["auto", "required"] {
        let config = config_file(dir.path(), &format!("multibuffer = \"{mode}\""));
        let out = check_config(&config, None);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{mode}: {out:?}");
        assert!(
            stdout.contains("signing with multibuffer"),
            "{mode}: {stdout}"
        );
    }
}

/// The backend gauge of a server in a process of its own (the recorder is process-wide, and
/// other in-process servers publish theirs): RSA-SHA1 on the multi-buffer backend, and the
/// lane break-even it measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_gauge_says_rsa_signs_on_the_lanes() {
    let test = "multibuffer::the_backend_gauge_says_rsa_signs_on_the_lanes";
    if let Err(why) = cdnsign::signing::backend::multibuffer::engine() {
        skip(test, &why.to_string());
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, metrics_port) = (
        crate::purge_support::free_port(),
        crate::purge_support::free_port(),
    );
    let config = dir.path().join("cdnsign.toml");
    std::fs::write(
        &config,
        crate::purge_support::binary_config_with_metrics(
            &dir.path().join("data"),
            port,
            Some(metrics_port),
        ) + &format!(
            "[signing]\nmultibuffer = \"required\"\ndefault_key_id = \"{id}\"\n[[keys]]\nid = \"{id}\"\npath = \"{key}\"\n",
            id = crate::common::KEY_ID,
            key = repo("config/dev-keys/TEST-ONLY-cloudfront.pem").display()
        ),
    )
    .expect("config");
    let _server = crate::purge_support::Binary::start(&config, port, &[]);
    let page = scrape(std::net::SocketAddr::from(([127, 0, 0, 1], metrics_port))).await;
    assert_eq!(
        value(
            &page,
            r#"cdnsign_signing_backend_info{algorithm="rsa_sha1",backend="multibuffer"}"#
        ),
        1.0,
        "{page}"
    );
    assert_eq!(
        value(
            &page,
            r#"cdnsign_signing_backend_info{algorithm="rsa_sha1",backend="openssl"}"#
        ),
        0.0,
        "{page}"
    );
    let fill = value(
        &page,
        r#"cdnsign_multibuffer_min_lane_fill{algorithm="rsa_sha1"}"#,
    );
    assert!((1.0..=8.0).contains(&fill), "{page}");
}
