//! Purges that behave as CloudFront and Aliyun document: "try again later" waits the
//! window and never fails, a lost answer is reconciled and never resent, failed tasks fail
//! their paths, a task Aliyun no longer reports ends unknown, cache tags go to each
//! provider's own API, one bad path never takes a batch down, a busy distribution never
//! starves a purge, and jobs of different purges waiting for the same distribution share one
//! request (and one bill). Against the local fakes, which check what they receive as the
//! providers do. The helpers shared by the five files below (the Aliyun credentials, the
//! configuration of each target, one Purge call) are here.

mod aliyun;
mod aliyun_reconciliation;
mod cache_tags;
mod cloudfront;
mod coalescing;

use crate::purge_support::base_config;
use cdnsign::proto::purger_client::PurgerClient;
use cdnsign::proto::{PurgeKind, PurgeRequest, PurgeResponse};
use cdnsign::purge::PurgeOptions;
use cdnsign::purge::aliyun::{AliyunCredentials, Secret};
use tonic::transport::Channel;

const AK: &str = "LTAI5tBehaviourKey01";
const SECRET: &str = "Behaviour-Secret-TEST-ONLY";
const DIST: &str = "EBEHAVIOUR0001";
const DOMAIN: &str = "cdn.example.com";

fn aliyun_opts() -> PurgeOptions {
    PurgeOptions {
        aliyun_credentials: Some(AliyunCredentials {
            access_key_id: AK.into(),
            secret: Secret::new(SECRET),
        }),
        ..PurgeOptions::default()
    }
}

/// `base_config` with a one-second "try again later" window, and one Aliyun target.
fn aliyun_config(data: &std::path::Path, endpoint: &str) -> String {
    base_config(data)
        + &format!(
            r#"aliyun_quota_backoff_seconds = 1
[[targets]]
name = "ali"
provider = "aliyun"
domain = "{DOMAIN}"
endpoint = "{endpoint}"
"#
        )
}

fn cloudfront_target(endpoint: &str, cache_tags: bool) -> String {
    format!(
        r#"
[[targets]]
name = "cf"
provider = "cloudfront"
distribution_id = "{DIST}"
endpoint = "{endpoint}"
cache_tags = {cache_tags}
"#
    )
}

async fn purge(
    client: &mut PurgerClient<Channel>,
    target: &str,
    paths: &[&str],
    kind: PurgeKind,
) -> Result<PurgeResponse, tonic::Status> {
    client
        .purge(PurgeRequest {
            target: target.into(),
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            kind: kind.into(),
            idempotency_key: String::new(),
            max_wait_seconds: 0,
        })
        .await
        .map(tonic::Response::into_inner)
}
