"""The OAuth 2 endpoints beside the token endpoint (``POST /v1/token``, oauth.py).

- ``GET /.well-known/oauth-authorization-server`` (RFC 8414) and ``GET
  /.well-known/openid-configuration`` (OpenID Connect Discovery 1.0) serve one metadata
  document, so a stock client configured with nothing but its URL finds the token,
  introspection, revocation and JWKS endpoints itself. Its ``issuer`` is the ``iss``
  of every JWT the server signs (``--issuer``), character for character.
- ``POST /oauth2/introspect`` (RFC 7662) and ``POST /oauth2/revoke`` (RFC 7009): a form
  with ``token`` (and an optional ``token_type_hint``, a hint only), the client
  authenticated as at the token endpoint (``client_secret_basic`` or
  ``client_secret_post``), not with a Bearer token. The paths are not
  ``/v1/token:introspect``: that is the IntrospectToken RPC's route, which takes a
  Bearer token and answers proto3 JSON.

Client authentication is CreateToken's own check (``SessionsService.authenticate_client``),
so it goes through the same failed-attempt limiter: a wrong secret here counts as one
at the token endpoint does, and a refused client or address gets 429 with
``Retry-After``. A failed authentication is 401 ``invalid_client`` with
``WWW-Authenticate: Basic``; a malformed request 400 ``invalid_request``.

Who may introspect what: any authenticated client, by IntrospectToken's rule (a token
of another account is ``{"active": false}`` unless the client is ``admin`` or
``admin-reader``; RFC 7662 §4 leaves the policy to the server). Every token that would
not authenticate a call now (unknown, expired, revoked, tampered) is ``{"active":
false}`` and nothing else. An active one carries RFC 7662's members (``token_type`` is
``Bearer``, as RFC 6749 §7.1 types it, for both kinds; ``jti`` of a session token is
the session id) and the JWT's own claims ``account_id``, ``roles`` and ``kind``.

What revocation does: a session token's session is revoked if the client may revoke it
by RevokeSession's rule, else 400 ``unauthorized_client`` (the token goes on working,
so the client is not told otherwise). An unknown, expired or already revoked token is
200 (RFC 7009 §2.2: the purpose is achieved). A JWT access token that still works is
400 ``unsupported_token_type`` (RFC 7009 §2.2.1): a JWT cannot be revoked on its own; it
works until its ``exp`` (``--token-lifetime``), and rotating the client's secret
revokes every JWT of that client at once.

The absolute URLs in the metadata: when ``--issuer`` is an absolute ``https``/``http``
URL (RFC 8414 and OIDC want it to be one: the URL the metadata is found under), it is
the public base URL and every endpoint lies under it, whatever the request said.
Otherwise (the default issuer ``accounts-grpc`` is a plain name) they are built from the
request: its scheme and ``Host``; behind a proxy named by ``--trusted-proxies``, the
proxy's ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` (the first value of each), and
from anybody else those headers are ignored. A ``Host`` that is not a host name or
address (and port) is not echoed: the server's own address is used instead.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from accounts_grpc.domain.principal import Principal
from accounts_grpc.rest import oauth
from accounts_grpc.rest.asgi import BodyTooLarge, ClientGone, Receive, Scope, Send, read_body
from accounts_grpc.rest.errors import Headers, error_response, shim_status
from accounts_grpc.rpc.pipeline import Admission, CallFailed
from accounts_grpc.services.sessions import Issuer, SessionsService, TokenInfo

log = logging.getLogger("accounts_grpc.rest")

Handler = Callable[[Scope, Receive, Send], Awaitable[int]]
Networks = Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]

AS_METADATA_PATH = "/.well-known/oauth-authorization-server"
OIDC_METADATA_PATH = "/.well-known/openid-configuration"
TOKEN_PATH = "/v1/token"
JWKS_PATH = "/.well-known/jwks.json"
INTROSPECT_PATH = "/oauth2/introspect"
REVOKE_PATH = "/oauth2/revoke"
SESSION_SERVICE = "accounts.v1.SessionService"

#: client authentication at the token, introspection and revocation endpoints alike
AUTH_METHODS = ("client_secret_basic", "client_secret_post")
#: the claims of our JWTs (API.md), for ``claims_supported``
CLAIMS = ("iss", "sub", "aud", "iat", "exp", "jti", "account_id", "roles", "kind",
          "client_id", "act")
BEARER_HINT = "a Bearer token is introspected at POST /v1/token:introspect"

JSON_TYPE = b"application/json"
#: a Host (or X-Forwarded-Host) worth echoing: a name or an address, and a port
_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_][A-Za-z0-9_.-]{0,252})(?::[0-9]{1,5})?")


# -- the metadata document ----------------------------------------------------------------


def issuer_base(issuer: str) -> str | None:
    """The issuer as the public base URL, if it is an absolute http(s) URL without query
    or fragment (RFC 8414 §2); None for a plain name such as ``accounts-grpc``."""
    try:
        parts = urlsplit(issuer)
    except ValueError:
        return None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return None
    if parts.query or parts.fragment or "?" in issuer or "#" in issuer:
        return None
    return issuer.rstrip("/")


def _first(value: str) -> str:
    return value.split(",", 1)[0].strip()


def _trusted(peer: str, trusted: Networks) -> bool:
    if not trusted or not peer:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in net for net in trusted)


def request_base(scope: Scope, trusted: Networks) -> str:
    """``scheme://host[:port]`` of the request as its client addressed it (see the module
    doc: X-Forwarded-* only from a trusted proxy; a malformed Host is not echoed)."""
    scheme = str(scope.get("scheme") or "http")
    host = ""
    forwarded_proto = forwarded_host = ""
    for k, v in scope.get("headers", ()):
        if k == b"host":
            host = v.decode("latin-1").strip()
        elif k == b"x-forwarded-proto" and not forwarded_proto:
            forwarded_proto = _first(v.decode("latin-1")).lower()
        elif k == b"x-forwarded-host" and not forwarded_host:
            forwarded_host = _first(v.decode("latin-1"))
    client = scope.get("client")
    if _trusted(str(client[0]) if client else "", trusted):
        if forwarded_proto in ("http", "https"):
            scheme = forwarded_proto
        if forwarded_host and _HOST.fullmatch(forwarded_host):
            host = forwarded_host
    if not _HOST.fullmatch(host):
        server = scope.get("server") or ("localhost", None)
        name, port = str(server[0]), server[1]
        name = f"[{name}]" if ":" in name else name
        host = name if port is None else f"{name}:{port}"
    return f"{scheme}://{host}"


def metadata_document(base: str, issuer: Issuer) -> dict[str, Any]:
    """The authorization-server metadata (RFC 8414 §2), also served as the OpenID
    Provider metadata (OIDC Discovery §3), with absolute URLs under ``base``."""
    methods = list(AUTH_METHODS)
    return {
        "issuer": issuer.issuer,
        "token_endpoint": base + TOKEN_PATH,
        "jwks_uri": base + JWKS_PATH,
        "introspection_endpoint": base + INTROSPECT_PATH,
        "revocation_endpoint": base + REVOKE_PATH,
        # RFC 8693 token exchange: delegated tokens (services/exchange.py)
        "grant_types_supported": ["client_credentials", oauth.EXCHANGE_GRANT],
        "token_endpoint_auth_methods_supported": methods,
        "introspection_endpoint_auth_methods_supported": methods,
        "revocation_endpoint_auth_methods_supported": methods,
        # No interactive flow exists: no authorization endpoint (RFC 8414 requires it only
        # for grant types that use it), no ID token, no userinfo endpoint. Both documents
        # still require these three members, so they say what is true: no response type
        # at all; ``sub`` is the user id, the same for every client ("public"); and the
        # algorithms of the keys in the JWKS, which sign our JWT access tokens (OIDC asks
        # for RS256 among them; it is listed when a key uses it, not claimed otherwise).
        "response_types_supported": [],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": list(issuer.signing_algs),
        "claims_supported": list(CLAIMS),
    }


def introspection_document(info: TokenInfo) -> dict[str, Any]:
    """RFC 7662 §2.2: ``{"active": false}`` alone, or the active token's members."""
    if not info.active:
        return {"active": False}
    out: dict[str, Any] = {"active": True, "token_type": "Bearer"}
    for name in ("client_id", "scope", "sub", "aud", "iss", "jti"):
        value = getattr(info, name)
        if value:
            out[name] = value
    out["exp"] = info.exp
    out["iat"] = info.iat
    out["account_id"] = info.account_id
    out["roles"] = list(info.roles)
    out["kind"] = info.kind
    return out


