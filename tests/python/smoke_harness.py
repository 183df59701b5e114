"""What the Python grpcio smoke clients share: the PASS/FAIL report, running one check,
the server address checks, the stubs generated from our proto, and a channel interceptor
that gives every call a deadline (and a bearer token).

Used by tests/python/smoke_grpc.py (and its checks in smoke_checks.py) and by
tests/python/error_details.py.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import traceback
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO_ROOT / "proto"
PROTO_FILE = "cdnsign/v1/signer.proto"


# ------------------------------------------------------------------ reporting

class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def ok(self, name: str, detail: str = "") -> None:
        self.passed += 1
        print(f"PASS {name}" + (f": {detail}" if detail else ""), flush=True)

    def bad(self, name: str, detail: str) -> None:
        self.failed += 1
        print(f"FAIL {name}: {detail}", flush=True)

    def finish(self) -> int:
        print(f"{self.passed} passed, {self.failed} failed", flush=True)
        return 0 if self.failed == 0 else 1


class CheckFailed(Exception):
    pass


def expect(cond: bool, msg: str) -> None:
    if not cond:
        raise CheckFailed(msg)


def run_check(report: Report, name: str, fn) -> object:
    """Run one check; an exception of any kind is a FAIL line, never a crash."""
    import grpc

    try:
        detail = fn()
    except CheckFailed as e:
        report.bad(name, str(e))
    except grpc.RpcError as e:
        code = e.code() if hasattr(e, "code") else None
        details = e.details() if hasattr(e, "details") else str(e)
        report.bad(name, f"RPC failed: {code.name if code else '?'}: {details}")
    except Exception as e:  # noqa: BLE001 - a smoke test reports, it does not crash
        report.bad(name, f"{type(e).__name__}: {e}")
        traceback.print_exc(file=sys.stderr)
    else:
        report.ok(name, detail or "")


# ------------------------------------------------------------------ helpers

def parse_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise SystemExit(f"--addr must be HOST:PORT, got {addr!r}")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tcp_probe(host: str, port: int, timeout: float) -> str | None:
    """None when something accepts TCP connections on host:port, else the reason."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as e:
        return f"{type(e).__name__}: {e}"


def generate_stubs(gen_dir: Path):
    """Run grpc_tools.protoc on the proto and import the generated modules."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    gen_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={gen_dir}",
        f"--grpc_python_out={gen_dir}",
        PROTO_FILE,
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise SystemExit(f"grpc_tools.protoc failed with exit code {rc} on {PROTO_ROOT / PROTO_FILE}")
    sys.path.insert(0, str(gen_dir))
    from cdnsign.v1 import signer_pb2, signer_pb2_grpc  # noqa: E402 - generated just now

    return signer_pb2, signer_pb2_grpc


# ------------------------------------------------------------------ the channel: deadline and token

class DeadlineInterceptor:
    """Gives every call on the channel a deadline, including the reflection
    client's stream call, which takes no timeout argument of its own."""

    def __init__(self, timeout: float, token: str | None = None) -> None:
        self.timeout = timeout
        self.token = token

    def _details(self, details):
        import grpc

        if details.timeout is not None and self.token is None:
            return details

        class _D(grpc.ClientCallDetails):
            pass

        d = _D()
        d.method = details.method
        d.timeout = details.timeout if details.timeout is not None else self.timeout
        d.metadata = list(details.metadata or [])
        if self.token is not None:
            d.metadata.append(("authorization", f"Bearer {self.token}"))
        d.credentials = details.credentials
        d.wait_for_ready = getattr(details, "wait_for_ready", None)
        d.compression = getattr(details, "compression", None)
        return d

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)


def make_interceptor(timeout: float, token: str | None = None):
    import grpc

    class _I(
        DeadlineInterceptor,
        grpc.UnaryUnaryClientInterceptor,
        grpc.UnaryStreamClientInterceptor,
        grpc.StreamUnaryClientInterceptor,
        grpc.StreamStreamClientInterceptor,
    ):
        pass

    return _I(timeout, token)
