//! Playlist requests that go wrong: grants applied to every URI and to the shared policy,
//! limits and malformed input (whole-request errors), and broken URIs (per-URI errors).

use std::sync::Arc;

use super::tests::{HOST, LIVE, ctx, fixture, grant, keys, mode, run};
use super::*;
use crate::signing::pool::{SigningPool, Site};

#[test]
fn grants_apply_to_every_uri_and_to_the_policy() {
    let text = fixture("handwritten/ll-hls-media.m3u8");
    let g = grant(&format!("{HOST}/hls/live/"));
    let out = run(&text, LIVE, mode(Mode::PerUri), Some(Arc::clone(&g))).expect("sign");
    let denied: Vec<&str> = out
        .errors
        .iter()
        .filter(|e| matches!(e.kind, UriErrorKind::Sign(SignError::Denied { .. })))
        .map(|e| e.uri.as_str())
        .collect();
    assert_eq!(denied.len(), out.errors.len(), "{:?}", out.errors);
    assert_eq!(
        denied,
        [
            "../shared/fileSequence268.mp4",
            "https://ads.example.net/ad/fileSequence270.mp4",
            "../1M/waitForMSN.php",
            "../4M/waitForMSN.php",
        ]
    );
    // Refused URIs stay as written.
    assert!(
        out.playlist
            .contains("\nhttps://ads.example.net/ad/fileSequence270.mp4\n")
    );
    // A shared resource outside the grant refuses the whole playlist.
    let wide = format!("{HOST}/*");
    let opts = SharedOptions {
        mode: Mode::SharedPolicy,
        policy_resource: &wide,
        ..SharedOptions::default()
    };
    let e = run(&text, LIVE, opts, Some(g)).expect_err("outside the grant");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    assert!(e.to_string().starts_with("shared policy: "), "{e}");
}

#[test]
fn limits_and_malformed_input_are_whole_request_errors() {
    let text = fixture("ffmpeg/fmp4.m3u8");
    let e = parse(&text, LIVE, 100).expect_err("too large");
    assert!(
        e.to_string()
            .contains("signing.max_playlist_bytes limit of 100"),
        "{e}"
    );
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    for (bad, needle) in [
        ("hello", "neither an HLS playlist"),
        (
            "#EXTM3U\n#EXTINF:1,\na.ts\n#EXT-X-STREAM-INF:BANDWIDTH=1\nb.m3u8\n",
            "both master",
        ),
        ("<MPD><Period></MPD>", "XML"),
        ("<?xml version=\"1.0\"?><MPD><Period>", "ends inside"),
    ] {
        let e = parse(bad, LIVE, 1 << 20).expect_err(bad);
        assert!(e.to_string().contains(needle), "{bad:?}: {e}");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }
    let e = parse(&text, "hls/stream.m3u8", 1 << 20).expect_err("relative base");
    assert!(e.to_string().starts_with("base_url: "), "{e}");
    let opts = SharedOptions {
        mode: Mode::PerUri,
        policy_resource: "https://d/*",
        ..SharedOptions::default()
    };
    let e = run(&text, LIVE, opts, None).expect_err("resource with PER_URI");
    assert!(e.to_string().starts_with("policy_resource: "), "{e}");
}

