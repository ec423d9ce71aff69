"""The REST shim's path templates and router: parsing, matching, precedence (no I/O)."""

from __future__ import annotations

import contextlib
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accounts_grpc.rest.routes import Router, routes_for
from accounts_grpc.rest.templates import (
    LITERAL,
    ONE,
    REST,
    TemplateError,
    parse_template,
    split_path,
    unescape,
)
from accounts_grpc.rpc import registry


def match(template: str, path: str) -> list[str] | None:
    t = parse_template(template)
    for parts, verb in split_path(path):
        values = t.match(parts, verb)
        if values is not None:
            return [unescape(v) for v in values]
    return None


# -- parsing --------------------------------------------------------------------------------


def test_parse_literals_variables_and_verb() -> None:
    t = parse_template("/v1/accounts/{id}:close")
    assert [s.kind for s in t.segments] == [LITERAL, LITERAL, ONE]
    assert t.variables == (("id",),)
    assert t.verb == "close"
    assert t.openapi_path() == "/v1/accounts/{id}:close"


def test_parse_dotted_field_and_pattern() -> None:
    t = parse_template("/v1/{name=accounts/*/users/*}/things/{thing.id}")
    assert t.variables == (("name",), ("thing", "id"))
    assert t.var_patterns == ("accounts/*/users/*", "*")
    assert [s.kind for s in t.segments] == [LITERAL, LITERAL, ONE, LITERAL, ONE, LITERAL, ONE]
    assert t.openapi_path() == "/v1/{name}/things/{thing.id}"


def test_parse_double_wildcard() -> None:
    t = parse_template("/v1/files/{path=**}")
    assert t.segments[-1].kind == REST
    assert t.has_rest


@pytest.mark.parametrize("bad", [
    "v1/no/leading/slash",
    "/v1//empty",
    "/v1/{unclosed",
    "/v1/{a}/{a}",
    "/v1/{bad-name}",
    "/v1/**/x",
    "/v1/x{id}",
    "/v1/{a={b}}",
    "/v1/x:",
])
def test_parse_rejects_bad_templates(bad: str) -> None:
    with pytest.raises(TemplateError):
        parse_template(bad)


# -- matching -------------------------------------------------------------------------------


def test_match_simple_and_dotted() -> None:
    assert match("/v1/accounts/{id}", "/v1/accounts/a1") == ["a1"]
    assert match("/v1/accounts/{account.id}", "/v1/accounts/a1") == ["a1"]
    assert match("/v1/accounts/{id}", "/v1/accounts") is None
    assert match("/v1/accounts/{id}", "/v1/accounts/a1/x") is None
    assert match("/v1/accounts/{id}", "/v1/accounts/") is None  # a variable is never empty


def test_match_verb() -> None:
    assert match("/v1/accounts/{id}:close", "/v1/accounts/a1:close") == ["a1"]
    assert match("/v1/accounts/{id}:close", "/v1/accounts/a1") is None
    assert match("/v1/accounts/{id}:close", "/v1/accounts/a1:open") is None
    assert match("/v1/accounts:lookup", "/v1/accounts:lookup") == []
    # a ":" inside an id, with no verb route, stays part of the id
    assert match("/v1/users/{id}", "/v1/users/urn:x:1") == ["urn:x:1"]


def test_match_multi_segment_variable_and_rest() -> None:
    assert match("/v1/{name=accounts/*}", "/v1/accounts/a1") == ["accounts/a1"]
    assert match("/v1/{name=accounts/*}", "/v1/users/a1") is None
    assert match("/v1/files/{path=**}", "/v1/files/a/b/c") == ["a/b/c"]
    assert match("/v1/files/{path=**}", "/v1/files") == [""]
    assert match("/v1/files/**:get", "/v1/files/a/b:get") == []


def test_match_unescapes_values_but_not_separators() -> None:
    assert match("/v1/accounts/{id}", "/v1/accounts/a%2Fb") == ["a/b"]
    assert match("/v1/accounts/{id}", "/v1/accounts/caf%C3%A9") == ["café"]


# -- the router over the real annotations ---------------------------------------------------

ROUTER = Router(routes_for(registry.service_descriptors()))


def rpc(method: str, path: str) -> str | None:
    m = ROUTER.match(method, path)
    return None if m is None else m.route.operation_id


