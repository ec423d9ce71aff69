"""What the REST port refuses: forged client addresses, oversized or slow request heads,
requests that are not HTTP, idle connections, slow bodies, bodies from strangers, and
characters no field may hold (on both databases, the OAuth endpoints' forms included).

Raw sockets where the point is what a misbehaving client sends; httpx elsewhere.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.auth_helpers import make_account, make_user
from tests.support import Server, running_server

MAX_FAILURES = 3
LIMITS = dict(auth_max_failures=MAX_FAILURES, auth_max_failures_per_address=MAX_FAILURES,
              auth_failure_window=60, auth_block_seconds=60)
HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
IDLE_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def guarded(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(backend, tmp_path_factory.mktemp("guarded"),
                        http_header_timeout=HEADER_TIMEOUT, http_body_timeout=BODY_TIMEOUT,
                        http_idle_timeout=IDLE_TIMEOUT, http_max_header_bytes=8192,
                        http_max_headers=40) as srv:
        yield srv


def _raw(srv: Server, data: bytes, *, read_timeout: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", srv.app.http_port), timeout=read_timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            out += chunk
    return out


def _status(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.1 ") else 0


def _body(raw: bytes) -> dict[str, object]:
    return dict(json.loads(raw.split(b"\r\n\r\n", 1)[1]))


# -- the client address ---------------------------------------------------------------------


@pytest.fixture
def limited(backend: str, tmp_path: Path) -> Iterator[Server]:
    with running_server(backend, tmp_path, **LIMITS) as srv:  # no --trusted-proxies
        yield srv


def _token(srv: Server, client_id: str, secret: str, forwarded: str | None = None) -> int:
    headers = {"x-forwarded-for": forwarded} if forwarded else {}
    r = httpx.post(f"{srv.http_url}/v1/token", headers=headers, timeout=10,
                   data={"grant_type": "client_credentials", "client_id": client_id,
                         "client_secret": secret})
    return r.status_code


def test_a_forged_forwarded_for_from_an_untrusted_peer_changes_nothing(limited: Server) -> None:
    good = make_user(limited, make_account(limited))
    for i in range(MAX_FAILURES):  # guesses, each claiming another address
        assert _token(limited, f"cid_{uuid.uuid4().hex[:24]}", "cs_guess",
                      f"203.0.113.{i + 1}") == 401
    # the address (127.0.0.1, the real peer) is blocked, whatever the header claims
    assert _token(limited, good.client_id, good.client_secret) == 429
    for forged in ("203.0.113.9", "198.51.100.1, 203.0.113.9", "127.0.0.2"):
        assert _token(limited, good.client_id, good.client_secret, forged) == 429, forged


# -- request heads ----------------------------------------------------------------------------


def test_an_oversized_header_gets_431_and_the_connection_closes(guarded: Server) -> None:
    big = b"x" * 9000
    raw = _raw(guarded, b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: " + big + b"\r\n\r\n")
    assert _status(raw) == 431
    body = _body(raw)
    assert body["code"] == 8 and "details" in body
    assert b"connection: close" in raw.lower()


def test_a_header_that_never_ends_is_refused_before_it_is_buffered(guarded: Server) -> None:
    with socket.create_connection(("127.0.0.1", guarded.app.http_port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: ")
        refused = b""
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            for _ in range(200):  # up to 2 MB, never a line end
                s.sendall(b"y" * 10000)
                time.sleep(0.001)
        refused = s.recv(65536)
    assert _status(refused) == 431


def test_too_many_header_fields_get_431(guarded: Server) -> None:
    fields = b"".join(b"x-h%d: v\r\n" % i for i in range(60))
    raw = _raw(guarded, b"GET /healthz HTTP/1.1\r\nhost: x\r\n" + fields + b"\r\n")
    assert _status(raw) == 431


def test_heads_within_the_limits_are_served(guarded: Server) -> None:
    fields = b"".join(b"x-h%d: %s\r\n" % (i, b"v" * 100) for i in range(30))
    raw = _raw(guarded, b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
               + fields + b"\r\n")
    assert _status(raw) == 200


def test_slowloris_connections_are_closed_while_others_are_served(guarded: Server) -> None:
    socks = []
    try:
        for i in range(200):
            s = socket.create_connection(("127.0.0.1", guarded.app.http_port), timeout=10)
            if i % 2:  # half send a partial head, half nothing at all
                s.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ")
            socks.append(s)
        opened = time.monotonic()
        r = httpx.get(f"{guarded.http_url}/healthz", timeout=5)  # a normal client meanwhile
        assert r.status_code == 200
        for s in socks:
            s.settimeout(max(0.1, opened + HEADER_TIMEOUT + 5 - time.monotonic()))
            data = b""
            while True:
                chunk = s.recv(65536)  # TimeoutError here: the server kept it open
                if not chunk:
                    break
                data += chunk
            assert data == b"" or _status(data) == 408
        assert time.monotonic() - opened < HEADER_TIMEOUT + 5
    finally:
        for s in socks:
            s.close()


def _response_head(s: socket.socket) -> bytes:
    """The head of one whole response read from a kept-alive connection (its body too)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, f"closed before the response was whole: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length: *(\d+)", head)
    assert length is not None, head
    while len(body) < int(length.group(1)):
        body += s.recv(65536)
    return head


