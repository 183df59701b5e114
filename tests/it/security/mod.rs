//! Who may sign what: identity (bearer token, mTLS), grants (keys, URL prefixes, TTL),
//! prefix escapes, rate limits and load shedding, over the real server: the helpers shared
//! by the three files below (one server configuration with two clients, a TLS channel, a
//! request with an optional bearer token).

mod connections;
mod grants;
mod limits;
mod reload;

use crate::common::{KEY_ID, repo};
use cdnsign::config::Config;
use cdnsign::proto::{SignItem, SignUrlsRequest};
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const TOKEN: &str = "playlist-generator-token-TEST-ONLY";
const PREFIX: &str = "https://d111111abcdef8.cloudfront.net/hls/";

fn config(extra_server: &str, extra_client: &str) -> Config {
    let tls = repo("tests/fixtures/tls");
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
{extra_server}
[server.tls]
cert = "{tls}/server.pem"
key = "{tls}/server.key"
client_ca = "{tls}/ca.pem"
client_auth_optional = true
[metrics]
listen = ""
[signing]
threads = 2
max_ttl_seconds = 604800
[[keys]]
id = "{KEY_ID}"
path = "{key}"
[[keys]]
id = "KOTHER"
path = "{key2}"
[[clients]]
name = "playlist-generator"
token_sha256 = "{hash}"
cert_subject = "CN=playlist-generator"
keys = ["{KEY_ID}"]
url_prefixes = ["{PREFIX}"]
max_ttl_seconds = 3600
purge_targets = ["site"]
{extra_client}
"#,
        tls = tls.display(),
        key = repo("config/dev-keys/TEST-ONLY-cloudfront.pem").display(),
        key2 = repo("tests/fixtures/keys/rsa2-pkcs1.pem").display(),
        hash = crate::common::sha256_hex(TOKEN),
    );
    Config::from_toml_str(&text, &repo(".")).expect("config")
}

async fn channel(addr: std::net::SocketAddr, client_cert: Option<&str>) -> Channel {
    let dir = repo("tests/fixtures/tls");
    let read = |name: &str| std::fs::read(dir.join(name)).expect("fixture");
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem")))
        .domain_name("localhost");
    if let Some(name) = client_cert {
        tls = tls.identity(Identity::from_pem(
            read(&format!("{name}.pem")),
            read(&format!("{name}.key")),
        ));
    }
    Channel::from_shared(format!("https://{addr}"))
        .expect("uri")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("connect")
}

fn request(items: Vec<SignItem>, token: Option<&str>) -> tonic::Request<SignUrlsRequest> {
    let mut req = tonic::Request::new(SignUrlsRequest {
        items,
        key_id: KEY_ID.into(),
        ttl_seconds: 600,
        ..SignUrlsRequest::default()
    });
    if let Some(t) = token {
        let v: MetadataValue<_> = format!("Bearer {t}").parse().expect("meta");
        req.metadata_mut().insert("authorization", v);
    }
    req
}

fn url(u: &str) -> SignItem {
    SignItem {
        url: u.into(),
        ..SignItem::default()
    }
}
