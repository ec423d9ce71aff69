"""``POST /v1/token``: an RFC 6749 §4.4 client-credentials endpoint that stock OAuth2 and
JOSE libraries use unchanged (Authlib to get the token, PyJWT's PyJWKClient to verify
it against ``/.well-known/jwks.json``)."""

from __future__ import annotations

import base64
import uuid
from typing import Any
from urllib.parse import quote_plus

import httpx
import jwt
import pytest
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session

from tests.support import Server

FORM = {"content-type": "application/x-www-form-urlencoded"}


def token_url(server: Server) -> str:
    return f"{server.http_url}/v1/token"


def verify(server: Server, access_token: str) -> dict[str, Any]:
    jwks = jwt.PyJWKClient(f"{server.http_url}/.well-known/jwks.json")
    key = jwks.get_signing_key_from_jwt(access_token)
    header = jwt.get_unverified_header(access_token)
    claims = jwt.decode(access_token, key.key, algorithms=[header["alg"]],
                        audience="accounts-grpc")
    return dict(claims)


def check_token_response(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["token_type"] == "Bearer"
    assert isinstance(body["expires_in"], int) and body["expires_in"] > 0
    assert set(body) <= {"access_token", "token_type", "expires_in", "scope"}
    return body


def basic(client_id: str, secret: str) -> dict[str, str]:
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"authorization": "Basic " + base64.b64encode(raw).decode()}


