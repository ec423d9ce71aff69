"""OpenTelemetry tracing of a real `serve` process (tracing.py, rpc/otel.py).

The collector is a stand-in in the test: an HTTP server that takes OTLP/HTTP
``POST /v1/traces`` and decodes each ``ExportTraceServiceRequest``. A call that carries a
W3C ``traceparent`` (gRPC metadata, HTTP header) gets a server span that is its child,
and the database's spans in the same trace; a failed call's span has its code; under
``--processes 2`` every worker exports with a provider of its own; and with no endpoint
configured nothing is set up at all.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from accounts.v1 import (
    account_pb2,
    account_service_pb2,
    account_service_pb2_grpc,
    session_service_pb2,
    session_service_pb2_grpc,
    user_pb2,
    user_service_pb2,
    user_service_pb2_grpc,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from accounts_grpc import tracing
from accounts_grpc.config import Settings, SettingsError
from tests import support
from tests.serving import CLI, LoggedProcess, clean_env, cli

pytestmark = pytest.mark.timeout(180)

SERVER = trace_pb2.Span.SpanKind.SPAN_KIND_SERVER
CLIENT = trace_pb2.Span.SpanKind.SPAN_KIND_CLIENT
GET_ME = "/accounts.v1.UserService/GetMe"


@dataclass(frozen=True)
class Span:
    trace_id: str
    span_id: str
    parent: str
    name: str
    kind: int
    attributes: dict[str, Any]
    pid: int | None  # the exporting process (its resource's process.pid)
    scope: str  # the instrumentation that made it


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class Collector(ThreadingHTTPServer):
    """OTLP/HTTP's trace endpoint, keeping every span it is sent."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Receive)
        self.spans: list[Span] = []
        self.changed = threading.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def take(self, body: bytes) -> None:
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        got = []
        for rs in request.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                got += [Span(s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.name,
                             s.kind, {a.key: _value(a.value) for a in s.attributes},
                             resource.get("process.pid"), ss.scope.name) for s in ss.spans]
        with self.changed:
            self.spans += got
            self.changed.notify_all()

    def wait_for(self, done: Callable[[list[Span]], bool], timeout: float = 30) -> list[Span]:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not done(self.spans):
                left = deadline - time.monotonic()
                assert left > 0, f"spans never came; got {len(self.spans)}: {self.spans}"
                self.changed.wait(left)
            return list(self.spans)


class _Receive(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path != "/v1/traces":
            self.send_error(404)
            return
        self.server.take(body)
        out = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    threading.Thread(target=c.serve_forever, daemon=True).start()
    try:
        yield c
    finally:
        c.shutdown()
        c.server_close()


@dataclass
class Served(LoggedProcess):
    grpc_port: int = 0
    http_port: int = 0
    creds: dict[str, str] = field(default_factory=dict)

    def channel(self) -> grpc.Channel:
        """A channel with a connection of its own (the kernel picks a worker for it)."""
        return grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}",
                                     options=[("grpc.use_local_subchannel_pool", 1)])

    def token(self) -> str:
        with self.channel() as ch:
            return str(session_service_pb2_grpc.SessionServiceStub(ch).CreateToken(
                session_service_pb2.CreateTokenRequest(
                    client_id=self.creds["client_id"],
                    client_secret=self.creds["client_secret"]), timeout=10).access_token)

    def worker_pids(self) -> set[int]:
        return {int(p) for p in re.findall(r"worker \d+ started \(pid (\d+)\)", self.log)}


