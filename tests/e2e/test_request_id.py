"""x-request-id on both transports: a caller's well-formed id is kept, anything else (or
nothing) is replaced by a new one; either way it is echoed (gRPC: trailing metadata, on
success and failure alike; REST: the ``x-request-id`` response header on every response)
and named, with the client's address, in the call's one log line."""

from __future__ import annotations

import json
import logging
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import httpx
import pytest
from accounts.v1 import user_service_pb2 as upb
from grpc_health.v1 import health_pb2, health_pb2_grpc

from accounts_grpc.domain.call import CallInfo, current_call, request_id
from accounts_grpc.logs import JsonFormatter, TextFormatter
from tests.support import Server, failure, running_server

CALLS = "accounts_grpc.calls"
GET_ME = "/accounts.v1.UserService/GetMe"
GENERATED = re.compile(r"[0-9a-f]{32}")
HOSTILE = [
    "a" * 1000,  # too long
    "a" * 129,  # one too long
    "id caller=root",  # a space: would forge a field of the log line
    "tab\there",
    "line\nbreak request_id=forged",
    "nul\x00",
    "caf\u00e9",  # not ASCII
    "",
]


@contextmanager
def call_lines(caplog: pytest.LogCaptureFixture) -> Iterator[list[logging.LogRecord]]:
    """The call log records written inside the block."""
    caplog.set_level(logging.INFO, logger=CALLS)
    caplog.clear()
    out: list[logging.LogRecord] = []
    yield out
    out.extend(r for r in caplog.records if r.name == CALLS)


def _md(pairs: Any) -> dict[str, Any]:
    return dict(pairs or ())


def _line(record: logging.LogRecord) -> str:
    return record.getMessage()


# -- the id itself (no I/O) -----------------------------------------------------------------------


def test_well_formed_ids_are_kept_and_others_replaced() -> None:
    for good in ("r1", "req-123", "a" * 128, "Root=1-5759e988-bd862e3f;Sampled=1",
                 "0f8fad5b-d9cb-469f-a165-70867728950e"):
        assert request_id(good) == good
    for bad in [*HOSTILE, None]:
        new = request_id(bad)
        assert GENERATED.fullmatch(new), (bad, new)
    assert request_id(None) != request_id(None)


# -- gRPC -----------------------------------------------------------------------------------------


def test_grpc_echoes_the_callers_id_and_logs_it_with_the_peer(
        server: Server, caplog: pytest.LogCaptureFixture) -> None:
    with call_lines(caplog) as lines:
        me, call = server.stubs.users.GetMe.with_call(
            upb.GetMeRequest(), metadata=(*server.admin, ("x-request-id", "trace-42.a/b")))
    assert _md(call.trailing_metadata())["x-request-id"] == "trace-42.a/b"
    [rec] = lines
    assert _line(rec).startswith(f"grpc {GET_ME} OK ")
    assert _line(rec).endswith(f" caller={me.user.id} request_id=trace-42.a/b peer=127.0.0.1")
    assert (rec.request_id, rec.peer) == ("trace-42.a/b", "127.0.0.1")  # type: ignore[attr-defined]


def test_grpc_without_an_id_gets_a_new_one_echoed_and_logged(
        server: Server, caplog: pytest.LogCaptureFixture) -> None:
    with call_lines(caplog) as lines:
        _, first = server.stubs.users.GetMe.with_call(upb.GetMeRequest(), metadata=server.admin)
        _, second = server.stubs.users.GetMe.with_call(upb.GetMeRequest(), metadata=server.admin)
    ids = [_md(c.trailing_metadata())["x-request-id"] for c in (first, second)]
    assert all(GENERATED.fullmatch(i) for i in ids) and ids[0] != ids[1]
    assert [r.request_id for r in lines] == ids  # type: ignore[attr-defined]
    assert all(f" request_id={i} peer=127.0.0.1" in _line(r) for r, i in zip(lines, ids,
                                                                             strict=True))


@pytest.mark.parametrize("hostile", [h for h in HOSTILE if h.isascii() and h.isprintable()])
def test_grpc_a_malformed_id_is_replaced(server: Server, caplog: pytest.LogCaptureFixture,
                                         hostile: str) -> None:
    """(grpcio itself will not send a control character or non-ASCII in metadata.)"""
    with call_lines(caplog) as lines:
        _, call = server.stubs.users.GetMe.with_call(
            upb.GetMeRequest(), metadata=(*server.admin, ("x-request-id", hostile)))
    rid = _md(call.trailing_metadata())["x-request-id"]
    assert GENERATED.fullmatch(rid)
    [rec] = lines
    assert rec.request_id == rid  # type: ignore[attr-defined]
    if hostile:
        assert hostile not in caplog.text


