//! Playlist reader and rewriter: `playlist::parse_bounded` (HLS line scanner, DASH via quick-xml),
//! `Parsed::check_mode`, `Plan::new` (with and without the fuzz client's grant) and
//! `Plan::finish` with stand-in signed items (no crypto: this target is about text).
//!
//! Input: the first byte picks the mode and base URL, the rest is the playlist (UTF-8,
//! invalid sequences become U+FFFD).
//!
//! Invariants: never panics; every URI's span lies inside the text on character
//! boundaries, in order and without overlap, and holds exactly the URI as written (XML
//! entities decoded in an MPD); `COOKIES` returns the text unchanged; a rewritten playlist
//! keeps its line count and reads again with the same URIs on the same lines.
#![no_main]

use std::sync::Arc;

use cdnsign::playlist::{self, Escape, Mode, Plan, SharedOptions, Target};
use cdnsign::signing::SignedItem;
use cdnsign_fuzz::{KEY_SHA1, grant, keys};
use libfuzzer_sys::fuzz_target;

const BASES: [&str; 4] = [
    "https://d111111abcdef8.cloudfront.net/hls/live/stream.m3u8",
    "https://d111111abcdef8.cloudfront.net/hls/",
    "http://cdn.example.com:8080/a/b/manifest.mpd?token=1",
    "https://[2001:db8::1]/v/x.m3u8",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let base = BASES[usize::from(selector & 3)];
    let mode = [Mode::PerUri, Mode::SharedPolicy, Mode::Cookies][usize::from(selector >> 2) % 3];
    let Ok(parsed) = playlist::parse_bounded(&text, base, 1 << 20, 10_000) else {
        return;
    };
    let mut at = 0;
    for f in &parsed.found {
        assert!(f.span.start >= at && f.span.start <= f.span.end && f.span.end <= text.len());
        assert!(text.is_char_boundary(f.span.start) && text.is_char_boundary(f.span.end));
        at = f.span.end;
        let raw = &text[f.span.clone()];
        if !matches!(f.target, Target::Broken(_)) {
            match f.escape {
                Escape::None => assert_eq!(raw, f.written),
                Escape::Xml => assert_eq!(
                    quick_xml::escape::unescape(raw)
                        .map(|c| c.into_owned())
                        .ok()
                        .as_deref(),
                    Some(f.written.as_str())
                ),
            }
        }
    }
    if parsed.check_mode(mode).is_err() {
        return;
    }
    let opts = SharedOptions {
        mode,
        ..SharedOptions::default()
    };
    let key = keys().get(KEY_SHA1).expect("key");
    for g in [None, Some(grant())] {
        let Ok(plan) = Plan::new(&parsed, &opts, g.as_deref()) else {
            continue;
        };
        // Stand-ins for signed items: the rewriter only needs their text.
        let results = plan
            .specs()
            .iter()
            .map(|s| {
                Ok(SignedItem {
                    url: s.url.to_owned(),
                    expires: 1_767_225_600,
                    key: Arc::clone(&key),
                    policy_b64: mode.shared().then(|| Arc::from("eyJTdGF0ZW1lbnQiOltdfQ__")),
                    signature_b64: Arc::from("c2lnbmF0dXJl"),
                })
            })
            .collect();
        let Ok(out) = plan.finish(&text, results, Default::default()) else {
            continue;
        };
        if mode == Mode::Cookies {
            assert_eq!(out.playlist, text);
            continue;
        }
        assert_eq!(out.playlist.lines().count(), text.lines().count());
        let again =
            playlist::parse(&out.playlist, base, usize::MAX).expect("the rewritten playlist reads");
        let lines = |p: &playlist::Parsed| p.found.iter().map(|f| f.line).collect::<Vec<_>>();
        assert_eq!(lines(&again), lines(&parsed));
    }
});
