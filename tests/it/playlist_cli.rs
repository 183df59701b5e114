//! `cdnsign sign-playlist`, the binary: the rewritten playlist alone on stdout, unsigned
//! URIs and cookies on stderr, exit 0 / 1 / 2.

use std::io::Write as _;
use std::process::{Command, Stdio};

use cdnsign::signing::verify::{VerifyKey, verify_url};

use crate::common::{KEY_ID, repo};
use crate::playlist_support::{HOST, fixture};

fn sign_playlist(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cdnsign"))
        .arg("sign-playlist")
        .arg("--key-file")
        .arg(repo("config/dev-keys/TEST-ONLY-cloudfront.pem"))
        .args(["--key-pair-id", KEY_ID, "--ttl", "600"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cdnsign");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).expect("utf8"),
        String::from_utf8(out.stderr).expect("utf8"),
    )
}

#[test]
fn sign_playlist_prints_the_rewritten_playlist() {
    let file = repo("tests/fixtures/playlists/handwritten/ll-hls-media.m3u8");
    let base = format!("{HOST}/hls/live/stream.m3u8");
    let (code, out, err) = sign_playlist(&["--base-url", &base, &file.display().to_string()], None);
    assert_eq!(code, 0, "{err}");
    let original = fixture("handwritten/ll-hls-media.m3u8");
    assert_eq!(out.lines().count(), original.lines().count());
    let key = VerifyKey::from_pem(
        &std::fs::read_to_string(repo("config/dev-keys/TEST-ONLY-cloudfront.pub.pem"))
            .expect("pub"),
    )
    .expect("key");
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs(),
    )
    .expect("now");
    let mut verified = 0;
    for (a, b) in original.lines().zip(out.lines()) {
        if a == b {
            continue;
        }
        let url = if b.trim().starts_with('#') {
            let at = b.find("URI=\"").expect("URI attribute") + 5;
            &b[at..at + b[at..].find('"').expect("closing quote")]
        } else {
            b.trim()
        };
        let v = verify_url(url, &key, now, None);
        assert!(v.valid(), "{url}: {:?}", v.problems);
        verified += 1;
    }
    assert_eq!(verified, 14);

    // The same from stdin, in SHARED_POLICY mode: one policy for the directory.
    let (code, out, err) = sign_playlist(
        &[
            "--base-url",
            &base,
            "--mode",
            "shared-policy",
            "--resource",
            &format!("{HOST}/hls/*"),
            "-",
        ],
        Some(&original),
    );
    assert_eq!(code, 1, "the ads host is outside the resource: {err}");
    assert!(
        err.contains("line 25: https://ads.example.net/ad/fileSequence270.mp4: not covered"),
        "{err}"
    );
    assert_eq!(out.matches("Policy=").count(), 13);
}

#[test]
fn sign_playlist_modes_and_refusals() {
    let mpd = repo("tests/fixtures/playlists/ffmpeg/dash-template.mpd");
    let mpd = mpd.display().to_string();
    let base = format!("{HOST}/dash/a/manifest.mpd");
    let (code, out, err) = sign_playlist(&["--base-url", &base, &mpd], None);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(err.contains("use SHARED_POLICY or COOKIES"), "{err}");

    // The proto's names work as well as the flag's.
    let (code, out, err) = sign_playlist(&["--base-url", &base, "--mode", "COOKIES", &mpd], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, fixture("ffmpeg/dash-template.mpd"), "byte for byte");
    let cookies: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("Set-Cookie: "))
        .collect();
    assert_eq!(cookies.len(), 3, "{err}");
    assert!(cookies[0].starts_with("Set-Cookie: CloudFront-Policy="));

    let (code, _, err) = sign_playlist(&["--base-url", "not-a-url", &mpd], None);
    assert_eq!(code, 2);
    assert!(err.contains("base_url: "), "{err}");
}
