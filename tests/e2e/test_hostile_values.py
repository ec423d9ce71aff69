"""No value reaches the database unchecked, whichever RPC, field and transport carries it.

Every string field of every accounts.v1 request (nested ones included), sent with a
character no field may hold (NUL, ESC, BEL, a C1 control, DEL), is INVALID_ARGUMENT
``INVALID_CHARACTER`` with exactly one field violation naming that very field: over
gRPC, and over REST through every route's path, query and JSON body. Each answer is
asserted exactly, so it is the same on SQLite and PostgreSQL (PostgreSQL cannot store a
NUL; SQLite would). The fuzz tests check that no such value gives a 5xx; these check that
each one is refused at the edge, and named.

Then the net below the edge: a value the driver itself refuses (``DataError``, from
the real database) is INVALID_ARGUMENT ``INVALID_VALUE``, never INTERNAL, and its log
line names neither the value nor the statement's parameters.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import grpc
import httpx
import pytest
import sqlalchemy as sa
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from google.rpc import error_details_pb2

from accounts_grpc.rest import oauth
from accounts_grpc.rest.routes import Route, routes_for
from accounts_grpc.rest.transcode import output_only
from accounts_grpc.rpc import registry
from accounts_grpc.rpc.pipeline import Admission, CallFailed
from tests.support import Server, failure

METHODS: list[MethodDescriptor] = [m for s in registry.service_descriptors() for m in s.methods]
ROUTES: list[Route] = routes_for(registry.service_descriptors())
#: what no field may hold: NUL, ESC, BEL, CSI (C1), DEL
BAD = ["\x00", "\x1b", "\x07", "\x9b", "\x7f"]
MAX_DEPTH = 3
SOME_ID = "00000000-0000-4000-8000-000000000000"


def bad_value(i: int) -> tuple[str, str]:
    """The ``i``-th bad value, and the start of the violation that names it."""
    c = BAD[i % len(BAD)]
    return f"a{c}b", f"must not contain U+{ord(c):04X} at offset 1"


# -- the string fields of a message --------------------------------------------------------


@dataclass(frozen=True)
class Leaf:
    """A string field reachable from a request message: the fields down to it, and the
    path check_strings names it by (``a.b``, ``a[0]`` for a list's first item)."""

    chain: tuple[FieldDescriptor, ...]

    @property
    def path(self) -> str:
        return ".".join(f.name + ("[0]" if f.is_repeated else "") for f in self.chain)

    @property
    def proto(self) -> str:
        return ".".join(f.name for f in self.chain)


def _is_map(f: FieldDescriptor) -> bool:
    return f.message_type is not None and f.message_type.GetOptions().map_entry


def leaves(desc: Descriptor, depth: int = 0, above: tuple[FieldDescriptor, ...] = ()
           ) -> Iterator[Leaf]:
    for f in desc.fields:
        if f.type == FieldDescriptor.TYPE_STRING:
            yield Leaf((*above, f))
        elif f.message_type is not None and not _is_map(f) and depth < MAX_DEPTH:
            yield from leaves(f.message_type, depth + 1, (*above, f))


def with_value(cls: Any, leaf: Leaf, value: str) -> Message:
    """A message of ``cls`` with only ``leaf`` set (through its parents) to ``value``."""
    msg = cls()
    node: Any = msg
    for f in leaf.chain[:-1]:
        node = getattr(node, f.name).add() if f.is_repeated else getattr(node, f.name)
    last = leaf.chain[-1]
    if last.is_repeated:
        getattr(node, last.name).append(value)
    else:
        setattr(node, last.name, value)
    return msg


def json_of(chain: tuple[FieldDescriptor, ...], value: str) -> Any:
    """The JSON the shim reads as ``chain`` set to ``value`` (lists of one item)."""
    if not chain:
        return value
    inner = json_of(chain[1:], value)
    return {chain[0].json_name: [inner] if chain[0].is_repeated else inner}


def _grpc_cases() -> list[tuple[MethodDescriptor, Leaf]]:
    return [(m, leaf) for m in METHODS for leaf in leaves(m.input_type)]


def test_the_cases_reach_every_rpc_with_a_string() -> None:
    without = {m.name for m in METHODS} - {m.name for m, _ in _grpc_cases()}
    assert without == {"GetMe", "GetJwks"}, without  # their requests have no field
    paths = {f"{m.name}:{leaf.path}" for m, leaf in _grpc_cases()}
    for expected in ("CreateAccount:account.name", "UpdatePartition:partition.description",
                     "CreateToken:client_id", "ListAccounts:filter",
                     "CreateSession:user_agent", "UpdateUser:update_mask.paths[0]",
                     "RegisterDevices:devices[0].device_id"):
        assert expected in paths, expected


# -- gRPC --------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", [m for m in METHODS if any(True for _ in leaves(m.input_type))],
                         ids=lambda m: f"{m.containing_service.name}.{m.name}")
