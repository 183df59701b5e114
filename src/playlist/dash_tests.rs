//! DASH MPDs: templates, SegmentLists, the BaseURL hierarchy, signed with the TEST ONLY
//! key and read back with quick-xml.

use super::tests::{HOST, NOW, fixture, mode, public, run};
use super::*;
use crate::signing::verify::verify_url;

#[test]
fn dash_templates_need_a_shared_policy() {
    let text = fixture("ffmpeg/dash-template.mpd");
    let base = format!("{HOST}/dash/a/manifest.mpd");
    let e = run(&text, &base, mode(Mode::PerUri), None).expect_err("per segment");
    let msg = e.to_string();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        msg.contains("SHARED_POLICY") && msg.contains("COOKIES") && msg.contains("$Number"),
        "{msg}"
    );
    let out = run(&text, &base, mode(Mode::SharedPolicy), None).expect("sign");
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert_eq!((out.uris, out.rewritten, out.stats.signatures), (4, 4, 1));
    assert!(out.playlist.contains(&format!(
        "media=\"{HOST}/dash/a/chunk-stream$RepresentationID$-$Number%05d$.m4s?Policy="
    )));
    assert!(out.playlist.contains("&amp;Signature="));
    assert!(!out.playlist.contains("&Signature="), "escaped in XML");
    // Only attribute values changed: without them the documents are equal.
    let parsed = parse(&text, &base, DEFAULT_MAX_PLAYLIST_BYTES).expect("parse");
    assert_eq!(strip_values(&out.playlist), strip_values(&text));
    assert_eq!(parsed.format, Format::Dash);
}

/// The MPD with every `media="..."` / `initialization="..."` value emptied.
pub(super) fn strip_values(mpd: &str) -> String {
    let mut out = String::new();
    let mut rest = mpd;
    while let Some(i) = ["media=\"", "initialization=\"", "sourceURL=\""]
        .iter()
        .filter_map(|a| rest.find(a).map(|i| i + a.len()))
        .min()
    {
        out.push_str(&rest[..i]);
        let end = rest[i..].find('"').expect("closing quote");
        rest = &rest[i + end..];
    }
    out.push_str(rest);
    out
}

#[test]
fn dash_segment_lists_sign_per_uri() {
    let text = fixture("ffmpeg/dash-list.mpd");
    let base = format!("{HOST}/dash/l/manifest.mpd");
    let out = run(&text, &base, mode(Mode::PerUri), None).expect("sign");
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert_eq!((out.uris, out.rewritten, out.stats.signatures), (4, 4, 4));
    let mut reader = quick_xml::Reader::from_str(&out.playlist);
    let mut urls = Vec::new();
    loop {
        match reader.read_event().expect("well-formed output") {
            quick_xml::events::Event::Eof => break,
            quick_xml::events::Event::Empty(e) => {
                for a in e.attributes().flatten() {
                    if matches!(a.key.local_name().as_ref(), "media" | "sourceURL") {
                        urls.push(
                            quick_xml::escape::unescape(&a.value)
                                .expect("value")
                                .into_owned(),
                        );
                    }
                }
            }
            _ => {}
        }
    }
    assert_eq!(urls.len(), 4);
    for u in &urls {
        let v = verify_url(u, &public(), NOW + 1, None);
        assert!(v.valid(), "{u}: {:?}", v.problems);
        assert!(
            v.unsigned_url.starts_with(&format!("{HOST}/dash/l/")),
            "{u}"
        );
    }
    assert_eq!(strip_values(&out.playlist), strip_values(&text));
}

const HIERARCHY: &str = r#"<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static">
  <BaseURL>https://d111111abcdef8.cloudfront.net/dash/h/</BaseURL>
  <Period>
    <AdaptationSet>
      <SegmentTemplate initialization="init.mp4" media="seg-$Number$.m4s?a=1&amp;b=2"/>
      <Representation id="720"><BaseURL>720p/</BaseURL></Representation>
      <Representation id="1080"><BaseURL>1080p/</BaseURL></Representation>
    </AdaptationSet>
    <AdaptationSet>
      <Representation id="audio">
        <!-- a comment -->
        <BaseURL>audio/en.mp4</BaseURL>
        <SegmentBase indexRange="0-100"/>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>
"#;

#[test]
fn dash_base_urls_resolve_hierarchically() {
    let base = "https://elsewhere.example/manifest.mpd";
    let parsed = parse(HIERARCHY, base, DEFAULT_MAX_PLAYLIST_BYTES).expect("parse");
    let summary: Vec<(&str, Vec<String>)> = parsed
        .found
        .iter()
        .map(|f| match &f.target {
            Target::Http(r) => (f.place, r.urls.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    let h = format!("{HOST}/dash/h");
    assert_eq!(
        summary,
        [
            (
                "SegmentTemplate@initialization",
                vec![format!("{h}/720p/init.mp4"), format!("{h}/1080p/init.mp4")]
            ),
            (
                "SegmentTemplate@media",
                vec![
                    format!("{h}/720p/seg-$Number$.m4s?a=1&b=2"),
                    format!("{h}/1080p/seg-$Number$.m4s?a=1&b=2")
                ]
            ),
            ("BaseURL", vec![format!("{h}/audio/en.mp4")]),
        ]
    );
    // SHARED_POLICY keeps a URI that resolves per Representation relative.
    let out = run(HIERARCHY, base, mode(Mode::Cookies), None).expect("cookies");
    assert_eq!(out.playlist, HIERARCHY);
    let resource = format!("{h}/*");
    let opts = SharedOptions {
        mode: Mode::SharedPolicy,
        policy_resource: &resource,
        ..SharedOptions::default()
    };
    let out = run(HIERARCHY, base, opts, None).expect("shared");
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert!(out.playlist.contains("initialization=\"init.mp4?Policy="));
    assert!(
        out.playlist
            .contains("media=\"seg-$Number$.m4s?a=1&amp;b=2&amp;Policy=")
    );
    assert!(
        out.playlist
            .contains(&format!("<BaseURL>{h}/audio/en.mp4?Policy="))
    );
    assert!(
        out.playlist.contains("<BaseURL>720p/</BaseURL>"),
        "directories stay"
    );
}

#[test]
fn per_uri_refuses_uris_that_stand_for_several_urls() {
    let mpd = HIERARCHY.replace("seg-$Number$.m4s", "seg-$RepresentationID$.m4s");
    let out = run(
        &mpd,
        "https://elsewhere.example/m.mpd",
        mode(Mode::PerUri),
        None,
    )
    .expect("sign");
    let errors: Vec<(u32, String)> = out
        .errors
        .iter()
        .map(|e| (e.line, e.kind.to_string()))
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0].0, 6);
    assert!(
        errors[0].1.contains("resolves to 2 different URLs"),
        "{errors:?}"
    );
    assert!(
        errors[1].1.contains("expand per Representation"),
        "{errors:?}"
    );
    assert!(
        errors[1].1.ends_with("use SHARED_POLICY or COOKIES"),
        "{errors:?}"
    );
    // The single-file BaseURL is signed.
    assert_eq!(out.rewritten, 1);
    assert!(out.playlist.contains("/dash/h/audio/en.mp4?Expires="));
}
