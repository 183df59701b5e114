//! Identity and grants: unauthenticated callers, prefix escapes on every signing RPC, each
//! client's keys and TTL.

use tonic::Code;

use super::{PREFIX, TOKEN, channel, config, request, url};
use crate::common::{KEY_ID, repo, start};
use cdnsign::config::Config;
use cdnsign::proto::signer_client::SignerClient;
use cdnsign::proto::{SignItem, SignUrlsRequest, item_error, sign_url_result};
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

#[tokio::test]
async fn a_config_without_clients_or_the_switch_does_not_start() {
    let err = Config::from_toml_str("[server]\nlisten = \"127.0.0.1:0\"\n", &repo("."))
        .expect_err("must refuse");
    assert!(err.to_string().contains("allow_unauthenticated"), "{err}");
}

#[tokio::test]
async fn no_identity_or_a_wrong_one_is_unauthenticated_but_health_answers() {
    let server = start(config("", "")).await;
    let ch = channel(server.addr, None).await;
    let mut c = SignerClient::new(ch.clone());
    for token in [None, Some("wrong-token")] {
        let err = c
            .sign_urls(request(vec![url(&format!("{PREFIX}a.ts"))], token))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::Unauthenticated, "{token:?}: {err:?}");
    }
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health needs no identity");
    assert_eq!(status.get_ref().status, 1);
    // An mTLS certificate that chains to the CA but is not configured: refused too.
    let mut other = SignerClient::new(channel(server.addr, Some("other-client")).await);
    let err = other
        .sign_urls(request(vec![url(&format!("{PREFIX}a.ts"))], None))
        .await
        .expect_err("unlisted certificate");
    assert_eq!(err.code(), Code::Unauthenticated);
    server.stop().await.expect("stop");
}

fn outcome_codes(resp: &cdnsign::proto::SignUrlsResponse) -> Vec<Option<item_error::Code>> {
    resp.results
        .iter()
        .map(|r| match &r.outcome {
            Some(sign_url_result::Outcome::Error(e)) => Some(e.code()),
            _ => None,
        })
        .collect()
}

/// One attempt to sign outside the grant (tests/fixtures/escapes/grant_escapes.json).
#[derive(serde::Deserialize)]
struct Escape {
    field: String,
    text: String,
    code: String,
    /// Sent with `custom_policy` (a url then becomes the policy's Resource).
    #[serde(default)]
    custom_policy: bool,
    /// Sent with this `ip_range` (which also makes the policy custom).
    #[serde(default)]
    ip_range: String,
}

fn escapes() -> Vec<Escape> {
    #[derive(serde::Deserialize)]
    struct File {
        prefix: String,
        escapes: Vec<Escape>,
    }
    let text = std::fs::read_to_string(repo("tests/fixtures/escapes/grant_escapes.json"))
        .expect("escape fixtures");
    let file: File = serde_json::from_str(&text).expect("fixture JSON");
    assert_eq!(file.prefix, PREFIX);
    file.escapes
}

impl Escape {
    fn item(&self, i: usize) -> SignItem {
        let item = match self.field.as_str() {
            "url" => url(&self.text),
            "policy_resource" => SignItem {
                url: format!("{PREFIX}ok/{i}.ts"),
                policy_resource: self.text.clone(),
                ..SignItem::default()
            },
            other => panic!("fixture field {other}"),
        };
        SignItem {
            custom_policy: self.custom_policy,
            ip_range: self.ip_range.clone(),
            ..item
        }
    }

    fn code(&self) -> item_error::Code {
        item_error::Code::from_str_name(&self.code).expect("fixture code")
    }
}

/// The escapes, then in-prefix items that must sign: a URL, a wildcard resource, and URLs
/// with a query and a `;` parameter that become a custom policy's Resource.
fn escape_items() -> (Vec<SignItem>, Vec<Option<item_error::Code>>) {
    let all = escapes();
    let mut items: Vec<SignItem> = all.iter().enumerate().map(|(i, e)| e.item(i)).collect();
    let mut want: Vec<Option<item_error::Code>> = all.iter().map(|e| Some(e.code())).collect();
    items.push(url(&format!("{PREFIX}a/seg1.ts")));
    items.push(SignItem {
        url: format!("{PREFIX}a/seg2.ts"),
        policy_resource: format!("{PREFIX}a/*"),
        ..SignItem::default()
    });
    items.push(SignItem {
        url: format!("{PREFIX}a/seg3.ts?x=1&next=../y"),
        custom_policy: true,
        ..SignItem::default()
    });
    items.push(SignItem {
        url: format!("{PREFIX}a/seg4;v=1.ts?x=1"),
        ip_range: "192.0.2.0/24".into(),
        ..SignItem::default()
    });
    want.extend([None, None, None, None]);
    (items, want)
}

fn assert_codes(who: &str, got: &[Option<item_error::Code>], want: &[Option<item_error::Code>]) {
    let all = escapes();
    assert_eq!(got.len(), want.len(), "{who}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let what = all.get(i).map_or("an in-prefix item", |e| e.text.as_str());
        assert_eq!(g, w, "{who}: item {i} ({what})");
    }
}

