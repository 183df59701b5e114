//! Playlist scanning, planning and rewriting, signed with the TEST ONLY key and checked with
//! its public half: every rewritten URI verifies for exactly the URL it resolves to, and
//! every other byte is unchanged.

use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::access::{Grant, GrantParts, Prefix};
use crate::signing::keys::{Backend, HashAlg, KeySet, SigningKey};
use crate::signing::policy::cf_base64_decode;
use crate::signing::pool::{SigningPool, Site};
use crate::signing::validate::BatchContext;
use crate::signing::verify::{VerifyKey, verify_url};

const KEY_ID: &str = "K2JCJMDEHXQW5F";
pub(super) const NOW: i64 = 1_700_000_000;
pub(super) const HOST: &str = "https://d111111abcdef8.cloudfront.net";
pub(super) const LIVE: &str = "https://d111111abcdef8.cloudfront.net/hls/live/stream.m3u8";

pub(super) fn repo_file(rel: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub(super) fn fixture(name: &str) -> String {
    repo_file(&format!("tests/fixtures/playlists/{name}"))
}

pub(super) fn keys() -> KeySet {
    let pem = repo_file("config/dev-keys/TEST-ONLY-cloudfront.pem");
    KeySet::from_keys([
        SigningKey::from_pem(KEY_ID, &pem, HashAlg::Sha1, Backend::compiled()[0]).expect("key"),
    ])
}

pub(super) fn ctx(keys: &KeySet, grant: Option<Arc<Grant>>) -> BatchContext {
    BatchContext {
        default_key: keys.get(KEY_ID),
        default_key_id: KEY_ID.into(),
        ttl_seconds: 3600,
        max_ttl_seconds: 86_400,
        now: NOW,
        grant,
        ..BatchContext::default()
    }
}

pub(super) fn grant(prefix: &str) -> Arc<Grant> {
    Arc::new(Grant::new(GrantParts {
        name: "gen".into(),
        keys: vec![KEY_ID.into()],
        prefixes: vec![Prefix::parse(prefix).expect("prefix")],
        ..GrantParts::default()
    }))
}

pub(super) fn run(
    text: &str,
    base: &str,
    opts: SharedOptions<'_>,
    grant: Option<Arc<Grant>>,
) -> Result<Outcome, PlaylistError> {
    let keys = keys();
    let ctx = ctx(&keys, grant);
    let parsed = parse(text, base, DEFAULT_MAX_PLAYLIST_BYTES)?;
    let pool = SigningPool::new(1).expect("pool");
    pool.run_blocking(|p| sign(text, &parsed, &opts, &ctx, &keys, Site::Pool(p)))
}

pub(super) fn mode(mode: Mode) -> SharedOptions<'static> {
    SharedOptions {
        mode,
        ..SharedOptions::default()
    }
}

pub(super) fn public() -> VerifyKey {
    VerifyKey::from_pem(&repo_file("config/dev-keys/TEST-ONLY-cloudfront.pub.pem")).expect("pub")
}

/// Compares input and output line by line: equal lines are untouched; a changed line must
/// be the input line with one URI (`written`, as found) replaced by a signed URL. Returns
/// (line number, written, signed URL) for every changed line.
fn changed_lines(input: &str, output: &str, found: &[Found]) -> Vec<(u32, String, String)> {
    let (a, b): (Vec<&str>, Vec<&str>) = (
        input.split_inclusive('\n').collect(),
        output.split_inclusive('\n').collect(),
    );
    assert_eq!(a.len(), b.len(), "line count changed");
    let mut out = Vec::new();
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        if x == y {
            continue;
        }
        let line = u32::try_from(i + 1).expect("line");
        let f = found
            .iter()
            .find(|f| f.line == line)
            .unwrap_or_else(|| panic!("line {line} changed but has no URI: {x:?} -> {y:?}"));
        let at = x.find(&f.written).expect("written text on its line");
        let (prefix, suffix) = (&x[..at], &x[at + f.written.len()..]);
        assert!(
            y.starts_with(prefix) && y.ends_with(suffix),
            "line {line}: more than the URI changed: {x:?} -> {y:?}"
        );
        let signed = &y[prefix.len()..y.len() - suffix.len()];
        out.push((line, f.written.clone(), signed.to_owned()));
    }
    out
}

