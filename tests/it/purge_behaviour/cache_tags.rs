//! Cache tags: each provider's own API (Aliyun's RefreshObjectCacheByCacheTag, CloudFront's
//! `#tag` paths), a bad tag rejected alone, and `cache_tags = true` required on CloudFront.

use std::time::Duration;

use super::{AK, DIST, DOMAIN, SECRET, aliyun_config, aliyun_opts, cloudfront_target, purge};
use crate::purge_support::aliyun_fake::AliyunFake;
use crate::purge_support::cloudfront_fake::CloudFrontFake;
use crate::purge_support::{TestServer, aws_credentials, base_config, watch_to_end};
use cdnsign::proto::{PurgeKind, PurgeStatus};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_tags_use_each_providers_api_and_bad_tags_are_rejected_alone() {
    let ali = AliyunFake::start(AK, SECRET).await;
    let cf = CloudFrontFake::start(DIST, Duration::from_millis(200)).await;
    let data = tempfile::tempdir().expect("tempdir");
    let toml = aliyun_config(data.path(), &ali.endpoint) + &cloudfront_target(&cf.endpoint, true);
    let mut opts = aws_credentials("AKIDFAKE", "fake-secret");
    opts.aliyun_credentials = aliyun_opts().aliyun_credentials;
    let server = TestServer::start(&toml, opts).await;
    let mut client = server.client().await;

    // Aliyun: RefreshObjectCacheByCacheTag, tags compared without case, sent once.
    let resp = purge(
        &mut client,
        "ali",
        &["Product-42", "#product-42", "promo"],
        PurgeKind::CacheTag,
    )
    .await
    .expect("accepted");
    assert!(resp.rejected.is_empty(), "{:?}", resp.rejected);
    let seen = watch_to_end(&mut client, &resp.purge_id, Duration::from_secs(20)).await;
    assert_eq!(
        seen.last().expect("m").status(),
        PurgeStatus::PurgeCompleted
    );
    let calls = ali.calls("RefreshObjectCacheByCacheTag");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].params["DomainName"], DOMAIN);
    assert_eq!(calls[0].params["CacheTag"], "Product-42,promo");
    assert!(ali.calls("RefreshObjectCaches").is_empty());

    // CloudFront: '#' + tag, checked as AWS documents; a bad tag is rejected on its own.
    let long = "t".repeat(257);
    let resp = purge(
        &mut client,
        "cf",
        &["Release-7", "release-7", "a,b", "caf\u{e9}", &long, "ok"],
        PurgeKind::CacheTag,
    )
    .await
    .expect("accepted");
    let rejected: Vec<&str> = resp.rejected.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        rejected,
        ["a,b", "caf\u{e9}", long.as_str()],
        "{:?}",
        resp.rejected
    );
    assert!(
        resp.rejected[0].reason.contains("comma"),
        "{}",
        resp.rejected[0].reason
    );
    assert!(
        resp.rejected[2].reason.contains("256"),
        "{}",
        resp.rejected[2].reason
    );
    let seen = watch_to_end(&mut client, &resp.purge_id, Duration::from_secs(20)).await;
    assert_eq!(
        seen.last().expect("m").status(),
        PurgeStatus::PurgeCompleted
    );
    assert_eq!(cf.ours()[0].paths, ["#Release-7", "#ok"]);
    assert_eq!(
        seen.last().expect("m").paths_billed,
        2,
        "a tag is billed once"
    );
    assert!(cf.state.lock().expect("state").invalid.is_empty());
    server.stop().await;

    // A CloudFront target that has not declared its CacheTagConfig refuses tag purges.
    let data = tempfile::tempdir().expect("tempdir");
    let toml = base_config(data.path()) + &cloudfront_target(&cf.endpoint, false);
    let server = TestServer::start(&toml, aws_credentials("AKIDFAKE", "fake-secret")).await;
    let mut client = server.client().await;
    let err = purge(&mut client, "cf", &["Release-7"], PurgeKind::CacheTag)
        .await
        .expect_err("no cache_tags");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("cache_tags = true"),
        "{}",
        err.message()
    );
    server.stop().await;
}

/// A cache-tag refresh whose answer was lost (Aliyun recorded it, then answered 503) cannot
/// be looked up (DescribeRefreshTasks documents no cache-tag type; the fake refuses one), so
/// it is sent again and completes, rather than failing on a lookup Aliyun would refuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_cache_tag_answer_is_sent_again() {
    let ali = AliyunFake::start(AK, SECRET).await;
    let data = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&aliyun_config(data.path(), &ali.endpoint), aliyun_opts()).await;
    let mut client = server.client().await;
    ali.state.lock().expect("state").unavailable_after_record = 1;
    let resp = purge(&mut client, "ali", &["release-9"], PurgeKind::CacheTag)
        .await
        .expect("accepted");
    let seen = watch_to_end(&mut client, &resp.purge_id, Duration::from_secs(20)).await;
    let last = seen.last().expect("watch answered");
    assert_eq!(last.status(), PurgeStatus::PurgeCompleted, "{last:?}");
    // Two refreshes recorded: the one whose answer was lost, and the one sent again (the
    // fake lists answered calls only).
    let recorded = ali
        .state
        .lock()
        .expect("state")
        .tasks
        .values()
        .filter(|t| t.3 == "cachetag")
        .count();
    assert_eq!(recorded, 2, "sent again");
    assert_eq!(ali.calls("RefreshObjectCacheByCacheTag").len(), 1);
    assert!(
        ali.calls("DescribeRefreshTasks").is_empty(),
        "no lookup by a type Aliyun does not have"
    );
    assert_eq!(
        ali.refused(),
        ["ServiceUnavailable"],
        "only the lost answer"
    );
    server.stop().await;
}
