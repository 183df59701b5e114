#!/usr/bin/env python3
"""A minimal OTLP trace receiver built from the official protobuf definitions
(PyPI `opentelemetry-proto`, served with `grpcio`), for tests/it/observability/traces.rs.

Listens on 127.0.0.1 for OTLP/gRPC (TraceService/Export) and OTLP/HTTP (POST /v1/traces,
protobuf or JSON) on ephemeral ports; with --tls-dir (server.pem, server.key, ca.pem) also on
two TLS ports that require a client certificate signed by ca.pem (mTLS). Prints one JSON
line with the ports, then one JSON line per span received:

    {"via": "grpc"|"http"|"grpc-tls"|"http-tls", "service": "...", "name": "...", "kind": N,
     "trace_id": "hex", "span_id": "hex", "parent_span_id": "hex"}

It exits when its stdin closes (the test ends) or after --max-seconds.
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

LOCK = threading.Lock()


def emit(via: str, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
    with LOCK:
        for rs in request.resource_spans:
            service = ""
            for attr in rs.resource.attributes:
                if attr.key == "service.name":
                    service = attr.value.string_value
            for ss in rs.scope_spans:
                for span in ss.spans:
                    print(json.dumps({
                        "via": via,
                        "service": service,
                        "name": span.name,
                        "kind": span.kind,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                    }), flush=True)


class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, via: str) -> None:
        self.via = via

    def Export(self, request, context):  # noqa: N802 - the generated name
        emit(self.via, request)
        return trace_service_pb2.ExportTraceServiceResponse()


class HttpHandler(BaseHTTPRequestHandler):
    via = "http"

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        if self.path != "/v1/traces":
            self.send_error(404)
            return
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(min(length, 16 * 1024 * 1024))
        request = trace_service_pb2.ExportTraceServiceRequest()
        ctype = self.headers.get("content-type", "")
        if ctype.startswith("application/json"):
            json_format.Parse(body, request)
        else:
            request.ParseFromString(body)
        emit(self.via, request)
        out = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args) -> None:  # quiet
        return


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-seconds", type=float, default=120.0)
    ap.add_argument("--tls-dir", help="server.pem, server.key and ca.pem: also serve TLS (mTLS)")
    args = ap.parse_args()
    servers = []
    ports = {}

    def grpc_server(via: str, port_of) -> int:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(via), server)
        port = port_of(server)
        server.start()
        servers.append(server)
        return port

    ports["grpc_port"] = grpc_server("grpc", lambda s: s.add_insecure_port("127.0.0.1:0"))
    http = ThreadingHTTPServer(("127.0.0.1", 0), HttpHandler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    ports["http_port"] = http.server_address[1]
    https = None
    if args.tls_dir:
        def read(name: str) -> bytes:
            with open(f"{args.tls_dir}/{name}", "rb") as f:
                return f.read()

        creds = grpc.ssl_server_credentials(
            [(read("server.key"), read("server.pem"))],
            root_certificates=read("ca.pem"),
            require_client_auth=True,
        )
        ports["grpc_tls_port"] = grpc_server(
            "grpc-tls", lambda s: s.add_secure_port("127.0.0.1:0", creds)
        )
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(f"{args.tls_dir}/server.pem", f"{args.tls_dir}/server.key")
        ctx.load_verify_locations(f"{args.tls_dir}/ca.pem")
        ctx.verify_mode = ssl.CERT_REQUIRED

        class HttpsHandler(HttpHandler):
            via = "http-tls"

        https = ThreadingHTTPServer(("127.0.0.1", 0), HttpsHandler)
        https.socket = ctx.wrap_socket(https.socket, server_side=True)
        threading.Thread(target=https.serve_forever, daemon=True).start()
        ports["http_tls_port"] = https.server_address[1]
    print(json.dumps(ports), flush=True)
    done = threading.Event()

    def wait_stdin() -> None:
        sys.stdin.read()
        done.set()

    threading.Thread(target=wait_stdin, daemon=True).start()
    done.wait(args.max_seconds)
    http.shutdown()
    if https is not None:
        https.shutdown()
    for server in servers:
        server.stop(grace=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