@contextlib.contextmanager
def serving(backend: str, tmp: Path, *flags: str, processes: int = 1) -> Iterator[Served]:
    """``serve`` as a real process, every OTEL_* variable of ours left out (the flags
    decide), batches exported every 50 ms rather than every 5 s."""
    with support.database_url(backend, tmp) as url:
        db = ["--database-url", url, "--key-encryption-key-file", str(tmp / "test.kek")]
        if backend == "postgres":
            cli("migrate", *db)
        creds = json.loads(cli("bootstrap", "--json", *db))
        env = {k: v for k, v in clean_env().items() if not k.startswith("OTEL_")}
        env.update(OTEL_BSP_SCHEDULE_DELAY="50", TMPDIR=str(tmp))
        proc = subprocess.Popen(
            [*CLI, "serve", *db, "--processes", str(processes), "--bind-host", "127.0.0.1",
             "--grpc-port", "0", "--http-port", "0", "--shutdown-grace", "2",
             "--drain-delay", "0", "--log-level", "INFO", "--no-print-bootstrap", *flags],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        served = Served(proc, creds=creds)
        reader = threading.Thread(target=served.read_stderr, daemon=True)
        reader.start()
        try:
            m = served.wait_for(r"serving gRPC on 127\.0\.0\.1:(\d+), HTTP on 127\.0\.0\.1:(\d+)",
                                timeout=120)
            served.grpc_port, served.http_port = int(m[1]), int(m[2])
            yield served
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            reader.join(10)


def traceparent() -> tuple[str, str, str]:
    """(trace id, parent span id, the W3C traceparent naming them, sampled)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def in_trace(trace_id: str, spans: list[Span]) -> list[Span]:
    return [s for s in spans if s.trace_id == trace_id]


def db_spans(spans: list[Span]) -> list[Span]:
    return [s for s in spans if s.kind == CLIENT and "db.system" in s.attributes]


def server_and_db(trace_id: str) -> Callable[[list[Span]], bool]:
    def done(spans: list[Span]) -> bool:
        mine = in_trace(trace_id, spans)
        return any(s.kind == SERVER for s in mine) and bool(db_spans(mine))
    return done


def test_grpc_and_rest_calls_are_traced_as_children_of_their_traceparent(
        backend: str, tmp_path: Path, collector: Collector) -> None:
    with serving(backend, tmp_path, "--otlp-endpoint", collector.url) as served:
        served.wait_for(rf"tracing on: spans to {re.escape(collector.url)}/v1/traces")
        token = served.token()
        grpc_trace, grpc_parent, header = traceparent()
        with served.channel() as ch:
            me = user_service_pb2_grpc.UserServiceStub(ch).GetMe(
                user_service_pb2.GetMeRequest(), timeout=10,
                metadata=(*support.bearer(token), ("traceparent", header)))
        assert me.user.id == served.creds["user_id"]
        rest_trace, rest_parent, header = traceparent()
        r = httpx.get(f"http://127.0.0.1:{served.http_port}/v1/me", timeout=10,
                      headers={"authorization": f"Bearer {token}", "traceparent": header})
        assert r.status_code == 200, r.text
        write_trace, _parent, header = traceparent()
        with served.channel() as ch:
            account_service_pb2_grpc.AccountServiceStub(ch).CreateAccount(
                account_service_pb2.CreateAccountRequest(
                    account=account_pb2.Account(name="Traced", email="traced@example.com"),
                    first_user=user_pb2.User(kind=user_pb2.USER_KIND_HUMAN,
                                             email="first@example.com")), timeout=10,
                metadata=(*support.bearer(token), ("traceparent", header)))
        for trace_id in (grpc_trace, rest_trace, write_trace):
            spans = collector.wait_for(server_and_db(trace_id))

    # gRPC: the instrumentation's server span, a child of the caller's span
    mine = in_trace(grpc_trace, spans)
    [server] = [s for s in mine if s.kind == SERVER]
    assert server.parent == grpc_parent and server.name == GET_ME
    assert server.attributes["rpc.service"] == "accounts.v1.UserService"
    assert server.attributes["rpc.method"] == "GetMe"
    assert server.attributes["rpc.grpc.status_code"] == 0
    # the database's work, in the call's span (SQLite's point reads on the driver's cursor
    # included: they have a span of their own)
    assert any(s.parent == server.span_id for s in db_spans(mine)), mine
    assert {s.attributes["db.system"] for s in db_spans(mine)} == {
        "sqlite" if backend == "sqlite" else "postgresql"}
    if backend == "sqlite":  # the point read that authenticates, on the driver's cursor
        assert any(s.scope == "accounts_grpc.store" and s.name.startswith("SELECT ")
                   for s in db_spans(mine)), mine
    # statements through SQLAlchemy: its instrumentation's spans (the write's INSERTs)
    assert any(s.scope == "opentelemetry.instrumentation.sqlalchemy"
               and s.attributes["db.statement"].startswith("INSERT INTO accounts")
               for s in db_spans(in_trace(write_trace, spans))), in_trace(write_trace, spans)

    # REST: the ASGI middleware's server span, named by its route, the RPC it maps to
    mine = in_trace(rest_trace, spans)
    [server] = [s for s in mine if s.kind == SERVER]
    assert server.parent == rest_parent and server.name == "GET /v1/me"
    assert server.attributes["http.route"] == "/v1/me"
    assert server.attributes["rpc.method"] == "GetMe"
    status = server.attributes.get("http.response.status_code",
                                   server.attributes.get("http.status_code"))
    assert status == 200
    # the pipeline runs on a worker thread, still inside the request's span
    assert any(s.parent == server.span_id for s in db_spans(mine)), mine


def test_a_failed_call_s_span_has_its_code_and_health_watch_still_streams(
        backend: str, tmp_path: Path, collector: Collector) -> None:
    with serving(backend, tmp_path, "--otlp-endpoint", collector.url) as served:
        trace_id, parent, header = traceparent()
        with served.channel() as ch:
            with pytest.raises(grpc.RpcError) as e:
                user_service_pb2_grpc.UserServiceStub(ch).GetMe(
                    user_service_pb2.GetMeRequest(), timeout=10,
                    metadata=(("traceparent", header),))
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
            # a non-blocking handler, which the instrumentation cannot wrap: served as is
            watch = health_pb2_grpc.HealthStub(ch).Watch(
                health_pb2.HealthCheckRequest(service=""), timeout=10)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            watch.cancel()
        spans = collector.wait_for(
            lambda spans: any(s.kind == SERVER for s in in_trace(trace_id, spans)))
    [server] = [s for s in in_trace(trace_id, spans) if s.kind == SERVER]
    assert server.parent == parent
    assert server.attributes["rpc.grpc.status_code"] == grpc.StatusCode.UNAUTHENTICATED.value[0]


def test_every_worker_exports_with_its_own_provider(tmp_path: Path,
                                                    collector: Collector) -> None:
    """--processes 2: each worker sets tracing up after it started; both export."""
    with serving("sqlite", tmp_path, "--otlp-endpoint", collector.url, processes=2) as served:
        token = served.token()
        traces: list[str] = []

        def exporters(spans: list[Span]) -> set[int | None]:
            return {s.pid for s in spans if s.trace_id in traces and s.kind == SERVER}

        deadline = time.monotonic() + 60
        while len(exporters(collector.spans)) < 2:  # new connections until both answered
            assert time.monotonic() < deadline, f"spans only from {exporters(collector.spans)}"
            trace_id, _parent, header = traceparent()
            traces.append(trace_id)
            with served.channel() as ch:
                user_service_pb2_grpc.UserServiceStub(ch).GetMe(
                    user_service_pb2.GetMeRequest(), timeout=10,
                    metadata=(*support.bearer(token), ("traceparent", header)))
            collector.wait_for(lambda spans, t=trace_id: any(
                s.kind == SERVER for s in in_trace(t, spans)))
        assert exporters(collector.spans) == served.worker_pids()
        assert served.log.count("tracing on: spans to") == 2


def test_nothing_is_set_up_without_an_endpoint(tmp_path: Path) -> None:
    with serving("sqlite", tmp_path) as served:
        served.wait_for(r"tracing off \(no --otlp-endpoint")
        with served.channel() as ch:
            health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert "tracing on" not in served.log


def test_an_app_without_an_endpoint_installs_nothing(server: support.Server) -> None:
    """In this process (no endpoint, no OTEL_EXPORTER_OTLP_* variable): no provider, and
    the servers were built without the interceptor and the middleware."""
    from accounts_grpc.rpc import otel

    assert not tracing.enabled() and tracing.tracer_provider() is None
    assert otel.server_interceptors() == []
    assert tracing.asgi(server.app.http.gateway) is server.app.http.gateway


@pytest.mark.parametrize(("endpoint", "env", "expected"), [
    ("", {}, None),
    ("http://c:4318/", {}, "http://c:4318/v1/traces"),
    ("", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, "http://c:4318/v1/traces"),
    ("", {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/t",
          "OTEL_EXPORTER_OTLP_ENDPOINT": "http://d"}, "http://c:4318/t"),
    ("http://c:4318", {"OTEL_SDK_DISABLED": "true"}, None),
    ("", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_TRACES_EXPORTER": "none"}, None),
])
def test_where_spans_go(endpoint: str, env: dict[str, str], expected: str | None) -> None:
    assert tracing.destination(endpoint, env) == expected


def test_an_endpoint_that_is_not_a_url_is_refused() -> None:
    with pytest.raises(SettingsError, match=r"otlp_endpoint \(ACCOUNTS_OTLP_ENDPOINT\)"):
        Settings(otlp_endpoint="otel-collector:4318")
    assert Settings(otlp_endpoint="https://otel-collector:4318").otlp_endpoint