def test_grpc_a_failed_call_echoes_the_id_with_its_status_details(
        server: Server, caplog: pytest.LogCaptureFixture) -> None:
    with call_lines(caplog) as lines, pytest.raises(grpc.RpcError) as info:
        server.stubs.users.GetMe(upb.GetMeRequest(), metadata=(
            ("authorization", "Bearer nope"), ("x-request-id", "failing-1")))
    err: Any = info.value
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert _md(err.trailing_metadata())["x-request-id"] == "failing-1"
    assert failure(err).reason  # the status details are still there
    [rec] = lines
    assert _line(rec).startswith(f"grpc {GET_ME} UNAUTHENTICATED ")
    assert _line(rec).endswith(" caller=- request_id=failing-1 peer=127.0.0.1")


def test_grpc_a_malformed_request_echoes_the_id(server: Server) -> None:
    raw = server.channel.unary_unary(GET_ME, None, None)  # bytes in, bytes out
    with pytest.raises(grpc.RpcError) as info:
        raw(b"\xff\xff\xff", metadata=(*server.admin, ("x-request-id", "bad-bytes")))
    err: Any = info.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _md(err.trailing_metadata())["x-request-id"] == "bad-bytes"
    assert failure(err).reason == "MALFORMED_REQUEST"


def test_grpc_an_overload_refusal_echoes_the_id(server: Server) -> None:
    pool = server.app.grpc.lanes.unary
    with pool._count_lock:
        pool.held += 1_000_000  # the bound is past: the next unary call is refused
    try:
        with pytest.raises(grpc.RpcError) as info:
            server.stubs.users.GetMe(upb.GetMeRequest(), timeout=10,
                                     metadata=(*server.admin, ("x-request-id", "busy-1")))
    finally:
        with pool._count_lock:
            pool.held -= 1_000_000
    err: Any = info.value
    assert failure(err).reason == "OVERLOADED"
    assert _md(err.trailing_metadata())["x-request-id"] == "busy-1"


def test_grpc_health_check_echoes_the_id(server: Server) -> None:
    health = health_pb2_grpc.HealthStub(server.channel)
    _, call = health.Check.with_call(health_pb2.HealthCheckRequest(),
                                     metadata=(("x-request-id", "probe-7"),))
    assert _md(call.trailing_metadata())["x-request-id"] == "probe-7"
    _, call = health.Check.with_call(health_pb2.HealthCheckRequest())
    assert GENERATED.fullmatch(_md(call.trailing_metadata())["x-request-id"])


def test_the_call_info_carries_the_id(server: Server) -> None:
    """Use cases (and the audit) can read it: CallInfo.request_id, set by the Pipeline."""
    seen: list[CallInfo | None] = []
    pipeline = server.app.pipeline
    original = pipeline.call

    def spy(method: str, request: Any, metadata: Any, peer: str, transport: str,
            handler: Any, **kw: Any) -> Any:
        def recording(req: Any) -> Any:
            seen.append(current_call())
            return handler(req)

        return original(method, request, metadata, peer, transport, recording, **kw)

    pipeline.call = spy
    try:
        server.stubs.users.GetMe(upb.GetMeRequest(),
                                 metadata=(*server.admin, ("x-request-id", "ctx-1")))
        httpx.get(f"{server.http_url}/v1/me", timeout=10, headers={
            "authorization": f"Bearer {server.admin_token}", "x-request-id": "ctx-2"})
    finally:
        del pipeline.call
    assert [(c.transport, c.request_id, c.peer) for c in seen if c] == [
        ("grpc", "ctx-1", "127.0.0.1"), ("rest", "ctx-2", "127.0.0.1")]


# -- REST -----------------------------------------------------------------------------------------


def _get_me(server: Server, **headers: str | bytes) -> httpx.Response:
    sent: Any = {"authorization": f"Bearer {server.admin_token}", **headers}
    return httpx.get(f"{server.http_url}/v1/me", timeout=10, headers=sent)


