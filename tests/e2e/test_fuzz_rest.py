"""Fuzzing the REST shim with schemathesis: every operation of ``GET /openapi.json``,
positive and negative data, against a real server on each database backend.

Whatever a generated request holds, these must hold of its answer:

- no 5xx (``not_a_server_error``);
- a 4xx/5xx body is the documented error ``{"code": int, "message": str, "details":
  [...]}`` (``error_body_shape``), except the RFC 6749 errors of the OAuth token endpoint
  (``{"error", "error_description"}``) and ``/.well-known/jwks.json``;
- an error status is one the operation lists, not one left to its ``default``
  (``error_status_listed``): the document names what each operation answers;
- a secured operation authenticates before it reads the request: a negative case sent
  again without credentials is 401 (``authenticates_first``);
- schemathesis's own checks: documented status codes, content types, headers and
  response schemas, negative data rejected, authentication not ignored, 405 with an
  ``Allow`` header for a method the path does not serve. Not ``positive_data_acceptance``:
  ids are UUIDs, and emails, colours, roles and page tokens have rules the document
  states in prose, so a 400 for a schema-valid request is no failure.

Each operation runs schemathesis's coverage phase (deterministic boundary and
missing-value cases, unexpected methods) and ``ACCOUNTS_FUZZ_EXAMPLES`` generated cases
(small by default; ``make fuzz`` runs many, with a random seed). ``make test`` draws the
same cases on every run (see tests/fuzz_support.py). ``pytest -s`` prints the number of
cases per backend.

Path parameters are sometimes ids seeded through the public API, so the fuzzer reaches
past "not found"; destructive operations get ids of their own to destroy.

``test_rest_nul_in_every_string`` is the directed companion: one request per string of
every operation (path, query or JSON body field) holding a NUL, which PostgreSQL cannot
store in text; random generation reaches each such string only now and then.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import CheckContext, not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.parameters import ParameterLocation
from schemathesis.core.transport import Response

from accounts_grpc.rest import openapi
from tests import fuzz_support
from tests.support import Server

EXAMPLES = fuzz_support.examples(default=6)
TALLY = fuzz_support.Tally("REST")

TOKEN_PATH = "/v1/token"
#: the OAuth 2 endpoints whose errors are RFC 6749 error objects (RFC 7662, RFC 7009)
OAUTH_PATHS = {TOKEN_PATH, "/oauth2/introspect", "/oauth2/revoke"}
JWKS_PATH = "/.well-known/jwks.json"
#: the statuses whose body is an RFC 6749 error there (a 405 or 431 is a Status)
OAUTH_STATUSES = {400, 401, 408, 413, 429, 503}
OAUTH_ERRORS = {"invalid_request", "invalid_client", "unsupported_grant_type",
                "unauthorized_client", "invalid_scope", "temporarily_unavailable",
                "server_error", "unsupported_token_type"}
# The literal segment before a path variable → the kind of id it takes.
KIND_BY_COLLECTION = {
    "accounts": "account",
    "users": "user",
    "externalUsers": "external",
    "userGroups": "group",
    "partitions": "partition",
    "sessions": "session",
}
# Secured operations carry this until the test swaps in the token of the server it
# calls: coverage cases are made at collection time, before any server runs.
ADMIN_PLACEHOLDER = "Bearer <the admin token of the module's server>"


# -- seeded data --------------------------------------------------------------------------

SEEDED = fuzz_support.Seeded()


@pytest.fixture(scope="module")
def fuzz_server(server: Server, backend: str) -> Iterator[Server]:
    """The module's server, serving the document the operations come from, with a little
    data seeded through the public API; prints the number of cases run at the end."""
    served = httpx.get(f"{server.http_url}/openapi.json", timeout=30).json()
    assert served == DOCUMENT, "GET /openapi.json is not openapi.document()"
    with fuzz_support.seeded_run(server.http_url, server.admin_token, backend, SEEDED, TALLY):
        yield server


# -- the schema -----------------------------------------------------------------------------


def _config() -> schemathesis.Config:
    generation: dict[str, Any] = {
        "mode": "all",
        "max-examples": EXAMPLES,
        "allow-x00": True,
        # Negative cases spoil the request rather than the Authorization header:
        # `authenticates_first` sends each of them again without credentials, and
        # `ignored_auth` probes every success without them.
        "with-security-parameters": False,
        # A quarter of the strings (NUL, controls, SQL, long ...) and a fifth of the
        # integers (type bounds) come from these lists.
        "dictionaries": {
            "string": {"dictionary": "nasty-strings", "probability": 0.25},
            "integer": {"dictionary": "edge-integers", "probability": 0.2},
        },
    }
    data: dict[str, Any] = {
        "dictionaries": {"nasty-strings": {"values": fuzz_support.NASTY_STRINGS},
                         "edge-integers": {"values": fuzz_support.EDGE_INTEGERS}},
        "generation": generation,
        "phases": {"examples": {"enabled": False}, "coverage": {"enabled": True},
                   "stateful": {"enabled": False}},
        "checks": {"positive_data_acceptance": {"enabled": False}},
        # see allow_lists_the_routes
        "operations": [{"include-path-regex": ":[A-Za-z]+$",
                        "checks": {"allow_header_conformance": {"enabled": False}}}],
        "request-timeout": 30,
    }
    # schemathesis derives each operation's seed from this one (make test: fixed)
    data["seed"] = fuzz_support.SEED
    return schemathesis.Config.from_dict(data)


# The document the server serves (the fixture checks they are equal), loaded at import
# so that pytest gets one test per operation. (schemathesis.pytest.from_fixture would
# load it from the running server, but it sets `Function._nodeid`, which pytest 9.2
# no longer has.)
DOCUMENT = openapi.document()
schema = schemathesis.openapi.from_dict(DOCUMENT, config=_config())


def _is_public(operation: Any) -> bool:
    """Operations with ``security: []``: the token endpoint, JWKS, health, metrics."""
    return bool(operation.definition.raw.get("security") == [])


def _public(ctx: Any) -> bool:
    return _is_public(ctx.operation)


@schema.auth(refresh_interval=None).skip_for(_public)
class AdminToken:
    """The admin's token on every secured operation (a placeholder until the call)."""

    def get(self, case: Case, context: schemathesis.AuthContext) -> str:
        return ADMIN_PLACEHOLDER

    def set(self, case: Case, data: str, context: schemathesis.AuthContext) -> None:
        case.headers["Authorization"] = data


