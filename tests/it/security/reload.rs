//! A configuration reload swaps the client CA for new connections, and applies to streams
//! that are already open.

use super::{PREFIX, request, url};
use crate::common::{KEY_ID, repo};
use cdnsign::config::Config;
use cdnsign::proto::signer_client::SignerClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// Whether a fresh mTLS connection with `cert` can sign.
async fn mtls_signs(addr: std::net::SocketAddr, cert: &str) -> bool {
    let dir = repo("tests/fixtures/tls");
    let read = |name: &str| std::fs::read(dir.join(name)).expect("fixture");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem")))
        .domain_name("localhost")
        .identity(Identity::from_pem(
            read(&format!("{cert}.pem")),
            read(&format!("{cert}.key")),
        ));
    let Ok(ch) = Channel::from_shared(format!("https://{addr}"))
        .expect("uri")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
    else {
        return false;
    };
    SignerClient::new(ch)
        .sign_urls(request(vec![url(&format!("{PREFIX}a.ts"))], None))
        .await
        .is_ok_and(|r| r.get_ref().signed == 1)
}

/// A reload swaps the client CA (and certificate) for new connections: the CA file is
/// replaced and the configuration reloaded, and from then on the new CA's client is
/// admitted and the old one's is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_swaps_the_client_ca_for_new_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = repo("tests/fixtures/tls");
    let ca = dir.path().join("clients-ca.pem");
    std::fs::copy(tls.join("ca.pem"), &ca).expect("copy");
    let path = dir.path().join("cdnsign.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[server.tls]\ncert = \"{tls}/server.pem\"\nkey = \"{tls}/server.key\"\nclient_ca = \"clients-ca.pem\"\nclient_auth_optional = true\n[metrics]\nlisten = \"\"\n[signing]\nthreads = 1\ndefault_key_id = \"{KEY_ID}\"\n[[keys]]\nid = \"{KEY_ID}\"\npath = \"{key}\"\n[[clients]]\nname = \"playlist-generator\"\ncert_subject = \"CN=playlist-generator\"\nkeys = [\"{KEY_ID}\"]\nurl_prefixes = [\"{PREFIX}\"]\n",
            tls = tls.display(),
            key = repo("config/dev-keys/TEST-ONLY-cloudfront.pem").display(),
        ),
    )
    .expect("write config");
    let server = cdnsign::server::Server::bind(Config::load(Some(&path)).expect("config"))
        .await
        .expect("bind");
    let live = server.live();
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    assert!(
        mtls_signs(addr, "client").await,
        "the configured CA's client"
    );
    assert!(
        !mtls_signs(addr, "rogue-client").await,
        "another CA's client"
    );

    std::fs::copy(tls.join("rogue-ca.pem"), &ca).expect("rotate the CA file");
    live.reload().expect("reload");
    assert!(
        mtls_signs(addr, "rogue-client").await,
        "the new CA's client"
    );
    assert!(!mtls_signs(addr, "client").await, "the old CA's client");

    // A broken CA file is refused and the current one stays.
    std::fs::write(&ca, "not a certificate").expect("break");
    let err = live.reload().expect_err("refused");
    assert!(err.to_string().contains("client_ca"), "{err}");
    assert!(
        mtls_signs(addr, "rogue-client").await,
        "still the last good CA"
    );
    let _ = stop.send(());
    task.await.expect("task").expect("stop");
}

/// A `SignUrlsStream` opened before a reload is signed, message by message, as the
/// configuration in force says: after a reload that narrows the client's prefixes the next
/// batch's URL outside them is refused, and after one that revokes its token the stream
/// ends with `UNAUTHENTICATED` instead of signing on under the old grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_stream_follows_a_reload_that_narrows_then_revokes_its_grant() {
    use cdnsign::proto::item_error::Code;
    use cdnsign::proto::sign_url_result::Outcome;
    use cdnsign::proto::{SignItem, SignUrlsRequest};

    const OTHER: &str = "https://d111111abcdef8.cloudfront.net/dash/";
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cdnsign.toml");
    let write = |token: &str, prefixes: &str| {
        std::fs::write(
            &path,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\n[metrics]\nlisten = \"\"\n[signing]\nthreads = 1\ndefault_key_id = \"{KEY_ID}\"\n[[keys]]\nid = \"{KEY_ID}\"\npath = \"{key}\"\n[[clients]]\nname = \"playlist-generator\"\ntoken_sha256 = \"{hash}\"\nkeys = [\"{KEY_ID}\"]\nurl_prefixes = [{prefixes}]\n",
                key = repo("config/dev-keys/TEST-ONLY-cloudfront.pem").display(),
                hash = crate::common::sha256_hex(token),
            ),
        )
        .expect("write config");
    };
    write(super::TOKEN, &format!("\"{PREFIX}\", \"{OTHER}\""));
    let server = cdnsign::server::Server::bind(Config::load(Some(&path)).expect("config"))
        .await
        .expect("bind");
    let live = server.live();
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));

    let batch = || SignUrlsRequest {
        items: vec![
            SignItem {
                url: format!("{PREFIX}a.ts"),
                ..SignItem::default()
            },
            SignItem {
                url: format!("{OTHER}b.m4s"),
                ..SignItem::default()
            },
        ],
        key_id: KEY_ID.into(),
        ttl_seconds: 600,
        ..SignUrlsRequest::default()
    };
    let codes = |resp: &cdnsign::proto::SignUrlsResponse| -> Vec<Option<Code>> {
        resp.results
            .iter()
            .map(|r| match &r.outcome {
                Some(Outcome::Error(e)) => Some(e.code()),
                _ => None,
            })
            .collect()
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<SignUrlsRequest>(1);
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", super::TOKEN).parse().expect("meta"),
    );
    req.set_timeout(std::time::Duration::from_secs(30));
    let mut client = SignerClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    tx.send(batch()).await.expect("send");
    let mut responses = client
        .sign_urls_stream(req)
        .await
        .expect("stream")
        .into_inner();
    let first = responses
        .message()
        .await
        .expect("first")
        .expect("a response");
    assert_eq!(codes(&first), vec![None, None], "both prefixes granted");

    // Narrowed to one prefix: the same stream's next batch is refused outside it.
    write(super::TOKEN, &format!("\"{PREFIX}\""));
    live.reload().expect("reload");
    tx.send(batch()).await.expect("send");
    let second = responses
        .message()
        .await
        .expect("second")
        .expect("a response");
    assert_eq!(
        codes(&second),
        vec![None, Some(Code::PermissionDenied)],
        "the narrowed grant applies to the open stream"
    );

    // The token revoked: the stream ends, refused, rather than signing on.
    write("a-rotated-token-TEST-ONLY", &format!("\"{PREFIX}\""));
    live.reload().expect("reload");
    tx.send(batch()).await.expect("send");
    let err = responses
        .message()
        .await
        .expect_err("the revoked token's stream is refused");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("reloaded"), "{err:?}");
    assert!(
        matches!(responses.message().await, Ok(None) | Err(_)),
        "nothing more is signed on the stream"
    );
    drop(tx);
    let _ = stop.send(());
    task.await.expect("task").expect("stop");
}
