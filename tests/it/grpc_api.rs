//! The gRPC signing API, called over a real socket on 127.0.0.1.

use crate::common::{KEY_ID, repo, start, test_config};
use cdnsign::proto::signer_client::SignerClient;
use cdnsign::proto::{
    CookieAttributes, SignCookiesRequest, SignItem, SignUrlsRequest, item_error,
    sign_cookies_result, sign_url_result,
};
use cdnsign::signing::verify::{VerifyKey, verify_url};
use tonic::Code;
use tonic::transport::Channel;

fn now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs(),
    )
    .expect("time")
}

fn item(url: impl Into<String>) -> SignItem {
    SignItem {
        url: url.into(),
        ..SignItem::default()
    }
}

async fn client(addr: &str) -> SignerClient<Channel> {
    SignerClient::connect(addr.to_owned())
        .await
        .expect("connect")
        .max_decoding_message_size(64 << 20)
}

fn verify_key() -> VerifyKey {
    VerifyKey::from_pem(
        &std::fs::read_to_string(repo("config/dev-keys/TEST-ONLY-cloudfront.pub.pem"))
            .expect("pub"),
    )
    .expect("pub key")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_url_in_a_thousand_yields_one_error_and_999_signed_urls() {
    let server = start(test_config("", "")).await;
    let mut c = client(&server.url()).await;
    let items = (0..1000)
        .map(|i| {
            if i == 500 {
                item("not a url")
            } else {
                item(format!(
                    "https://d111111abcdef8.cloudfront.net/hls/seg{i}.ts"
                ))
            }
        })
        .collect();
    let resp = c
        .sign_urls(SignUrlsRequest {
            items,
            key_id: KEY_ID.into(),
            ttl_seconds: 3600,
            ..SignUrlsRequest::default()
        })
        .await
        .expect("SignUrls")
        .into_inner();
    assert_eq!(resp.results.len(), 1000);
    assert_eq!((resp.signed, resp.failed), (999, 1));
    let vk = verify_key();
    for (i, r) in resp.results.iter().enumerate() {
        assert_eq!(r.index as usize, i, "results are in request order");
        match (i, r.outcome.as_ref().expect("outcome")) {
            (500, sign_url_result::Outcome::Error(e)) => {
                assert_eq!(e.code(), item_error::Code::InvalidArgument);
                assert_eq!(e.field, "items[500].url");
                assert!(e.message.contains("http"), "{}", e.message);
            }
            (500, other) => panic!("item 500 should fail: {other:?}"),
            (_, sign_url_result::Outcome::SignedUrl(u)) => {
                assert!(u.starts_with(&format!(
                    "https://d111111abcdef8.cloudfront.net/hls/seg{i}.ts?Expires="
                )));
                if i % 111 == 0 {
                    let v = verify_url(u, &vk, now(), None);
                    assert!(v.valid(), "{u}: {:?}", v.problems);
                }
            }
            (_, e) => panic!("item {i}: {e:?}"),
        }
    }
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn limits_answer_invalid_argument_naming_the_limit() {
    let server = start(test_config("max_batch = 10\nmax_ttl_seconds = 600", "")).await;
    let mut c = client(&server.url()).await;

    let over = SignUrlsRequest {
        items: (0..11).map(|i| item(format!("https://d/{i}"))).collect(),
        ttl_seconds: 60,
        ..SignUrlsRequest::default()
    };
    let err = c.sign_urls(over).await.expect_err("over max_batch");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("max_batch limit of 10"),
        "{}",
        err.message()
    );

    // TTL over the configured max is a per-item error naming the limit.
    let resp = c
        .sign_urls(SignUrlsRequest {
            items: vec![item("https://d/a")],
            ttl_seconds: 601,
            ..SignUrlsRequest::default()
        })
        .await
        .expect("call")
        .into_inner();
    match resp.results[0].outcome.as_ref() {
        Some(sign_url_result::Outcome::Error(e)) => {
            assert_eq!(e.field, "items[0].ttl_seconds");
            assert!(
                e.message.contains("max_ttl_seconds limit of 600"),
                "{}",
                e.message
            );
        }
        other => panic!("{other:?}"),
    }
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn cookies_with_attributes() {
    let server = start(test_config("", "")).await;
    let mut c = client(&server.url()).await;
    let resp = c
        .sign_cookies(SignCookiesRequest {
            items: vec![
                SignItem {
                    url: "https://d.example/hls/index.m3u8".into(),
                    policy_resource: "https://d.example/hls/*".into(),
                    ..SignItem::default()
                },
                item("https://d.example/\"bad"),
            ],
            ttl_seconds: 300,
            attributes: Some(CookieAttributes {
                domain: "d.example".into(),
                path: "/hls/".into(),
                secure: true,
                http_only: true,
                same_site: "Lax".into(),
            }),
            ..SignCookiesRequest::default()
        })
        .await
        .expect("SignCookies")
        .into_inner();
    assert_eq!((resp.signed, resp.failed), (1, 1));
    let Some(sign_cookies_result::Outcome::Cookies(set)) = &resp.results[0].outcome else {
        panic!("{:?}", resp.results[0]);
    };
    let names: Vec<&str> = set.cookies.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "CloudFront-Policy",
            "CloudFront-Signature",
            "CloudFront-Key-Pair-Id"
        ]
    );
    assert!(
        set.set_cookie_headers[0]
            .ends_with("; Domain=d.example; Path=/hls/; Secure; HttpOnly; SameSite=Lax"),
        "{}",
        set.set_cookie_headers[0]
    );
    assert!(matches!(
        resp.results[1].outcome,
        Some(sign_cookies_result::Outcome::Error(_))
    ));

    let err = c
        .sign_cookies(SignCookiesRequest {
            items: vec![item("https://d/a")],
            ttl_seconds: 60,
            attributes: Some(CookieAttributes {
                domain: "d.example; Max-Age=999999".into(),
                ..CookieAttributes::default()
            }),
            ..SignCookiesRequest::default()
        })
        .await
        .expect_err("attribute injection");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("attributes.domain"),
        "{}",
        err.message()
    );

    // SameSite=None without Secure: browsers would drop the cookies; refused by name.
    let err = c
        .sign_cookies(SignCookiesRequest {
            items: vec![item("https://d/a")],
            ttl_seconds: 60,
            attributes: Some(CookieAttributes {
                same_site: "None".into(),
                ..CookieAttributes::default()
            }),
            ..SignCookiesRequest::default()
        })
        .await
        .expect_err("SameSite=None without Secure");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("attributes.same_site") && err.message().contains("secure"),
        "{}",
        err.message()
    );
    let ok = c
        .sign_cookies(SignCookiesRequest {
            items: vec![item("https://d/a")],
            ttl_seconds: 60,
            attributes: Some(CookieAttributes {
                same_site: "None".into(),
                secure: true,
                ..CookieAttributes::default()
            }),
            ..SignCookiesRequest::default()
        })
        .await
        .expect("SameSite=None with Secure")
        .into_inner();
    assert_eq!(ok.signed, 1);
    server.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_answers_each_batch_in_order() {
    let server = start(test_config("", "")).await;
    let mut c = client(&server.url()).await;
    let batches: Vec<SignUrlsRequest> = (0..6)
        .map(|b| SignUrlsRequest {
            items: (0..250)
                .map(|i| item(format!("https://d.example/b{b}/s{i}.ts")))
                .collect(),
            ttl_seconds: 120,
            ..SignUrlsRequest::default()
        })
        .collect();
    let mut stream = c
        .sign_urls_stream(tokio_stream::iter(batches))
        .await
        .expect("stream")
        .into_inner();
    let mut seen = 0u64;
    while let Some(resp) = stream.message().await.expect("message") {
        assert_eq!(resp.batch_index, seen);
        assert_eq!(resp.signed, 250);
        let Some(sign_url_result::Outcome::SignedUrl(u)) = &resp.results[249].outcome else {
            panic!("signed");
        };
        assert!(u.starts_with(&format!("https://d.example/b{seen}/s249.ts?")));
        seen += 1;
    }
    assert_eq!(seen, 6);
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn stream_length_limit_ends_the_stream_with_invalid_argument() {
    let server = start(test_config("max_stream_batches = 2", "")).await;
    let mut c = client(&server.url()).await;
    let batches: Vec<SignUrlsRequest> = (0..4)
        .map(|_| SignUrlsRequest {
            items: vec![item("https://d/a")],
            ttl_seconds: 60,
            ..SignUrlsRequest::default()
        })
        .collect();
    let mut stream = c
        .sign_urls_stream(tokio_stream::iter(batches))
        .await
        .expect("stream")
        .into_inner();
    assert!(stream.message().await.expect("first").is_some());
    assert!(stream.message().await.expect("second").is_some());
    let err = stream.message().await.expect_err("third is over the limit");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("max_stream_batches"),
        "{}",
        err.message()
    );
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn health_and_reflection() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let server = start(test_config("", "")).await;
    let channel = Channel::from_shared(server.url())
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "cdnsign.v1.Signer"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("check")
            .into_inner()
            .status;
        assert_eq!(status, 1, "SERVING for {service:?}");
    }

    let mut refl = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = refl
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .expect("reflection")
        .into_inner();
    let msg = resp.message().await.expect("msg").expect("some");
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("{msg:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.iter().any(|n| n == "cdnsign.v1.Signer"), "{names:?}");
    assert!(
        names.iter().any(|n| n == "grpc.health.v1.Health"),
        "{names:?}"
    );
    server.stop().await.expect("stop");
}