def _kind(path: str, name: str) -> str | None:
    """The kind of id a path variable takes, from the collection before it."""
    segments = path.split("/")
    for i, seg in enumerate(segments):
        if i > 0 and seg.split(":")[0] == "{" + name + "}":
            return KIND_BY_COLLECTION.get(segments[i - 1])
    return None


@schema.hook
def flatmap_path_parameters(context: schemathesis.HookContext,
                            path_parameters: dict[str, Any] | None) -> st.SearchStrategy[Any]:
    """A path value: what schemathesis generated, a seeded id, or a random UUID."""
    op = context.operation
    if op is None or not path_parameters:
        return st.just(path_parameters)
    rpc = op.definition.raw.get("operationId", "").rstrip("0123456789").split("_")[-1]
    choices: dict[str, st.SearchStrategy[Any]] = {}
    for name, value in path_parameters.items():
        kind = _kind(op.path, name)
        pool = SEEDED.of(rpc, kind) if kind else []
        # only strings: anything else is a negated value, kept as it is
        if pool and isinstance(value, str):
            choices[name] = st.one_of(st.sampled_from([value, *pool]), st.uuids().map(str))
        else:
            choices[name] = st.just(value)
    return st.fixed_dictionaries(choices)


@schema.hook
def flatmap_query(context: schemathesis.HookContext,
                  query: dict[str, Any] | None) -> st.SearchStrategy[Any]:
    """A generated page token is never one the server issued: often leave it out, so the
    rest of the query reaches the database."""
    if not isinstance(query, dict) or not isinstance(query.get("pageToken"), str):
        return st.just(query)  # no token, or a negated one: keep it
    rest = {k: v for k, v in query.items() if k != "pageToken"}
    return st.sampled_from([query, rest])


# -- checks of our own ------------------------------------------------------------------------


