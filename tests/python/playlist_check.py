#!/usr/bin/env python3
"""Checks a playlist cdnsign rewrote against its original, with parsers cdnsign did not
write: the `m3u8` package for HLS, `xml.etree.ElementTree` for DASH MPDs.

    playlist_check.py hls ORIGINAL REWRITTEN --base URL --public-key PEM --key-pair-id ID
    playlist_check.py mpd ORIGINAL REWRITTEN --base URL --public-key PEM --key-pair-id ID

Prints one JSON object:
  tags / tags_rewritten   HLS: the tag names of every #EXT line, in order
                          MPD: every element's name, in document order
  same_shape              everything the parser reads except URIs is equal
  uris                    [{uri, url, ok, reason}] for every URI the parser finds in the
                          rewritten playlist: `url` resolved against --base (for a DASH
                          template: the first segment's URL, identifiers substituted), `ok`
                          when CloudFront's rules (tests/python/cf_edge.py) accept it now
Exit 2 when either playlist does not parse.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urljoin

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cf_edge  # noqa: E402


def hls_tags(text: str) -> list[str]:
    return [line.strip().split(":", 1)[0] for line in text.splitlines() if line.strip().startswith("#EXT")]


def hls_uris(p) -> list[str]:
    out = []
    if p.is_variant:
        out += [x.uri for x in p.playlists]
        out += [x.uri for x in p.media if x.uri]
        out += [x.uri for x in p.iframe_playlists]
        out += [k.uri for k in p.session_keys if k and k.uri]
        out += [d.uri for d in p.session_data if d.uri]
        if p.content_steering:
            out.append(p.content_steering.uri)
    else:
        out += [k.uri for k in p.keys if k and k.uri]
        out += [m.uri for m in (p.segment_map or []) if m.uri]
        for s in p.segments:
            out += [part.uri for part in s.parts]
            out.append(s.uri)
        if p.preload_hint:
            out.append(p.preload_hint.uri)
        out += [r.uri for r in p.rendition_reports]
    return out


def hls_shape(p) -> dict:
    """What a player reads besides URIs."""
    if p.is_variant:
        return {
            "variants": [
                (x.stream_info.bandwidth, x.stream_info.resolution, x.stream_info.codecs, x.stream_info.audio)
                for x in p.playlists
            ],
            "media": [(m.type, m.group_id, m.name, m.default, bool(m.uri)) for m in p.media],
            "iframes": [(x.iframe_stream_info.bandwidth,) for x in p.iframe_playlists],
            "session_keys": [(k.method,) for k in p.session_keys],
        }
    return {
        "version": p.version,
        "target_duration": p.target_duration,
        "media_sequence": p.media_sequence,
        "endlist": p.is_endlist,
        "keys": [(k.method, k.iv, k.keyformat) if k else None for k in p.keys],
        "maps": [(m.byterange,) for m in (p.segment_map or [])],
        "segments": [
            (s.duration, s.title, s.byterange, s.discontinuity, [(pt.duration, pt.byterange) for pt in s.parts])
            for s in p.segments
        ],
        "rendition_reports": [(r.last_msn, r.last_part) for r in p.rendition_reports],
    }


def check_hls(original: str, rewritten: str, base: str):
    import m3u8

    a, b = m3u8.loads(original, uri=base), m3u8.loads(rewritten, uri=base)
    return hls_tags(original), hls_tags(rewritten), hls_shape(a) == hls_shape(b), [(u, urljoin(base, u)) for u in hls_uris(b)]


URI_ATTRS = {
    "SegmentTemplate": ("media", "initialization", "index"),
    "SegmentURL": ("media", "index"),
    "Initialization": ("sourceURL",),
    "RepresentationIndex": ("sourceURL",),
}


def local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def mpd_shape(root) -> list:
    out = []
    for el in root.iter():
        name = local(el.tag)
        uri_attrs = URI_ATTRS.get(name, ())
        attrs = [(k, None if local(k) in uri_attrs else v) for k, v in el.attrib.items()]
        text = None if name == "BaseURL" else (el.text or "").strip()
        out.append((name, attrs, text))
    return out


def expand(template: str, rep, template_el) -> str:
    def sub(m):
        ident, fmt = m.group(1), m.group(2)
        if ident == "":
            return "$"
        value = {
            "RepresentationID": rep.get("id", ""),
            "Bandwidth": rep.get("bandwidth", "0"),
            "Number": template_el.get("startNumber", "1"),
            "Time": "0",
        }.get(ident, "0")
        return ("%" + fmt[1:]) % int(value) if fmt else value

    return re.sub(r"\$(\w*)(%0\d+d)?\$", sub, template)


def check_mpd(original: str, rewritten: str, base: str):
    a, b = ET.fromstring(original.encode()), ET.fromstring(rewritten.encode())
    tags = [local(e.tag) for e in a.iter()]
    tags_b = [local(e.tag) for e in b.iter()]
    uris = []
    # Resolve through BaseURL as a player does, per Representation.
    def walk(el, base_url, rep):
        bases = [c for c in el if local(c.tag) == "BaseURL"]
        for c in bases:
            text = (c.text or "").strip()
            if not text.endswith("/"):
                uris.append((text, urljoin(base_url, text)))
        if bases:
            base_url = urljoin(base_url, (bases[0].text or "").strip())
        if local(el.tag) == "Representation":
            rep = el
        for c in el:
            name = local(c.tag)
            for attr in URI_ATTRS.get(name, ()):
                if attr in c.attrib:
                    value = c.attrib[attr]
                    concrete = expand(value, rep if rep is not None else c, c) if name == "SegmentTemplate" else value
                    uris.append((value, urljoin(base_url, concrete)))
            if name != "BaseURL":
                walk(c, base_url, rep)

    walk(b, base, None)
    return tags, tags_b, mpd_shape(a) == mpd_shape(b), uris


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["hls", "mpd"])
    ap.add_argument("original")
    ap.add_argument("rewritten")
    ap.add_argument("--base", required=True)
    ap.add_argument("--public-key", required=True)
    ap.add_argument("--key-pair-id", required=True)
    args = ap.parse_args()
    original = Path(args.original).read_text()
    rewritten = Path(args.rewritten).read_text()
    try:
        fn = check_hls if args.kind == "hls" else check_mpd
        tags, tags_b, same, uris = fn(original, rewritten, args.base)
    except Exception as e:  # noqa: BLE001 - report a parse failure as data
        print(json.dumps({"error": "%s: %s" % (type(e).__name__, e)}))
        return 2
    key = cf_edge.load_public_key(args.public_key)
    now = int(time.time())
    checked = []
    for uri, url in uris:
        reason = cf_edge.check(url, {}, key, args.key_pair_id, now, "127.0.0.1") if url.startswith("http") else "not http"
        checked.append({"uri": uri, "url": url, "ok": reason is None, "reason": reason})
    print(json.dumps({"tags": tags, "tags_rewritten": tags_b, "same_shape": same, "uris": checked}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