def test_rest_echoes_the_callers_id_and_logs_it_with_the_peer(
        server: Server, caplog: pytest.LogCaptureFixture) -> None:
    with call_lines(caplog) as lines:
        r = _get_me(server, **{"X-Request-Id": "Rest-Trace-9"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "Rest-Trace-9"
    [rec] = lines
    assert _line(rec).startswith(f"rest {GET_ME} OK ")
    assert _line(rec).endswith(" request_id=Rest-Trace-9 peer=127.0.0.1")


def test_rest_without_an_id_gets_a_new_one_echoed_and_logged(
        server: Server, caplog: pytest.LogCaptureFixture) -> None:
    with call_lines(caplog) as lines:
        r = _get_me(server)
    rid = r.headers["x-request-id"]
    assert GENERATED.fullmatch(rid)
    [rec] = lines
    assert rec.request_id == rid and f" request_id={rid} peer=127.0.0.1" in _line(rec)  # type: ignore[attr-defined]


@pytest.mark.parametrize("hostile", [h for h in HOSTILE if "\n" not in h and "\x00" not in h])
def test_rest_a_malformed_id_is_replaced(server: Server, caplog: pytest.LogCaptureFixture,
                                         hostile: str) -> None:
    with call_lines(caplog) as lines:
        r = _get_me(server, **{"x-request-id": hostile.encode("latin-1")})
    assert r.status_code == 200
    rid = r.headers["x-request-id"]
    assert GENERATED.fullmatch(rid)
    [rec] = lines
    assert rec.request_id == rid  # type: ignore[attr-defined]
    if hostile:
        assert hostile not in caplog.text


def _raw(server: Server, head: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.app.http_port), timeout=10) as s:
        s.sendall(head)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def test_rest_control_characters_never_reach_the_log(
        server: Server, caplog: pytest.LogCaptureFixture) -> None:
    """What httpx would not send: a raw head with control bytes in the header value. The
    HTTP parser may refuse the request outright (400); if it is served, the id is new."""
    with call_lines(caplog):
        for value in (b"esc\x1bforged", b"c1\x85\x9bx", b"del\x7f"):
            out = _raw(server, b"GET /v1/me HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                       b"Authorization: Bearer " + server.admin_token.encode() + b"\r\n"
                       b"X-Request-Id: " + value + b"\r\n\r\n")
            head = out.split(b"\r\n\r\n", 1)[0].lower()
            if out.startswith(b"HTTP/1.1 200"):
                echoed = re.search(rb"\r\nx-request-id: ([^\r]*)", head)
                assert echoed and GENERATED.fullmatch(echoed.group(1).decode()), head
            else:
                assert out.startswith(b"HTTP/1.1 400"), out[:200]
    assert "forged" not in caplog.text and "\x1b" not in caplog.text
    assert "\x7f" not in caplog.text and "\x85" not in caplog.text


def test_rest_every_response_names_the_id(server: Server) -> None:
    url = server.http_url
    rid = {"x-request-id": "every-1"}
    responses = {
        "401": httpx.get(f"{url}/v1/me", headers=rid, timeout=10),
        "404": httpx.get(f"{url}/v1/nowhere", headers=rid, timeout=10),
        "405": httpx.delete(f"{url}/v1/me", headers=rid, timeout=10),
        "413": httpx.post(f"{url}/v1/accounts", timeout=10, headers={
            **rid, "authorization": f"Bearer {server.admin_token}",
            "content-type": "application/json"},
            content=b"{" + b" " * (server.app.settings.http_max_body_bytes + 1) + b"}"),
        "400": httpx.get(f"{url}/v1/accounts", params={"pageSize": "x"}, timeout=10,
                         headers={**rid, "authorization": f"Bearer {server.admin_token}"}),
        "healthz": httpx.get(f"{url}/healthz", headers=rid, timeout=10),
        "readyz": httpx.get(f"{url}/readyz", headers=rid, timeout=10),
        "metrics": httpx.get(f"{url}/metrics", headers=rid, timeout=10),
        "openapi": httpx.get(f"{url}/openapi.json", headers=rid, timeout=10),
        "token 401": httpx.post(f"{url}/v1/token", headers=rid, timeout=10, data={
            "grant_type": "client_credentials", "client_id": server.admin_client_id,
            "client_secret": "cs_wrong"}),
        "token 200": httpx.post(f"{url}/v1/token", headers=rid, timeout=10, data={
            "grant_type": "client_credentials", "client_id": server.admin_client_id,
            "client_secret": server.admin_client_secret}),
        "token 400": httpx.post(f"{url}/v1/token", headers=rid, timeout=10,
                                data={"grant_type": "password"}),
    }
    codes = {name: r.status_code for name, r in responses.items()}
    assert codes == {"401": 401, "404": 404, "405": 405, "413": 413, "400": 400,
                     "healthz": 200, "readyz": 200, "metrics": 200, "openapi": 200,
                     "token 401": 401, "token 200": 200, "token 400": 400}, codes
    for name, r in responses.items():
        assert r.headers.get_list("x-request-id") == ["every-1"], name
    generated = httpx.get(f"{url}/v1/nowhere", timeout=10).headers["x-request-id"]
    assert GENERATED.fullmatch(generated)


def test_rest_an_overload_refusal_names_the_id(server: Server) -> None:
    gateway = server.app.http.gateway
    bound = gateway.max_in_flight
    gateway.max_in_flight = 0  # every call is past the bound
    try:
        r = _get_me(server, **{"x-request-id": "busy-2"})
    finally:
        gateway.max_in_flight = bound
    assert r.status_code == 503 and r.json()["details"][0]["reason"] == "OVERLOADED"
    assert r.headers["x-request-id"] == "busy-2"


def test_rest_token_endpoint_logs_the_id(server: Server,
                                         caplog: pytest.LogCaptureFixture) -> None:
    with call_lines(caplog) as lines:
        r = httpx.post(f"{server.http_url}/v1/token", timeout=10,
                       headers={"x-request-id": "tok-1"},
                       data={"grant_type": "client_credentials",
                             "client_id": server.admin_client_id,
                             "client_secret": server.admin_client_secret})
    assert r.status_code == 200 and r.headers["x-request-id"] == "tok-1"
    [rec] = lines
    assert rec.request_id == "tok-1" and rec.peer == "127.0.0.1"  # type: ignore[attr-defined]


# -- behind a trusted proxy, and the JSON log ------------------------------------------------------


@pytest.fixture(scope="module")
def proxied(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(backend, tmp_path_factory.mktemp("proxied"),
                        trusted_proxies="127.0.0.1") as srv:
        yield srv


def test_the_logged_peer_is_the_client_behind_a_trusted_proxy(
        proxied: Server, caplog: pytest.LogCaptureFixture) -> None:
    forwarded = "198.51.100.1, 203.0.113.7"  # the proxy saw 203.0.113.7
    with call_lines(caplog) as lines:
        proxied.stubs.users.GetMe(upb.GetMeRequest(), metadata=(
            *proxied.admin, ("x-forwarded-for", forwarded), ("x-request-id", "via-proxy-1")))
        httpx.get(f"{proxied.http_url}/v1/me", timeout=10, headers={
            "authorization": f"Bearer {proxied.admin_token}", "x-forwarded-for": forwarded,
            "x-request-id": "via-proxy-2"})
    assert [(r.transport, r.request_id, r.peer) for r in lines] == [  # type: ignore[attr-defined]
        ("grpc", "via-proxy-1", "203.0.113.7"), ("rest", "via-proxy-2", "203.0.113.7")]
    assert all(_line(r).endswith(" peer=203.0.113.7") for r in lines)


def test_json_and_text_log_lines_name_the_id_and_the_peer(
        server: Server, caplog: pytest.LogCaptureFixture) -> None:
    with call_lines(caplog) as lines:
        _get_me(server, **{"x-request-id": "json-1"})
    [rec] = lines
    doc = json.loads(JsonFormatter().format(rec))
    assert doc["request_id"] == "json-1" and doc["peer"] == "127.0.0.1"
    assert doc["rpc_method"] == GET_ME and doc["transport"] == "rest"
    assert doc["message"].endswith(" request_id=json-1 peer=127.0.0.1")
    text = TextFormatter("%(name)s: %(message)s").format(rec)
    assert text.startswith(f"{CALLS}: rest {GET_ME} OK ") and "request_id=json-1" in text


def test_no_peer_is_logged_as_a_dash() -> None:
    """Defensive: an empty peer string still leaves a well-formed line."""
    from accounts_grpc.rpc import pipeline

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    pipeline.log.addHandler(handler)
    old = pipeline.log.level
    pipeline.log.setLevel(logging.INFO)
    try:
        pipeline._observe(CallInfo(GET_ME, "rest", "", {}, "x-1"), "OK", 0.001, None)
    finally:
        pipeline.log.removeHandler(handler)
        pipeline.log.setLevel(old)
    [rec] = records
    assert rec.getMessage().endswith(" caller=- request_id=x-1 peer=-")
    assert rec.peer is None  # type: ignore[attr-defined]
