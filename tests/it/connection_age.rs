//! `[server] max_connection_age_seconds` and its grace, seen by an HTTP/2 client: at the age
//! the server sends GOAWAY (an idle connection then ends at once, cleanly); a call still
//! running is cut when the grace ends. Bounded waits on the connection, no sleeps.

use std::time::Duration;

use bytes::Bytes;

use crate::common::{start, test_config};

/// Longest any wait here may take; each expected event comes within a few seconds.
const BOUND: Duration = Duration::from_secs(20);

async fn server(age: u64, grace: u64) -> crate::common::Running {
    let mut config = test_config("", "");
    config.server.max_connection_age_seconds = age;
    config.server.max_connection_age_grace_seconds = grace;
    start(config).await
}

/// An idle connection past its age gets GOAWAY and ends cleanly, long before its grace
/// (60 s) would end it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_max_connection_age_the_server_sends_goaway_not_a_reset() {
    let server = server(1, 60).await;
    let tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let (_client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::time::timeout(BOUND, connection)
        .await
        .expect("GOAWAY at the age ends an idle connection (not the grace, 60 s later)")
        .expect("a clean end: GOAWAY, not a reset");
    server.stop().await.expect("stop");
}

/// A call still running when the grace ends (a health Watch never ends by itself) is cut
/// with its connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_running_past_age_and_grace_is_cut() {
    let server = server(1, 1).await;
    let tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let connection = tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::post(format!(
        "http://{}/grpc.health.v1.Health/Watch",
        server.addr
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .expect("request");
    let (response, mut body) = client.send_request(request, false).expect("send");
    // One gRPC frame: uncompressed, zero-length HealthCheckRequest (service "").
    body.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .expect("message");
    let response = tokio::time::timeout(BOUND, response)
        .await
        .expect("headers")
        .expect("response");
    assert_eq!(response.status(), 200);
    let mut stream = response.into_body();
    let first = tokio::time::timeout(BOUND, stream.data())
        .await
        .expect("first status");
    assert!(matches!(first, Some(Ok(_))), "{first:?}");
    // The Watch stays open through the GOAWAY at 1 s; the grace ends it at 2 s.
    tokio::time::timeout(BOUND, connection)
        .await
        .expect("the connection is closed when the grace ends")
        .expect("task")
        .ok();
    server.stop().await.expect("stop");
}
