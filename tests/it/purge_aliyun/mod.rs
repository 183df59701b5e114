//! Alibaba Cloud CDN: our signatures against the official SDKs' vectors, and the whole
//! purge path against a local fake that checks requests as the API documents them. The
//! signatures are tested in `signatures.rs`, purges through the server in `purges.rs`; the
//! fake's credentials and the clock they share are here.

mod purges;
mod signatures;

use cdnsign::purge::aliyun::{AliyunCredentials, Secret};

const AK: &str = "LTAI5tFakeTestKey01";
const SECRET: &str = "FakeSecret-9f8e7d6c5b4a-DoNotLog";

fn creds(secret: &str) -> AliyunCredentials {
    AliyunCredentials {
        access_key_id: AK.into(),
        secret: Secret::new(secret),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}
