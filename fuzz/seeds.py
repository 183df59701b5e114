#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ from the repository's fixtures.

    python3 fuzz/seeds.py      # from anywhere; rewrites the seed files it owns

Seeds come from tests/fixtures/cloudfront_vectors.json (botocore vectors), the config
files under config/, the playlists under tests/fixtures/playlists/, and a few
hand-written edge cases. The request seeds are protobuf
`cdnsign.v1.SignUrlsRequest` messages encoded here by hand (wire format: tag, varint,
length-delimited strings), so no protobuf package is needed. Standard library only.
"""

import base64
import hashlib
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
KEY = "K2JCJMDEHXQW5F"
KEY_SHA256 = "K2TESTONLYSHA256"  # the second id the fuzz harness gives the TEST ONLY key


def write(target: str, data: bytes) -> None:
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    # libFuzzer names corpus files by content hash; do the same so re-runs are stable.
    (d / ("seed-" + hashlib.sha1(data).hexdigest()[:16])).write_bytes(data)


def cases():
    vectors = json.loads((ROOT / "tests/fixtures/cloudfront_vectors.json").read_text())
    return vectors["cases"]


def escapes():
    path = ROOT / "tests/fixtures/escapes/grant_escapes.json"
    return json.loads(path.read_text())["escapes"]


# ---------------------------------------------------------------- policy (text lines)


def policy_seed(url, resource="", ip="", key="", expires="", ttl="", not_before="",
                flags="", batch_key="", batch_expires="", batch_ttl="", max_ttl=""):
    fields = [url, resource, ip, key, expires, ttl, not_before, flags,
              batch_key, batch_expires, batch_ttl, max_ttl]
    return "\n".join(str(f) for f in fields).encode()


def policy_seeds():
    for c in cases():
        yield policy_seed(
            c["url"], c["resource"] or "", c["ip"] or "", KEY, c["expires"], "",
            c["not_before"] or "", "c" if c["kind"] == "custom" else "")
    d = "https://d111111abcdef8.cloudfront.net"
    yield policy_seed(f"{d}/hls/a b/é.ts", ttl="3600")
    yield policy_seed(f"{d}/hls/seg1.ts", f"{d}/hls/*", "2001:db8::1", KEY_SHA256,
                      ttl="600", not_before="@-60")
    yield policy_seed("videos/movie.mp4", "videos/*", flags="bc", batch_ttl="300")
    yield policy_seed(f"{d}/x?Signature=1", ttl="60")
    yield policy_seed(f"{d}/x", expires="@10", ttl="10")
    yield policy_seed(f"{d}/x", "http*://d111111abcdef8.cloudfront.net/*", flags="C",
                      batch_expires="@86400", max_ttl="90000")
    yield policy_seed("https://[2001:db8::1]:443/a", ip="10.0.0.0/8", ttl="1")
    yield policy_seed(f"{d}/x", key="NOSUCHKEY", ttl="60")
    # As the fuzz client with a grant ('g'): inside, escapes, another host/port/scheme.
    yield policy_seed(f"{d}/hls/a/seg1.ts", f"{d}/hls/a/*", ttl="600", flags="g")
    yield policy_seed(f"{d}/hls/%2e%2e/secret.ts", ttl="600", flags="g")
    yield policy_seed(f"{d}/hls/x.ts", f"{d}/hls/../*", ttl="600", flags="g")
    yield policy_seed(f"{d}:443/hls/x.ts", "HTTPS://D111111ABCDEF8.cloudfront.net/hls/*",
                      ttl="600", flags="g")
    yield policy_seed("http://cdn.example.com/a/b/c.ts", "http://cdn.example.com:80/a/b/*",
                      ttl="60", flags="gc")
    yield policy_seed(f"{d}/hls/x.ts", key=KEY_SHA256, ttl="60", flags="g")
    # Every escape the security test sends (issue 10), as the granted fuzz client.
    # An escape marked custom_policy or ip_range is a URL that becomes the custom policy's
    # Resource (no policy_resource): sent the same way.
    for e in escapes():
        flags = "gc" if e.get("custom_policy") else "g"
        ip = e.get("ip_range", "")
        if e["field"] == "url":
            yield policy_seed(e["text"], ip=ip, ttl="600", flags=flags)
        else:
            yield policy_seed(f"{d}/hls/ok.ts", e["text"], ip=ip, ttl="600", flags=flags)


# ---------------------------------------------------------------- url (raw text)


def url_seeds():
    for c in cases():
        yield c["url"].encode()
        if c["resource"]:
            yield c["resource"].encode()
    yield "https://d111111abcdef8.cloudfront.net/a b/é€😀.ts".encode()
    yield b"HTTPS://[2001:db8::1]:8443/a?b=1"
    yield b"https://user@d111111abcdef8.cloudfront.net/"
    yield b"https://d111111abcdef8.cloudfront.net/%2e%2e/../x"
    yield b"http*://d111111abcdef8.cloudfront.net/hls/seg?.ts"
    yield b"https://D111111ABCDEF8.cloudfront.net:443/hls/a/./b/%2E%2E/c.ts?x=%41"
    yield b"https://d111111abcdef8.cloudfront.net/hls/..%2f..%2fsecret"
    yield b"http://cdn.example.com:80/a/b/../b/c"
    for e in escapes():
        yield e["text"].encode()


# ---------------------------------------------------------------- config (TOML)


def config_seeds():
    for name in ("dev.toml", "example.toml"):
        yield (ROOT / "config" / name).read_bytes()
    yield b'[signing]\nmax_batch = 0\n'
    yield b'[[keys]]\nid = "A1"\npath = "/k.pem"\nalgorithm = "sha256"\n[[keys]]\nid = "A1"\npath = "k"\n'
    yield b'[server]\nlisten = "[::1]:1"\nmax_message_bytes = 18446744073709551615\n'
    yield (b'[[clients]]\nname = "c"\ntoken_sha256 = "' + b"ab" * 32 + b'"\nkeys = ["K1"]\n'
           b'url_prefixes = ["https://d/hls/"]\nmax_ttl_seconds = 60\nurls_per_second = 5\n')


# ---------------------------------------------------------------- request (protobuf)


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 negatives are ten-byte varints
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_varint(num: int, value: int) -> bytes:
    return varint(num << 3) + varint(value) if value else b""


def field_bytes(num: int, value) -> bytes:
    if not value:
        return b""
    if isinstance(value, str):
        value = value.encode()
    return varint((num << 3) | 2) + varint(len(value)) + value


def sign_item(url, resource="", expires_at=0, ttl=0, not_before=0, ip="", key="",
              custom=False, bare=False) -> bytes:
    return (field_bytes(1, url) + field_bytes(2, resource) + field_varint(3, expires_at)
            + field_varint(4, ttl) + field_varint(5, not_before) + field_bytes(6, ip)
            + field_bytes(7, key) + field_varint(8, int(custom)) + field_varint(9, int(bare)))


def sign_urls_request(items, key="", expires_at=0, ttl=0, custom=False) -> bytes:
    return (b"".join(field_bytes(1, i) for i in items) + field_bytes(2, key)
            + field_varint(3, expires_at) + field_varint(4, ttl) + field_varint(5, int(custom)))


def request_seeds():
    items = [sign_item(c["url"], c["resource"] or "", c["expires"], 0, c["not_before"] or 0,
                       c["ip"] or "", "", c["kind"] == "custom") for c in cases()]
    for i in range(0, len(items), 4):
        yield sign_urls_request(items[i:i + 4], key=KEY)
    d = "https://d111111abcdef8.cloudfront.net"
    yield sign_urls_request([sign_item(f"{d}/a.ts"), sign_item(f"{d}/b.ts", key=KEY_SHA256)],
                            ttl=3600)
    yield sign_urls_request([sign_item("videos/a.mp4", bare=True, ttl=60, not_before=-1)],
                            custom=True, ttl=60)


# ---------------------------------------------------------------- playlist


def playlist_seeds():
    """Every playlist fixture (ffmpeg's and the hand-written LL-HLS ones), behind the
    target's selector byte: PER_URI, SHARED_POLICY and COOKIES on different bases."""
    for path in sorted((ROOT / "tests/fixtures/playlists").glob("*/*")):
        text = path.read_bytes()
        for selector in (0x00, 0x05, 0x0A):
            yield bytes([selector]) + text
    # HLS variables (EXT-X-DEFINE): defined, from the URL, undefined, in an attribute.
    variables = (b'#EXTM3U\n#EXT-X-DEFINE:NAME="res",VALUE="720p"\n'
                 b'#EXT-X-DEFINE:QUERYPARAM="t"\n#EXT-X-MAP:URI="{$res}/init.mp4"\n'
                 b'#EXTINF:4,\n{$res}/seg1.ts\n#EXTINF:4,\nseg2.ts?t={$t}\n'
                 b'#EXTINF:4,\n{$nope}/seg3.ts\n#EXTINF:4,\na{$b.ts\n')
    for selector in (0x00, 0x05):
        yield bytes([selector]) + variables


# ---------------------------------------------------------------- auth


def auth_seeds():
    token = b"fuzz-token-TEST-ONLY"  # the fuzz client's token (TEST ONLY, in fuzz/src/lib.rs)
    yield b"\x00Bearer " + token
    yield b"\x00bearer  " + token + b"  "
    yield b"\x00Basic Zm9vOmJhcg=="
    yield b"\x00Bearer " + token[:-1]
    for name in ("client.pem", "other-client.pem", "rogue-client.pem"):
        pem = (ROOT / "tests/fixtures/tls" / name).read_text()
        body = "".join(l for l in pem.splitlines() if l and not l.startswith("-----"))
        yield b"\x01" + base64.b64decode(body)


def main() -> None:
    for target, seeds in (("policy", policy_seeds), ("url", url_seeds),
                          ("config", config_seeds), ("request", request_seeds),
                          ("auth", auth_seeds), ("playlist", playlist_seeds)):
        for old in (CORPUS / target).glob("seed-*"):
            old.unlink()  # seeds are regenerated whole; other files are kept
        n = 0
        for data in seeds():
            write(target, data)
            n += 1
        print(f"{target}: {n} seeds")


if __name__ == "__main__":
    main()
