#!/usr/bin/env python3
"""Generate CloudFront signed-URL and signed-cookie test vectors for cdnsign.

The reference is botocore's own ``botocore.signers.CloudFrontSigner``, with an
RSA signer built on ``cryptography`` exactly as botocore/boto3's docs show
(PKCS#1 v1.5 padding, SHA-1), and the TEST ONLY key in
``config/dev-keys/TEST-ONLY-cloudfront.pem`` (key pair id ``K2JCJMDEHXQW5F``).
Every signature is also recomputed with the ``openssl`` CLI
(``openssl dgst -sha1 -sign``) and verified against the public key; any
mismatch aborts the run, so a written file is a checked file.

Output: ``tests/fixtures/cloudfront_vectors.json``, pretty-printed with a
fixed field order. RSA PKCS#1 v1.5 is deterministic, so regenerating with the
same key gives the same bytes.

Regenerate (from the repo root, after ``bash scripts/setup.sh``)::

    .venv/bin/python scripts/gen_cloudfront_vectors.py

Check that the committed file is what the generator produces (exit 1 if not)::

    .venv/bin/python scripts/gen_cloudfront_vectors.py --check

Each case has: ``name``, ``kind`` ("canned" | "custom"), ``url`` (what the
viewer requests), ``expires`` (DateLessThan, unix seconds), ``resource``
(custom policy Resource; null for canned), ``not_before`` (DateGreaterThan or
null), ``ip`` (the address as given to the signer, or null; a bare IPv4 address
becomes ``/32`` in the policy), ``policy`` (the exact JSON bytes that were
signed, as a string), ``signature_b64`` (standard base64 of the raw RSA
signature), ``signed_url`` (botocore's output), ``openssl_checked``, and for a
few cases ``cookies`` (the CloudFront-Expires/-Policy, -Signature and
-Key-Pair-Id values, in CloudFront's URL-safe base64 where encoded).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import botocore
from botocore.signers import CloudFrontSigner
from botocore.utils import datetime2timestamp
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

REPO_ROOT = Path(__file__).resolve().parent.parent
KEY_PATH = REPO_ROOT / "config/dev-keys/TEST-ONLY-cloudfront.pem"
PUB_PATH = REPO_ROOT / "config/dev-keys/TEST-ONLY-cloudfront.pub.pem"
OUT_PATH = REPO_ROOT / "tests/fixtures/cloudfront_vectors.json"
KEY_PAIR_ID = "K2JCJMDEHXQW5F"
HOST = "https://d111111abcdef8.cloudfront.net"

# (name, url, expires)
CANNED = [
    ("canned-plain-https", f"{HOST}/hls/abc/index.m3u8", 1767225600),
    ("canned-existing-query", f"{HOST}/video/movie.mp4?a=1&b=2", 2000000000),
    ("canned-percent-encoded", f"{HOST}/media/My%20Movie%20%282024%29.mp4", 1893456000),
    (
        "canned-long-path",
        f"{HOST}/tenant-0042/library/season-03/episode-12/renditions/1080p/"
        "hls/v2/segments/2026/01/01/00/seg-000000001234.ts",
        1767225600,
    ),
    ("canned-http-scheme", "http://d111111abcdef8.cloudfront.net/images/photo.jpg", 2000000000),
    ("canned-port", "https://d111111abcdef8.cloudfront.net:8443/live/stream.m3u8", 1893456000),
    ("canned-custom-domain", "https://cdn.example.com/downloads/app-1.2.3.tar.gz", 1767225600),
    ("canned-percent-encoded-query", f"{HOST}/search?q=hello%20world&lang=en", 2000000000),
    ("canned-url-safe-b64-chars-in-path", f"{HOST}/files/a+b=c~d_e-f.txt", 1893456000),
    ("canned-root-path", f"{HOST}/", 1767225600),
    ("canned-past-expiry-2000", f"{HOST}/old/archive.zip", 946684800),
    ("canned-max-int32-expiry", f"{HOST}/hls/abc/seg1.ts", 2147483647),
]

# (name, url, resource, expires, not_before, ip)
CUSTOM = [
    ("custom-wildcard", f"{HOST}/hls/abc/seg1.ts", f"{HOST}/hls/abc/*", 1767225600, None, None),
    (
        "custom-question-mark-wildcard",
        f"{HOST}/hls/abc/seg7.ts",
        f"{HOST}/hls/abc/seg?.ts",
        2000000000,
        None,
        None,
    ),
    ("custom-ip-cidr", f"{HOST}/hls/abc/seg1.ts", f"{HOST}/hls/abc/*", 2000000000, None, "192.0.2.0/24"),
    ("custom-bare-ipv4", f"{HOST}/hls/abc/seg1.ts", f"{HOST}/hls/abc/*", 1893456000, None, "203.0.113.7"),
    ("custom-ipv6-cidr", f"{HOST}/hls/abc/seg1.ts", f"{HOST}/hls/abc/*", 1767225600, None, "2001:db8::/32"),
    ("custom-not-before", f"{HOST}/hls/abc/seg1.ts", f"{HOST}/hls/abc/*", 1767229200, 1767225600, None),
    (
        "custom-all-conditions",
        f"{HOST}/hls/abc/seg1.ts",
        f"{HOST}/hls/abc/*",
        2000000000,
        1767225600,
        "192.0.2.0/24",
    ),
    (
        "custom-resource-equals-url",
        f"{HOST}/hls/abc/index.m3u8",
        f"{HOST}/hls/abc/index.m3u8",
        1893456000,
        None,
        None,
    ),
    (
        "custom-url-with-query",
        f"{HOST}/hls/abc/index.m3u8?quality=hd&lang=en",
        f"{HOST}/hls/*",
        1767225600,
        None,
        "203.0.113.7",
    ),
    (
        "custom-ipv6-not-before-distribution-wide",
        f"{HOST}/any/path/file.bin",
        f"{HOST}/*",
        2000000000,
        1893456000,
        "2001:db8::/32",
    ),
]

# Cases that also get cookie vectors.
COOKIE_CASES = {"canned-plain-https", "canned-port", "custom-wildcard", "custom-all-conditions"}


def fail(msg: str) -> None:
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def utc(epoch: int) -> datetime:
    """A timezone-aware UTC datetime, so botocore's epoch conversion is exact."""
    dt = datetime.fromtimestamp(epoch, tz=timezone.utc)
    got = datetime2timestamp(dt)
    if got != epoch:
        fail(f"botocore converts {dt.isoformat()} to {got}, expected {epoch}")
    return dt


