//! `cdnsign serve` as a process: SIGHUP reloads, JSON logs and audit events, and `health`.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{BIN, cdnsign_async, key};
use crate::common::{KEY_ID, repo};

pub(super) struct ServeProcess {
    pub(super) child: Child,
    addr: String,
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `cdnsign serve --config` with JSON logs and reads the bound address from them.
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
pub(super) fn spawn_serve(
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

pub(super) fn wait_for_log(rx: &std::sync::mpsc::Receiver<String>, needle: &str) -> String {
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

fn hup(child: &Child) {
    let ok = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok);
}

/// Signs `https://d/a/x.ts` as the holder of `token`; the signed URL, or the call's code.
async fn sign_as(addr: &str, token: &str, key_id: &str) -> Result<String, String> {
    use cdnsign::proto::signer_client::SignerClient;
    use cdnsign::proto::{SignItem, SignUrlsRequest, sign_url_result::Outcome};
    let mut c = SignerClient::connect(format!("http://{addr}"))
        .await
        .map_err(|e| e.to_string())?;
    let mut req = tonic::Request::new(SignUrlsRequest {
        items: vec![SignItem {
            url: "https://d/a/x.ts".into(),
            ..SignItem::default()
        }],
        key_id: key_id.into(),
        ttl_seconds: 60,
        ..SignUrlsRequest::default()
    });
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("meta"),
    );
    let resp = c
        .sign_urls(req)
        .await
        .map_err(|s| format!("{:?}", s.code()))?
        .into_inner();
    match resp.results[0].outcome.clone() {
        Some(Outcome::SignedUrl(u)) => Ok(u),
        Some(Outcome::Error(e)) => Err(e.message),
        None => Err("no outcome".into()),
    }
}

fn scrape(addr: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).expect("metrics connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

/// The SIGHUP story an operator lives: a token rotated and the old one revoked, a client
/// added and removed, the default key changed, an invalid edit refused while the old
/// configuration keeps serving, and a restart-only setting named.
#[tokio::test]
async fn sighup_reloads_clients_keys_and_limits_or_refuses_loudly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key_a = dir.path().join("a.pem");
    let key_b = dir.path().join("b.pem");
    std::fs::copy(repo("config/dev-keys/TEST-ONLY-cloudfront.pem"), &key_a).expect("copy");
    std::fs::copy(repo("tests/fixtures/keys/rsa2-pkcs1.pem"), &key_b).expect("copy");
    let config = dir.path().join("cdnsign.toml");
    let write = |listen: &str, default_key: &str, clients: &str| {
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"{listen}\"\n[log]\nformat = \"json\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n\
                 [signing]\nthreads = 1\ndefault_key_id = \"{default_key}\"\n\
                 [[keys]]\nid = \"KAAA\"\npath = \"a.pem\"\n[[keys]]\nid = \"KBBB\"\npath = \"b.pem\"\n{clients}"
            ),
        )
        .expect("write config")
    };
    let client = |name: &str, token: &str, extra: &str| {
        format!(
            "[[clients]]\nname = \"{name}\"\ntoken_sha256 = \"{}\"\nkeys = [\"KAAA\", \"KBBB\"]\nurl_prefixes = [\"https://d/a/\"]\n{extra}",
            crate::common::sha256_hex(token)
        )
    };
    write("127.0.0.1:0", "KAAA", &client("alpha", "alpha-1", ""));
    let (proc_, logs) = spawn_serve(&config, "info");
    let mut started = Vec::new();
    wait_for_log_collecting(&logs, "cdnsign gRPC listening", &mut started);
    let addr_of = |needle: &str| {
        let line = started.iter().find(|l| l.contains(needle)).expect(needle);
        serde_json::from_str::<serde_json::Value>(line).expect("json")["addr"]
            .as_str()
            .expect("addr")
            .to_owned()
    };
    let metrics_addr = addr_of("metrics listening");
    let addr = addr_of("cdnsign gRPC listening");
    let url = sign_as(&addr, "alpha-1", "").await.expect("alpha signs");
    assert!(url.ends_with("Key-Pair-Id=KAAA"), "{url}");
    assert_eq!(
        sign_as(&addr, "beta-1", "").await,
        Err("Unauthenticated".into())
    );

    // Rotate alpha's token, add beta, change the default key.
    write(
        "127.0.0.1:0",
        "KBBB",
        &format!(
            "{}{}",
            client("alpha", "alpha-2", ""),
            client("beta", "beta-1", "")
        ),
    );
    hup(&proc_.child);
    wait_for_log(&logs, "\"config reloaded\"");
    assert_eq!(
        sign_as(&addr, "alpha-1", "").await,
        Err("Unauthenticated".into()),
        "the revoked token must stop signing from the first call after the reload"
    );
    let url = sign_as(&addr, "alpha-2", "")
        .await
        .expect("the new token signs");
    assert!(
        url.ends_with("Key-Pair-Id=KBBB"),
        "default key changed: {url}"
    );
    sign_as(&addr, "beta-1", "KAAA")
        .await
        .expect("the new client signs");

    // An invalid edit (a typo'd rate limit and a missing key file): refused, every problem
    // logged, the old configuration keeps serving.
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .expect("read")
            .replace("a.pem", "missing.pem")
            + "url_per_second = 5\n",
    )
    .expect("write");
    hup(&proc_.child);
    let mut seen = Vec::new();
    wait_for_log_collecting(&logs, "config reload failed", &mut seen);
    let refused = seen.join("\n");
    assert!(
        refused.contains("url_per_second") && refused.contains("missing.pem"),
        "{refused}"
    );
    sign_as(&addr, "beta-1", "")
        .await
        .expect("old config still serving");
    sign_as(&addr, "alpha-2", "KAAA")
        .await
        .expect("old keys still loaded");

    // Remove beta and move the listener: beta is refused at once, the address change is named
    // as needing a restart (and the server keeps its port).
    write("127.0.0.1:1", "KBBB", &client("alpha", "alpha-2", ""));
    hup(&proc_.child);
    let warning = wait_for_log(&logs, "need a restart");
    assert!(warning.contains("server.listen"), "{warning}");
    wait_for_log(&logs, "\"config reloaded\"");
    assert_eq!(
        sign_as(&addr, "beta-1", "").await,
        Err("Unauthenticated".into())
    );
    sign_as(&addr, "alpha-2", "")
        .await
        .expect("alpha still signs");

    let scraped = scrape(&metrics_addr);
    assert!(
        scraped.contains("cdnsign_config_reloads_total{outcome=\"success\"} 2"),
        "{scraped}"
    );
    assert!(
        scraped.contains("cdnsign_config_reloads_total{outcome=\"failure\"} 1"),
        "{scraped}"
    );
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
    req.metadata_mut()
        .insert("x-request-id", "req-audit-1".parse().expect("meta"));
    req.metadata_mut().insert(
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            .parse()
            .expect("meta"),
    );
    let resp = c.sign_urls(req).await.expect("sign").into_inner();
    assert_eq!((resp.signed, resp.failed), (1, 1));
    let line = wait_for_log(&logs, "\"event\":\"denied\"");
    let v: serde_json::Value = serde_json::from_str(&line).expect("audit line is JSON");
    assert_eq!(v["target"], "cdnsign::audit");
    assert_eq!(v["client"], "auditee");
    assert_eq!(v["denied"], 1);
    // Joinable with the call's log line and the caller's trace.
    assert_eq!(v["request_id"], "req-audit-1", "{line}");
    assert_eq!(v["trace_id"], "0af7651916cd43dd8448eb211c80319c", "{line}");
    assert!(
        v["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{line}"
    );
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
pub(super) fn serve_text(
    config: &std::path::Path,
) -> (ServeProcess, std::sync::mpsc::Receiver<String>) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_probes_a_running_server_and_fails_when_nothing_answers() {
    let server = crate::common::start(crate::common::test_config("", "")).await;
    let addr = server.addr.to_string();
    let (code, out, err) = cdnsign_async(&["health", "--addr", &addr]).await;
    assert_eq!((code, out.trim()), (0, "SERVING"), "{err}");
    let (code, out, _) =
        cdnsign_async(&["health", "--addr", &addr, "--service", "cdnsign.v1.Signer"]).await;
    assert_eq!((code, out.trim()), (0, "SERVING"));
    // A service the server does not have: NOT_FOUND from the health service, exit 1.
    let (code, _, err) =
        cdnsign_async(&["health", "--addr", &addr, "--service", "no.such.Service"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("NotFound") || err.contains("not found"),
        "{err}"
    );
    server.stop().await.expect("stop");
    // Nobody listening any more: exit 1 with the reason, within the timeout.
    let (code, _, err) = cdnsign_async(&["health", "--addr", &addr, "--timeout", "2"]).await;
    assert_eq!(code, 1);
    assert!(err.contains(&addr), "{err}");
}
