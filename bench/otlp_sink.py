"""A stand-in OpenTelemetry collector for the tracing rows: it takes OTLP/HTTP
``POST /v1/traces``, counts the spans and answers 200 as a collector does, and keeps
nothing. It runs on a thread of the bench process, so the server pays what a real export
costs it (encoding, batching, the HTTP round trip) and nothing more."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from bench.procs import HOST

_ANSWER = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()


class OtlpSink(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__((HOST, 0), _Handler)
        self.spans = 0
        self._lock = threading.Lock()
        threading.Thread(target=self.serve_forever, name="otlp-sink", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}"

    def take(self, body: bytes) -> None:
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        n = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        with self._lock:
            self.spans += n

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: OtlpSink
    protocol_version = "HTTP/1.1"  # keep-alive, as a collector does

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path == "/v1/traces":
            self.server.take(body)
        self.send_response(200 if self.path == "/v1/traces" else 404)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(_ANSWER)))
        self.end_headers()
        self.wfile.write(_ANSWER)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass
