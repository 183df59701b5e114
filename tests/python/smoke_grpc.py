#!/usr/bin/env python3
"""End-to-end smoke test of a running cdnsign server over gRPC.

Start the server with the TEST ONLY key loaded under key id K2JCJMDEHXQW5F,
then (from the repo root, after ``bash scripts/setup.sh``)::

    .venv/bin/python tests/python/smoke_grpc.py --addr 127.0.0.1:50051

Python stubs are generated at run time from proto/cdnsign/v1/signer.proto
with grpc_tools.protoc, into a temporary directory (or --gen-dir, e.g.
tests/python/gen/, which is gitignored).

Checks, one line each:
  (a) Signer/SignUrls with 1000 items (item 500 is "not a url"): results in
      order, exactly one INVALID_ARGUMENT error naming the url field, 999
      signed URLs with Expires/Signature/Key-Pair-Id, 3 signatures verified
      against config/dev-keys/TEST-ONLY-cloudfront.pub.pem;
  (b) grpc.health.v1.Health/Check for service "" is SERVING;
  (c) reflection (v1alpha) lists cdnsign.v1.Signer;
  (d) Signer/SignCookies with a custom policy returns CloudFront-Policy,
      CloudFront-Signature and CloudFront-Key-Pair-Id, signature verified;
  (e) the grant escapes of tests/fixtures/escapes/grant_escapes.json through
      SignUrls, SignCookies and SignUrlsStream: without --token (no grant) every
      dot segment is INVALID_ARGUMENT naming its field; with --token (a client
      granted the fixture's prefix) every escape gets the fixture's code;
  (f) Signer/SignPlaylist on ffmpeg's fMP4 playlist: PER_URI (every rewritten URI
      verified, other lines unchanged), SHARED_POLICY (one signature), and PER_URI on
      a $Number$ MPD refused with INVALID_ARGUMENT naming SHARED_POLICY and COOKIES;
  (g) Signer/VerifyUrls: a signed URL valid, a tampered one SIGNATURE.

With --token TOKEN every call carries `authorization: Bearer TOKEN`, and
--only-escapes runs (e) alone (the granted run of scripts/smoke.sh).

The checks themselves are in smoke_checks.py; the report, the stubs and the channel's
deadline and token in smoke_harness.py (both beside this file).

Every call has a 10 s deadline (--timeout). The last line is
"N passed, M failed"; the exit status is 0 only when M is 0.
Only loopback addresses are accepted unless --allow-non-loopback is given.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from smoke_checks import run_all, run_escapes
from smoke_harness import (
    PROTO_FILE,
    PROTO_ROOT,
    REPO_ROOT,
    Report,
    generate_stubs,
    is_loopback,
    make_interceptor,
    parse_addr,
    tcp_probe,
)

DEFAULT_PUBKEY = REPO_ROOT / "config/dev-keys/TEST-ONLY-cloudfront.pub.pem"
DEFAULT_ESCAPES = REPO_ROOT / "tests/fixtures/escapes/grant_escapes.json"
KEY_ID = "K2JCJMDEHXQW5F"


def main() -> int:
    ap = argparse.ArgumentParser(description="cdnsign gRPC smoke test")
    ap.add_argument("--addr", default="127.0.0.1:50051", help="server HOST:PORT (default 127.0.0.1:50051)")
    ap.add_argument("--timeout", type=float, default=10.0, help="deadline per call, seconds (default 10)")
    ap.add_argument("--pubkey", type=Path, default=DEFAULT_PUBKEY, help="PEM public key the server signs for")
    ap.add_argument("--key-id", default=KEY_ID)
    ap.add_argument("--gen-dir", type=Path, default=None,
                    help="where to write generated stubs (default: a temp dir removed at exit)")
    ap.add_argument("--allow-non-loopback", action="store_true",
                    help="allow a server address outside 127.0.0.0/8 / ::1")
    ap.add_argument("--token", default=None,
                    help="bearer token of a client granted the escapes fixture's prefix")
    ap.add_argument("--escapes", type=Path, default=DEFAULT_ESCAPES,
                    help="grant escapes fixture (JSON)")
    ap.add_argument("--only-escapes", action="store_true", help="run check (e) only")
    args = ap.parse_args()

    host, port = parse_addr(args.addr)
    if not args.allow_non_loopback and not is_loopback(host):
        print(f"refusing non-loopback address {args.addr!r} (use --allow-non-loopback)", file=sys.stderr)
        return 2

    report = Report()

    # Imports and stubs first: these fail loudly on a broken venv.
    import grpc
    from cryptography.hazmat.primitives import serialization
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    tmp = None
    gen_dir = args.gen_dir
    if gen_dir is None:
        tmp = tempfile.mkdtemp(prefix="cdnsign-stubs-")
        gen_dir = Path(tmp)
    try:
        pb, pb_grpc = generate_stubs(gen_dir)
        print(f"stubs: generated from {PROTO_ROOT / PROTO_FILE} into {gen_dir}", flush=True)
        pubkey = serialization.load_pem_public_key(args.pubkey.read_bytes())

        reason = tcp_probe(host, port, args.timeout)
        if reason is not None:
            report.bad("connect", f"nothing accepts connections on {args.addr} ({reason}); "
                                  "is the cdnsign server running there?")
            return report.finish()

        raw_channel = grpc.insecure_channel(args.addr)
        try:
            grpc.channel_ready_future(raw_channel).result(timeout=args.timeout)
        except grpc.FutureTimeoutError:
            report.bad("connect", f"TCP connects to {args.addr} but no HTTP/2 gRPC channel within {args.timeout}s")
            raw_channel.close()
            return report.finish()
        report.ok("connect", args.addr)
        channel = grpc.intercept_channel(raw_channel, make_interceptor(args.timeout, args.token))
        try:
            if not args.only_escapes:
                run_all(report, channel, pb, pb_grpc, health_pb2, health_pb2_grpc,
                        ProtoReflectionDescriptorDatabase, pubkey, args)
            run_escapes(report, channel, pb, pb_grpc, args)
        finally:
            raw_channel.close()
        return report.finish()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
