"""The OAuth 2 endpoints beside ``POST /v1/token``: authorization-server metadata (RFC 8414,
OIDC discovery), token introspection (RFC 7662) and revocation (RFC 7009), over real
HTTP, with Authlib configured from the metadata document alone."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote_plus

import httpx
import jwt
import pytest
from accounts.v1 import session_service_pb2 as spb
from accounts.v1 import user_pb2
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.integrations.requests_client import OAuth2Session
from authlib.integrations.starlette_client import OAuth

from accounts_grpc.rest.oauth_endpoints import issuer_base, request_base
from tests.e2e.auth_helpers import UserCreds, make_account, make_user, token_for
from tests.support import Server, bearer, running_server

WELL_KNOWN = ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration")
FORM = {"content-type": "application/x-www-form-urlencoded"}
T = 10


def basic(client_id: str, secret: str) -> dict[str, str]:
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"authorization": "Basic " + base64.b64encode(raw).decode()}


def metadata(server: Server, path: str = WELL_KNOWN[0]) -> dict[str, Any]:
    r = httpx.get(server.http_url + path, timeout=T)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    doc: dict[str, Any] = r.json()
    return doc


def oauth_error(r: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert body["error"] == error, body
    assert body.get("error_description")
    assert r.headers["cache-control"] == "no-store"
    return body


def new_session(server: Server, caller: tuple[tuple[str, str], ...], user: UserCreds) -> str:
    resp = server.stubs.sessions.CreateSession(
        spb.CreateSessionRequest(user=user_pb2.UserRef(user_id=user.id)),
        metadata=caller, timeout=T)
    return str(resp.access_token)


def works(server: Server, token: str) -> bool:
    r = httpx.get(f"{server.http_url}/v1/me", headers={"authorization": f"Bearer {token}"},
                  timeout=T)
    assert r.status_code in (200, 401), r.text
    return r.status_code == 200


@pytest.fixture(scope="module")
def tenant(server: Server) -> dict[str, Any]:
    """An account with an account-admin machine user and a human; another account with a
    machine user of its own."""
    aid = make_account(server)
    other = make_account(server)
    t: dict[str, Any] = {
        "admin": make_user(server, aid, roles=("account-admin",)),
        "human": make_user(server, aid, kind="HUMAN"),
        "stranger": make_user(server, other, roles=("account-admin",)),
    }
    t["admin_md"] = bearer(token_for(server, t["admin"]))
    return t


class Client:
    """Introspection and revocation by hand, with HTTP Basic client authentication."""

    def __init__(self, server: Server, user: UserCreds) -> None:
        doc = metadata(server)
        self.introspection = doc["introspection_endpoint"]
        self.revocation = doc["revocation_endpoint"]
        self.auth = basic(user.client_id, user.client_secret)

    def introspect(self, token: str, **extra: str) -> httpx.Response:
        return httpx.post(self.introspection, data={"token": token, **extra},
                          headers=self.auth, timeout=T)

    def revoke(self, token: str, **extra: str) -> httpx.Response:
        return httpx.post(self.revocation, data={"token": token, **extra},
                          headers=self.auth, timeout=T)


# -- the metadata ---------------------------------------------------------------------------


def test_metadata_documents(server: Server) -> None:
    docs = [metadata(server, p) for p in WELL_KNOWN]
    assert docs[0] == docs[1]
    doc = docs[0]
    # the issuer is the iss the server signs, exactly
    claims = jwt.decode(server.admin_token, options={"verify_signature": False})
    assert doc["issuer"] == claims["iss"] == server.app.settings.issuer
    base = server.http_url  # the issuer is a plain name: URLs from the request's Host
    assert doc["token_endpoint"] == base + "/v1/token"
    assert doc["jwks_uri"] == base + "/.well-known/jwks.json"
    assert doc["introspection_endpoint"] == base + "/oauth2/introspect"
    assert doc["revocation_endpoint"] == base + "/oauth2/revoke"
    assert doc["grant_types_supported"] == [
        "client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"]
    methods = ["client_secret_basic", "client_secret_post"]
    for endpoint in ("token", "introspection", "revocation"):
        assert doc[f"{endpoint}_endpoint_auth_methods_supported"] == methods
    assert doc["response_types_supported"] == []  # no interactive flow
    assert doc["subject_types_supported"] == ["public"]
    assert "authorization_endpoint" not in doc
    # the algorithms are those of the keys that verify tokens, the signing one among them
    jwks = httpx.get(doc["jwks_uri"], timeout=T).json()["keys"]
    assert doc["id_token_signing_alg_values_supported"] == list(
        dict.fromkeys(k["alg"] for k in jwks))
    assert jwt.get_unverified_header(server.admin_token)["alg"] in (
        doc["id_token_signing_alg_values_supported"])
    assert {"iss", "sub", "aud", "exp", "iat", "jti"} <= set(doc["claims_supported"])


def test_every_url_in_the_metadata_resolves(server: Server) -> None:
    doc = metadata(server)
    jwks = httpx.get(doc["jwks_uri"], timeout=T)
    assert jwks.status_code == 200 and jwks.json()["keys"]
    token = httpx.post(doc["token_endpoint"], data={"grant_type": "client_credentials"},
                       headers=basic(server.admin_client_id, server.admin_client_secret),
                       timeout=T)
    assert token.status_code == 200 and token.json()["access_token"]
    for name in ("introspection_endpoint", "revocation_endpoint"):
        r = httpx.post(doc[name], data={"token": "x"}, timeout=T)
        oauth_error(r, 401, "invalid_client")  # there, and asks the client to authenticate
        assert r.headers["www-authenticate"].startswith("Basic")


def test_jwks_is_cacheable(server: Server) -> None:
    r = httpx.get(metadata(server)["jwks_uri"], timeout=T)
    assert r.status_code == 200
    max_age = server.app.settings.jwks_max_age
    assert r.headers["cache-control"] == f"public, max-age={max_age}"
    assert "max-age" in httpx.get(server.http_url + WELL_KNOWN[0], timeout=T).headers[
        "cache-control"]


def test_metadata_ignores_forwarded_headers_of_an_untrusted_peer(server: Server) -> None:
    r = httpx.get(server.http_url + WELL_KNOWN[1], timeout=T, headers={
        "x-forwarded-host": "evil.example", "x-forwarded-proto": "https"})
    assert r.json()["token_endpoint"] == server.http_url + "/v1/token"


@pytest.mark.parametrize("path", WELL_KNOWN)
def test_metadata_is_get_only(server: Server, path: str) -> None:
    r = httpx.post(server.http_url + path, timeout=T)
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"


# -- Authlib, configured from the metadata alone ----------------------------------------------


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_authlib_session_from_the_metadata(server: Server, tenant: dict[str, Any],
                                           method: str) -> None:
    doc = metadata(server, WELL_KNOWN[1])
    admin = tenant["admin"]
    with OAuth2Session(admin.client_id, admin.client_secret,
                       token_endpoint_auth_method=method,
                       revocation_endpoint_auth_method=method, **doc) as client:
        # no URL given: Authlib takes the token endpoint from the metadata
        token = client.fetch_token(grant_type=doc["grant_types_supported"][0])
        assert token["token_type"].lower() == "bearer"
        access = token["access_token"]
        assert jwt.decode(access, options={"verify_signature": False})["iss"] == doc["issuer"]

        info = client.introspect_token(client.metadata["introspection_endpoint"], token=access)
        assert info.status_code == 200, info.text
        assert info.headers["cache-control"] == "no-store"
        body = info.json()
        claims = jwt.decode(access, options={"verify_signature": False})
        assert body["active"] is True
        assert body["token_type"] == "Bearer"
        for name in ("iss", "sub", "aud", "exp", "iat", "jti", "client_id", "account_id"):
            assert body[name] == claims[name], name
        assert body["client_id"] == admin.client_id
        assert "account-admin" in body["roles"] and body["kind"] == "MACHINE"

        # a JWT cannot be revoked on its own (RFC 7009 §2.2.1)
        r = client.revoke_token(client.metadata["revocation_endpoint"], token=access,
                                token_type_hint="access_token")
        assert r.status_code == 400
        assert r.json()["error"] == "unsupported_token_type"
        assert works(server, access)

        # a session token is revoked, and inactive afterwards
        session = new_session(server, tenant["admin_md"], tenant["human"])
        assert works(server, session)
        info = client.introspect_token(client.metadata["introspection_endpoint"],
                                       token=session, token_type_hint="access_token")
        body = info.json()
        assert body["active"] is True and body["sub"] == tenant["human"].id
        assert body["token_type"] == "Bearer" and body["kind"] == "HUMAN"
        assert body["jti"] and body["exp"] > body["iat"]
        r = client.revoke_token(client.metadata["revocation_endpoint"], token=session)
        assert r.status_code == 200, r.text
        assert not works(server, session)
        info = client.introspect_token(client.metadata["introspection_endpoint"],
                                       token=session)
        assert info.json() == {"active": False}
        # revoking it again: nothing to do, still a success (RFC 7009 §2.2)
        r = client.revoke_token(client.metadata["revocation_endpoint"], token=session)
        assert r.status_code == 200, r.text


def test_authlib_registry_discovers_the_endpoints(server: Server,
                                                  tenant: dict[str, Any]) -> None:
    """Authlib's client registry given only the discovery URL (asyncio, httpx)."""
    admin = tenant["admin"]

    async def run() -> None:
        oauth = OAuth()
        oauth.register("accounts", client_id=admin.client_id,
                       client_secret=admin.client_secret,
                       server_metadata_url=server.http_url + WELL_KNOWN[1])
        app = oauth.create_client("accounts")
        token = await app.fetch_access_token(grant_type="client_credentials")
        access = token["access_token"]
        doc = await app.load_server_metadata()
        async with AsyncOAuth2Client(admin.client_id, admin.client_secret, **doc) as client:
            info = await client.introspect_token(doc["introspection_endpoint"], token=access)
            assert info.status_code == 200 and info.json()["active"] is True
            session = new_session(server, tenant["admin_md"], tenant["human"])
            r = await client.revoke_token(doc["revocation_endpoint"], token=session)
            assert r.status_code == 200, r.text
            info = await client.introspect_token(doc["introspection_endpoint"], token=session)
            assert info.json() == {"active": False}

    asyncio.run(run())