def oauth_error(r: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == error, body
    assert body.get("error_description")
    assert r.headers["cache-control"] == "no-store"
    return body


# -- stock clients ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_authlib_client_credentials_and_pyjwt_verification(server: Server, method: str) -> None:
    with OAuth2Session(server.admin_client_id, server.admin_client_secret,
                       token_endpoint_auth_method=method) as client:
        token = client.fetch_token(token_url(server), grant_type="client_credentials")
        assert token["token_type"].lower() == "bearer"
        assert isinstance(token["expires_in"], int)
        claims = verify(server, token["access_token"])
        me = client.get(f"{server.http_url}/v1/me")  # Authlib sends the Bearer token
        assert me.status_code == 200, me.text
    assert claims["sub"] == me.json()["user"]["id"]
    assert claims["account_id"] == me.json()["account"]["id"]
    assert "admin" in claims["roles"]
    assert claims["iss"] and claims["jti"] and claims["exp"] > claims["iat"]


def test_authlib_sees_invalid_client(server: Server) -> None:
    with OAuth2Session(server.admin_client_id, "wrong-secret",
                       token_endpoint_auth_method="client_secret_basic") as client, \
            pytest.raises(OAuthError) as ei:
        client.fetch_token(token_url(server), grant_type="client_credentials")
    assert ei.value.error == "invalid_client"


def test_requests_style_form_post_with_scope(server: Server) -> None:
    r = httpx.post(token_url(server), data={
        "grant_type": "client_credentials", "client_id": server.admin_client_id,
        "client_secret": server.admin_client_secret, "scope": "accounts.read"})
    body = check_token_response(r)
    assert body["scope"] == "accounts.read"
    verify(server, body["access_token"])


# -- JSON, both spellings -------------------------------------------------------------------------


def test_json_snake_case(server: Server) -> None:
    r = httpx.post(token_url(server), json={
        "grant_type": "client_credentials", "client_id": server.admin_client_id,
        "client_secret": server.admin_client_secret})
    verify(server, check_token_response(r)["access_token"])


def test_json_lower_camel_without_grant_type(server: Server) -> None:
    r = httpx.post(token_url(server), json={
        "clientId": server.admin_client_id, "clientSecret": server.admin_client_secret})
    check_token_response(r)


def test_json_with_basic_authentication(server: Server) -> None:
    r = httpx.post(token_url(server), json={"grant_type": "client_credentials"},
                   headers=basic(server.admin_client_id, server.admin_client_secret))
    check_token_response(r)


# -- RFC 6749 §5.2 errors -------------------------------------------------------------------------


def test_wrong_secret_with_basic_is_401_with_challenge(server: Server) -> None:
    r = httpx.post(token_url(server), data={"grant_type": "client_credentials"},
                   headers=basic(server.admin_client_id, "nope"))
    oauth_error(r, 401, "invalid_client")
    assert r.headers["www-authenticate"] == 'Basic realm="accounts-grpc"'


def test_unknown_client_in_the_body_is_401(server: Server) -> None:
    r = httpx.post(token_url(server), data={"grant_type": "client_credentials",
                                            "client_id": "cid_unknown", "client_secret": "x"})
    oauth_error(r, 401, "invalid_client")
    assert "www-authenticate" in r.headers


@pytest.mark.parametrize("data", [
    {"client_id": "c", "client_secret": "s"},  # form without grant_type
    {"grant_type": "client_credentials", "client_id": "c"},
    {"grant_type": "client_credentials"},
])
def test_missing_parameters_are_invalid_request(server: Server, data: dict[str, str]) -> None:
    oauth_error(httpx.post(token_url(server), data=data), 400, "invalid_request")


def test_other_grant_type_is_unsupported(server: Server) -> None:
    r = httpx.post(token_url(server), data={
        "grant_type": "password", "client_id": server.admin_client_id,
        "client_secret": server.admin_client_secret, "username": "u", "password": "p"})
    oauth_error(r, 400, "unsupported_grant_type")
    r = httpx.post(token_url(server), json={"grant_type": "authorization_code"})
    oauth_error(r, 400, "unsupported_grant_type")


def test_two_authentication_methods_are_invalid_request(server: Server) -> None:
    r = httpx.post(token_url(server), data={
        "grant_type": "client_credentials", "client_secret": server.admin_client_secret},
        headers=basic(server.admin_client_id, server.admin_client_secret))
    oauth_error(r, 400, "invalid_request")


def test_malformed_bodies_are_invalid_request(server: Server) -> None:
    oauth_error(httpx.post(token_url(server), content=b"{nope",
                           headers={"content-type": "application/json"}), 400, "invalid_request")
    oauth_error(httpx.post(token_url(server), json={"client_id": 7}), 400, "invalid_request")
    oauth_error(httpx.post(token_url(server), json={"bogus": "x"}), 400, "invalid_request")
    oauth_error(httpx.post(token_url(server), content=b"<x/>",
                           headers={"content-type": "application/xml"}), 400, "invalid_request")


def test_oversize_token_request_is_413(server: Server) -> None:
    limit = server.app.settings.http_max_body_bytes
    r = httpx.post(token_url(server), content=b"a=" + b"x" * limit, headers=FORM)
    oauth_error(r, 413, "invalid_request")


# -- the attempt limiter: 429 with Retry-After, per client id at an address ---------------------


def test_repeated_failures_get_429_with_retry_after(server: Server) -> None:
    """From another loopback address, so that this test blocks only itself: the peer the
    pipeline sees is the HTTP client's address."""
    limit = server.app.settings.auth_max_failures
    client_id = f"cid_{uuid.uuid4().hex[:12]}"
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    url = token_url(server)
    with httpx.Client(transport=transport, timeout=30) as other:
        statuses = []
        for _ in range(limit + 1):
            r = other.post(url, data={"grant_type": "client_credentials",
                                      "client_id": client_id, "client_secret": "guess"})
            statuses.append(r.status_code)
            if r.status_code == 429:
                break
        assert statuses[:limit] == [401] * limit, statuses
        assert statuses[-1] == 429, statuses
        body = oauth_error(r, 429, "temporarily_unavailable")
        assert int(r.headers["retry-after"]) >= 1, body
        # the real admin, from the same address, is not refused: only that client id is
        # blocked there (below --auth-max-failures-per-address) ...
        r = other.post(url, data={"grant_type": "client_credentials",
                                  "client_id": server.admin_client_id,
                                  "client_secret": server.admin_client_secret})
        check_token_response(r)
        r = other.post(url, data={"grant_type": "client_credentials",
                                  "client_id": client_id, "client_secret": "guess"})
        assert r.status_code == 429
    # ... and the admin from its own address, of course
    r = httpx.post(token_url(server), data={
        "grant_type": "client_credentials", "client_id": server.admin_client_id,
        "client_secret": server.admin_client_secret})
    check_token_response(r)
