#!/usr/bin/env python3
"""Error details a caller can act on, decoded as a client we did not write would.

Against a running cdnsign whose config has a client with `--token` that may sign under
https://d111111abcdef8.cloudfront.net/ok/ with `urls_per_second = 1`, `urls_burst = 2`,
another (`--free-token`) with the same grant and no rate limit, and
`server.max_concurrent_requests = 1` (tests/it/observability/metrics.rs writes it), checks with
grpcio + grpcio-status (google.rpc.Status details):

  (a) SignUrls with no items: INVALID_ARGUMENT with a BadRequest field violation on `items`;
  (b) a call with no token: UNAUTHENTICATED; an item outside the grant: per-item
      PERMISSION_DENIED (the call itself OK);
  (c) a rate-limited call: RESOURCE_EXHAUSTED with RetryInfo (a positive delay) and a
      QuotaFailure naming the client's limit;
  (d) with one SignUrlsStream holding the only concurrency slot, a unary call is shed:
      RESOURCE_EXHAUSTED with RetryInfo.

One line per check, then "N passed, M failed"; exit 0 only when M is 0. Loopback only;
every call has a deadline.
"""

from __future__ import annotations

import argparse
import ipaddress
import queue
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from smoke_harness import Report, generate_stubs  # noqa: E402

import grpc  # noqa: E402
from google.rpc import error_details_pb2  # noqa: E402
from grpc_status import rpc_status  # noqa: E402

OK_URL = "https://d111111abcdef8.cloudfront.net/ok/a.ts"
OUTSIDE_URL = "https://d111111abcdef8.cloudfront.net/private/a.ts"


def details(err: grpc.RpcError) -> dict[str, object]:
    """The google.rpc.Status details of a refusal, by type name."""
    status = rpc_status.from_call(err)
    found: dict[str, object] = {}
    if status is None:
        return found
    for any_msg in status.details:
        for cls in (error_details_pb2.BadRequest, error_details_pb2.RetryInfo, error_details_pb2.QuotaFailure):
            if any_msg.Is(cls.DESCRIPTOR):
                msg = cls()
                any_msg.Unpack(msg)
                found[cls.DESCRIPTOR.name] = msg
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--addr", required=True)
    ap.add_argument("--token", required=True, help="the rate-limited client's token")
    ap.add_argument("--free-token", required=True, help="a client without a rate limit")
    ap.add_argument("--timeout", type=float, default=10.0)
    args = ap.parse_args()
    host = args.addr.rsplit(":", 1)[0]
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"{host} is not a loopback address")

    report = Report()
    with tempfile.TemporaryDirectory() as gen:
        pb, pb_grpc = generate_stubs(Path(gen))
        channel = grpc.insecure_channel(args.addr)
        stub = pb_grpc.SignerStub(channel)
        auth = (("authorization", f"Bearer {args.token}"),)

        def sign(urls: list[str], metadata=auth):
            items = [pb.SignItem(url=u, ttl_seconds=600) for u in urls]
            return stub.SignUrls(pb.SignUrlsRequest(items=items), timeout=args.timeout, metadata=metadata)

        # (a) BadRequest on a request-level INVALID_ARGUMENT.
        try:
            sign([])
            report.bad("bad_request", "an empty request was accepted")
        except grpc.RpcError as err:
            d = details(err)
            br = d.get("BadRequest")
            if err.code() != grpc.StatusCode.INVALID_ARGUMENT:
                report.bad("bad_request", f"code {err.code()}")
            elif br is None or [v.field for v in br.field_violations] != ["items"]:
                report.bad("bad_request", f"no BadRequest on items: {d}")
            else:
                report.ok("bad_request", f"field {br.field_violations[0].field!r}: {br.field_violations[0].description}")

        # (b) No identity; an item outside the grant.
        try:
            sign([OK_URL], metadata=())
            report.bad("unauthenticated", "accepted without a token")
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.UNAUTHENTICATED:
                report.ok("unauthenticated", err.details())
            else:
                report.bad("unauthenticated", f"code {err.code()}")
        resp = sign([OUTSIDE_URL])
        codes = [r.error.code for r in resp.results]
        if codes == [pb.ItemError.PERMISSION_DENIED]:
            report.ok("denied_item", resp.results[0].error.message)
        else:
            report.bad("denied_item", f"results {resp.results}")

        # (c) Rate limit: the burst (2 URLs, one spent on the denied item above or not) is
        # used up, then a refusal with RetryInfo and QuotaFailure.
        refused = None
        for _ in range(4):
            try:
                sign([OK_URL, OK_URL])
            except grpc.RpcError as err:
                refused = err
                break
        if refused is None or refused.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
            report.bad("rate_limited", f"not refused: {refused}")
        else:
            d = details(refused)
            retry = d.get("RetryInfo")
            quota = d.get("QuotaFailure")
            delay = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9 if retry else 0.0
            if retry is None or delay <= 0:
                report.bad("rate_limited", f"no RetryInfo with a delay: {d}")
            elif quota is None or not any("urls_per_second" in v.description for v in quota.violations):
                report.bad("rate_limited", f"no QuotaFailure naming urls_per_second: {d}")
            else:
                report.ok("rate_limited", f"retry in {delay:.3f}s; {quota.violations[0].subject}: {quota.violations[0].description}")

        # (d) Shedding: a stream holds the one slot until it ends.
        free = (("authorization", f"Bearer {args.free_token}"),)
        outgoing: queue.Queue = queue.Queue()

        def requests():
            while True:
                item = outgoing.get(timeout=args.timeout)
                if item is None:
                    return
                yield item

        stream = stub.SignUrlsStream(requests(), timeout=args.timeout, metadata=free)
        # One message answered: the stream is in flight and holds its slot.
        outgoing.put(pb.SignUrlsRequest(items=[pb.SignItem(url=OUTSIDE_URL, ttl_seconds=600)]))
        first = next(stream)
        try:
            channel2 = grpc.insecure_channel(args.addr)
            pb_grpc.SignerStub(channel2).SignUrls(
                pb.SignUrlsRequest(items=[pb.SignItem(url=OUTSIDE_URL, ttl_seconds=600)]),
                timeout=args.timeout,
                metadata=free,
            )
            report.bad("shed", "a second call was admitted while the stream held the only slot")
        except grpc.RpcError as err:
            d = details(err)
            retry = d.get("RetryInfo")
            if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and retry is not None:
                report.ok("shed", err.details())
            else:
                report.bad("shed", f"code {err.code()}, details {d}")
        finally:
            outgoing.put(None)
            for _ in stream:
                pass
        del first
        channel.close()
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