# -- introspection and revocation: answers and errors -----------------------------------------


@pytest.mark.parametrize("token", [
    "nope",
    "st_" + "A" * 43,
    "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
])
def test_unknown_tokens_are_inactive_and_need_no_revocation(
        server: Server, tenant: dict[str, Any], token: str) -> None:
    client = Client(server, tenant["admin"])
    r = client.introspect(token)
    assert r.status_code == 200 and r.json() == {"active": False}
    r = client.revoke(token, token_type_hint="refresh_token")
    assert r.status_code == 200, r.text


def test_tokens_of_another_account(server: Server, tenant: dict[str, Any]) -> None:
    session = new_session(server, tenant["admin_md"], tenant["human"])
    stranger = Client(server, tenant["stranger"])
    # introspection: as if unknown (IntrospectToken's rule)
    assert stranger.introspect(session).json() == {"active": False}
    # revocation: refused, and the session goes on working
    oauth_error(stranger.revoke(session), 400, "unauthorized_client")
    assert works(server, session)
    # the platform admin sees it
    platform = Client(server, UserCreds("", "", server.admin_client_id,
                                        server.admin_client_secret))
    body = platform.introspect(session).json()
    assert body["active"] is True and body["sub"] == tenant["human"].id


def test_client_authentication_errors(server: Server, tenant: dict[str, Any]) -> None:
    admin = tenant["admin"]
    url = metadata(server)["introspection_endpoint"]
    for headers, data in [
        ({}, {"token": "x"}),  # none
        (basic(admin.client_id, "wrong"), {"token": "x"}),
        ({}, {"token": "x", "client_id": admin.client_id, "client_secret": "wrong"}),
        ({}, {"token": "x", "client_id": "no-such-client", "client_secret": "s"}),
        (dict(tenant["admin_md"]), {"token": "x"}),  # a Bearer token is no client auth
    ]:
        r = httpx.post(url, data=data, headers=headers, timeout=T)
        oauth_error(r, 401, "invalid_client")
        assert r.headers["www-authenticate"].startswith("Basic")
    r = httpx.post(url, data={"token": "x"}, headers=dict(tenant["admin_md"]), timeout=T)
    assert "/v1/token:introspect" in r.json()["error_description"]
    # both methods at once
    r = httpx.post(url, data={"token": "x", "client_secret": admin.client_secret},
                   headers=basic(admin.client_id, admin.client_secret), timeout=T)
    oauth_error(r, 400, "invalid_request")