@pytest.mark.parametrize(("method", "path", "expected"), [
    ("POST", "/v1/token", "SessionService_CreateToken"),
    ("POST", "/v1/token:introspect", "SessionService_IntrospectToken"),
    ("GET", "/.well-known/jwks.json", "SessionService_GetJwks"),
    ("GET", "/v1/me", "UserService_GetMe"),
    ("GET", "/v1/me/usergroups", "UserGroupService_ListMyUserGroups"),
    ("POST", "/v1/accounts", "AccountService_CreateAccount"),
    ("GET", "/v1/accounts", "AccountService_ListAccounts"),
    ("GET", "/v1/accounts/a1", "AccountService_GetAccount"),
    ("GET", "/v1/accounts:lookup", "AccountService_GetAccount2"),
    ("PATCH", "/v1/accounts/a1", "AccountService_UpdateAccount"),
    ("POST", "/v1/accounts/a1:close", "AccountService_CloseAccount"),
    ("GET", "/v1/accounts/a1/auditlog", "AccountService_ListAuditEvents"),
    ("GET", "/v1/accounts/a1/partitions", "PartitionService_ListPartitions"),
    ("GET", "/v1/accounts/a1/users:lookup", "UserService_GetUser2"),
    ("GET", "/v1/accounts/a1/users", "UserService_ListUsers"),
    ("POST", "/v1/sessions", "SessionService_CreateSession"),
    ("DELETE", "/v1/sessions/s1", "SessionService_RevokeSession"),
    ("GET", "/v1/users/u1/sessions", "SessionService_ListSessions2"),
    ("GET", "/v1/accounts/a1/externalUsers/e1/sessions", "SessionService_ListSessions3"),
    ("POST", "/v1/users/u1/devicePermissions:add", "UserService_AddDevicePermissions"),
    ("POST", "/v1/accounts/a1/externalUsers/e1/orders", "UserService_UpsertUserOrder2"),
])
def test_router_picks_the_route(method: str, path: str, expected: str) -> None:
    assert rpc(method, path) == expected


def test_router_captures_dotted_values() -> None:
    m = ROUTER.match("GET", "/v1/accounts/a1/externalUsers/ext%201/orders")
    assert m is not None
    assert m.route.path_fields == ["user.account_id", "user.external_id"]
    assert [unescape(v) for v in m.values] == ["a1", "ext 1"]


def test_router_prefers_literals_over_variables() -> None:
    # /v1/accounts:lookup is GetAccount's lookup binding, never GetAccount{id="accounts:lookup"}
    m = ROUTER.match("GET", "/v1/accounts:lookup")
    assert m is not None and m.route.binding == 1 and m.values == []
    # a synthetic clash: a literal segment wins whatever the registration order
    lit = parse_template("/v1/things/me")
    var = parse_template("/v1/things/{id}")
    assert lit.specificity < var.specificity


def test_router_allowed_methods_for_405() -> None:
    assert ROUTER.allowed("/v1/accounts") == ["GET", "POST"]
    assert ROUTER.allowed("/v1/sessions/s1") == ["DELETE"]
    assert ROUTER.allowed("/v1/accounts/a1") == ["GET", "PATCH"]
    assert ROUTER.allowed("/v1/nothing/here") == []
    assert ROUTER.match("PUT", "/v1/me") is None


def test_every_rpc_with_an_annotation_has_a_route() -> None:
    names = {r.operation_id for r in ROUTER.routes}
    for svc in registry.service_descriptors():
        for m in svc.methods:
            assert f"{svc.name}_{m.name}" in names


# -- properties -----------------------------------------------------------------------------

_ident = st.text(string.ascii_lowercase, min_size=1, max_size=6)
_value = st.text(string.ascii_letters + string.digits + "-._~ é/:%", min_size=1, max_size=12)


@st.composite
def template_and_values(draw: st.DrawFn) -> tuple[str, list[str], list[str]]:
    n = draw(st.integers(1, 5))
    segs: list[str] = []
    values: list[str] = []
    names: list[str] = []
    for i in range(n):
        if draw(st.booleans()):
            segs.append(draw(_ident))
        else:
            name = f"f{i}." + draw(_ident) if draw(st.booleans()) else f"f{i}"
            names.append(name)
            segs.append("{" + name + "}")
            values.append(draw(_value))
    verb = draw(st.one_of(st.just(""), _ident))
    return "/" + "/".join(segs) + (":" + verb if verb else ""), values, names


@given(template_and_values())
def test_property_a_rendered_path_matches_with_its_values(
        case: tuple[str, list[str], list[str]]) -> None:
    from urllib.parse import quote

    source, values, _names = case
    t = parse_template(source)
    it = iter(values)
    path = source
    for var in t.field_paths:
        path = path.replace("{" + var + "}", quote(next(it), safe=""), 1)
    got = match(source, path)
    assert got == values


@given(st.lists(st.text(string.ascii_letters + string.digits + "{}:=*/._", max_size=20)))
def test_property_parser_never_crashes(parts: list[str]) -> None:
    source = "/" + "/".join(parts)
    with contextlib.suppress(TemplateError):
        parse_template(source)
