//! Shared by the playlist tests: fixtures, a Signer client, configs with granted clients,
//! and the independent checker (`tests/python/playlist_check.py`: Python's `m3u8` and
//! ElementTree, CloudFront's rules from `tests/python/cf_edge.py`).
#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::process::Command;

use cdnsign::config::Config;
use cdnsign::proto::signer_client::SignerClient;
use cdnsign::proto::{PlaylistMode, SignPlaylistRequest};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::common::{KEY_ID, repo, sha256_hex};
use crate::purge_support::python;

pub const HOST: &str = "https://d111111abcdef8.cloudfront.net";
pub const TOKEN: &str = "playlist-generator-token-TEST-ONLY";
pub const VERIFIER_TOKEN: &str = "on-call-verifier-token-TEST-ONLY";

pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(repo(&format!("tests/fixtures/playlists/{name}")))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

pub async fn client(addr: &str) -> SignerClient<Channel> {
    SignerClient::connect(addr.to_owned())
        .await
        .expect("connect")
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

pub fn request(
    playlist: &str,
    base_url: &str,
    mode: PlaylistMode,
    token: Option<&str>,
) -> tonic::Request<SignPlaylistRequest> {
    let mut req = tonic::Request::new(SignPlaylistRequest {
        playlist: playlist.to_owned(),
        base_url: base_url.to_owned(),
        mode: mode.into(),
        ttl_seconds: 3600,
        ..SignPlaylistRequest::default()
    });
    if let Some(t) = token {
        let v: MetadataValue<_> = format!("Bearer {t}").parse().expect("meta");
        req.metadata_mut().insert("authorization", v);
    }
    req
}

/// A server that requires an identity: a packager granted `prefix` (with `client_extra`
/// lines), and an on-call verifier with no keys and no prefixes. (Client names differ
/// from other modules': metrics are process-wide and some tests count per client.)
pub fn granted_config(prefix: &str, signing_extra: &str, client_extra: &str) -> Config {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[metrics]
listen = ""
[signing]
default_key_id = "{KEY_ID}"
threads = 2
{signing_extra}
[[keys]]
id = "{KEY_ID}"
path = "{key}"
[[clients]]
name = "hls-packager"
token_sha256 = "{hash}"
keys = ["{KEY_ID}"]
url_prefixes = ["{prefix}"]
{client_extra}
[[clients]]
name = "on-call"
token_sha256 = "{verifier}"
"#,
        key = repo("config/dev-keys/TEST-ONLY-cloudfront.pem").display(),
        hash = sha256_hex(TOKEN),
        verifier = sha256_hex(VERIFIER_TOKEN),
    );
    Config::from_toml_str(&text, &repo(".")).expect("config")
}

/// What `playlist_check.py` found.
#[derive(Debug, serde::Deserialize)]
pub struct Checked {
    pub tags: Vec<String>,
    pub tags_rewritten: Vec<String>,
    pub same_shape: bool,
    pub uris: Vec<CheckedUri>,
}

#[derive(Debug, serde::Deserialize)]
pub struct CheckedUri {
    pub uri: String,
    pub url: String,
    pub ok: bool,
    pub reason: Option<String>,
}

/// Runs the independent checker on an original and a rewritten playlist.
pub fn check(kind: &str, original: &str, rewritten: &str, base: &str, dir: &Path) -> Checked {
    let (a, b) = (dir.join("original"), dir.join("rewritten"));
    std::fs::write(&a, original).expect("write");
    std::fs::write(&b, rewritten).expect("write");
    let out = Command::new(python())
        .arg(repo("tests/python/playlist_check.py"))
        .args([kind, &a.display().to_string(), &b.display().to_string()])
        .args(["--base", base, "--key-pair-id", KEY_ID])
        .arg("--public-key")
        .arg(repo("config/dev-keys/TEST-ONLY-cloudfront.pub.pem"))
        .output()
        .expect("run playlist_check.py");
    assert!(
        out.status.success(),
        "playlist_check.py failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}
