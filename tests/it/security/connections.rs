//! `[server] max_connections`: a connection past the limit is closed on arrival, counted,
//! and the client told UNAVAILABLE; connections already open keep signing; a closed one
//! makes room; a reload raises the limit for the next connection.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt as _;
use tonic::Code;
use tonic::transport::Channel;

use super::{PREFIX, TOKEN, channel, request, url};
use crate::common::{KEY_ID, repo, sha256_hex};
use cdnsign::config::Config;
use cdnsign::proto::signer_client::SignerClient;

/// Longest any step here may take before the test fails (none waits for time to pass).
const BOUND: Duration = Duration::from_secs(10);

fn write_config(path: &std::path::Path, max_connections: usize) {
    let tls = repo("tests/fixtures/tls");
    std::fs::write(
        path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nmax_connections = {max_connections}\n[server.tls]\ncert = \"{tls}/server.pem\"\nkey = \"{tls}/server.key\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n[signing]\nthreads = 1\n[[keys]]\nid = \"{KEY_ID}\"\npath = \"{key}\"\n[[clients]]\nname = \"playlist-generator\"\ntoken_sha256 = \"{hash}\"\nkeys = [\"{KEY_ID}\"]\nurl_prefixes = [\"{PREFIX}\"]\n",
            tls = tls.display(),
            key = repo("config/dev-keys/TEST-ONLY-cloudfront.pem").display(),
            hash = sha256_hex(TOKEN),
        ),
    )
    .expect("write config");
}

async fn signs(ch: &Channel) -> Result<(), tonic::Status> {
    let resp = SignerClient::new(ch.clone())
        .sign_urls(request(vec![url(&format!("{PREFIX}a.ts"))], Some(TOKEN)))
        .await?;
    assert_eq!(resp.get_ref().signed, 1);
    Ok(())
}

/// A TCP connection the server accepts and then closes unread: reading it ends (EOF or a
/// reset) without the server sending anything.
async fn closed_on_arrival(addr: SocketAddr) -> bool {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut buf = [0u8; 64];
    match tokio::time::timeout(BOUND, s.read(&mut buf)).await {
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

async fn metric(addr: SocketAddr, name: &str) -> f64 {
    use tokio::io::AsyncWriteExt as _;
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("metrics");
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .await
        .expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).await.expect("read");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_max_connections_are_closed_on_arrival_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cdnsign.toml");
    write_config(&path, 2);
    let server = cdnsign::server::Server::bind(Config::load(Some(&path)).expect("config"))
        .await
        .expect("bind");
    let (live, open, addr) = (server.live(), server.connections(), server.local_addr());
    let metrics_addr = server.metrics_addr().expect("metrics");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    let refused_before = metric(metrics_addr, "cdnsign_grpc_connections_refused_total").await;

    // Two TLS connections fill the limit and sign.
    let first = channel(addr, None).await;
    let second = channel(addr, None).await;
    signs(&first).await.expect("first connection signs");
    signs(&second).await.expect("second connection signs");
    assert_eq!(open.open(), 2);

    // A third is closed before its handshake; a gRPC client is told UNAVAILABLE.
    assert!(
        closed_on_arrival(addr).await,
        "a third connection was served"
    );
    let lazy = Channel::from_shared(format!("https://{addr}"))
        .expect("uri")
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(
                    std::fs::read(repo("tests/fixtures/tls/ca.pem")).expect("ca"),
                ))
                .domain_name("localhost"),
        )
        .expect("tls")
        .connect_timeout(BOUND)
        .connect_lazy();
    let err = signs(&lazy).await.expect_err("over the limit");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let refused = metric(metrics_addr, "cdnsign_grpc_connections_refused_total").await;
    assert!(
        refused - refused_before >= 2.0,
        "refusals counted: {refused}"
    );

    // The open connections keep signing.
    signs(&first).await.expect("first still signs at the limit");

    // Closing one makes room for a new connection.
    drop(first);
    tokio::time::timeout(BOUND, open.open_at_most(1))
        .await
        .expect("the closed connection's place is given back");
    let third = channel(addr, None).await;
    signs(&third)
        .await
        .expect("a new connection once one closed");
    assert!(closed_on_arrival(addr).await, "at the limit again");

    // A reload raises the limit for the next connection.
    write_config(&path, 3);
    live.reload().expect("reload");
    let fourth = channel(addr, None).await;
    signs(&fourth).await.expect("room after the reload");
    assert_eq!(open.open(), 3);

    drop((second, third, fourth, lazy));
    let _ = stop.send(());
    tokio::time::timeout(BOUND, task)
        .await
        .expect("stops")
        .expect("task")
        .expect("serve");
}