@pytest.mark.parametrize("path", ["/oauth2/introspect", "/oauth2/revoke"])
def test_request_errors(server: Server, tenant: dict[str, Any], path: str) -> None:
    admin = tenant["admin"]
    url = server.http_url + path
    auth = basic(admin.client_id, admin.client_secret)
    oauth_error(httpx.post(url, data={}, headers=auth, timeout=T), 400, "invalid_request")
    oauth_error(httpx.post(url, data={"token": " "}, headers=auth, timeout=T), 400,
                "invalid_request")
    oauth_error(httpx.post(url, json={"token": "x"}, headers=auth, timeout=T), 400,
                "invalid_request")
    oauth_error(httpx.post(url + "?token=x", data={"token": "x"}, headers=auth, timeout=T),
                400, "invalid_request")
    oauth_error(httpx.post(url, content=b"token=a&token=b", headers={**auth, **FORM},
                           timeout=T), 400, "invalid_request")
    r = httpx.get(url, timeout=T)
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    # client_secret_post works as well as Basic
    r = httpx.post(url, data={"token": "x", "client_id": admin.client_id,
                              "client_secret": admin.client_secret}, timeout=T)
    assert r.status_code == 200, r.text


def test_failed_client_authentication_is_rate_limited_with_the_token_endpoint(
        server: Server, tenant: dict[str, Any]) -> None:
    """Wrong secrets at introspection count on CreateToken's limiter: once the client is
    refused at this address, introspection, revocation and the token endpoint all say 429."""
    user = make_user(server, make_account(server))
    doc = metadata(server)
    for _ in range(server.app.settings.auth_max_failures):
        r = httpx.post(doc["introspection_endpoint"], data={"token": "x"},
                       headers=basic(user.client_id, "wrong"), timeout=T)
        oauth_error(r, 401, "invalid_client")
    good = basic(user.client_id, user.client_secret)
    for url, data in [(doc["introspection_endpoint"], {"token": "x"}),
                      (doc["revocation_endpoint"], {"token": "x"}),
                      (doc["token_endpoint"], {"grant_type": "client_credentials"})]:
        r = httpx.post(url, data=data, headers=good, timeout=T)
        oauth_error(r, 429, "temporarily_unavailable")
        assert int(r.headers["retry-after"]) > 0


