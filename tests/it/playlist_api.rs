//! `Signer/SignPlaylist` over a real socket: playlists written by ffmpeg and by hand,
//! checked by parsers cdnsign did not write (Python `m3u8`, ElementTree) and by
//! CloudFront's rules implemented in Python; modes, limits, grants, the rate limit.

use cdnsign::proto::item_error::Code as ItemCode;
use cdnsign::proto::sign_playlist_response::Format;
use cdnsign::proto::{CookieAttributes, PlaylistMode};
use cdnsign::signing::verify::{VerifyKey, verify_url};
use tonic::Code;

use crate::common::{KEY_ID, repo, start, test_config};
use crate::playlist_support::{HOST, TOKEN, check, client, fixture, granted_config, request};

fn verify_key() -> VerifyKey {
    VerifyKey::from_pem(
        &std::fs::read_to_string(repo("config/dev-keys/TEST-ONLY-cloudfront.pub.pem"))
            .expect("pub"),
    )
    .expect("pub key")
}

fn now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs(),
    )
    .expect("time")
}

/// Every fixture, signed in the mode it supports: the rewritten playlist parses with
/// Python's m3u8 / ElementTree, has the same tags in the same order and the same
/// everything-but-URIs, and every URI the parser finds passes CloudFront's rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_playlists_stay_the_same_for_an_independent_parser() {
    let server = start(test_config("", "")).await;
    let mut c = client(&server.url()).await;
    let dir = tempfile::tempdir().expect("tmp");
    // (fixture, checker, mode, format, URIs rewritten, signatures: one per distinct URL
    // in PER_URI, so byte ranges of one file and a URI listed twice share one).
    let cases = [
        (
            "ffmpeg/fmp4.m3u8",
            "hls",
            PlaylistMode::PerUri,
            Format::HlsMedia,
            4,
            4,
        ),
        (
            "ffmpeg/aes128.m3u8",
            "hls",
            PlaylistMode::PerUri,
            Format::HlsMedia,
            4,
            4,
        ),
        (
            "ffmpeg/byterange.m3u8",
            "hls",
            PlaylistMode::PerUri,
            Format::HlsMedia,
            3,
            1,
        ),
        (
            "ffmpeg/master.m3u8",
            "hls",
            PlaylistMode::PerUri,
            Format::HlsMaster,
            4,
            3,
        ),
        (
            "ffmpeg/fmp4.m3u8",
            "hls",
            PlaylistMode::SharedPolicy,
            Format::HlsMedia,
            4,
            1,
        ),
        (
            "handwritten/ll-hls-media.m3u8",
            "hls",
            PlaylistMode::PerUri,
            Format::HlsMedia,
            14,
            14,
        ),
        (
            "handwritten/ll-hls-master.m3u8",
            "hls",
            PlaylistMode::PerUri,
            Format::HlsMaster,
            7,
            7,
        ),
        (
            "ffmpeg/dash-list.mpd",
            "mpd",
            PlaylistMode::PerUri,
            Format::Dash,
            4,
            4,
        ),
        (
            "ffmpeg/dash-template.mpd",
            "mpd",
            PlaylistMode::SharedPolicy,
            Format::Dash,
            4,
            1,
        ),
    ];
    for (name, kind, mode, format, rewritten, signatures) in cases {
        let text = fixture(name);
        let base = format!("{HOST}/hls/live/stream.m3u8");
        let resp = c
            .sign_playlist(request(&text, &base, mode, None))
            .await
            .unwrap_or_else(|s| panic!("{name}: {s}"))
            .into_inner();
        assert!(resp.errors.is_empty(), "{name}: {:?}", resp.errors);
        assert_eq!(resp.format, i32::from(format), "{name}");
        assert_eq!(
            (resp.rewritten, resp.signatures),
            (rewritten, signatures),
            "{name}"
        );
        assert_eq!(resp.key_id, KEY_ID);
        let checked = check(kind, &text, &resp.playlist, &base, dir.path());
        assert_eq!(checked.tags, checked.tags_rewritten, "{name}: tags changed");
        assert!(!checked.tags.is_empty(), "{name}");
        assert!(
            checked.same_shape,
            "{name}: the parser reads something else"
        );
        let http: Vec<_> = checked
            .uris
            .iter()
            .filter(|u| u.url.starts_with("http"))
            .collect();
        assert!(!http.is_empty(), "{name}");
        for u in http {
            assert!(
                u.ok,
                "{name}: {} ({}) refused: {:?}",
                u.uri, u.url, u.reason
            );
        }
        // The unsigned playlist fails the same rules.
        let unsigned = check(kind, &text, &text, &base, dir.path());
        assert!(
            unsigned.uris.iter().all(|u| !u.ok),
            "{name}: an unsigned URI passed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_policy_on_10000_segments_uses_one_signature() {
    let server = start(test_config("", "")).await;
    let mut c = client(&server.url()).await;
    let mut text = String::from("#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-PLAYLIST-TYPE:VOD\n");
    for i in 0..10_000 {
        text.push_str(&format!("#EXTINF:4.0,\nseg-{i:05}.ts\n"));
    }
    text.push_str("#EXT-X-ENDLIST\n");
    let base = format!("{HOST}/hls/big/index.m3u8");
    let resp = c
        .sign_playlist(request(&text, &base, PlaylistMode::SharedPolicy, None))
        .await
        .expect("sign")
        .into_inner();
    assert_eq!(resp.signatures, 1);
    assert_eq!((resp.uris, resp.rewritten), (10_000, 10_000));
    assert!(resp.errors.is_empty());
    assert_eq!(resp.policy_resource, format!("{HOST}/hls/big/*"));
    let key = verify_key();
    let t = now();
    let urls: Vec<&str> = resp
        .playlist
        .lines()
        .filter(|l| l.starts_with("https://"))
        .collect();
    assert_eq!(urls.len(), 10_000);
    for (i, u) in urls.iter().enumerate() {
        assert!(
            u.starts_with(&format!("{HOST}/hls/big/seg-{i:05}.ts?Policy=")),
            "{u}"
        );
        let v = verify_url(u, &key, t, None);
        assert!(v.valid(), "{u}: {:?}", v.problems);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_mode_returns_the_playlist_unchanged_and_cookies() {
    let server = start(test_config("", "")).await;
    let mut c = client(&server.url()).await;
    let text = fixture("ffmpeg/dash-template.mpd");
    let mut req = request(
        &text,
        &format!("{HOST}/dash/a/manifest.mpd"),
        PlaylistMode::Cookies,
        None,
    );
    req.get_mut().attributes = Some(CookieAttributes {
        domain: "d111111abcdef8.cloudfront.net".into(),
        path: "/dash/a/".into(),
        secure: true,
        ..CookieAttributes::default()
    });
    let resp = c.sign_playlist(req).await.expect("sign").into_inner();
    assert_eq!(resp.playlist, text);
    assert_eq!((resp.signatures, resp.rewritten, resp.uris), (1, 0, 4));
    let set = resp.cookies.expect("cookies");
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
            .ends_with("; Domain=d111111abcdef8.cloudfront.net; Path=/dash/a/; Secure"),
        "{:?}",
        set.set_cookie_headers
    );
    // The cookies verify for a segment under the policy, over gRPC as on-call would.
    let resp = c
        .verify_cookies(cdnsign::proto::VerifyCookiesRequest {
            items: vec![cdnsign::proto::CookieCheck {
                url: format!("{HOST}/dash/a/chunk-stream0-00001.m4s"),
                cookies: set.cookies.clone(),
                cookie_header: String::new(),
            }],
            ..Default::default()
        })
        .await
        .expect("verify")
        .into_inner();
    assert!(resp.results[0].valid, "{:?}", resp.results[0].problems);
    assert_eq!(resp.results[0].resource, format!("{HOST}/dash/a/*"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_request_errors_name_the_limit_or_the_fix() {
    let server = start(test_config("max_playlist_bytes = 2000\nmax_batch = 5", "")).await;
    let mut c = client(&server.url()).await;
    let base = format!("{HOST}/hls/a/stream.m3u8");
    let expect = |r: Result<tonic::Response<_>, tonic::Status>, needle: &str| {
        let s = r
            .map(|_: tonic::Response<cdnsign::proto::SignPlaylistResponse>| ())
            .expect_err(needle);
        assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
        assert!(s.message().contains(needle), "{needle}: {}", s.message());
    };
    let big = format!("#EXTM3U\n#{}\n", "x".repeat(3000));
    expect(
        c.sign_playlist(request(&big, &base, PlaylistMode::PerUri, None))
            .await,
        "3010 bytes exceeds the signing.max_playlist_bytes limit of 2000",
    );
    // The refusal names the field in a google.rpc.BadRequest detail too.
    let s = c
        .sign_playlist(request(&big, &base, PlaylistMode::PerUri, None))
        .await
        .expect_err("too large");
    let bad = tonic_types::StatusExt::get_error_details(&s)
        .bad_request()
        .cloned()
        .expect("BadRequest detail");
    assert_eq!(bad.field_violations[0].field, "playlist");
    let six = (0..6).fold(String::from("#EXTM3U\n"), |t, i| {
        t + &format!("#EXTINF:1,\ns{i}.ts\n")
    });
    expect(
        c.sign_playlist(request(&six, &base, PlaylistMode::SharedPolicy, None))
            .await,
        "6 URIs exceeds the signing.max_batch limit of 5",
    );
    // Two URIs for three Representations each: 6 URLs over the limit of 5, refused
    // before they are resolved (URIs times Representations is what a small MPD can make).
    let mpd = "<?xml version=\"1.0\"?>\n<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\"><Period><AdaptationSet>\
        <SegmentList><SegmentURL media=\"a.m4s\"/><SegmentURL media=\"b.m4s\"/></SegmentList>\
        <Representation id=\"1\"><BaseURL>1/</BaseURL></Representation>\
        <Representation id=\"2\"><BaseURL>2/</BaseURL></Representation>\
        <Representation id=\"3\"><BaseURL>3/</BaseURL></Representation>\
        </AdaptationSet></Period></MPD>\n";
    expect(
        c.sign_playlist(request(mpd, &base, PlaylistMode::SharedPolicy, None))
            .await,
        "to more than 5 URLs (the signing.max_batch limit)",
    );
    let template = fixture("ffmpeg/dash-template.mpd");
    expect(
        c.sign_playlist(request(&template, &base, PlaylistMode::PerUri, None))
            .await,
        "use SHARED_POLICY or COOKIES",
    );
    expect(
        c.sign_playlist(request("hello", &base, PlaylistMode::PerUri, None))
            .await,
        "neither an HLS playlist",
    );
    expect(
        c.sign_playlist(request(
            "#EXTM3U\n",
            "stream.m3u8",
            PlaylistMode::PerUri,
            None,
        ))
        .await,
        "base_url: ",
    );
    let mut no_expiry = request(
        &fixture("ffmpeg/fmp4.m3u8"),
        &base,
        PlaylistMode::PerUri,
        None,
    );
    no_expiry.get_mut().ttl_seconds = 0;
    expect(c.sign_playlist(no_expiry).await, "expires_at: no expiry");
    let mut bad_mode = request("#EXTM3U\n", &base, PlaylistMode::PerUri, None);
    bad_mode.get_mut().mode = 9;
    expect(c.sign_playlist(bad_mode).await, "mode: 9 is not");
    // Under the limits, a playlist of 5 works.
    let five = (0..5).fold(String::from("#EXTM3U\n"), |t, i| {
        t + &format!("#EXTINF:1,\ns{i}.ts\n")
    });
    let ok = c
        .sign_playlist(request(&five, &base, PlaylistMode::PerUri, None))
        .await
        .expect("five")
        .into_inner();
    assert_eq!((ok.rewritten, ok.signatures), (5, 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_limit_every_uri_and_the_rate_counts_uris() {
    let prefix = format!("{HOST}/hls/live/");
    let server = start(granted_config(
        &prefix,
        "",
        "urls_per_second = 1\nurls_burst = 20",
    ))
    .await;
    let mut c = client(&server.url()).await;
    let text = fixture("handwritten/ll-hls-media.m3u8");
    let base = format!("{HOST}/hls/live/stream.m3u8");
    let refused = c
        .sign_playlist(request(&text, &base, PlaylistMode::PerUri, None))
        .await
        .expect_err("no identity");
    assert_eq!(refused.code(), Code::Unauthenticated);

    let resp = c
        .sign_playlist(request(&text, &base, PlaylistMode::PerUri, Some(TOKEN)))
        .await
        .expect("sign")
        .into_inner();
    let denied: Vec<(u32, &str)> = resp
        .errors
        .iter()
        .map(|e| {
            assert_eq!(e.code, i32::from(ItemCode::PermissionDenied), "{e:?}");
            assert!(
                e.message.contains("outside client \"hls-packager\""),
                "{e:?}"
            );
            (e.line, e.uri.as_str())
        })
        .collect();
    assert_eq!(
        denied,
        [
            (21, "../shared/fileSequence268.mp4"),
            (25, "https://ads.example.net/ad/fileSequence270.mp4"),
            (32, "../1M/waitForMSN.php"),
            (33, "../4M/waitForMSN.php"),
        ]
    );
    assert_eq!(resp.rewritten, 10);
    assert!(
        resp.playlist
            .contains("\nhttps://ads.example.net/ad/fileSequence270.mp4\n")
    );

    // 15 URIs were charged from a burst of 20: another 15 are refused before any work.
    let limited = c
        .sign_playlist(request(&text, &base, PlaylistMode::PerUri, Some(TOKEN)))
        .await
        .expect_err("rate limited");
    assert_eq!(limited.code(), Code::ResourceExhausted, "{limited:?}");
    assert!(
        limited.message().contains("rate limit of 1 per second"),
        "{}",
        limited.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_resource_outside_the_grant_refuses_the_playlist() {
    let prefix = format!("{HOST}/hls/live/");
    let server = start(granted_config(&prefix, "", "")).await;
    let mut c = client(&server.url()).await;
    let text = fixture("ffmpeg/fmp4.m3u8");
    let base = format!("{HOST}/hls/live/stream.m3u8");
    let mut req = request(&text, &base, PlaylistMode::SharedPolicy, Some(TOKEN));
    req.get_mut().policy_resource = format!("{HOST}/hls/*");
    let s = c.sign_playlist(req).await.expect_err("outside");
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert!(
        s.message()
            .starts_with("shared policy: policy_resource: permission denied"),
        "{}",
        s.message()
    );
    // Inside the grant it signs once.
    let resp = c
        .sign_playlist(request(
            &text,
            &base,
            PlaylistMode::SharedPolicy,
            Some(TOKEN),
        ))
        .await
        .expect("inside")
        .into_inner();
    assert_eq!((resp.signatures, resp.rewritten), (1, 4));
}

/// HLS variables: a URI is signed as the player will fetch it, `{$name}` replaced by its
/// `EXT-X-DEFINE` value (the signed URL verifies for the replaced path); a reference whose
/// value only the player knows (`QUERYPARAM`) is a per-URI error naming it, not a signature
/// over text the player would change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_variables_are_replaced_before_signing_or_refused_per_uri() {
    let server = start(test_config("", "")).await;
    let mut c = client(&server.url()).await;
    let text = "#EXTM3U\n#EXT-X-VERSION:8\n#EXT-X-TARGETDURATION:4\n\
                #EXT-X-DEFINE:NAME=\"res\",VALUE=\"720p\"\n#EXT-X-DEFINE:QUERYPARAM=\"token\"\n\
                #EXTINF:4,\n{$res}/seg1.ts\n#EXTINF:4,\nseg2.ts?t={$token}\n#EXTINF:4,\nseg3.ts\n";
    let base = format!("{HOST}/hls/a/stream.m3u8");
    let resp = c
        .sign_playlist(request(text, &base, PlaylistMode::PerUri, None))
        .await
        .expect("sign")
        .into_inner();
    assert_eq!((resp.uris, resp.rewritten), (3, 2), "{:?}", resp.errors);
    assert_eq!(resp.errors.len(), 1, "{:?}", resp.errors);
    let e = &resp.errors[0];
    assert_eq!((e.line, e.uri.as_str()), (9, "seg2.ts?t={$token}"));
    assert_eq!(e.code(), ItemCode::InvalidArgument);
    assert!(e.message.contains("{$token}"), "{}", e.message);
    let signed = resp
        .playlist
        .lines()
        .find(|l| l.contains("/720p/seg1.ts?"))
        .expect("the replaced URI, signed");
    assert!(!signed.contains("{$"), "{signed}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let v = verify_url(signed, &verify_key(), now, None);
    assert!(v.valid(), "{signed}: {:?}", v.problems);
    assert!(
        resp.playlist.contains("seg2.ts?t={$token}\n"),
        "left as written"
    );
}