fn resolved(f: &Found) -> &str {
    match &f.target {
        Target::Http(r) => &r.urls[0],
        other => panic!("{}: {other:?}", f.written),
    }
}

#[test]
fn ll_hls_media_per_uri_signs_every_uri_and_nothing_else() {
    let input = fixture("handwritten/ll-hls-media.m3u8");
    for text in [input.clone(), input.replace('\n', "\r\n")] {
        let parsed = parse(&text, LIVE, DEFAULT_MAX_PLAYLIST_BYTES).expect("parse");
        assert_eq!(parsed.format, Format::HlsMedia);
        let places: Vec<&str> = parsed.found.iter().map(|f| f.place).collect();
        assert_eq!(
            places,
            [
                "EXT-X-KEY URI",
                "EXT-X-KEY URI",
                "EXT-X-MAP URI",
                "segment",
                "segment",
                "segment",
                "segment",
                "segment",
                "EXT-X-PART URI",
                "EXT-X-PART URI",
                "EXT-X-PART URI",
                "segment",
                "EXT-X-PRELOAD-HINT URI",
                "EXT-X-RENDITION-REPORT URI",
                "EXT-X-RENDITION-REPORT URI",
            ]
        );
        let out = run(&text, LIVE, mode(Mode::PerUri), None).expect("sign");
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        assert_eq!((out.uris, out.rewritten), (15, 14), "skd:// is left alone");
        assert_eq!(out.stats.signatures, 14);
        let changed = changed_lines(&text, &out.playlist, &parsed.found);
        assert_eq!(changed.len(), 14);
        let key = public();
        for (line, written, signed) in changed {
            let f = parsed.found.iter().find(|f| f.line == line).expect("found");
            let v = verify_url(&signed, &key, NOW + 1, None);
            assert!(v.valid(), "line {line} {written}: {:?}", v.problems);
            assert_eq!(v.unsigned_url, resolved(f), "line {line}");
            assert!(signed.starts_with("http"), "absolute: {signed}");
        }
        // Specific resolutions and query strings.
        let urls: Vec<&str> = parsed
            .found
            .iter()
            .filter(|f| matches!(f.target, Target::Http(_)))
            .map(resolved)
            .collect();
        assert!(urls.contains(&format!("{HOST}/hls/live/keys/k266.key?kid=266").as_str()));
        assert!(urls.contains(&format!("{HOST}/hls/shared/fileSequence268.mp4").as_str()));
        assert!(urls.contains(&format!("{HOST}/hls/1M/waitForMSN.php").as_str()));
        assert!(urls.contains(&"https://ads.example.net/ad/fileSequence270.mp4"));
        assert!(
            out.playlist
                .contains("fileSequence267.mp4?session=abc&Expires=")
        );
        assert!(out.playlist.contains(
            "#EXT-X-X-VENDOR-TAG:SOMETHING=\"kept as is\",URI=\"vendor/not-a-uri-tag.bin\""
        ));
        assert!(out.playlist.contains("URI=\"skd://key-266\""));
        assert!(out.playlist.contains("#EXT-X-BYTERANGE:4096@0"));
        // Surrounding whitespace on a URI line stays.
        assert!(
            out.playlist
                .contains("\n  https://d111111abcdef8.cloudfront.net/hls/shared/")
        );
    }
}

#[test]
fn a_byte_order_mark_and_crlf_survive() {
    let text = "\u{feff}#EXTM3U\r\n#EXT-X-TARGETDURATION:2\r\n# comment\r\n#EXTINF:2,\r\nseg 1.ts\r\n#EXT-X-ENDLIST";
    let out = run(text, LIVE, mode(Mode::PerUri), None).expect("sign");
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert!(
        out.playlist.starts_with(
            "\u{feff}#EXTM3U\r\n#EXT-X-TARGETDURATION:2\r\n# comment\r\n#EXTINF:2,\r\n"
        )
    );
    assert!(
        out.playlist
            .ends_with("&Key-Pair-Id=K2JCJMDEHXQW5F\r\n#EXT-X-ENDLIST"),
        "{}",
        out.playlist
    );
    assert!(
        out.playlist
            .contains(&format!("\r\n{HOST}/hls/live/seg%201.ts?Expires="))
    );
}