def cf_b64(data: bytes) -> str:
    """CloudFront's URL-safe base64: standard base64 with + -> -, = -> _, / -> ~."""
    return base64.b64encode(data).decode("ascii").replace("+", "-").replace("=", "_").replace("/", "~")


def cf_b64_decode(text: str) -> bytes:
    return base64.b64decode(text.replace("-", "+").replace("_", "=").replace("~", "/"), validate=True)


class RecordingSigner:
    """The rsa_signer from botocore's docs (cryptography, PKCS1v15, SHA-1),
    recording each message so the vector stores exactly what was signed."""

    def __init__(self, key_path: Path) -> None:
        with open(key_path, "rb") as f:
            self.private_key = serialization.load_pem_private_key(f.read(), password=None)
        self.messages: list[bytes] = []

    def __call__(self, message: bytes) -> bytes:
        self.messages.append(message)
        return self.private_key.sign(message, padding.PKCS1v15(), hashes.SHA1())


def openssl_sign(policy: bytes, tmpdir: str) -> bytes:
    path = os.path.join(tmpdir, "policy.json")
    with open(path, "wb") as f:
        f.write(policy)
    proc = subprocess.run(
        ["openssl", "dgst", "-sha1", "-sign", str(KEY_PATH), path],
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        fail(f"openssl dgst failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}")
    return proc.stdout


def query_params(signed_url: str, base_url: str) -> dict[str, str]:
    """The signing parameters botocore appended (after the original URL)."""
    if not signed_url.startswith(base_url):
        fail(f"signed URL does not start with the input URL: {signed_url}")
    tail = signed_url[len(base_url) :]
    if tail[0] != ("&" if "?" in base_url else "?"):
        fail(f"unexpected separator in {signed_url}")
    # parse_qsl would turn '+' into ' '; CloudFront's alphabet has no '+', so this is safe.
    return dict(parse_qsl(tail[1:], keep_blank_values=True, strict_parsing=True))


def canned_policy_template(url: str, expires: int) -> str:
    return (
        '{"Statement":[{"Resource":"' + url + '","Condition":{"DateLessThan":{"AWS:EpochTime":'
        + str(expires) + "}}}]}"
    )


def make_case(cf: CloudFrontSigner, rec: RecordingSigner, pub, tmpdir: str, kind: str, spec) -> OrderedDict:
    if kind == "canned":
        name, url, expires = spec
        resource = not_before = ip = None
        rec.messages.clear()
        signed_url = cf.generate_presigned_url(url, date_less_than=utc(expires))
        expected_policy = cf.build_policy(url, utc(expires))
        if expected_policy != canned_policy_template(url, expires):
            fail(f"{name}: canned policy differs from the documented template: {expected_policy}")
    else:
        name, url, resource, expires, not_before, ip = spec
        rec.messages.clear()
        expected_policy = cf.build_policy(
            resource,
            utc(expires),
            date_greater_than=utc(not_before) if not_before is not None else None,
            ip_address=ip,
        )
        signed_url = cf.generate_presigned_url(url, policy=expected_policy)

    if len(rec.messages) != 1:
        fail(f"{name}: expected one signing call, saw {len(rec.messages)}")
    policy_bytes = rec.messages[0]
    policy = policy_bytes.decode("utf-8")
    if policy != expected_policy:
        fail(f"{name}: signed bytes differ from build_policy output")

    # Parse the policy back and check the epochs and IP that botocore wrote.
    cond = json.loads(policy)["Statement"][0]["Condition"]
    if cond["DateLessThan"]["AWS:EpochTime"] != expires:
        fail(f"{name}: DateLessThan {cond['DateLessThan']} != {expires}")
    if not_before is not None and cond["DateGreaterThan"]["AWS:EpochTime"] != not_before:
        fail(f"{name}: DateGreaterThan {cond['DateGreaterThan']} != {not_before}")
    if ip is not None:
        want_ip = ip if "/" in ip else ip + "/32"
        if cond["IpAddress"]["AWS:SourceIp"] != want_ip:
            fail(f"{name}: SourceIp {cond['IpAddress']} != {want_ip}")

    params = query_params(signed_url, url)
    signature = cf_b64_decode(params["Signature"])
    if params["Key-Pair-Id"] != KEY_PAIR_ID:
        fail(f"{name}: Key-Pair-Id {params['Key-Pair-Id']}")
    if kind == "canned":
        if list(params) != ["Expires", "Signature", "Key-Pair-Id"] or int(params["Expires"]) != expires:
            fail(f"{name}: unexpected canned params {params}")
    else:
        if list(params) != ["Policy", "Signature", "Key-Pair-Id"] or cf_b64_decode(params["Policy"]) != policy_bytes:
            fail(f"{name}: unexpected custom params {params}")

    # Independent checks: the openssl CLI must produce the same bytes, and the
    # public key must verify them.
    if openssl_sign(policy_bytes, tmpdir) != signature:
        fail(f"{name}: openssl dgst -sha1 -sign produced a different signature than botocore")
    pub.verify(signature, policy_bytes, padding.PKCS1v15(), hashes.SHA1())

    case = OrderedDict()
    case["name"] = name
    case["kind"] = kind
    case["url"] = url
    case["expires"] = expires
    case["resource"] = resource
    case["not_before"] = not_before
    case["ip"] = ip
    case["policy"] = policy
    case["signature_b64"] = base64.b64encode(signature).decode("ascii")
    case["signed_url"] = signed_url
    case["openssl_checked"] = True
    if name in COOKIE_CASES:
        cookies = OrderedDict()
        if kind == "canned":
            cookies["CloudFront-Expires"] = str(expires)
        else:
            cookies["CloudFront-Policy"] = cf_b64(policy_bytes)
        cookies["CloudFront-Signature"] = cf_b64(signature)
        cookies["CloudFront-Key-Pair-Id"] = KEY_PAIR_ID
        case["cookies"] = cookies
    return case


NOTES = [
    "Policies are compact JSON (no spaces) exactly as botocore's build_policy writes them: "
    "Statement[0] has Resource then Condition.",
    "Custom policy Condition order is botocore's: DateLessThan, then IpAddress (if any), then "
    "DateGreaterThan (if any). CloudFront accepts any order, but byte-equal signatures need this one.",
    "A bare IPv4 address gets '/32' appended by botocore. botocore would also append '/32' to a bare "
    "IPv6 address (it should be /128), so no vector has a bare IPv6 address.",
    "The URL is put into the policy as given (no normalisation, no extra percent-encoding); with a "
    "canned policy the Resource is the full URL including any existing query string.",
    "Signing parameters are appended with '&' when the URL already has '?', else with '?'.",
    "URL and cookie values use CloudFront's URL-safe base64: '+' -> '-', '=' -> '_', '/' -> '~'. "
    "signature_b64 is standard base64 of the raw signature.",
    "Cookie values are the bare values; attributes (Domain, Path, Secure, HttpOnly, SameSite) are "
    "not part of the vectors.",
]


def generate() -> str:
    rec = RecordingSigner(KEY_PATH)
    with open(PUB_PATH, "rb") as f:
        pub = serialization.load_pem_public_key(f.read())
    if pub.public_numbers() != rec.private_key.public_key().public_numbers():
        fail(f"{PUB_PATH} is not the public half of {KEY_PATH}")
    cf = CloudFrontSigner(KEY_PAIR_ID, rec)

    cases = []
    with tempfile.TemporaryDirectory(prefix="cf-vectors-") as tmpdir:
        for spec in CANNED:
            cases.append(make_case(cf, rec, pub, tmpdir, "canned", spec))
        for spec in CUSTOM:
            cases.append(make_case(cf, rec, pub, tmpdir, "custom", spec))

    names = [c["name"] for c in cases]
    if len(set(names)) != len(names):
        fail("duplicate case names")
    for c in cases:
        extra = f" not_before={c['not_before']}" if c["not_before"] is not None else ""
        extra += f" ip={c['ip']}" if c["ip"] is not None else ""
        extra += " +cookies" if "cookies" in c else ""
        print(f"ok  {c['kind']:<6} {c['name']:<42} expires={c['expires']}{extra}", file=sys.stderr)

    doc = OrderedDict()
    doc["generator"] = "scripts/gen_cloudfront_vectors.py"
    doc["reference"] = f"botocore.signers.CloudFrontSigner (botocore {botocore.__version__}), RSA PKCS1v15 + SHA-1"
    doc["key_pair_id"] = KEY_PAIR_ID
    doc["private_key"] = str(KEY_PATH.relative_to(REPO_ROOT))
    doc["public_key"] = str(PUB_PATH.relative_to(REPO_ROOT))
    doc["notes"] = NOTES
    doc["cases"] = cases
    return json.dumps(doc, indent=2, ensure_ascii=True) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", type=Path, default=OUT_PATH, help=f"default: {OUT_PATH.relative_to(REPO_ROOT)}")
    ap.add_argument("--check", action="store_true", help="compare with the file on disk instead of writing it")
    args = ap.parse_args()

    text = generate()
    n = text.count('"openssl_checked": true')
    if args.check:
        try:
            on_disk = args.output.read_text()
        except FileNotFoundError:
            fail(f"{args.output} does not exist")
        if on_disk != text:
            fail(f"{args.output} is stale: re-run scripts/gen_cloudfront_vectors.py")
        print(f"{args.output}: up to date ({n} cases, all openssl-checked)", file=sys.stderr)
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output} ({n} cases, all openssl-checked)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
