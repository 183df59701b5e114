#!/usr/bin/env python3
"""A minimal OTLP trace receiver built from the official protobuf definitions
(PyPI `opentelemetry-proto`, served with `grpcio`), for tests/it/observability.rs.

Listens on 127.0.0.1 for OTLP/gRPC (TraceService/Export) and OTLP/HTTP (POST /v1/traces,
protobuf or JSON) on ephemeral ports, prints one JSON line with both ports, then one JSON
line per span received:

    {"via": "grpc"|"http", "service": "...", "name": "...", "kind": N,
     "trace_id": "hex", "span_id": "hex", "parent_span_id": "hex"}

It exits when its stdin closes (the test ends) or after --max-seconds.
"""

from __future__ import annotations

import argparse
import json
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
    def Export(self, request, context):  # noqa: N802 - the generated name
        emit("grpc", request)
        return trace_service_pb2.ExportTraceServiceResponse()


class HttpHandler(BaseHTTPRequestHandler):
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
        emit("http", request)
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
    args = ap.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), server)
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    http = ThreadingHTTPServer(("127.0.0.1", 0), HttpHandler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    print(json.dumps({"grpc_port": grpc_port, "http_port": http.server_address[1]}), flush=True)
    done = threading.Event()

    def wait_stdin() -> None:
        sys.stdin.read()
        done.set()

    threading.Thread(target=wait_stdin, daemon=True).start()
    done.wait(args.max_seconds)
    http.shutdown()
    server.stop(grace=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