#[test]
fn request_wide_problems_fail_the_call_not_every_uri() {
    let text = fixture("ffmpeg/fmp4.m3u8");
    let keys = keys();
    let parsed = parse(&text, LIVE, DEFAULT_MAX_PLAYLIST_BYTES).expect("parse");
    let pool = SigningPool::new(1).expect("pool");
    let check = |ctx: &BatchContext, ip: &str| {
        let opts = SharedOptions {
            ip_range: ip,
            ..mode(Mode::PerUri)
        };
        pool.run_blocking(|p| sign(&text, &parsed, &opts, ctx, &keys, Site::Pool(p)))
    };
    let no_expiry = BatchContext {
        ttl_seconds: 0,
        ..ctx(&keys, None)
    };
    let e = check(&no_expiry, "").expect_err("no expiry");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.to_string().starts_with("expires_at: no expiry"), "{e}");
    let unknown = BatchContext {
        default_key: None,
        default_key_id: "KNOPE".into(),
        ..ctx(&keys, None)
    };
    let e = check(&unknown, "").expect_err("unknown key");
    assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
    let e = check(&ctx(&keys, None), "300.1.2.3").expect_err("bad ip");
    assert!(e.to_string().starts_with("ip_range: "), "{e}");
    // A grant that covers the segments but not the playlist's own URL is no refusal.
    let g = grant(&format!("{HOST}/hls/live/seg"));
    let out = run(
        &text.replace("seg_", "seg/"),
        LIVE,
        mode(Mode::PerUri),
        Some(g),
    )
    .expect("sign");
    assert_eq!(out.errors.len(), 1, "init.mp4 is outside: {:?}", out.errors);
    assert_eq!(out.rewritten, 3);
    // The same for a shared policy: the grant judges the resource, not base_url.
    let resource = format!("{HOST}/hls/live/seg/*");
    let opts = SharedOptions {
        mode: Mode::SharedPolicy,
        policy_resource: &resource,
        ..SharedOptions::default()
    };
    let g = grant(&format!("{HOST}/hls/live/seg"));
    let out = run(&text.replace("seg_", "seg/"), LIVE, opts, Some(g)).expect("shared");
    assert_eq!((out.rewritten, out.stats.signatures), (3, 1));
}

#[test]
fn broken_uris_are_per_uri_errors() {
    let text = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MAP:URI=init.mp4\n\
                #EXT-X-KEY:METHOD=AES-128,URI=\"k.key\n#EXTINF:1,\nseg#1.ts\n#EXTINF:1,\nok.ts\n";
    let out = run(text, LIVE, mode(Mode::PerUri), None).expect("sign");
    let lines: Vec<u32> = out.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, [3, 4, 6], "{:?}", out.errors);
    assert_eq!(out.rewritten, 1);
    assert!(out.errors[0].kind.to_string().contains("quoted-string"));
    assert!(out.errors[2].kind.to_string().contains("fragment"));
}

/// An AdaptationSet's SegmentList stands for one URL per Representation: a small MPD with
/// many of both would make URIs times Representations URLs. Past the limit it is refused
/// before they are made; at the limit it reads.
#[test]
fn a_dash_mpd_resolving_to_more_urls_than_the_limit_is_refused() {
    let mpd = |segments: usize, reps: usize| {
        let mut t = String::from(
            "<?xml version=\"1.0\"?>\n<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\">\n<Period>\n<AdaptationSet>\n<SegmentList>\n",
        );
        for i in 0..segments {
            t.push_str(&format!("<SegmentURL media=\"seg-{i}.m4s\"/>\n"));
        }
        t.push_str("</SegmentList>\n");
        for r in 0..reps {
            t.push_str(&format!(
                "<Representation id=\"{r}\"><BaseURL>r{r}/</BaseURL></Representation>\n"
            ));
        }
        t.push_str("</AdaptationSet>\n</Period>\n</MPD>\n");
        t
    };
    let base = "https://d111111abcdef8.cloudfront.net/dash/manifest.mpd";
    let text = mpd(20, 50);
    let e = parse_bounded(&text, base, 1 << 20, 999).expect_err("1,000 URLs over 999");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.to_string()
            .contains("more than 999 URLs (the signing.max_batch limit)"),
        "{e}"
    );
    // More Representations under one URI than the limit: refused before resolving it.
    let e = parse_bounded(&mpd(1, 50), base, 1 << 20, 10).expect_err("50 over 10");
    assert!(matches!(e, PlaylistError::TooManyUrls { max: 10 }), "{e}");
    let parsed = parse_bounded(&text, base, 1 << 20, 1_000).expect("1,000 URLs at 1,000");
    assert_eq!(parsed.uri_count(), 20);
    let urls: usize = parsed
        .found
        .iter()
        .map(|f| match &f.target {
            Target::Http(r) => r.urls.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(urls, 1_000);
}