# -- an issuer that is a URL ------------------------------------------------------------------


@pytest.fixture(scope="module")
def url_issuer(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(backend, tmp_path_factory.mktemp(f"iss-{backend}"),
                        issuer="https://id.example.test/accounts") as srv:
        yield srv


def test_an_issuer_url_is_the_base_of_every_endpoint(url_issuer: Server) -> None:
    doc = metadata(url_issuer)
    claims = jwt.decode(url_issuer.admin_token, options={"verify_signature": False})
    assert doc["issuer"] == claims["iss"] == "https://id.example.test/accounts"
    assert doc["token_endpoint"] == "https://id.example.test/accounts/v1/token"
    assert doc["jwks_uri"] == "https://id.example.test/accounts/.well-known/jwks.json"
    assert doc["introspection_endpoint"] == "https://id.example.test/accounts/oauth2/introspect"
    assert doc["revocation_endpoint"] == "https://id.example.test/accounts/oauth2/revoke"


# -- the base URL, as a function --------------------------------------------------------------


def _scope(host: str | None, peer: str = "10.0.0.5", **headers: str) -> dict[str, Any]:
    hs = [(b"host", host.encode())] if host is not None else []
    hs += [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return {"scheme": "http", "headers": hs, "client": (peer, 5555),
            "server": ("192.0.2.1", 8080)}


PROXY = (ipaddress.ip_network("10.0.0.0/8"),)


@pytest.mark.parametrize(("scope", "trusted", "expected"), [
    (_scope("api.example:8443"), (), "http://api.example:8443"),
    (_scope("api.example", x_forwarded_host="evil", x_forwarded_proto="https"), (),
     "http://api.example"),
    (_scope("internal:8080", x_forwarded_host="id.example, inner", x_forwarded_proto="https"),
     PROXY, "https://id.example"),
    (_scope("internal:8080", peer="203.0.113.9", x_forwarded_host="id.example"), PROXY,
     "http://internal:8080"),
    (_scope("internal:8080", x_forwarded_proto="gopher"), PROXY, "http://internal:8080"),
    (_scope("bad host/../x"), (), "http://192.0.2.1:8080"),
    (_scope(None), (), "http://192.0.2.1:8080"),
    (_scope("[::1]:8080"), (), "http://[::1]:8080"),
])
def test_request_base(scope: dict[str, Any], trusted: Any, expected: str) -> None:
    assert request_base(scope, trusted) == expected


@pytest.mark.parametrize(("issuer", "expected"), [
    ("accounts-grpc", None),
    ("https://id.example", "https://id.example"),
    ("https://id.example/", "https://id.example"),
    ("https://id.example/tenant", "https://id.example/tenant"),
    ("http://localhost:8080", "http://localhost:8080"),
    ("https://id.example?x=1", None),
    ("urn:example:issuer", None),
])
def test_issuer_base(issuer: str, expected: str | None) -> None:
    assert issuer_base(issuer) == expected
