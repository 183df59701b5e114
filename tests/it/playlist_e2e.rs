//! End to end, as a player would: ffmpeg's own HLS and DASH output served by a local
//! CloudFront edge on 127.0.0.1 (`tests/python/cf_edge.py`, which enforces signatures with
//! the public key, expiry and resource match, from the query or from cookies). `ffmpeg -i`
//! on the signed playlist's URL fetches every segment (init segments, AES keys, byte
//! ranges) through the edge and decodes exactly the frames a local decode of the same
//! files gives; the unsigned playlist fails there.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use cdnsign::proto::signer_client::SignerClient;
use cdnsign::proto::{CookieAttributes, PlaylistMode, SignItem, SignUrlsRequest, sign_url_result};
use tonic::transport::Channel;

use crate::common::{KEY_ID, repo, start, test_config};
use crate::playlist_support::{client, request};
use crate::purge_support::python;

/// The edge, killed (by its own pid) on drop.
struct Edge {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Edge {
    fn start(root: &Path, log: PathBuf) -> Edge {
        let mut child = Command::new(python())
            .arg(repo("tests/python/cf_edge.py"))
            .arg("--root")
            .arg(root)
            .arg("--public-key")
            .arg(repo("config/dev-keys/TEST-ONLY-cloudfront.pub.pem"))
            .args(["--key-pair-id", KEY_ID])
            .arg("--log")
            .arg(&log)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start cf_edge.py (run scripts/setup.sh)");
        // The edge prints its port once it listens; EOF means it died.
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the edge's port");
        let port: u16 = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("cf_edge.py said {line:?}"));
        Edge {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    /// (path without query, status) of every request from log line `from` on.
    fn requests(&self, from: usize) -> Vec<(String, u16)> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .skip(from)
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("log line");
                let path = v["path"].as_str().expect("path");
                let path = path.split('?').next().unwrap_or_default().to_owned();
                (
                    path,
                    u16::try_from(v["status"].as_u64().expect("status")).expect("status"),
                )
            })
            .collect()
    }

    fn lines(&self) -> usize {
        std::fs::read_to_string(&self.log).map_or(0, |t| t.lines().count())
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ffmpeg -i INPUT -f framemd5 -`: (success, one MD5 line per decoded frame, stderr).
fn decode(input: &str, before_input: &[&str]) -> (bool, String, String) {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-v", "error"])
        .args(before_input)
        .args([
            "-rw_timeout",
            "10000000",
            "-i",
            input,
            "-map",
            "0",
            "-f",
            "framemd5",
            "-",
        ])
        .output()
        .expect("run ffmpeg (scripts/setup.sh installs it)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A local decode of the same files, the reference.
fn reference(file: &Path) -> String {
    let (ok, md5, err) = decode(&file.display().to_string(), &["-allowed_extensions", "ALL"]);
    assert!(ok, "local decode of {}: {err}", file.display());
    let frames = md5.lines().filter(|l| !l.starts_with('#')).count();
    assert!(frames >= 30, "{}: {frames} frames: {err}", file.display());
    md5
}

async fn signed_url(c: &mut SignerClient<Channel>, url: &str) -> String {
    let resp = c
        .sign_urls(SignUrlsRequest {
            items: vec![SignItem {
                url: url.to_owned(),
                ..SignItem::default()
            }],
            ttl_seconds: 600,
            ..SignUrlsRequest::default()
        })
        .await
        .expect("sign the playlist URL")
        .into_inner();
    match resp.results[0].outcome.clone() {
        Some(sign_url_result::Outcome::SignedUrl(u)) => u,
        other => panic!("{other:?}"),
    }
}

/// Signs `dir/name` served at `edge/dir/name` and writes the result to `dir/out`.
async fn sign_file(
    c: &mut SignerClient<Channel>,
    media: &Path,
    edge: &Edge,
    rel: &str,
    out: &str,
    mode: PlaylistMode,
) -> u32 {
    let text = std::fs::read_to_string(media.join(rel)).expect("playlist");
    let base = format!("{}/{rel}", edge.base);
    let resp = c
        .sign_playlist(request(&text, &base, mode, None))
        .await
        .unwrap_or_else(|s| panic!("{rel}: {s}"))
        .into_inner();
    assert!(resp.errors.is_empty(), "{rel}: {:?}", resp.errors);
    let dir = Path::new(rel).parent().expect("dir");
    std::fs::write(media.join(dir).join(out), resp.playlist).expect("write");
    resp.signatures
}

/// Every file of `dir` (not playlists) was fetched through the edge and served.
fn fetched_everything(edge: &Edge, from: usize, media: &Path, dir: &str) {
    let requests = edge.requests(from);
    assert!(
        requests.iter().all(|(_, s)| *s == 200 || *s == 206),
        "{dir}: refused requests {requests:?}"
    );
    let served: std::collections::HashSet<&str> =
        requests.iter().map(|(p, _)| p.as_str()).collect();
    let mut files = Vec::new();
    for entry in walk(&media.join(dir)) {
        let rel = entry
            .strip_prefix(media)
            .expect("under media")
            .display()
            .to_string();
        if !rel.ends_with(".m3u8") && !rel.ends_with(".mpd") {
            files.push(format!("/{rel}"));
        }
    }
    assert!(!files.is_empty());
    for f in &files {
        assert!(
            served.contains(f.as_str()),
            "{f} was never fetched: {served:?}"
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("dir").flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_plays_signed_playlists_through_a_cloudfront_edge() {
    let tmp = tempfile::tempdir().expect("tmp");
    let media = tmp.path().join("media");
    let made = Command::new("bash")
        .arg(repo("scripts/gen_playlist_fixtures.sh"))
        .arg(&media)
        .output()
        .expect("run gen_playlist_fixtures.sh");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    // The master with SHARED_POLICY is served from a copy whose media playlists are signed.
    copy_dir(&media.join("master"), &media.join("master-signed"));
    let edge = Edge::start(&media, tmp.path().join("edge.log"));
    let server = start(test_config("", "")).await;
    let mut c = client(&server.url()).await;

    // PER_URI: fMP4 (EXT-X-MAP), AES-128 (EXT-X-KEY); SHARED_POLICY: DASH SegmentTemplate
    // ($Number$). (ffmpeg 5.1's DASH demuxer plays only part of a static SegmentList even
    // from local files, so the SegmentList MPD is checked by playlist_api's independent
    // parser and CloudFront's rules instead.)
    for (dir, rel, out, mode) in [
        (
            "fmp4",
            "fmp4/stream.m3u8",
            "signed.m3u8",
            PlaylistMode::PerUri,
        ),
        (
            "aes",
            "aes/stream.m3u8",
            "signed.m3u8",
            PlaylistMode::PerUri,
        ),
        (
            "dash",
            "dash/manifest.mpd",
            "signed.mpd",
            PlaylistMode::SharedPolicy,
        ),
    ] {
        let signatures = sign_file(&mut c, &media, &edge, rel, out, mode).await;
        if mode == PlaylistMode::SharedPolicy {
            assert_eq!(signatures, 1, "{rel}");
        }
        let expected = reference(&media.join(rel));
        let from = edge.lines();
        let url = signed_url(&mut c, &format!("{}/{dir}/{out}", edge.base)).await;
        let (ok, md5, err) = decode(&url, &[]);
        assert!(ok, "{rel}: ffmpeg failed through the edge: {err}");
        assert_eq!(md5, expected, "{rel}: decoded frames differ");
        fetched_everything(&edge, from, &media, dir);

        // The original playlist, under a signed URL of its own: its URIs are refused.
        let from = edge.lines();
        let url = signed_url(&mut c, &format!("{}/{rel}", edge.base)).await;
        let (ok, _, _) = decode(&url, &[]);
        assert!(!ok, "{rel}: the unsigned playlist played");
        let refused = edge.requests(from);
        assert!(refused.iter().any(|(_, s)| *s == 403), "{rel}: {refused:?}");
        // And the playlist itself without a signature.
        let (ok, _, _) = decode(&format!("{}/{dir}/{out}", edge.base), &[]);
        assert!(!ok, "{rel}: an unsigned playlist URL was served");
    }

    // SHARED_POLICY on a master and its three media playlists (byte ranges of single
    // files, an audio rendition): one signature each.
    for name in [
        "media_audio.m3u8",
        "media_hi.m3u8",
        "media_lo.m3u8",
        "master.m3u8",
    ] {
        let rel = format!("master-signed/{name}");
        let sigs = sign_file(
            &mut c,
            &media,
            &edge,
            &rel,
            name,
            PlaylistMode::SharedPolicy,
        )
        .await;
        assert_eq!(sigs, 1, "{rel}");
    }
    let expected = reference(&media.join("master/master.m3u8"));
    let from = edge.lines();
    let url = signed_url(&mut c, &format!("{}/master-signed/master.m3u8", edge.base)).await;
    let (ok, md5, err) = decode(&url, &[]);
    assert!(ok, "master: ffmpeg failed through the edge: {err}");
    assert_eq!(md5, expected, "master: decoded frames differ");
    fetched_everything(&edge, from, &media, "master-signed");
    assert!(
        edge.requests(from).iter().any(|(_, s)| *s == 206),
        "byte ranges were fetched as ranges"
    );
    let url = signed_url(&mut c, &format!("{}/master/master.m3u8", edge.base)).await;
    assert!(!decode(&url, &[]).0, "the unsigned master played");

    // COOKIES: the playlist unchanged, the cookies sent by ffmpeg with every request.
    let text = std::fs::read_to_string(media.join("fmp4/stream.m3u8")).expect("playlist");
    let mut req = request(
        &text,
        &format!("{}/fmp4/stream.m3u8", edge.base),
        PlaylistMode::Cookies,
        None,
    );
    // No Domain: ffmpeg compares a cookie's domain with "host:port" and would drop it; a
    // cookie without one applies to the host it is sent to.
    req.get_mut().attributes = Some(CookieAttributes {
        path: "/".into(),
        ..CookieAttributes::default()
    });
    let resp = c.sign_playlist(req).await.expect("cookies").into_inner();
    assert_eq!(resp.playlist, text);
    let cookies = resp.cookies.expect("cookies").set_cookie_headers.join("\n");
    let playlist = format!("{}/fmp4/stream.m3u8", edge.base);
    let from = edge.lines();
    let (ok, md5, err) = decode(&playlist, &["-cookies", &cookies]);
    assert!(ok, "cookies: ffmpeg failed through the edge: {err}");
    assert_eq!(md5, reference(&media.join("fmp4/stream.m3u8")));
    fetched_everything(&edge, from, &media, "fmp4");
    assert!(!decode(&playlist, &[]).0, "played without cookies");
}
