//! A configuration reload swaps the client CA for new connections.

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
