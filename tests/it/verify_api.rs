//! `Signer/VerifyUrls` and `Signer/VerifyCookies` over a real socket: what the server
//! signs verifies, and each way CloudFront would refuse a request is named.

use cdnsign::proto::verify_problem::Reason;
use cdnsign::proto::{
    CookieCheck, SignCookiesRequest, SignItem, SignUrlsRequest, VerifyCookiesRequest,
    VerifyUrlsRequest, sign_cookies_result, sign_url_result,
};
use tonic::Code;

use crate::common::{KEY_ID, start, test_config};
use crate::playlist_support::{HOST, TOKEN, VERIFIER_TOKEN, client, granted_config};

fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("meta"),
    );
    req
}

fn reasons(r: &cdnsign::proto::VerifyResult) -> Vec<Reason> {
    r.problems
        .iter()
        .map(|p| Reason::try_from(p.reason).expect("reason"))
        .collect()
}

fn signed(resp: cdnsign::proto::SignUrlsResponse) -> Vec<String> {
    resp.results
        .into_iter()
        .map(|r| match r.outcome {
            Some(sign_url_result::Outcome::SignedUrl(u)) => u,
            other => panic!("{other:?}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reason_cloudfront_would_refuse_is_named() {
    let server = start(test_config("", "")).await;
    let mut c = client(&server.url()).await;
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs(),
    )
    .expect("now");
    let item = |url: &str| SignItem {
        url: url.into(),
        ..SignItem::default()
    };
    let urls = signed(
        c.sign_urls(SignUrlsRequest {
            items: vec![
                item(&format!("{HOST}/hls/a/seg1.ts")),
                SignItem {
                    policy_resource: format!("{HOST}/hls/a/*"),
                    not_before: now + 600,
                    ip_range: "192.0.2.0/24".into(),
                    ..item(&format!("{HOST}/hls/a/seg2.ts"))
                },
            ],
            ttl_seconds: 3600,
            ..SignUrlsRequest::default()
        })
        .await
        .expect("sign")
        .into_inner(),
    );
    let (canned, custom) = (&urls[0], &urls[1]);
    let at = canned.find("Signature=").expect("sig") + "Signature=".len();
    let flip = if canned[at..].starts_with('A') {
        "B"
    } else {
        "A"
    };
    let tampered = format!("{}{flip}{}", &canned[..at], &canned[at + 1..]);
    let moved = custom.replace("/hls/a/seg2.ts", "/hls/b/seg2.ts");
    let unknown = canned.replace(&format!("Key-Pair-Id={KEY_ID}"), "Key-Pair-Id=KNOTLOADED");
    let list = vec![
        canned.clone(),
        tampered,
        custom.clone(),
        moved,
        unknown,
        format!("{HOST}/hls/a/seg1.ts"),
    ];
    let resp = c
        .verify_urls(VerifyUrlsRequest {
            urls: list.clone(),
            client_ip: "198.51.100.7".into(),
            now: 0,
        })
        .await
        .expect("verify")
        .into_inner();
    let got: Vec<Vec<Reason>> = resp.results.iter().map(reasons).collect();
    assert_eq!(
        got,
        [
            vec![],
            vec![Reason::Signature],
            vec![Reason::NotYetValid, Reason::Ip],
            vec![Reason::Resource, Reason::NotYetValid, Reason::Ip],
            vec![Reason::UnknownKey],
            vec![Reason::Malformed],
        ]
    );
    assert!(resp.results[0].valid);
    assert_eq!((resp.valid, resp.invalid), (1, 5));
    let custom_result = &resp.results[2];
    assert!(custom_result.signature_valid && custom_result.custom_policy);
    assert_eq!(custom_result.resource, format!("{HOST}/hls/a/*"));
    assert_eq!(custom_result.ip_range, "192.0.2.0/24");
    assert_eq!(custom_result.not_before, now + 600);
    assert_eq!(custom_result.unsigned_url, format!("{HOST}/hls/a/seg2.ts"));
    assert!(resp.results[4].problems[0].message.contains("KNOTLOADED"));

    // At a later time and from inside the range, the custom URL is valid; past its expiry
    // both are expired.
    let resp = c
        .verify_urls(VerifyUrlsRequest {
            urls: vec![custom.clone(), canned.clone()],
            client_ip: "192.0.2.44".into(),
            now: now + 1200,
        })
        .await
        .expect("verify")
        .into_inner();
    assert!(resp.results.iter().all(|r| r.valid), "{:?}", resp.results);
    let resp = c
        .verify_urls(VerifyUrlsRequest {
            urls: vec![custom.clone(), canned.clone()],
            client_ip: "192.0.2.44".into(),
            now: now + 7200,
        })
        .await
        .expect("verify")
        .into_inner();
    let got: Vec<Vec<Reason>> = resp.results.iter().map(reasons).collect();
    assert_eq!(got, [vec![Reason::Expired], vec![Reason::Expired]]);

    for (req, needle) in [
        (
            VerifyUrlsRequest {
                urls: vec![canned.clone()],
                client_ip: "not-an-ip".into(),
                now: 0,
            },
            "client_ip",
        ),
        (VerifyUrlsRequest::default(), "no items"),
    ] {
        let s = c.verify_urls(req).await.expect_err(needle);
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains(needle), "{}", s.message());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_cookies_verify_with_the_request_url() {
    let server = start(test_config("", "")).await;
    let mut c = client(&server.url()).await;
    let resp = c
        .sign_cookies(SignCookiesRequest {
            items: vec![SignItem {
                url: format!("{HOST}/hls/a/index.m3u8"),
                policy_resource: format!("{HOST}/hls/a/*"),
                ..SignItem::default()
            }],
            ttl_seconds: 600,
            ..SignCookiesRequest::default()
        })
        .await
        .expect("cookies")
        .into_inner();
    let set = match resp.results[0].outcome.clone() {
        Some(sign_cookies_result::Outcome::Cookies(set)) => set,
        other => panic!("{other:?}"),
    };
    let header = set
        .cookies
        .iter()
        .map(|c| format!("{}={}", c.name, c.value))
        .collect::<Vec<_>>()
        .join("; ");
    let checks = vec![
        CookieCheck {
            url: format!("{HOST}/hls/a/seg9.ts"),
            cookies: set.cookies.clone(),
            cookie_header: String::new(),
        },
        CookieCheck {
            url: format!("{HOST}/hls/a/seg9.ts?x=1"),
            cookie_header: format!("session=abc; {header}"),
            ..CookieCheck::default()
        },
        CookieCheck {
            url: format!("{HOST}/hls/b/seg9.ts"),
            cookie_header: header.clone(),
            ..CookieCheck::default()
        },
        CookieCheck {
            url: format!("{HOST}/hls/a/seg9.ts"),
            cookie_header: "session=abc".into(),
            ..CookieCheck::default()
        },
    ];
    let resp = c
        .verify_cookies(VerifyCookiesRequest {
            items: checks,
            ..VerifyCookiesRequest::default()
        })
        .await
        .expect("verify")
        .into_inner();
    let got: Vec<Vec<Reason>> = resp.results.iter().map(reasons).collect();
    assert_eq!(
        got,
        [
            vec![],
            vec![],
            vec![Reason::Resource],
            vec![Reason::Malformed]
        ]
    );
    assert_eq!((resp.valid, resp.invalid), (2, 2));
    // The problem reads as one sentence (no run of spaces from a wrapped literal).
    let problem = &resp.results[3].problems[0].message;
    assert!(
        problem.starts_with("no CloudFront-* signing cookies") && !problem.contains("  "),
        "{problem:?}"
    );
}

/// Verifying needs an identity but no grant: a client with no keys and no prefixes may
/// verify what another client signed, and may not sign.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifying_needs_an_identity_and_no_grant() {
    let server = start(granted_config(&format!("{HOST}/hls/"), "", "")).await;
    let mut c = client(&server.url()).await;
    let signed_url = signed(
        c.sign_urls(with_token(
            SignUrlsRequest {
                items: vec![SignItem {
                    url: format!("{HOST}/hls/a/seg1.ts"),
                    ..SignItem::default()
                }],
                ttl_seconds: 600,
                ..SignUrlsRequest::default()
            },
            TOKEN,
        ))
        .await
        .expect("sign")
        .into_inner(),
    )
    .remove(0);
    let req = || VerifyUrlsRequest {
        urls: vec![signed_url.clone()],
        ..VerifyUrlsRequest::default()
    };
    let s = c.verify_urls(req()).await.expect_err("anonymous");
    assert_eq!(s.code(), Code::Unauthenticated);
    let s = c
        .verify_urls(with_token(req(), "not-a-token"))
        .await
        .expect_err("unknown token");
    assert_eq!(s.code(), Code::Unauthenticated);
    let resp = c
        .verify_urls(with_token(req(), VERIFIER_TOKEN))
        .await
        .expect("verifier")
        .into_inner();
    assert!(resp.results[0].valid, "{:?}", resp.results[0].problems);
    // The verifier has no signing grant.
    let denied = c
        .sign_urls(with_token(
            SignUrlsRequest {
                items: vec![SignItem {
                    url: format!("{HOST}/hls/a/seg2.ts"),
                    ..SignItem::default()
                }],
                ttl_seconds: 600,
                ..SignUrlsRequest::default()
            },
            VERIFIER_TOKEN,
        ))
        .await
        .expect("call")
        .into_inner();
    assert!(matches!(
        denied.results[0].outcome,
        Some(sign_url_result::Outcome::Error(_))
    ));
}

/// The public half of an ECDSA P-256 key with SHA-256 (`Hash-Algorithm=SHA256`) verifies
/// what it signed, and a URL naming the other loaded key does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecdsa_sha256_keys_verify_by_their_key_pair_id() {
    let ec = crate::common::repo("tests/fixtures/keys/ec-p256.pem");
    let extra = format!(
        "[[keys]]\nid = \"KECP256TESTONLY\"\npath = \"{}\"\nalgorithm = \"sha256\"\n",
        ec.display()
    );
    let server = start(test_config("", &extra)).await;
    let mut c = client(&server.url()).await;
    let url = signed(
        c.sign_urls(SignUrlsRequest {
            items: vec![SignItem {
                url: format!("{HOST}/hls/ec/seg1.ts"),
                ..SignItem::default()
            }],
            key_id: "KECP256TESTONLY".into(),
            ttl_seconds: 600,
            ..SignUrlsRequest::default()
        })
        .await
        .expect("sign")
        .into_inner(),
    )
    .remove(0);
    assert!(url.contains("Hash-Algorithm=SHA256"), "{url}");
    let swapped = url.replace(
        "Key-Pair-Id=KECP256TESTONLY",
        &format!("Key-Pair-Id={KEY_ID}"),
    );
    let resp = c
        .verify_urls(VerifyUrlsRequest {
            urls: vec![url, swapped],
            ..VerifyUrlsRequest::default()
        })
        .await
        .expect("verify")
        .into_inner();
    assert!(resp.results[0].valid, "{:?}", resp.results[0].problems);
    assert_eq!(resp.results[0].key_pair_id, "KECP256TESTONLY");
    assert_eq!(reasons(&resp.results[1]), [Reason::Signature]);
}
