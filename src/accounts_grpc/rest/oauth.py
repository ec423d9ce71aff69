"""``POST /v1/token`` as an RFC 6749 §4.4 token endpoint (client credentials grant).

The route is CreateToken's ``google.api.http`` binding like any other; this module only
adapts the HTTP edges so stock OAuth2 clients work unchanged:

- the request may be ``application/x-www-form-urlencoded`` (RFC 6749 §4.4.2) or JSON
  (either spelling); unrecognised form parameters are ignored (§3.2), a repeated one is
  ``invalid_request``;
- the client may authenticate with HTTP Basic (``client_secret_basic``, RFC 6749
  §2.3.1: id and secret form-urlencoded, then base64) or in the body
  (``client_secret_post``), not both;
- success is RFC 6749 §5.1 (snake_case, numeric ``expires_in``, ``Cache-Control:
  no-store``); errors are §5.2 ``{"error", "error_description"}``: ``invalid_client``
  (401 with ``WWW-Authenticate: Basic``), ``invalid_request`` and
  ``unsupported_grant_type`` (400), and, when the attempt limiter refuses the client or
  the address, 429 with ``Retry-After``.

The call itself goes through the same Pipeline as gRPC's CreateToken.

``grant_type=urn:ietf:params:oauth:grant-type:token-exchange`` (RFC 8693) makes the
request an ExchangeTokenRequest, run as the ExchangeToken RPC (``rpc_for``): the
parameters of RFC 8693 §2.1 plus ``account_id`` (the account the token acts in) and
``actor_user_id`` (services/exchange.py). The subject token is the credential, so no
client authentication is asked for and an ``Authorization`` header is not read;
``actor_token``, ``resource`` and ``audience`` are refused rather than ignored, since
ignoring them would issue another token than the one asked for. Its errors are RFC
8693 §2.2.2's: ``invalid_request`` (a bad or delegated subject token), ``invalid_target``
(an account the caller may not act in), ``invalid_scope`` (roles it may not delegate),
``unauthorized_client`` (a caller that may not delegate at all).

``parse_token_form`` reads the requests of the RFC 7662 introspection and RFC 7009
revocation endpoints (rest/oauth_endpoints.py) the same way: a form with ``token`` and
an optional ``token_type_hint``, the client authenticated as at the token endpoint.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote_plus

from accounts.v1 import session_service_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from accounts_grpc.domain.errors import InvalidArgument
from accounts_grpc.domain.validate import forbidden_char
from accounts_grpc.rest.errors import (
    REALM,
    SERVER_OVERLOAD,
    Headers,
    http_status,
    retry_after,
)
from accounts_grpc.rest.transcode import load_json, merge_json, parse_query

TOKEN_RPC = "/accounts.v1.SessionService/CreateToken"
EXCHANGE_RPC = "/accounts.v1.SessionService/ExchangeToken"
EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
#: ExchangeTokenRequest's fields, and RFC 8693 parameters refused with a reason
EXCHANGE_PARAMS = tuple(f.name for f in session_service_pb2.ExchangeTokenRequest.DESCRIPTOR.fields)
UNSUPPORTED_EXCHANGE_PARAMS = {
    "actor_token": "name the acting user with actor_user_id instead",
    "actor_token_type": "name the acting user with actor_user_id instead",
    "resource": "name the account to act in with account_id instead",
    "audience": "name the account to act in with account_id instead",
}
#: reasons of ExchangeToken's refusals → RFC 8693 §2.2.2 / RFC 6749 §5.2 error codes
_EXCHANGE_ERRORS = {
    "NOT_CONSULTANT_OF_ACCOUNT": "invalid_target",
    "ACCOUNT_NOT_FOUND": "invalid_target",
    "ACCOUNT_CLOSED": "invalid_target",
    "ROLE_NOT_DELEGABLE": "invalid_scope",
    "UNKNOWN_ROLE": "invalid_scope",
    "DELEGATED_TOKEN": "invalid_request",
    "USER_NOT_FOUND": "invalid_request",
}
FORM = "application/x-www-form-urlencoded"
PARAMS = ("grant_type", "client_id", "client_secret", "scope")
#: the parameters of an RFC 7662 / RFC 7009 request (others are ignored, RFC 6749 §3.2)
TOKEN_FORM_PARAMS = ("token", "token_type_hint", "client_id", "client_secret")
NO_STORE: Headers = [(b"cache-control", b"no-store"), (b"pragma", b"no-cache")]


class OAuthError(Exception):
    """An RFC 6749 §5.2 error response."""

    def __init__(self, status: int, error: str, description: str, *,
                 basic_challenge: bool = False, retry_after: int | None = None) -> None:
        super().__init__(f"{error}: {description}")
        self.status = status
        self.error = error
        self.description = description
        self.basic_challenge = basic_challenge
        self.retry_after = retry_after

    def response(self) -> tuple[int, Headers, bytes]:
        headers: Headers = [(b"content-type", b"application/json"), *NO_STORE]
        if self.status == 401 or self.basic_challenge:
            headers.append((b"www-authenticate", f'Basic realm="{REALM}"'.encode()))
        if self.retry_after is not None:
            headers.append((b"retry-after", str(self.retry_after).encode()))
        body = json.dumps({"error": self.error, "error_description": self.description},
                          separators=(",", ":")).encode()
        return self.status, headers, body


def parse_basic(value: str) -> tuple[str, str]:
    """``Basic base64(urlencode(id):urlencode(secret))`` → (id, secret); raises OAuthError."""
    scheme, _, param = value.strip().partition(" ")
    if scheme.lower() != "basic":
        raise OAuthError(401, "invalid_client",
                         f"unsupported client authentication scheme {scheme!r}; "
                         "use Basic or client_secret in the body")
    try:
        decoded = base64.b64decode(param.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise OAuthError(401, "invalid_client",
                         "malformed HTTP Basic credentials", basic_challenge=True) from None
    user, sep, password = decoded.partition(":")
    if not sep:
        raise OAuthError(401, "invalid_client",
                         "malformed HTTP Basic credentials", basic_challenge=True)
    return unquote_plus(user), unquote_plus(password)


def is_basic(authorization: str | None) -> bool:
    return authorization is not None and authorization.lstrip()[:6].lower() == "basic "


def client_credentials(client_id: str, client_secret: str,
                       authorization: str | None) -> tuple[str, str, bool]:
    """(client id, secret, whether HTTP Basic carried them), from the body's values and
    the ``Authorization`` header. Only HTTP Basic authenticates a client here; another
    scheme (say a Bearer token a client sends everywhere) is no client authentication
    and is ignored. Both methods at once is ``invalid_request`` (RFC 6749 §2.3)."""
    if authorization is None or not is_basic(authorization):
        return client_id, client_secret, False
    basic_id, basic_secret = parse_basic(authorization)
    if client_secret:
        raise OAuthError(400, "invalid_request",
                         "the client authenticated with more than one method "
                         "(HTTP Basic and client_secret in the body)")
    if client_id and client_id != basic_id:
        raise OAuthError(400, "invalid_request",
                         "client_id in the body differs from the HTTP Basic user")
    return basic_id, basic_secret, True


def _form(body: bytes, names: tuple[str, ...]) -> dict[str, str]:
    """The named parameters of a form body; a repeated one is ``invalid_request``."""
    try:
        params = parse_query(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise OAuthError(400, "invalid_request", "the form is not UTF-8") from None
    out: dict[str, str] = {}
    for name in names:
        values = params.get(name)
        if values is None:
            continue
        if len(values) > 1:
            raise OAuthError(400, "invalid_request", f"parameter {name} is repeated")
        out[name] = values[0]
    return out


@dataclass(frozen=True)
class TokenForm:
    """An RFC 7662 introspection or RFC 7009 revocation request."""

    client_id: str
    client_secret: str
    token: str
    token_type_hint: str
    #: the client authenticated with HTTP Basic
    basic: bool


def parse_token_form(body: bytes, content_type: str, authorization: str | None,
                     *, bearer_hint: str = "") -> TokenForm:
    """The request of an introspection or revocation endpoint; raises OAuthError.

    ``application/x-www-form-urlencoded`` only (RFC 7662 §2.1, RFC 7009 §2.1). The
    client must authenticate (HTTP Basic or ``client_id`` and ``client_secret`` in the
    form): without credentials, 401 ``invalid_client``; a Bearer token is not client
    authentication (``bearer_hint`` tells the caller where a Bearer token does work).
    ``token_type_hint`` is taken as given: a hint only (RFC 7009 §2.1), an unknown one
    never refused. A value holding a character no string may hold (``forbidden_char``,
    as for every RPC's strings) is ``invalid_request``: it never reaches the database.
    """
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype != FORM:
        raise OAuthError(400, "invalid_request",
                         f"unsupported content type {ctype!r}; send {FORM}")
    params = _form(body, TOKEN_FORM_PARAMS)
    client_id, client_secret, basic = client_credentials(
        params.get("client_id", ""), params.get("client_secret", ""), authorization)
    if not client_id or not client_secret:
        said = "" if not authorization or basic else (
            " (an Authorization header other than Basic is no client authentication"
            + (f"; {bearer_hint}" if bearer_hint else "") + ")")
        raise OAuthError(401, "invalid_client",
                         "the client must authenticate: HTTP Basic, or client_id and "
                         "client_secret in the form" + said)
    token = params.get("token", "")
    if not token.strip():
        raise OAuthError(400, "invalid_request", "token is required")
    hint = params.get("token_type_hint", "")
    for name, value in (("client_id", client_id), ("client_secret", client_secret),
                        ("token", token), ("token_type_hint", hint)):
        why = forbidden_char(value)
        if why is not None:
            raise OAuthError(400, "invalid_request", f"{name}: {why}")
    return TokenForm(client_id, client_secret, token.strip(), hint, basic)


TokenRequest = session_service_pb2.CreateTokenRequest | session_service_pb2.ExchangeTokenRequest


def rpc_for(request: TokenRequest) -> str:
    """The RPC a token endpoint request runs as: CreateToken, or ExchangeToken."""
    if isinstance(request, session_service_pb2.ExchangeTokenRequest):
        return EXCHANGE_RPC
    return TOKEN_RPC


def _exchange_form(params: dict[str, str]) -> session_service_pb2.ExchangeTokenRequest:
    """An RFC 8693 form (its ``requested_lifetime`` a number) as an ExchangeTokenRequest."""
    msg = session_service_pb2.ExchangeTokenRequest()
    for name, value in params.items():
        if name == "requested_lifetime":
            if not value.isdigit() or int(value) > 2**31 - 1:
                raise OAuthError(400, "invalid_request",
                                 "requested_lifetime must be a number of seconds")
            msg.requested_lifetime = int(value)
        else:
            setattr(msg, name, value)
    return msg


def build_request(body: bytes, content_type: str,
                  authorization: str | None) -> tuple[TokenRequest, bool]:
    """The CreateTokenRequest or ExchangeTokenRequest (by ``grant_type``) from the HTTP
    request, and whether Basic was used."""
    msg = session_service_pb2.CreateTokenRequest()
    ctype = content_type.split(";", 1)[0].strip().lower()
    form = ctype == FORM
    if form:
        params = _form(body, (*PARAMS, *EXCHANGE_PARAMS, *UNSUPPORTED_EXCHANGE_PARAMS))
        if params.get("grant_type") == EXCHANGE_GRANT:
            _refuse_unsupported(params)
            return _exchange_form({k: v for k, v in params.items() if k in EXCHANGE_PARAMS}), False
        for name in PARAMS:
            if name in params:
                setattr(msg, name, params[name])
    elif ctype in ("", "application/json") or ctype.endswith("+json"):
        if body.strip():
            try:
                doc = load_json(body)
                if isinstance(doc, dict) and EXCHANGE_GRANT in (doc.get("grant_type"),
                                                                doc.get("grantType")):
                    _refuse_unsupported(doc)
                    exchange = session_service_pb2.ExchangeTokenRequest()
                    merge_json(exchange, doc, "*")
                    return exchange, False
                merge_json(msg, doc, "*")
            except InvalidArgument as e:
                raise OAuthError(400, "invalid_request", e.message) from None
    else:
        raise OAuthError(400, "invalid_request",
                         f"unsupported content type {ctype!r}; send {FORM} or application/json")
    msg.client_id, msg.client_secret, basic = client_credentials(
        msg.client_id, msg.client_secret, authorization)
    if form and not msg.grant_type:
        raise OAuthError(400, "invalid_request", "grant_type is required")
    supported = msg.grant_type in ("", "client_credentials")
    if supported and (not msg.client_id or not msg.client_secret):
        missing = [n for n in ("client_id", "client_secret") if not getattr(msg, n)]
        raise OAuthError(400, "invalid_request",
                         f"{' and '.join(missing)} required, in the body or as HTTP Basic "
                         "authentication")
    return msg, basic


def _refuse_unsupported(params: Mapping[str, object]) -> None:
    for name, instead in UNSUPPORTED_EXCHANGE_PARAMS.items():
        if name in params:
            error = "invalid_target" if name in ("resource", "audience") else "invalid_request"
            raise OAuthError(400, error, f"{name} is not supported: {instead}")


def error_from_status(status: status_pb2.Status, basic: bool) -> OAuthError:
    """A failed CreateToken (or introspection, revocation) call → its RFC 6749 §5.2
    error."""
    reason = ""
    for d in status.details:
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            d.Unpack(info)
            reason = info.reason
            break
    code = status.code
    if code == code_pb2.UNAUTHENTICATED:
        return OAuthError(401, "invalid_client", status.message, basic_challenge=basic)
    if reason in _EXCHANGE_ERRORS:
        return OAuthError(400, _EXCHANGE_ERRORS[reason], status.message)
    if code == code_pb2.INVALID_ARGUMENT:
        error = {"UNSUPPORTED_GRANT_TYPE": "unsupported_grant_type",
                 "INVALID_SCOPE": "invalid_scope",
                 "UNSUPPORTED_TOKEN_TYPE": "unsupported_token_type",  # RFC 7009 §2.2.1
                 }.get(reason, "invalid_request")
        return OAuthError(400, error, status.message)
    if code == code_pb2.PERMISSION_DENIED:
        return OAuthError(400, "unauthorized_client", status.message)
    if code == code_pb2.RESOURCE_EXHAUSTED:
        return OAuthError(503 if reason in SERVER_OVERLOAD else 429, "temporarily_unavailable",
                          status.message, retry_after=retry_after(status))
    http = http_status(code)
    error = "temporarily_unavailable" if http in (503, 504, 429) else "server_error"
    return OAuthError(http if http >= 400 else 500, error, status.message)