#[test]
fn master_playlists_sign_every_uri_carrying_tag() {
    let text = fixture("handwritten/ll-hls-master.m3u8");
    let parsed = parse(&text, LIVE, DEFAULT_MAX_PLAYLIST_BYTES).expect("parse");
    assert_eq!(parsed.format, Format::HlsMaster);
    let places: Vec<&str> = parsed.found.iter().map(|f| f.place).collect();
    assert_eq!(
        places,
        [
            "EXT-X-CONTENT-STEERING SERVER-URI",
            "EXT-X-SESSION-DATA URI",
            "EXT-X-SESSION-KEY URI",
            "EXT-X-MEDIA URI",
            "variant",
            "variant",
            "EXT-X-I-FRAME-STREAM-INF URI",
        ]
    );
    let out = run(&text, LIVE, mode(Mode::PerUri), None).expect("sign");
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    let changed = changed_lines(&text, &out.playlist, &parsed.found);
    assert_eq!(changed.len(), 7);
    for (_, _, signed) in &changed {
        assert!(
            verify_url(signed, &public(), NOW + 1, None).valid(),
            "{signed}"
        );
    }
    assert!(
        out.playlist
            .contains("/hls/live/4M/index.m3u8?profile=high&Expires=")
    );

    // Image (trick-play) playlists are variants too.
    let images = "#EXTM3U\n#EXT-X-IMAGE-STREAM-INF:BANDWIDTH=12000,RESOLUTION=320x180,CODECS=\"jpeg\",URI=\"images/index.m3u8\"\n";
    let parsed = parse(images, LIVE, DEFAULT_MAX_PLAYLIST_BYTES).expect("parse");
    assert_eq!(parsed.format, Format::HlsMaster);
    assert_eq!(
        resolved(&parsed.found[0]),
        format!("{HOST}/hls/live/images/index.m3u8")
    );
}

#[test]
fn shared_policy_signs_once_and_reports_what_it_does_not_cover() {
    let text = fixture("handwritten/ll-hls-media.m3u8");
    let resource = format!("{HOST}/hls/*");
    let opts = SharedOptions {
        mode: Mode::SharedPolicy,
        policy_resource: &resource,
        ..SharedOptions::default()
    };
    let out = run(&text, LIVE, opts, None).expect("sign");
    assert_eq!(out.stats.signatures, 1);
    assert_eq!(out.resource.as_deref(), Some(resource.as_str()));
    assert_eq!(out.errors.len(), 1, "{:?}", out.errors);
    let e = &out.errors[0];
    assert_eq!(e.uri, "https://ads.example.net/ad/fileSequence270.mp4");
    assert_eq!(e.line, 25);
    assert!(matches!(e.kind, UriErrorKind::NotCovered { .. }), "{e:?}");
    let parsed = parse(&text, LIVE, DEFAULT_MAX_PLAYLIST_BYTES).expect("parse");
    let changed = changed_lines(&text, &out.playlist, &parsed.found);
    assert_eq!(changed.len(), 13);
    let mut queries = std::collections::HashSet::new();
    for (_, _, signed) in &changed {
        let v = verify_url(signed, &public(), NOW + 1, None);
        assert!(v.valid(), "{signed}: {:?}", v.problems);
        assert!(v.custom);
        let query = &signed[signed.find("Policy=").expect("policy")..];
        queries.insert(query.to_owned());
    }
    assert_eq!(queries.len(), 1, "one policy and signature for all");
    let q = queries.into_iter().next().expect("query");
    let policy = q
        .strip_prefix("Policy=")
        .and_then(|p| p.split('&').next())
        .and_then(cf_base64_decode)
        .expect("policy");
    let policy = String::from_utf8(policy).expect("utf8");
    assert!(
        policy.contains(&format!("\"Resource\":\"{resource}\"")),
        "{policy}"
    );

    // The default resource is the directory of base_url.
    let out = run(&text, LIVE, mode(Mode::SharedPolicy), None).expect("sign");
    assert_eq!(
        out.resource.as_deref(),
        Some(format!("{HOST}/hls/live/*").as_str())
    );
    let outside: Vec<&str> = out.errors.iter().map(|e| e.uri.as_str()).collect();
    assert_eq!(
        outside,
        [
            "../shared/fileSequence268.mp4",
            "https://ads.example.net/ad/fileSequence270.mp4",
            "../1M/waitForMSN.php",
            "../4M/waitForMSN.php",
        ]
    );
}