def test_every_string_field_of_every_rpc_refuses_control_characters(
        server: Server, method: MethodDescriptor) -> None:
    cls = GetMessageClass(method.input_type)
    call = server.channel.unary_unary(
        f"/{method.containing_service.full_name}/{method.name}",
        request_serializer=cls.SerializeToString, response_deserializer=None)
    wrong = []
    for i, leaf in enumerate(leaves(method.input_type)):
        value, why = bad_value(i)
        try:
            call(with_value(cls, leaf, value), metadata=server.admin, timeout=10)
            wrong.append(f"{leaf.path}: accepted")
            continue
        except grpc.RpcError as e:
            f = failure(e)
        got = (f.code, f.reason, [(v, d[:len(why)]) for v, d in f.violations])
        if got != (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CHARACTER", [(leaf.path, why)]):
            wrong.append(f"{leaf.path}: {f.code.name} {f.reason} {f.violations} {f.message!r}")
    assert not wrong, "\n".join(wrong)


# -- REST: every route's path, query and body ----------------------------------------------------

_VARIABLE = re.compile(r"\{[^}]*\}")


@dataclass(frozen=True)
class RestCase:
    where: str
    path: str
    query: dict[str, str]
    body: Any
    field: str  # the violation expected
    why: str


def _path(route: Route, values: list[str]) -> str:
    it = iter(values)
    return _VARIABLE.sub(lambda _m: next(it), route.template.source)


def _rest_cases(route: Route) -> Iterator[RestCase]:
    """One request per string the route takes, holding a bad character; everything else
    empty, or a well-formed id in the path."""
    n = 0
    ids = [SOME_ID] * len(route.path_chains)
    token_base = ({"clientId": "cid_x", "clientSecret": "cs_x"}
                  if route.rpc == oauth.TOKEN_RPC else {})
    empty_body = dict(token_base) if route.http_method in ("POST", "PATCH", "PUT") else None
    for i, chain in enumerate(route.path_chains):
        if chain[-1].type != FieldDescriptor.TYPE_STRING:
            continue
        value, why = bad_value(n)
        n += 1
        at = list(ids)
        at[i] = quote(value, safe="")
        yield RestCase("path", _path(route, at), {}, empty_body, route.path_fields[i], why)
    taken = set(route.path_fields)
    # a field in a oneof with one the path sets is cleared by the path (the last one wins)
    oneofs = {c[-1].containing_oneof for c in route.path_chains} - {None}
    for leaf in leaves(route.method.input_type):
        if leaf.proto in taken or any(leaf.proto.startswith(p + ".") for p in taken) \
                or leaf.chain[-1].containing_oneof in oneofs:
            continue
        if route.body and any(output_only(f) for f in leaf.chain) and (
                route.body == "*" or leaf.chain[0].name == route.body):
            continue  # a JSON body may not name it at all (tests/unit/test_rest_transcode.py)
        value, why = bad_value(n)
        n += 1
        path = _path(route, ids)
        if route.body == "*":
            yield RestCase("body", path, {}, {**token_base, **json_of(leaf.chain, value)},
                           leaf.path, why)
        elif route.body and leaf.chain[0].name == route.body:
            yield RestCase("body", path, {}, json_of(leaf.chain[1:], value), leaf.path, why)
        elif any(f.is_repeated and f.message_type is not None for f in leaf.chain):
            continue  # a list of messages cannot be set from the query
        elif leaf.chain[0].message_type is None or leaf.chain[0].message_type.full_name \
                != "google.protobuf.FieldMask":
            yield RestCase("query", path, {leaf.proto: value}, empty_body, leaf.path, why)


def _route_id(route: Route) -> str:
    return f"{route.http_method} {route.template.source}"


@pytest.mark.parametrize("route", ROUTES, ids=_route_id)
def test_every_string_of_every_route_refuses_control_characters(
        server: Server, route: Route) -> None:
    cases = list(_rest_cases(route))
    if not cases:
        pytest.skip("the route takes no string")
    auth = {"authorization": f"Bearer {server.admin_token}"}
    wrong = []
    with httpx.Client(base_url=server.http_url, headers=auth, timeout=10) as http:
        for c in cases:
            r = http.request(route.http_method, c.path, params=c.query,
                             json=c.body if c.body is not None else None)
            label = f"{c.where} {c.field}"
            if r.status_code != 400:
                wrong.append(f"{label}: {r.status_code} {r.text[:200]}")
                continue
            body = r.json()
            if route.rpc == oauth.TOKEN_RPC:  # RFC 6749's error object
                expected = {"error": "invalid_request",
                            "error_description": f"{c.field}: {c.why}"}
                got = {k: str(v)[:len(expected[k])] for k, v in body.items()}
                if got != expected:
                    wrong.append(f"{label}: {body}")
                continue
            reasons = [d.get("reason") for d in body["details"]]
            violations = [(v["field"], v["description"][:len(c.why)])
                          for d in body["details"] for v in d.get("fieldViolations", [])]
            if (body["code"], reasons[:1], violations) != (3, ["INVALID_CHARACTER"],
                                                           [(c.field, c.why)]):
                wrong.append(f"{label}: {body}")
    assert not wrong, f"{_route_id(route)}:\n" + "\n".join(wrong)


def test_the_rest_cases_cover_path_query_and_body() -> None:
    kinds = {(c.where, c.field) for r in ROUTES for c in _rest_cases(r)}
    for expected in (("path", "user.user_id"), ("path", "account.id"), ("query", "filter"),
                     ("query", "include[0]"), ("body", "account.name"),
                     ("body", "partition.description"), ("body", "client_id"),
                     ("body", "devices[0].meter_id")):
        assert expected in kinds, expected


# -- below the edge: what the driver refuses -----------------------------------------------------

SECRET = "s3cr3t-value-0123456789"


def _refused_by_the_driver(srv: Server) -> None:
    """A statement the real database driver refuses with a DataError: a NUL in text on
    PostgreSQL; on SQLite, a value longer than the connection's length limit (lowered
    for this one statement)."""
    with srv.app.db.engine.connect() as conn:
        if srv.backend == "postgres":
            conn.execute(sa.text("SELECT CAST(:v AS text)"), {"v": SECRET + "\x00"})
            return
        raw = conn.connection.driver_connection
        assert raw is not None
        old = raw.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 8)
        try:
            conn.execute(sa.text("SELECT :v"), {"v": SECRET})
        finally:
            raw.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, old)


def test_a_value_the_driver_refuses_is_invalid_argument_and_logged_without_it(
        server: Server, caplog: pytest.LogCaptureFixture) -> None:
    method = "/accounts.v1.AccountService/ListAccounts"
    with caplog.at_level(logging.INFO), pytest.raises(CallFailed) as failed:
        server.app.pipeline.call(method, None, {}, "ipv4:127.0.0.1:1", "grpc",
                                 lambda _request: _refused_by_the_driver(server),
                                 admitted=Admission(None))
    status = failed.value.status
    assert (status.code, status.message) == (3, "a value of the request cannot be stored")
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info) and info.reason == "INVALID_VALUE"
    refused = [r for r in caplog.records if r.name == "accounts_grpc.errors"]
    assert [r.levelno for r in refused] == [logging.WARNING]
    assert "DataError" in refused[0].getMessage()
    assert all(SECRET not in r.getMessage() and r.exc_info is None for r in caplog.records)