def error_body_shape(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """A 4xx/5xx body is google.rpc.Status JSON, as grpc-gateway writes it (RFC 6749's
    error object for the OAuth 2 endpoints' own errors)."""
    if response.status_code < 400 or case.path == JWKS_PATH:
        return None
    content_type = (response.headers.get("content-type") or [""])[0]
    assert content_type.startswith("application/json"), \
        f"{response.status_code} with content-type {content_type!r}: {response.text[:200]}"
    body = response.json()
    if case.path in OAUTH_PATHS and response.status_code in OAUTH_STATUSES:
        assert isinstance(body, dict) and body.get("error") in OAUTH_ERRORS, \
            f"{response.status_code} is not an RFC 6749 error: {str(body)[:300]}"
        assert isinstance(body.get("error_description", ""), str), body
        return True
    assert isinstance(body, dict) and set(body) >= {"code", "message", "details"}, \
        f"{response.status_code} is not a Status: {str(body)[:300]}"
    assert type(body["code"]) is int, f"code is not an integer: {body!r}"
    assert isinstance(body["message"], str), f"message is not a string: {body!r}"
    assert isinstance(body["details"], list), f"details is not a list: {body!r}"
    return True


def error_status_listed(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """An error the operation answers is one of the statuses its responses list (each a
    shared response of components/responses), not one only ``default`` covers."""
    if response.status_code < 400 or case.method.upper() != case.operation.method.upper():
        return None  # a method the path does not serve: the path's 405
    listed = case.operation.definition.raw["responses"]
    assert str(response.status_code) in listed, (
        f"{case.operation.method.upper()} {case.operation.path} answered "
        f"{response.status_code}, which it does not list ({', '.join(listed)}): "
        f"{_message(response.text)}")
    return True


def _message(text: str) -> str:
    """The ``message`` of an error body, else the start of the body."""
    try:
        return str(json.loads(text)["message"])[:200]
    except (ValueError, KeyError, TypeError):
        return text[:200]


def authenticates_first(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """A secured operation authenticates before it reads the request: a negative case
    sent again without credentials is 401, whatever else is wrong with it."""
    if (_public(case) or case.meta is None
            or case.meta.generation.mode != GenerationMode.NEGATIVE
            or case.method.upper() != case.operation.method.upper()):
        return None  # a method the route does not serve is 405 before anything else
    probe = response.request.copy()
    probe.headers.pop("Authorization", None)
    with requests.Session() as session:
        answer = session.send(probe, timeout=30)
    TALLY.probes += 1
    if answer.status_code == 404 and case.meta.is_negative_at(ParameterLocation.PATH):
        return None  # the spoiled path matches no route: there is nothing to authenticate
    assert answer.status_code == 401, (
        f"without credentials {answer.status_code}, not 401: the request was read before "
        f"the caller was authenticated ({_message(answer.text)})")
    body = answer.json()
    assert body.get("code") == 16 and isinstance(body.get("details"), list), body
    return True


def _routes() -> list[tuple[re.Pattern[str], set[str]]]:
    out = []
    for path, item in DOCUMENT["paths"].items():
        literal = re.split(r"\{[^}]+\}", path)
        regex = "[^/]+".join(re.escape(part) for part in literal)
        out.append((re.compile(regex + r"\Z"), {m.upper() for m in item}))
    return out


ROUTES = _routes()


def allow_lists_the_routes(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """A 405's ``Allow`` names exactly the documented methods of every path template the
    URL matches. ``/v1/users/u1:rotateClientSecret`` is also ``/v1/users/{id}`` with the
    id ``u1:rotateClientSecret`` (a ":" may be part of an id), so its ``Allow`` lists
    GET, PATCH and DELETE too: schemathesis's ``allow_header_conformance``, which knows
    only the case's own template, is off for the operations with a ``:verb``."""
    if response.status_code != 405:
        return None
    raw = (response.headers.get("allow") or [""])[0]
    allowed = {m.strip().upper() for m in raw.split(",") if m.strip()}
    path = urlsplit(str(response.request.url)).path
    expected = set().union(*(methods for regex, methods in ROUTES if regex.match(path)))
    if "GET" in expected:
        allowed.discard("HEAD")  # HEAD goes with GET (RFC 9110 section 9.3.2)
    assert allowed == expected, \
        f"{case.method} {path}: Allow: {raw!r}, the documented methods are {sorted(expected)}"
    return True


# -- the test ---------------------------------------------------------------------------------


@schema.parametrize()
@settings(max_examples=EXAMPLES, phases=[Phase.explicit, Phase.generate, Phase.shrink],
          deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_rest_fuzz(case: Case, fuzz_server: Server) -> None:
    # Coverage cases are shared by the backends: the token goes in per call, not in them.
    headers = None
    if case.headers.get("Authorization") == ADMIN_PLACEHOLDER:
        headers = {"Authorization": f"Bearer {fuzz_server.admin_token}"}
    ok = case.operation.definition.raw["responses"].get("200", {})
    if "application/x-ndjson" in ok.get("content", {}):  # /oauth2/revoke's 200 has no body
        # a server stream (WatchEvents) is open until its Grpc-Timeout (rest/gateway.py)
        headers = {**(headers or {}), "Grpc-Timeout": "1S"}
    response = case.call(base_url=fuzz_server.http_url, headers=headers)
    phase = case.meta.phase.name.value if case.meta else "?"
    mode = case.meta.generation.mode.value if case.meta else "?"
    TALLY.add(f"{case.operation.method.upper()} {case.path}", f"{phase}/{mode}",
              str(response.status_code))
    case.validate_response(
        response, headers=headers, transport_kwargs={"base_url": fuzz_server.http_url},
        additional_checks=[error_body_shape, error_status_listed, authenticates_first,
                           allow_lists_the_routes])


# -- NUL in every string ----------------------------------------------------------------------

NUL = "a\x00b"


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = DOCUMENT["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def _string_leaves(node: dict[str, Any], depth: int = 0) -> Iterator[tuple[str, ...]]:
    """Paths to the writable plain-string fields of a body schema (two levels deep)."""
    for name, sub in _resolve(node).get("properties", {}).items():
        target = _resolve(sub)
        if sub.get("readOnly") or target.get("readOnly"):
            continue
        kind = target.get("type")
        if kind == "string" and "enum" not in target:
            yield (name,)
        elif kind == "array" and _resolve(target.get("items", {})).get("type") == "string":
            yield (name, "[]")
        elif kind == "object" and depth < 1:
            yield from ((name, *rest) for rest in _string_leaves(target, depth + 1))


def _nest(path: tuple[str, ...], value: str) -> Any:
    if not path:
        return value
    if path[0] == "[]":
        return [_nest(path[1:], value)]
    return {path[0]: _nest(path[1:], value)}


def _nul_cases(operation: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """One request per string of the operation (path, query or JSON body) holding NUL;
    everything else empty or a seeded id."""
    raw = operation.definition.raw
    rpc = raw.get("operationId", "").rstrip("0123456789").split("_")[-1]
    params = raw.get("parameters", [])
    ids: dict[str, str] = {}
    for p in params:
        if p["in"] == "path":
            kind = _kind(operation.path, p["name"])
            pool = SEEDED.of(rpc, kind) if kind else []
            ids[p["name"]] = pool[0] if pool else "x1"
    body_schema = (raw.get("requestBody", {}).get("content", {})
                   .get("application/json", {}).get("schema"))
    empty_body: dict[str, Any] | None = {} if body_schema is not None else None
    for p in params:
        kind = _resolve(p["schema"]).get("type")
        if kind != "string" and not (kind == "array" and p["in"] == "query"):
            continue
        if p["in"] == "path":
            yield f"path {p['name']}", {"path_parameters": {**ids, p["name"]: NUL},
                                        "body": empty_body}
        elif p["in"] == "query":
            yield f"query {p['name']}", {"path_parameters": ids, "query": {p["name"]: NUL},
                                         "body": empty_body}
    if body_schema is not None:
        for leaf in _string_leaves(body_schema):
            yield f"body {'.'.join(leaf)}", {"path_parameters": ids, "body": _nest(leaf, NUL)}


@pytest.mark.parametrize("label", [f"{m.upper()} {path}" for path, item in DOCUMENT["paths"].items()
                                   for m in item])
def test_rest_nul_in_every_string(fuzz_server: Server, label: str) -> None:
    """A NUL in any one string of a request (PostgreSQL cannot store it in text) is a
    client error like any other: never a 5xx, and the error is a Status."""
    method, path = label.split(" ", 1)
    operation = schema[path][method]
    auth = None if _is_public(operation) else {
        "Authorization": f"Bearer {fuzz_server.admin_token}"}
    failures = []
    for where, parts in _nul_cases(operation):
        if parts.get("body") is None:
            parts.pop("body", None)
        else:
            parts["media_type"] = "application/json"
        case = operation.Case(headers=dict(auth or {}), **parts)
        response = case.call(base_url=fuzz_server.http_url)
        TALLY.add(label, "nul", str(response.status_code))
        try:
            case.validate_response(response, checks=[not_a_server_error, error_body_shape,
                                                   error_status_listed],
                                   transport_kwargs={"base_url": fuzz_server.http_url})
        except FailureGroup as group:
            titles = "; ".join(sorted({f.title for f in group.exceptions}))
            failures.append(f"  {where}: {response.status_code} {titles}: "
                            f"{_message(response.text)}")
    assert not failures, f"{label}, a NUL in:\n" + "\n".join(failures)