#[test]
fn cookies_leave_the_playlist_unchanged() {
    let text = fixture("ffmpeg/fmp4.m3u8");
    let base = format!("{HOST}/vod/a/stream.m3u8");
    let out = run(&text, &base, mode(Mode::Cookies), None).expect("sign");
    assert_eq!(out.playlist, text);
    assert!(out.errors.is_empty());
    assert_eq!(out.stats.signatures, 1);
    let cookies = out.cookies.expect("cookies");
    let names: Vec<&str> = cookies.cookies().iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "CloudFront-Policy",
            "CloudFront-Signature",
            "CloudFront-Key-Pair-Id"
        ]
    );
    // The cookie's policy is the one SHARED_POLICY would append.
    let shared = run(&text, &base, mode(Mode::SharedPolicy), None).expect("sign");
    let policy = cookies.policy_b64.as_deref().expect("custom");
    assert!(shared.playlist.contains(&format!("Policy={policy}&")));
}

/// A second, independent HLS parser (m3u8-rs) finds the same URIs in ffmpeg's playlists.
#[test]
fn m3u8_rs_agrees_on_the_uris_of_ffmpeg_playlists() {
    for name in ["fmp4.m3u8", "aes128.m3u8", "byterange.m3u8", "master.m3u8"] {
        let text = fixture(&format!("ffmpeg/{name}"));
        let ours: Vec<String> = parse(&text, LIVE, DEFAULT_MAX_PLAYLIST_BYTES)
            .expect("parse")
            .found
            .into_iter()
            .map(|f| f.written)
            .collect();
        let mut theirs = Vec::new();
        match m3u8_rs::parse_playlist_res(text.as_bytes()).expect("m3u8-rs parses it") {
            m3u8_rs::Playlist::MasterPlaylist(m) => {
                theirs.extend(m.alternatives.iter().filter_map(|a| a.uri.clone()));
                theirs.extend(m.variants.iter().map(|v| v.uri.clone()));
            }
            m3u8_rs::Playlist::MediaPlaylist(m) => {
                for s in &m.segments {
                    theirs.extend(s.key.as_ref().and_then(|k| k.uri.clone()));
                    theirs.extend(s.map.as_ref().map(|k| k.uri.clone()));
                    theirs.push(s.uri.clone());
                }
            }
        }
        let (mut a, mut b) = (ours.clone(), theirs.clone());
        a.sort();
        a.dedup();
        b.sort();
        b.dedup();
        assert_eq!(a, b, "{name}");
        assert!(!a.is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Arbitrary edits of real playlists never panic, and whatever is not a URI survives.
    #[test]
    fn mutated_playlists_never_panic(
        which in 0usize..4,
        cut in 0usize..4000,
        insert in prop::sample::select(vec!["\"", ",", "\n", "\r\n", "#EXT-X-MAP:URI=\"", "<", "&amp;", "$", "$Number$", "URI=", "é", "\u{feff}", "</MPD>", "<BaseURL>"]),
    ) {
        let name = ["handwritten/ll-hls-media.m3u8", "handwritten/ll-hls-master.m3u8", "ffmpeg/dash-template.mpd", "ffmpeg/dash-list.mpd"][which];
        let mut text = fixture(name);
        let mut at = cut.min(text.len());
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.insert_str(at, insert);
        for m in [Mode::PerUri, Mode::SharedPolicy, Mode::Cookies] {
            if let Ok(out) = run(&text, LIVE, mode(m), None) {
                if m == Mode::Cookies {
                    prop_assert_eq!(&out.playlist, &text);
                }
                prop_assert!(out.rewritten + out.errors.len() <= out.uris);
            }
        }
    }
}