# -- the endpoints ----------------------------------------------------------------------------


class OAuthEndpoints:
    """The handlers, by path, for the gateway's table of non-RPC paths (each answers and
    returns its HTTP status). The gateway lends what it shares with every call: the
    pipeline, its worker threads (``in_worker``: the admission bound too), its header
    reading and its response writer."""

    def __init__(self, *, pipeline: Any, servicers: Mapping[str, object],
                 trusted_proxies: Networks, jwks_max_age: int, max_body: int,
                 body_timeout: float,
                 in_worker: Callable[..., Awaitable[Any]],
                 headers: Callable[[Scope], tuple[dict[str, str], str, int | None]],
                 send: Callable[[Send, int, Headers, bytes], Awaitable[None]]) -> None:
        self.pipeline = pipeline
        # the use cases behind SessionService (its servicer holds them); None when the
        # server runs without one (then these endpoints answer 501, like its RPCs)
        sessions = getattr(servicers.get(SESSION_SERVICE), "sessions", None)
        self.sessions = sessions if isinstance(sessions, SessionsService) else None
        self.trusted = tuple(trusted_proxies)
        self.jwks_max_age = jwks_max_age
        self.max_body = max_body
        self.body_timeout = body_timeout
        self.in_worker = in_worker
        self.headers = headers
        self.send = send

    def routes(self) -> dict[str, Handler]:
        return {
            AS_METADATA_PATH: self.metadata,
            OIDC_METADATA_PATH: self.metadata,
            INTROSPECT_PATH: self.introspect,
            REVOKE_PATH: self.revoke,
        }

    async def _method_not_allowed(self, scope: Scope, send: Send, allow: str) -> int:
        status = shim_status("UNIMPLEMENTED", "Method Not Allowed", "METHOD_NOT_ALLOWED",
                             {"method": scope["method"], "allow": allow})
        code, headers, body = error_response(status, 405)
        headers.append((b"allow", allow.encode()))
        await self.send(send, code, headers, body)
        return 405

    async def _unimplemented(self, send: Send, path: str) -> int:
        status = shim_status("UNIMPLEMENTED", f"{path} is not served here", "UNIMPLEMENTED",
                             {"path": path})
        await self.send(send, *error_response(status))
        return 501

    # -- GET the metadata ----------------------------------------------------------------
    async def metadata(self, scope: Scope, receive: Receive, send: Send) -> int:
        if scope["method"] not in ("GET", "HEAD"):
            return await self._method_not_allowed(scope, send, "GET, HEAD")
        sessions = self.sessions
        if sessions is None:
            return await self._unimplemented(send, scope["path"])
        try:
            # the keys may be re-read from the database: on a worker thread, through the
            # pipeline (its error mapping and log line), public like GetJwks
            issuer: Issuer = await self.in_worker(
                self.pipeline.call, scope["path"], None, self.headers(scope)[0], _peer(scope),
                "rest", lambda _request: sessions.issuer(), admitted=Admission(None))
        except CallFailed as e:
            code, err_headers, err_body = error_response(e.status)
            await self.send(send, code, err_headers, err_body)
            return code
        base = issuer_base(issuer.issuer) or request_base(scope, self.trusted)
        body = json.dumps(metadata_document(base, issuer), separators=(",", ":")).encode()
        headers: Headers = [
            (b"content-type", JSON_TYPE),
            # it changes when the keys do, as the JWKS: cacheable as long
            (b"cache-control", f"public, max-age={self.jwks_max_age}".encode()),
        ]
        await self.send(send, 200, headers, body)
        return 200

    # -- POST introspection, revocation -----------------------------------------------------
    async def introspect(self, scope: Scope, receive: Receive, send: Send) -> int:
        sessions = self.sessions

        def run(p: Principal, form: oauth.TokenForm) -> tuple[int, bytes]:
            assert sessions is not None
            info = sessions.introspect(p, form.token)
            return 200, json.dumps(introspection_document(info), separators=(",", ":")).encode()

        return await self._form_call(scope, receive, send, INTROSPECT_PATH, run)

    async def revoke(self, scope: Scope, receive: Receive, send: Send) -> int:
        sessions = self.sessions

        def run(p: Principal, form: oauth.TokenForm) -> tuple[int, bytes]:
            assert sessions is not None
            sessions.revoke_token(p, form.token)
            return 200, b"{}"

        return await self._form_call(scope, receive, send, REVOKE_PATH, run)

    async def _form_call(self, scope: Scope, receive: Receive, send: Send, path: str,
                         run: Callable[[Principal, oauth.TokenForm], tuple[int, bytes]]
                         ) -> int:
        """Read and check the form, then, through the pipeline on a worker thread (one
        log line, error mapping, the client's address for the limiter):
        authenticate the client and ``run``."""
        if scope["method"] != "POST":
            return await self._method_not_allowed(scope, send, "POST")
        sessions = self.sessions
        if sessions is None:
            return await self._unimplemented(send, path)
        metadata, ctype, length = self.headers(scope)
        authorization = metadata.pop("authorization", None)  # client credentials
        try:
            if scope.get("query_string"):
                raise oauth.OAuthError(400, "invalid_request",
                                       "send the parameters in the body, not the query string")
            try:
                body = await asyncio.wait_for(read_body(receive, self.max_body, length),
                                              self.body_timeout)
            except BodyTooLarge:
                raise oauth.OAuthError(413, "invalid_request", "the request body is larger "
                                       f"than {self.max_body} bytes") from None
            form = oauth.parse_token_form(body, ctype, authorization, bearer_hint=BEARER_HINT)
        except ClientGone:
            return 499
        except TimeoutError:
            return await self._answer(send, oauth.OAuthError(
                408, "invalid_request",
                f"the request body did not arrive within {self.body_timeout:g} s"))
        except oauth.OAuthError as e:
            return await self._answer(send, e)

        def call(_request: Any) -> tuple[int, bytes]:
            p = sessions.authenticate_client(form.client_id, form.client_secret)
            return run(p, form)

        try:
            # the client authenticates in the call itself: there is no RPC access rule
            # to admit it by, hence an admission without a principal
            status, out = await self.in_worker(
                self.pipeline.call, path, None, metadata, _peer(scope), "rest", call,
                admitted=Admission(None))
        except CallFailed as e:
            err = oauth.error_from_status(e.status, form.basic)
            await self.send(send, *err.response())
            return err.status
        await self.send(send, status, [(b"content-type", JSON_TYPE), *oauth.NO_STORE], out)
        return status

    async def _answer(self, send: Send, e: oauth.OAuthError) -> int:
        """A request refused before the call (counted, as every request, by its HTTP
        status: gateway.py)."""
        await self.send(send, *e.response())
        return e.status


def _peer(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""
