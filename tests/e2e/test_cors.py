"""CORS on the REST shim, by an allow-list of origins, against a real server: the exact
preflight Chromium sends before a cross-origin call with a token and a JSON body, from an
allowed and from another origin, then the actual calls. (Headless Chromium is not
installed here: the requests are the ones it sends, header for header.)"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import Server, running_server

APP = "https://app.example.com"
DEV = "http://localhost:3000"
EVIL = "https://evil.example"
MAX_FAILURES = 3


def chromium_preflight(origin: str, method: str, headers: str) -> dict[str, str]:
    """What Chromium 131 sends before ``fetch(url, {method, headers: {Authorization,
    'Content-Type': 'application/json'}})`` from a page of ``origin`` (Host added by httpx)."""
    return {
        "Accept": "*/*",
        "Accept-Encoding": "gzip, deflate, br, zstd",
        "Accept-Language": "en-US,en;q=0.9",
        "Access-Control-Request-Headers": headers,
        "Access-Control-Request-Method": method,
        "Cache-Control": "no-cache",
        "Connection": "keep-alive",
        "Origin": origin,
        "Pragma": "no-cache",
        "Referer": f"{origin}/",
        "Sec-Fetch-Dest": "empty",
        "Sec-Fetch-Mode": "cors",
        "Sec-Fetch-Site": "cross-site",
        "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like "
                      "Gecko) Chrome/131.0.0.0 Safari/537.36",
    }


def cors_headers(r: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in r.headers.items() if k.startswith("access-control-")}


def vary(r: httpx.Response) -> set[str]:
    return {v.strip().lower() for v in ",".join(r.headers.get_list("vary")).split(",")}


@pytest.fixture(scope="module")
def cors(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(backend, tmp_path_factory.mktemp(f"cors-{backend}"),
                        cors_allowed_origins=f"{APP}, {DEV}",
                        auth_max_failures=MAX_FAILURES) as srv:
        yield srv


@pytest.fixture
def http(cors: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cors.http_url, timeout=10) as client:
        yield client


def auth(srv: Server, origin: str) -> dict[str, str]:
    return {"Origin": origin, "Authorization": f"Bearer {srv.admin_token}"}


# -- preflights ---------------------------------------------------------------------------


@pytest.mark.parametrize("origin", [APP, DEV])
def test_a_preflight_from_an_allowed_origin(http: httpx.Client, origin: str) -> None:
    r = http.options("/v1/users/u1", headers=chromium_preflight(
        origin, "PATCH", "authorization,content-type"))
    assert r.status_code == 204 and r.content == b""
    assert cors_headers(r) == {
        "access-control-allow-origin": origin,
        "access-control-allow-methods": "DELETE, GET, PATCH",  # the path's own
        "access-control-allow-headers": "authorization, content-type",
        "access-control-max-age": "600",
    }
    assert "origin" in vary(r) and "access-control-request-headers" in vary(r)


def test_a_preflight_from_another_origin_gets_no_cors_headers(http: httpx.Client) -> None:
    """As any OPTIONS: 405 with Allow, and nothing a browser would take for consent."""
    r = http.options("/v1/users/u1", headers=chromium_preflight(
        EVIL, "PATCH", "authorization,content-type"))
    assert r.status_code == 405 and r.headers["allow"] == "DELETE, GET, PATCH"
    assert cors_headers(r) == {}
    assert r.json()["details"][0]["reason"] == "METHOD_NOT_ALLOWED"


@pytest.mark.parametrize("path, allow", [("/v1/me", "GET"), ("/v1/accounts", "GET, POST")])
def test_options_without_origin_is_still_405_with_allow(http: httpx.Client, path: str,
                                                        allow: str) -> None:
    r = http.options(path)
    assert r.status_code == 405 and r.headers["allow"] == allow
    assert cors_headers(r) == {}


def test_a_preflight_answers_with_the_paths_methods_and_the_headers_it_reads(
    http: httpx.Client
) -> None:
    asked = "authorization,content-type,grpc-metadata-tenant,x-request-id,x-evil"
    r = http.options("/v1/me", headers=chromium_preflight(APP, "DELETE", asked))
    assert r.status_code == 204
    # the browser compares: DELETE is not among them, so it refuses the call
    assert r.headers["access-control-allow-methods"] == "GET"
    assert r.headers["access-control-allow-headers"] == (
        "authorization, content-type, grpc-metadata-tenant, x-request-id")
    for path, methods in [("/v1/token", "POST"), ("/oauth2/introspect", "POST"),
                          ("/oauth2/revoke", "POST"),
                          ("/.well-known/openid-configuration", "GET, HEAD"),
                          ("/v1/sessions", "GET, POST")]:
        r = http.options(path, headers=chromium_preflight(APP, "POST", "content-type"))
        assert r.status_code == 204, path
        assert r.headers["access-control-allow-methods"] == methods, path


def test_a_preflight_to_an_unknown_path_is_404(http: httpx.Client) -> None:
    r = http.options("/v1/nothing", headers=chromium_preflight(APP, "GET", "authorization"))
    assert r.status_code == 404


def test_preflights_need_no_token_and_are_neither_calls_nor_failed_logins(
    cors: Server, http: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    caplog.clear()
    for _ in range(3 * MAX_FAILURES):
        for path in ("/v1/token", "/oauth2/introspect", "/v1/me"):
            r = http.options(path, headers=chromium_preflight(APP, "POST", "authorization"))
            assert r.status_code == 204
    assert not [rec for rec in caplog.records if rec.name == "accounts_grpc.calls"]
    token = http.post("/v1/token", headers={"Origin": APP}, data={
        "grant_type": "client_credentials", "client_id": cors.admin_client_id,
        "client_secret": cors.admin_client_secret})
    assert token.status_code == 200, token.text
    assert token.headers["access-control-allow-origin"] == APP


# -- actual requests --------------------------------------------------------------------------


def test_actual_calls_from_an_allowed_origin_may_be_read(cors: Server,
                                                         http: httpx.Client) -> None:
    me = http.get("/v1/me", headers=auth(cors, APP))
    assert me.status_code == 200
    assert cors_headers(me) == {
        "access-control-allow-origin": APP,
        "access-control-expose-headers": "x-request-id, retry-after, www-authenticate, allow",
    }
    assert "origin" in vary(me) and me.headers["x-request-id"]
    created = http.post("/v1/accounts", headers=auth(cors, DEV),
                        json={"account": {"name": "Cors Energy", "email": "ops@cors.example"},
                              "firstUser": {"kind": "USER_KIND_HUMAN", "email": "ada@cors.example",
                                            "firstName": "Ada", "lastName": "Lovelace"}})
    assert created.status_code == 200, created.text
    assert created.headers["access-control-allow-origin"] == DEV
    # an error too, so the page can read why (401, with its WWW-Authenticate exposed)
    denied = http.get("/v1/me", headers={"Origin": APP})
    assert denied.status_code == 401
    assert denied.headers["access-control-allow-origin"] == APP
    assert "www-authenticate" in denied.headers["access-control-expose-headers"]


def test_actual_calls_from_another_origin_carry_no_cors_headers(cors: Server,
                                                                http: httpx.Client) -> None:
    me = http.get("/v1/me", headers=auth(cors, EVIL))
    assert me.status_code == 200  # served (CORS is the browser's check), but not readable
    assert cors_headers(me) == {}
    assert "origin" in vary(me)  # a cache keeps each origin's answer apart
    assert cors_headers(http.get("/v1/me", headers=auth(cors, "null"))) == {}
    assert cors_headers(http.get("/healthz")) == {}


def test_without_allowed_origins_there_is_no_cors(server: Server) -> None:
    with httpx.Client(base_url=server.http_url, timeout=10) as http:
        r = http.options("/v1/me", headers=chromium_preflight(APP, "GET", "authorization"))
        assert r.status_code == 405 and r.headers["allow"] == "GET"
        me = http.get("/v1/me", headers=auth(server, APP))
    assert me.status_code == 200
    assert cors_headers(r) == {} and cors_headers(me) == {} and "vary" not in me.headers


def test_credentials_when_asked_for(backend: str, tmp_path: Any) -> None:
    with running_server(backend, tmp_path, cors_allowed_origins=APP,
                        cors_allow_credentials=True, cors_max_age=60) as srv, \
            httpx.Client(base_url=srv.http_url, timeout=10) as http:
        pre = http.options("/v1/me", headers=chromium_preflight(APP, "GET", "authorization"))
        assert pre.status_code == 204
        assert pre.headers["access-control-allow-credentials"] == "true"
        assert pre.headers["access-control-max-age"] == "60"
        me = http.get("/v1/me", headers=auth(srv, APP))
        assert me.headers["access-control-allow-credentials"] == "true"
        # with credentials a browser refuses "*": the origin is always named
        assert me.headers["access-control-allow-origin"] == APP
        other = http.get("/v1/me", headers=auth(srv, EVIL))
        assert cors_headers(other) == {}
