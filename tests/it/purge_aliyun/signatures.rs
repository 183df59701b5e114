//! Our signatures: the official SDKs' vectors for v1 and v3, and the fake accepting our
//! signed requests while refusing tampered, replayed, skewed, over-limit and incomplete ones.

use std::collections::BTreeMap;

use super::{AK, SECRET, creds, now};
use crate::purge_support::aliyun_fake::AliyunFake;
use cdnsign::purge::aliyun::{
    Aliyun, SignedRequest, V3Request, iso8601, sha256_hex, sign_v1, sign_v3,
};
use cdnsign::purge::config::SignatureVersion;

const VECTORS: &str = include_str!("../../fixtures/aliyun_vectors.json");

async fn send(req: &SignedRequest) -> (u16, serde_json::Value) {
    let client = reqwest::Client::new();
    let mut rb = client.post(&req.url);
    for (k, v) in &req.headers {
        rb = rb.header(k.as_str(), v.as_str());
    }
    let resp = rb.body(req.body.clone()).send().await.expect("send");
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("body");
    let json = serde_json::from_slice(&bytes).expect("json");
    (status, json)
}

#[test]
fn official_sdk_vectors_pin_both_signatures() {
    let doc: serde_json::Value = serde_json::from_str(VECTORS).expect("fixture");
    let v1 = doc["v1"].as_array().expect("v1");
    assert!(v1.len() >= 3);
    for v in v1 {
        let params: BTreeMap<String, String> = v["signed_params"]
            .as_object()
            .expect("params")
            .iter()
            .map(|(k, x)| (k.clone(), x.as_str().expect("str").to_owned()))
            .collect();
        let (sts, sig) = sign_v1(
            v["method"].as_str().expect("method"),
            &params,
            v["secret"].as_str().expect("secret"),
        );
        assert_eq!(
            sts,
            v["string_to_sign"].as_str().expect("sts"),
            "{}",
            v["name"]
        );
        assert_eq!(sig, v["signature"].as_str().expect("sig"), "{}", v["name"]);
    }
    let v3 = doc["v3"].as_array().expect("v3");
    assert!(v3.len() >= 3);
    for v in v3 {
        let headers: Vec<(String, String)> = v["headers"]
            .as_object()
            .expect("headers")
            .iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case("authorization"))
            .map(|(k, x)| (k.clone(), x.as_str().expect("str").to_owned()))
            .collect();
        let query: Vec<(String, String)> = v["query"]
            .as_object()
            .expect("query")
            .iter()
            .map(|(k, x)| (k.clone(), x.as_str().expect("str").to_owned()))
            .collect();
        let payload = sha256_hex(v["body"].as_str().expect("body").as_bytes());
        assert_eq!(
            payload,
            v["headers"]["x-acs-content-sha256"].as_str().expect("hash"),
            "{}",
            v["name"]
        );
        let (_, auth) = sign_v3(
            &V3Request {
                method: v["method"].as_str().expect("method"),
                path: v["path"].as_str().expect("path"),
                query: &query,
                headers: &headers,
                payload_hash: &payload,
            },
            v["access_key_id"].as_str().expect("ak"),
            v["secret"].as_str().expect("secret"),
        );
        assert_eq!(
            auth,
            v["authorization"].as_str().expect("auth"),
            "{}",
            v["name"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_accepts_our_signed_requests_and_refuses_tampered_replayed_and_skewed_ones() {
    let fake = AliyunFake::start(AK, SECRET).await;
    let v3 = Aliyun::new(
        Some(&fake.endpoint),
        SignatureVersion::V3,
        Some(creds(SECRET)),
    )
    .expect("v3");
    let v1 = Aliyun::new(
        Some(&fake.endpoint),
        SignatureVersion::V1,
        Some(creds(SECRET)),
    )
    .expect("v1");
    let ts = iso8601(now());
    let body = [
        (
            "ObjectPath",
            "https://cdn.example.com/a b.png\nhttps://cdn.example.com/é".to_owned(),
        ),
        ("ObjectType", "File".to_owned()),
    ];

    for (name, client) in [("v3", &v3), ("v1", &v1)] {
        let ok = client
            .build_request("RefreshObjectCaches", &body, &format!("{name}-n1"), &ts)
            .expect("build");
        let (status, json) = send(&ok).await;
        assert_eq!(status, 200, "{name}: {json}");
        assert!(
            json["RefreshTaskId"]
                .as_str()
                .is_some_and(|s| !s.is_empty())
        );

        // The very same request again: nonce reuse refused.
        let (status, json) = send(&ok).await;
        assert_eq!(
            (status, json["Code"].as_str()),
            (400, Some("SignatureNonceUsed")),
            "{name}"
        );

        // Tampered body (a different object path), fresh nonce: signature refused.
        let mut bad = client
            .build_request("RefreshObjectCaches", &body, &format!("{name}-n2"), &ts)
            .expect("build");
        bad.body = bad.body.replace("a%20b.png", "c.png");
        if name == "v3" {
            // Even with the content hash header fixed up, the signature does not match.
            for h in &mut bad.headers {
                if h.0 == "x-acs-content-sha256" {
                    h.1 = sha256_hex(bad.body.as_bytes());
                }
            }
        }
        let (status, json) = send(&bad).await;
        assert_eq!(
            (status, json["Code"].as_str()),
            (400, Some("SignatureDoesNotMatch")),
            "{name}: {json}"
        );

        // An hour-old timestamp: refused as expired.
        let old = client
            .build_request(
                "DescribeRefreshQuota",
                &[],
                &format!("{name}-n3"),
                &iso8601(now() - 3_600),
            )
            .expect("build");
        let (status, json) = send(&old).await;
        assert_eq!(
            (status, json["Code"].as_str()),
            (400, Some("InvalidTimeStamp.Expired")),
            "{name}"
        );

        // Over the per-call limit of 1,000 URLs.
        let many: Vec<String> = (0..1_001)
            .map(|i| format!("https://cdn.example.com/{i}"))
            .collect();
        let over = client
            .build_request(
                "RefreshObjectCaches",
                &[
                    ("ObjectPath", many.join("\n")),
                    ("ObjectType", "File".into()),
                ],
                &format!("{name}-n4"),
                &ts,
            )
            .expect("build");
        let (status, json) = send(&over).await;
        assert_eq!(
            (status, json["Code"].as_str()),
            (400, Some("InvalidObjectPath.ExceedLimit")),
            "{name}"
        );

        // A required parameter missing.
        let missing = client
            .build_request("DescribeRefreshTaskById", &[], &format!("{name}-n5"), &ts)
            .expect("build");
        let (status, json) = send(&missing).await;
        assert_eq!(
            (status, json["Code"].as_str()),
            (400, Some("MissingTaskId")),
            "{name}"
        );
    }

    // The wrong secret.
    let wrong = Aliyun::new(
        Some(&fake.endpoint),
        SignatureVersion::V3,
        Some(creds("not-it")),
    )
    .expect("c");
    let req = wrong
        .build_request("DescribeRefreshQuota", &[], "w-1", &ts)
        .expect("build");
    let (status, json) = send(&req).await;
    assert_eq!(
        (status, json["Code"].as_str()),
        (400, Some("SignatureDoesNotMatch"))
    );
    assert_eq!(
        fake.calls("RefreshObjectCaches").len(),
        2,
        "only the two good requests"
    );
}