/// Every escape in the fixture, and its variants, refused through every RPC that signs,
/// for a token client and an mTLS client.
#[tokio::test]
async fn grant_escapes_are_refused_on_every_signing_rpc() {
    use cdnsign::proto::{SignCookiesRequest, sign_cookies_result};
    let server = start(config("", "")).await;
    let (items, want) = escape_items();
    for (who, token, cert) in [("token", Some(TOKEN), None), ("mtls", None, Some("client"))] {
        let ch = channel(server.addr, cert).await;
        let mut c = SignerClient::new(ch);
        let resp = c
            .sign_urls(request(items.clone(), token))
            .await
            .unwrap_or_else(|e| panic!("{who}: {e:?}"))
            .into_inner();
        assert_codes(&format!("{who} SignUrls"), &outcome_codes(&resp), &want);

        let mut req = tonic::Request::new(SignCookiesRequest {
            items: items.clone(),
            key_id: KEY_ID.into(),
            ttl_seconds: 600,
            ..SignCookiesRequest::default()
        });
        if let Some(t) = token {
            req.metadata_mut().insert(
                "authorization",
                format!("Bearer {t}").parse().expect("meta"),
            );
        }
        let resp = c.sign_cookies(req).await.expect("cookies").into_inner();
        let got: Vec<_> = resp
            .results
            .iter()
            .map(|r| match &r.outcome {
                Some(sign_cookies_result::Outcome::Error(e)) => Some(e.code()),
                _ => None,
            })
            .collect();
        assert_codes(&format!("{who} SignCookies"), &got, &want);

        let batch = request(items.clone(), token);
        let (meta, ext, msg) = batch.into_parts();
        let mut stream_req =
            tonic::Request::from_parts(meta, ext, tokio_stream::iter(vec![msg.clone(), msg]));
        stream_req.set_timeout(Duration::from_secs(30));
        let mut responses = c
            .sign_urls_stream(stream_req)
            .await
            .expect("stream")
            .into_inner();
        let mut n = 0;
        while let Some(resp) = responses.message().await.expect("stream message") {
            assert_codes(
                &format!("{who} SignUrlsStream[{n}]"),
                &outcome_codes(&resp),
                &want,
            );
            n += 1;
        }
        assert_eq!(n, 2, "{who}: one response per batch");
    }
    // Without a grant the dot segments are still refused: no answer is safe.
    let open = start(crate::common::test_config("", "")).await;
    let mut c = SignerClient::connect(open.url()).await.expect("connect");
    let dotted: Vec<SignItem> = escapes()
        .iter()
        .enumerate()
        .filter(|(_, e)| e.code == "INVALID_ARGUMENT")
        .map(|(i, e)| e.item(i))
        .collect();
    let resp = c
        .sign_urls(SignUrlsRequest {
            items: dotted.clone(),
            ttl_seconds: 60,
            ..SignUrlsRequest::default()
        })
        .await
        .expect("anonymous call")
        .into_inner();
    assert_eq!(resp.failed as usize, dotted.len());
    for r in &resp.results {
        match &r.outcome {
            Some(sign_url_result::Outcome::Error(e)) => {
                assert_eq!(e.code(), item_error::Code::InvalidArgument, "{e:?}");
                assert!(
                    e.field.ends_with(".url") || e.field.ends_with(".policy_resource"),
                    "{e:?}"
                );
                assert!(e.message.contains("dot segment"), "{e:?}");
            }
            other => panic!("a dot segment was signed: {other:?}"),
        }
    }
    open.stop().await.expect("stop");
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn token_and_mtls_clients_get_only_their_keys_and_ttl() {
    let server = start(config("", "")).await;
    for (who, token, cert) in [("token", Some(TOKEN), None), ("mtls", None, Some("client"))] {
        let mut c = SignerClient::new(channel(server.addr, cert).await);
        let items = vec![
            url(&format!("{PREFIX}a/seg1.ts")),
            // A key the client was not granted.
            SignItem {
                url: format!("{PREFIX}a/seg4.ts"),
                key_id: "KOTHER".into(),
                ..SignItem::default()
            },
            // TTL above the client's 3600 s cap (the server allows a week).
            SignItem {
                url: format!("{PREFIX}a/seg5.ts"),
                ttl_seconds: 7200,
                ..SignItem::default()
            },
        ];
        let resp = c
            .sign_urls(request(items, token))
            .await
            .unwrap_or_else(|e| panic!("{who}: {e:?}"))
            .into_inner();
        let codes = outcome_codes(&resp);
        assert_eq!(codes[0], None, "{who}: in-prefix URL signs");
        assert_eq!(
            codes[1],
            Some(item_error::Code::PermissionDenied),
            "{who}: ungranted key"
        );
        assert_eq!(
            codes[2],
            Some(item_error::Code::InvalidArgument),
            "{who}: TTL over the client's cap"
        );
        if let Some(sign_url_result::Outcome::Error(e)) = &resp.results[2].outcome {
            assert!(e.message.contains("limit of 3600"), "{}", e.message);
        }
    }
    // The same subject from another CA does not even get through the TLS handshake.
    let rogue = Channel::from_shared(format!("https://{}", server.addr))
        .expect("uri")
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(
                    std::fs::read(repo("tests/fixtures/tls/ca.pem")).expect("ca"),
                ))
                .domain_name("localhost")
                .identity(Identity::from_pem(
                    std::fs::read(repo("tests/fixtures/tls/rogue-client.pem")).expect("pem"),
                    std::fs::read(repo("tests/fixtures/tls/rogue-client.key")).expect("key"),
                )),
        )
        .expect("tls")
        .connect()
        .await;
    if let Ok(ch) = rogue {
        let err = SignerClient::new(ch)
            .sign_urls(request(vec![url(&format!("{PREFIX}a.ts"))], None))
            .await
            .expect_err("rogue CA");
        assert_ne!(err.code(), Code::Ok);
    }
    server.stop().await.expect("stop");
}
