//! The `cdnsign` binary as operators and scripts use it: `sign`, `cookies`, `verify`, and
//! `serve` with a SIGHUP key reload.

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{KEY_ID, repo};

const BIN: &str = env!("CARGO_BIN_EXE_cdnsign");

fn cdnsign(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().expect("run cdnsign");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn key() -> String {
    repo("config/dev-keys/TEST-ONLY-cloudfront.pem")
        .display()
        .to_string()
}

fn public_key() -> String {
    repo("config/dev-keys/TEST-ONLY-cloudfront.pub.pem")
        .display()
        .to_string()
}

#[test]
fn sign_prints_the_botocore_url_alone() {
    let vectors: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo("tests/fixtures/cloudfront_vectors.json")).expect("read"),
    )
    .expect("json");
    // The CLI refuses expiries in the past, so use a vector whose expiry is far ahead.
    let future = vectors["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["kind"] == "canned" && c["expires"].as_i64() > Some(1_900_000_000))
        .expect("a canned vector with a future expiry");
    let (code, out, err) = cdnsign(&[
        "sign",
        "--key-file",
        &key(),
        "--key-pair-id",
        KEY_ID,
        "--url",
        future["url"].as_str().expect("url"),
        "--expires",
        &future["expires"].as_i64().expect("e").to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        format!("{}\n", future["signed_url"].as_str().expect("signed"))
    );
}

#[test]
fn custom_flags_and_verify_round_trip() {
    let (code, url, err) = cdnsign(&[
        "sign",
        "--key-file",
        &key(),
        "--key-pair-id",
        KEY_ID,
        "--url",
        "https://d111111abcdef8.cloudfront.net/hls/abc/seg1.ts",
        "--ttl",
        "600",
        "--resource",
        "https://d111111abcdef8.cloudfront.net/hls/abc/*",
        "--ip",
        "192.0.2.0/24",
    ]);
    assert_eq!(code, 0, "{err}");
    let url = url.trim();
    assert!(
        url.contains("?Policy=") && !url.contains("Expires="),
        "{url}"
    );
    let (code, out, _) = cdnsign(&[
        "verify",
        "--public-key",
        &public_key(),
        "--client-ip",
        "192.0.2.7",
        url,
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("valid: custom policy"), "{out}");
    let (code, out, _) = cdnsign(&[
        "verify",
        "--public-key",
        &public_key(),
        "--client-ip",
        "203.0.113.1",
        url,
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("outside 192.0.2.0/24"), "{out}");
    let (code, out, _) = cdnsign(&[
        "verify",
        "--public-key",
        &public_key(),
        "--now",
        "4000000000",
        url,
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("expired"), "{out}");
    let wrong_key = repo("tests/fixtures/keys/rsa2.pub.pem")
        .display()
        .to_string();
    let (code, out, _) = cdnsign(&["verify", "--public-key", &wrong_key, url]);
    assert_eq!(code, 1);
    assert!(out.contains("signature does not match"), "{out}");
}

#[test]
fn cookies_print_one_pair_per_line() {
    let (code, out, err) = cdnsign(&[
        "cookies",
        "--key-file",
        &key(),
        "--key-pair-id",
        KEY_ID,
        "--url",
        "https://d.example/a.ts",
        "--expires",
        "4000000000",
    ]);
    assert_eq!(code, 0, "{err}");
    let names: Vec<&str> = out
        .lines()
        .map(|l| l.split('=').next().unwrap_or(""))
        .collect();
    assert_eq!(
        names,
        [
            "CloudFront-Expires",
            "CloudFront-Signature",
            "CloudFront-Key-Pair-Id"
        ]
    );
}

#[test]
fn bad_input_exits_non_zero_with_a_message() {
    for (args, needle) in [
        (
            vec!["--url", "https://d/a", "--expires", "1"],
            "not in the future",
        ),
        (vec!["--url", "https://d/\"a", "--ttl", "60"], "url:"),
        (vec!["--url", "ftp://d/a", "--ttl", "60"], "scheme"),
        (
            vec!["--url", "https://d/a", "--ttl", "60", "--ip", "1.2.3.4/40"],
            "ip_range",
        ),
    ] {
        let key_file = key();
        let mut full = vec!["sign", "--key-file", &key_file, "--key-pair-id", KEY_ID];
        full.extend(args.iter());
        let (code, out, err) = cdnsign(&full);
        assert_ne!(code, 0, "{args:?}");
        assert!(out.is_empty(), "nothing on stdout: {out}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let (code, _, err) = cdnsign(&[
        "sign",
        "--key-file",
        &repo("tests/fixtures/keys/not-a-key.pem")
            .display()
            .to_string(),
        "--key-pair-id",
        KEY_ID,
        "--url",
        "https://d/a",
        "--ttl",
        "60",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("key K2JCJMDEHXQW5F"), "{err}");
}

struct ServeProcess {
    child: Child,
    addr: String,
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `cdnsign serve --config` with JSON logs and reads the bound address from them.
fn serve(config: &std::path::Path) -> (ServeProcess, std::sync::mpsc::Receiver<String>) {
    serve_with_log(config, "info")
}

fn serve_with_log(
    config: &std::path::Path,
    rust_log: &str,
) -> (ServeProcess, std::sync::mpsc::Receiver<String>) {
    let (mut process, rx) = spawn_serve(config, rust_log);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("server did not report its address in 30 s");
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if v["message"] == "cdnsign gRPC listening" {
            v["addr"]
                .as_str()
                .expect("addr")
                .clone_into(&mut process.addr);
            return (process, rx);
        }
    }
}

/// Spawns `cdnsign serve --config` and streams its stderr lines; the address is filled in
/// by the caller, which knows the log format.
fn spawn_serve(
    config: &std::path::Path,
    rust_log: &str,
) -> (ServeProcess, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", rust_log)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let stderr = child.stderr.take().expect("stderr");
    // Owned by the guard from here on, so a failed wait in the caller still kills it.
    let process = ServeProcess {
        child,
        addr: String::new(),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (process, rx)
}

fn wait_for_log(rx: &std::sync::mpsc::Receiver<String>, needle: &str) -> String {
    wait_for_log_collecting(rx, needle, &mut Vec::new())
}

/// Like [`wait_for_log`], keeping every line read on the way in `seen`.
fn wait_for_log_collecting(
    rx: &std::sync::mpsc::Receiver<String>,
    needle: &str,
    seen: &mut Vec<String>,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no log line containing {needle:?} within 20 s"));
        seen.push(line.clone());
        if line.contains(needle) {
            return line;
        }
    }
}

async fn sign_with(addr: &str, key_id: &str) -> Result<String, String> {
    use cdnsign::proto::signer_client::SignerClient;
    use cdnsign::proto::{SignItem, SignUrlsRequest, sign_url_result::Outcome};
    let mut c = SignerClient::connect(format!("http://{addr}"))
        .await
        .map_err(|e| e.to_string())?;
    let resp = c
        .sign_urls(SignUrlsRequest {
            items: vec![SignItem {
                url: "https://d/a".into(),
                ..SignItem::default()
            }],
            key_id: key_id.into(),
            ttl_seconds: 60,
            ..SignUrlsRequest::default()
        })
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    match resp.results[0].outcome.clone() {
        Some(Outcome::SignedUrl(u)) => Ok(u),
        Some(Outcome::Error(e)) => Err(e.message),
        None => Err("no outcome".into()),
    }
}

fn hup(child: &Child) {
    let ok = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok);
}

#[tokio::test]
async fn sighup_reloads_keys_and_a_bad_file_keeps_the_old_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key_a = dir.path().join("a.pem");
    let key_b = dir.path().join("b.pem");
    std::fs::copy(repo("config/dev-keys/TEST-ONLY-cloudfront.pem"), &key_a).expect("copy");
    std::fs::copy(repo("tests/fixtures/keys/rsa2-pkcs1.pem"), &key_b).expect("copy");
    let config = dir.path().join("cdnsign.toml");
    let write = |keys: &str| {
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\nallow_unauthenticated = true\n[log]\nformat = \"json\"\n[metrics]\nlisten = \"\"\n[signing]\nthreads = 1\n{keys}"
            ),
        )
        .expect("write config")
    };
    write("[[keys]]\nid = \"KAAA\"\npath = \"a.pem\"\n");
    let (proc_, logs) = serve(&config);
    assert!(sign_with(&proc_.addr, "KAAA").await.is_ok());
    assert!(
        sign_with(&proc_.addr, "KBBB")
            .await
            .expect_err("not yet")
            .contains("KBBB")
    );

    write("[[keys]]\nid = \"KAAA\"\npath = \"a.pem\"\n[[keys]]\nid = \"KBBB\"\npath = \"b.pem\"\n");
    hup(&proc_.child);
    wait_for_log(&logs, "signing keys reloaded");
    assert!(sign_with(&proc_.addr, "KBBB").await.is_ok());

    // A broken key file: the reload fails, both old keys keep working.
    std::fs::write(
        &key_b,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .expect("break");
    hup(&proc_.child);
    let line = wait_for_log(&logs, "key reload failed");
    assert!(line.contains("KBBB") && !line.contains("AAAA\\n"), "{line}");
    assert!(sign_with(&proc_.addr, "KAAA").await.is_ok());
    assert!(sign_with(&proc_.addr, "KBBB").await.is_ok());
}

#[tokio::test]
async fn json_log_of_a_call_holds_its_request_id_and_no_secret() {
    use cdnsign::proto::signer_client::SignerClient;
    use cdnsign::proto::{SignItem, SignUrlsRequest};
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("cdnsign.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nallow_unauthenticated = true\n[log]\nformat = \"json\"\n[metrics]\nlisten = \"\"\n[signing]\nthreads = 1\ndefault_key_id = \"{KEY_ID}\"\n[[keys]]\nid = \"{KEY_ID}\"\npath = \"{}\"\n",
            key()
        ),
    )
    .expect("write config");
    let (proc_, logs) = serve_with_log(&config, "trace");
    let mut c = SignerClient::connect(format!("http://{}", proc_.addr))
        .await
        .expect("connect");
    let mut req = tonic::Request::new(SignUrlsRequest {
        items: vec![SignItem {
            url: "https://d.example/private/a.ts".into(),
            ..SignItem::default()
        }],
        ttl_seconds: 60,
        ..SignUrlsRequest::default()
    });
    req.metadata_mut()
        .insert("x-request-id", "req-json-7".parse().expect("meta"));
    let resp = c.sign_urls(req).await.expect("sign").into_inner();
    let signed = format!("{resp:?}");
    let signature = signed
        .split("Signature=")
        .nth(1)
        .and_then(|s| s.split('&').next())
        .expect("a signature")
        .to_owned();
    let mut seen = Vec::new();
    let line = wait_for_log_collecting(&logs, "\"grpc call\"", &mut seen);
    let v: serde_json::Value = serde_json::from_str(&line).expect("json line");
    assert_eq!(v["span"]["request_id"], "req-json-7", "{line}");
    assert_eq!(v["span"]["method"], "cdnsign.v1.Signer/SignUrls", "{line}");
    assert_eq!(v["span"]["key_id"], KEY_ID, "{line}");
    assert_eq!(v["code"], "OK", "{line}");
    drop(proc_);
    // Everything logged at trace level, up to and after the call: no signature, policy or key.
    seen.extend(logs.try_iter());
    assert!(seen.len() > 5, "trace logging produced lines");
    for l in &seen {
        assert!(!l.contains(&signature[..20]), "signature in log: {l}");
        assert!(!l.contains("Policy="), "{l}");
        assert!(!l.contains("PRIVATE KEY"), "{l}");
    }
}

#[tokio::test]
async fn denied_items_and_refused_callers_write_json_audit_events() {
    use cdnsign::proto::signer_client::SignerClient;
    use cdnsign::proto::{SignItem, SignUrlsRequest};
    use sha2::{Digest as _, Sha256};
    let token = "audit-test-token-TEST-ONLY";
    let hash: String = Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("cdnsign.toml");
    // Text logs: audit events must still be JSON lines.
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[metrics]\nlisten = \"\"\n[signing]\nthreads = 1\ndefault_key_id = \"{KEY_ID}\"\n[[keys]]\nid = \"{KEY_ID}\"\npath = \"{}\"\n[[clients]]\nname = \"auditee\"\ntoken_sha256 = \"{hash}\"\nkeys = [\"{KEY_ID}\"]\nurl_prefixes = [\"https://d.example/ok/\"]\n",
            key()
        ),
    )
    .expect("write config");
    let (proc_, logs) = serve_text(&config);
    let mut c = SignerClient::connect(format!("http://{}", proc_.addr))
        .await
        .expect("connect");
    let mut req = tonic::Request::new(SignUrlsRequest {
        items: vec![
            SignItem {
                url: "https://d.example/ok/a.ts".into(),
                ..SignItem::default()
            },
            SignItem {
                url: "https://d.example/secret/b.ts".into(),
                ..SignItem::default()
            },
        ],
        ttl_seconds: 60,
        ..SignUrlsRequest::default()
    });
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("meta"),
    );
    let resp = c.sign_urls(req).await.expect("sign").into_inner();
    assert_eq!((resp.signed, resp.failed), (1, 1));
    let line = wait_for_log(&logs, "\"event\":\"denied\"");
    let v: serde_json::Value = serde_json::from_str(&line).expect("audit line is JSON");
    assert_eq!(v["target"], "cdnsign::audit");
    assert_eq!(v["client"], "auditee");
    assert_eq!(v["denied"], 1);
    assert!(
        !line.contains(token) && !line.contains("secret/b.ts"),
        "{line}"
    );

    let err = c
        .sign_urls(SignUrlsRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let line = wait_for_log(&logs, "\"event\":\"unauthenticated\"");
    assert!(
        serde_json::from_str::<serde_json::Value>(&line).is_ok(),
        "{line}"
    );
}

/// `serve` with the default (text) log format.
fn serve_text(config: &std::path::Path) -> (ServeProcess, std::sync::mpsc::Receiver<String>) {
    let (mut process, rx) = spawn_serve(config, "info");
    let line = wait_for_log(&rx, "cdnsign gRPC listening");
    let addr = line
        .split("addr=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .map(|s| s.trim_matches(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':')))
        .expect("addr in the text log line");
    addr.clone_into(&mut process.addr);
    (process, rx)
}