def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(
        guarded: Server) -> None:
    with socket.create_connection(("127.0.0.1", guarded.app.http_port),
                                  timeout=IDLE_TIMEOUT + 10) as s:
        for _ in range(3):  # kept alive while requests come
            s.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            head = _response_head(s)
            assert _status(head) == 200 and b"connection: close" not in head.lower()
        # then idle: the server closes it (a TimeoutError here: it was kept open)
        assert s.recv(65536) == b""


NOT_HTTP = {
    "garbage": b"GARBAGE\r\n\r\n",
    "control character in a header": b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-c: a\x01b\r\n\r\n",
    "header without a colon": b"GET /healthz HTTP/1.1\r\nhost x\r\n\r\n",
}


@pytest.mark.parametrize("raw", list(NOT_HTTP.values()), ids=list(NOT_HTTP))
def test_a_request_that_is_not_http_gets_400_in_the_error_shape(guarded: Server,
                                                                raw: bytes) -> None:
    out = _raw(guarded, raw)
    assert _status(out) == 400, out
    body = json.loads(out.split(b"\r\n\r\n", 1)[1])
    assert body["code"] == 3, body
    assert [d.get("reason") for d in body["details"]] == ["MALFORMED_HTTP_REQUEST"], body
    assert b"connection: close" in out.lower()


