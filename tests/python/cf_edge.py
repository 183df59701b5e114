#!/usr/bin/env python3
"""A local CloudFront edge for cdnsign's end-to-end playlist tests.

Serves a directory over HTTP on 127.0.0.1 and, like a CloudFront cache behavior with
"Restrict viewer access", refuses (403) every request that does not carry a valid
signature, written here from AWS's documentation and independent of cdnsign's code:

* signing parameters from the query (``Expires``/``Policy``, ``Signature``,
  ``Key-Pair-Id``, ``Hash-Algorithm``) or, when the query has none, from the
  ``CloudFront-*`` cookies;
* the signature verified with the public key (RSA PKCS#1 v1.5 or ECDSA, SHA-1 or SHA-256)
  over the canned policy rebuilt from the request URL, or over the decoded custom policy;
* ``Key-Pair-Id`` must be the configured one;
* ``DateLessThan`` in the future, ``DateGreaterThan`` (if any) in the past, the client IP
  inside ``IpAddress`` (if any);
* the policy's ``Resource`` (``*`` and ``?`` wildcards) must match the request URL, which
  is ``http://<Host><path>`` plus the query without the signing parameters.

GET and HEAD with single ``Range: bytes=a-b`` support (HLS byte ranges). Every request
is appended to ``--log`` as a JSON line ``{"path", "status", "reason", "range"}``.
The first stdout line is ``listening PORT``. Stops on SIGTERM/SIGKILL (the test's).

Also importable: ``check(url, cookies, public_key, key_pair_id, now, client_ip)``.
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import json
import os
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

SIGNING = ("Expires", "Policy", "Signature", "Key-Pair-Id", "Hash-Algorithm")


def cf_b64decode(text: str) -> bytes:
    return base64.b64decode(text.replace("-", "+").replace("_", "=").replace("~", "/"), validate=True)


def wildcard(pattern: str, text: str) -> bool:
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, text, flags=re.DOTALL) is not None


def load_public_key(path: str):
    with open(path, "rb") as f:
        data = f.read()
    start = data.find(b"-----BEGIN")
    data = data[start:]
    try:
        return serialization.load_pem_public_key(data)
    except ValueError:
        return serialization.load_pem_private_key(data, password=None).public_key()


def verify_signature(key, signature: bytes, message: bytes, sha256: bool) -> bool:
    digest = hashes.SHA256() if sha256 else hashes.SHA1()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, message, padding.PKCS1v15(), digest)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, message, ec.ECDSA(digest))
        else:
            return False
    except InvalidSignature:
        return False
    return True


def check(url: str, cookies: dict, key, key_pair_id: str, now: int, client_ip: str | None):
    """Returns None when CloudFront would serve `url`, else the reason it would not."""
    base, _, query = url.partition("?")
    params: dict[str, str] = {}
    kept = []
    for pair in query.split("&") if query else []:
        name, _, value = pair.partition("=")
        if name in SIGNING:
            params[name] = value
        else:
            kept.append(pair)
    if not params:
        params = {n[len("CloudFront-"):]: v for n, v in cookies.items() if n.startswith("CloudFront-")}
        params = {n: v for n, v in params.items() if n in SIGNING}
    if not params:
        return "missing signing parameters (query or CloudFront-* cookies)"
    unsigned = base + ("?" + "&".join(kept) if kept else "")
    if params.get("Key-Pair-Id") != key_pair_id:
        return "Key-Pair-Id %r is not %r" % (params.get("Key-Pair-Id"), key_pair_id)
    if "Signature" not in params:
        return "missing Signature"
    if "Expires" in params and "Policy" not in params:
        try:
            expires = int(params["Expires"])
        except ValueError:
            return "Expires is not a number"
        policy = '{"Statement":[{"Resource":"%s","Condition":{"DateLessThan":{"AWS:EpochTime":%d}}}]}' % (
            unsigned,
            expires,
        )
    elif "Policy" in params:
        try:
            policy = cf_b64decode(params["Policy"]).decode()
        except (ValueError, UnicodeDecodeError):
            return "Policy is not CloudFront base64"
    else:
        return "missing Expires or Policy"
    try:
        signature = cf_b64decode(params["Signature"])
    except ValueError:
        return "Signature is not CloudFront base64"
    sha256 = params.get("Hash-Algorithm") == "SHA256"
    if not verify_signature(key, signature, policy.encode(), sha256):
        return "bad signature"
    try:
        statement = json.loads(policy)["Statement"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        return "policy is not a CloudFront policy"
    resource = statement.get("Resource", "*")
    if not wildcard(resource, unsigned):
        return "resource %r does not match %r" % (resource, unsigned)
    cond = statement.get("Condition", {})
    expires = cond.get("DateLessThan", {}).get("AWS:EpochTime")
    if not isinstance(expires, int) or now >= expires:
        return "expired (%r)" % (expires,)
    start = cond.get("DateGreaterThan", {}).get("AWS:EpochTime")
    if start is not None and now <= start:
        return "not valid yet"
    source = cond.get("IpAddress", {}).get("AWS:SourceIp")
    if source is not None and (
        client_ip is None or ipaddress.ip_address(client_ip) not in ipaddress.ip_network(source, strict=False)
    ):
        return "client IP outside %s" % source
    return None


def parse_cookies(header: str | None) -> dict:
    out = {}
    for part in (header or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name:
            out[name] = value
    return out


def make_handler(root: str, key, key_pair_id: str, log_path: str):
    lock = threading.Lock()

    class Edge(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # quiet: the JSON log is the record
            pass

        def record(self, status: int, reason: str | None, rng: str | None) -> None:
            with lock, open(log_path, "a") as f:
                f.write(json.dumps({"path": self.path, "status": status, "reason": reason, "range": rng}) + "\n")

        def refuse(self, status: int, reason: str) -> None:
            body = ("<Error><Code>AccessDenied</Code><Message>%s</Message></Error>" % reason).encode()
            self.record(status, reason, self.headers.get("Range"))
            self.send_response(status)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def serve(self) -> None:
            url = "http://%s%s" % (self.headers.get("Host", ""), self.path)
            reason = check(url, parse_cookies(self.headers.get("Cookie")), key, key_pair_id, int(time.time()), self.client_address[0])
            if reason is not None:
                return self.refuse(403, reason)
            rel = unquote(self.path.partition("?")[0]).lstrip("/")
            path = os.path.realpath(os.path.join(root, rel))
            if not path.startswith(os.path.realpath(root) + os.sep) or not os.path.isfile(path):
                return self.refuse(404, "no such object")
            with open(path, "rb") as f:
                data = f.read()
            rng = self.headers.get("Range")
            status, first, last = 200, 0, len(data) - 1
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng or "")
            if m and (m.group(1) or m.group(2)):
                if m.group(1):
                    first = int(m.group(1))
                    last = min(int(m.group(2)), len(data) - 1) if m.group(2) else len(data) - 1
                else:
                    first = max(0, len(data) - int(m.group(2)))
                if first > last:
                    return self.refuse(416, "range not satisfiable")
                status = 206
            body = data[first : last + 1]
            self.record(status, None, rng)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", "bytes %d-%d/%d" % (first, last, len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = serve
        do_HEAD = serve

    return Edge


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--public-key", required=True)
    ap.add_argument("--key-pair-id", required=True)
    ap.add_argument("--log", required=True)
    args = ap.parse_args()
    key = load_public_key(args.public_key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(args.root, key, args.key_pair_id, args.log))
    server.daemon_threads = True
    print("listening %d" % server.server_address[1], flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