def test_a_flood_of_bad_requests_logs_a_few_lines(guarded: Server,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """Each request httptools refuses (not HTTP, or a head past the limits) is a warning
    of uvicorn's; anyone can send them at will, so they are logged at most once a second."""
    caplog.set_level(logging.WARNING)
    time.sleep(1.1)  # the throttle's window of earlier tests' lines is over
    caplog.clear()
    too_many = b"GET /healthz HTTP/1.1\r\n" + b"".join(b"x%d: v\r\n" % i for i in range(60))
    statuses = {_status(_raw(guarded, (NOT_HTTP["garbage"], too_many + b"\r\n")[i % 2]))
                for i in range(200)}
    assert statuses == {400, 431}
    lines = [r for r in caplog.records if r.name.startswith("uvicorn")]
    assert 1 <= len(lines) < 20, [r.getMessage() for r in lines]
    assert not any(r.exc_info for r in caplog.records)


def test_a_slow_body_gets_408(guarded: Server) -> None:
    head = (f"POST /v1/accounts HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            f"authorization: Bearer {guarded.admin_token}\r\ncontent-length: 100\r\n\r\n")
    started = time.monotonic()
    raw = _raw(guarded, head.encode() + b'{"account": ', read_timeout=BODY_TIMEOUT + 5)
    assert _status(raw) == 408
    assert _body(raw)["code"] == 4  # DEADLINE_EXCEEDED
    assert time.monotonic() - started < BODY_TIMEOUT + 4


# -- authentication before the body ------------------------------------------------------------


def test_a_stranger_gets_401_before_its_body_is_read(guarded: Server) -> None:
    r = httpx.post(f"{guarded.http_url}/v1/accounts", content=b"{not json",
                   headers={"content-type": "application/json"}, timeout=5)
    assert r.status_code == 401
    # a body that would never arrive is not waited for either
    head = (b"POST /v1/accounts HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: 100000\r\n\r\n")
    started = time.monotonic()
    raw = _raw(guarded, head, read_timeout=BODY_TIMEOUT / 2)
    assert _status(raw) == 401
    assert time.monotonic() - started < BODY_TIMEOUT / 2 + 0.3


def test_a_caller_without_the_role_gets_403_before_its_body_is_read(guarded: Server) -> None:
    member = make_user(guarded, make_account(guarded))
    tok = httpx.post(f"{guarded.http_url}/v1/token", timeout=10, data={
        "grant_type": "client_credentials", "client_id": member.client_id,
        "client_secret": member.client_secret}).json()["access_token"]
    r = httpx.post(f"{guarded.http_url}/v1/accounts", content=b"{not json", timeout=5,
                   headers={"content-type": "application/json",
                            "authorization": f"Bearer {tok}"})
    assert r.status_code == 403, r.text


# -- characters no field may hold -----------------------------------------------------------------


def _violations(body: dict[str, object]) -> list[str]:
    out: list[str] = []
    for d in body["details"]:  # type: ignore[attr-defined]
        out += [v["field"] for v in d.get("fieldViolations", [])]
    return out


@pytest.mark.parametrize("value", ["\x00", "a\x00b", "\x1b[31m", "\x07", "\x85", "\x7f"])
def test_control_characters_in_a_filter_are_400_with_a_violation(
        guarded: Server, value: str) -> None:
    r = httpx.get(f"{guarded.http_url}/v1/accounts", params={"filter": value}, timeout=10,
                  headers={"authorization": f"Bearer {guarded.admin_token}"})
    assert r.status_code == 400, r.text
    assert _violations(r.json()) == ["filter"]


def test_nul_in_the_token_endpoint_is_invalid_request(guarded: Server) -> None:
    r = httpx.post(f"{guarded.http_url}/v1/token", timeout=10, data={
        "grant_type": "client_credentials", "client_id": "\x00", "client_secret": "x"})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_request"


@pytest.mark.parametrize("path", ["/oauth2/introspect", "/oauth2/revoke"])
def test_control_characters_in_an_oauth_form_are_invalid_request(
        guarded: Server, path: str, caplog: pytest.LogCaptureFixture) -> None:
    """The introspection and revocation forms are checked as every RPC's strings are:
    the same answer on both databases, and nothing reaches the database (PostgreSQL
    refused a NUL in client_id there, with another answer than SQLite's)."""
    caplog.set_level(logging.INFO)
    form = {"client_id": guarded.admin_client_id, "client_secret": guarded.admin_client_secret,
            "token": "st_unknown", "token_type_hint": "access_token"}
    sent: list[tuple[dict[str, str], tuple[str, str] | None, str, str]] = [
        ({**form, name: f"a{c}b"}, None, name, c) for name in form for c in ("\x00", "\x1b")]
    sent.append(({"token": "st_unknown"}, ("a\x00b", "secret"), "client_id", "\x00"))
    sent.append(({"token": "st_unknown"}, (guarded.admin_client_id, "s\x9b"), "client_secret",
                 "\x9b"))
    for data, basic, name, c in sent:
        r = httpx.post(f"{guarded.http_url}{path}", data=data, auth=basic, timeout=10)
        assert r.status_code == 400, (name, r.text)
        body = r.json()
        assert body["error"] == "invalid_request", body
        assert body["error_description"].startswith(
            f"{name}: must not contain U+{ord(c):04X} at offset 1"), body
    assert not [r.getMessage() for r in caplog.records if r.name == "accounts_grpc.errors"]
    # well-formed, the same request is answered
    r = httpx.post(f"{guarded.http_url}{path}", data=form, timeout=10)
    assert r.status_code == 200, r.text


def test_a_lone_surrogate_in_json_is_400(guarded: Server) -> None:
    r = httpx.post(f"{guarded.http_url}/v1/accounts", timeout=10,
                   content=b'{"account": {"name": "x\\ud800", "email": "s@example.com"}}',
                   headers={"content-type": "application/json",
                            "authorization": f"Bearer {guarded.admin_token}"})
    assert r.status_code == 400, r.text


def test_bad_characters_change_nothing(guarded: Server) -> None:
    auth = {"authorization": f"Bearer {guarded.admin_token}"}
    before = httpx.get(f"{guarded.http_url}/v1/accounts", params={"pageSize": 1},
                       headers=auth, timeout=10).json()["totalSize"]
    for name in ("nul\x00name", "esc\x1bname", "c1\x9bname"):
        r = httpx.post(f"{guarded.http_url}/v1/accounts", headers=auth, timeout=10, json={
            "account": {"name": name, "email": f"{uuid.uuid4().hex[:8]}@example.com"},
            "firstUser": {"email": f"{uuid.uuid4().hex[:8]}@example.com"},
            "requestId": f"nul\x00{uuid.uuid4()}"})
        assert r.status_code == 400, r.text
        assert set(_violations(r.json())) == {"account.name", "request_id"}
    after = httpx.get(f"{guarded.http_url}/v1/accounts", params={"pageSize": 1},
                      headers=auth, timeout=10).json()["totalSize"]
    assert after == before


def test_a_user_agent_with_control_characters_is_stored_safely(guarded: Server) -> None:
    auth: dict[str, str | bytes] = {"authorization": f"Bearer {guarded.admin_token}",
                                    "user-agent": "agent\x85\x9b1".encode("latin-1")}
    me = httpx.get(f"{guarded.http_url}/v1/me", headers=auth, timeout=10).json()
    r = httpx.post(f"{guarded.http_url}/v1/sessions", headers=auth, timeout=10,
                   json={"user": {"userId": me["user"]["id"]}})
    assert r.status_code == 200, r.text
    assert r.json()["session"]["userAgent"] == "agent\ufffd\ufffd1"
