"""The REST shim's transcoding: query strings, path values, JSON bodies (no I/O)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import pytest
from accounts.v1 import (
    account_service_pb2,
    partition_service_pb2,
    session_pb2,
    session_service_pb2,
    user_group_service_pb2,
    user_service_pb2,
)
from google.api import field_behavior_pb2
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    struct_pb2,
    timestamp_pb2,
    wrappers_pb2,
)
from google.rpc import error_details_pb2
from hypothesis import given
from hypothesis import strategies as st

from accounts_grpc.domain.errors import InvalidArgument
from accounts_grpc.rest.errors import error_response, http_status, retry_after
from accounts_grpc.rest.oauth import OAuthError, build_request, parse_basic
from accounts_grpc.rest.openapi import SchemaBuilder
from accounts_grpc.rest.routes import Router, routes_for
from accounts_grpc.rest.transcode import (
    OUTPUT_ONLY_TEXT,
    STANDARD_JSON,
    Problem,
    QueryBinder,
    accepts_null,
    convert_scalar,
    emits_null,
    load_json,
    merge_json,
    message_json,
    output_only,
    parse_query,
    resolve,
    response_json,
    set_field,
    snake_case,
)
from accounts_grpc.rpc import registry
from accounts_grpc.rpc.status import status_for, status_from_error


def violations(e: InvalidArgument) -> dict[str, str]:
    return {v.field: v.description for v in e.violations}


# -- query strings --------------------------------------------------------------------------


def test_parse_query_repeats_decodes_and_keeps_blanks() -> None:
    q = parse_query(b"include=account&include=x&filter=a+b%20c&empty=&flag")
    assert q == {"include": ["account", "x"], "filter": ["a b c"], "empty": [""], "flag": [""]}


@given(st.lists(st.tuples(st.text(min_size=1, max_size=8), st.text(max_size=8)), max_size=6))
def test_property_parse_query_inverts_urlencode(pairs: list[tuple[str, str]]) -> None:
    expected: dict[str, list[str]] = {}
    for k, v in pairs:
        expected.setdefault(k, []).append(v)
    assert parse_query(urlencode(pairs)) == expected


def bind(cls: type, query: str, path: tuple[str, ...] = (), body: tuple[str, ...] = (),
         closed: bool = False) -> object:
    msg = cls()
    QueryBinder(cls.DESCRIPTOR, path, body, closed=closed).bind(msg, parse_query(query))
    return msg


def test_query_scalars_both_spellings() -> None:
    msg = bind(account_service_pb2.ListAccountsRequest,
               "pageSize=10&page_token=t&filter=%22big+co%22&order_by=name+desc&showClosed=true")
    assert msg.page_size == 10
    assert msg.page_token == "t"
    assert msg.filter == '"big co"'
    assert msg.order_by == "name desc"
    assert msg.show_closed is True


@pytest.mark.parametrize(("raw", "expected"), [
    ("true", True), ("1", True), ("T", True), ("false", False), ("0", False), ("F", False)])
def test_query_bools_like_strconv(raw: str, expected: bool) -> None:
    msg = bind(account_service_pb2.ListAccountsRequest, f"show_closed={raw}")
    assert msg.show_closed is expected


def test_query_repeated_and_nested_fields() -> None:
    msg = bind(partition_service_pb2.ListPartitionsRequest, "include=account&include=other",
               path=("account_id",))
    assert list(msg.include) == ["account", "other"]
    msg = bind(session_service_pb2.ListSessionsRequest,
               "user.accountId=a1&user.external_id=e1&pageSize=5")
    assert msg.user.account_id == "a1"
    assert msg.user.external_id == "e1"
    assert msg.page_size == 5


def test_query_field_mask_comma_separated_either_spelling() -> None:
    msg = bind(account_service_pb2.UpdateAccountRequest,
               "updateMask=name,primaryColor,logo_url", path=("account.id",), body=("account",))
    assert list(msg.update_mask.paths) == ["name", "primary_color", "logo_url"]


def test_query_enum_by_name_and_timestamp() -> None:
    # fields of these kinds, wherever they are in the API: exercise the converters directly
    desc = user_service_pb2.ListUsersRequest.DESCRIPTOR
    kind = [f for f in _all_fields(desc) if f.enum_type is not None]
    if kind:
        f = kind[0]
        name = f.enum_type.values[1].name
        assert convert_scalar(f, name) == f.enum_type.values[1].number
        with pytest.raises(ValueError, match="is not one of"):
            convert_scalar(f, "NOPE")
    ts = timestamp_pb2.Timestamp()
    ts.FromJsonString("2024-05-01T12:00:00Z")
    from accounts.v1 import account_pb2

    acc = account_pb2.Account()
    chain = resolve(account_pb2.Account.DESCRIPTOR, ["createTime"])
    set_field(acc, chain, ["2024-05-01T12:00:00Z"], "createTime")
    assert acc.create_time == ts
    with pytest.raises(Problem, match="RFC 3339"):
        set_field(acc, chain, ["yesterday"], "createTime")


def _all_fields(desc: object) -> list:  # type: ignore[type-arg]
    out = []
    seen = set()
    todo = [desc]
    while todo:
        d = todo.pop()
        if d.full_name in seen:  # type: ignore[attr-defined]
            continue
        seen.add(d.full_name)  # type: ignore[attr-defined]
        for f in d.fields:  # type: ignore[attr-defined]
            out.append(f)
            if f.message_type is not None:
                todo.append(f.message_type)
    return out


def test_query_errors_are_field_violations() -> None:
    with pytest.raises(InvalidArgument) as ei:
        bind(account_service_pb2.ListAccountsRequest,
             "pageSize=ten&bogus=1&showClosed=maybe&page_size=99999999999")
    v = violations(ei.value)
    assert v["pageSize"] == "'ten' is not an integer"
    assert v["bogus"] == "unknown query parameter"
    assert "boolean" in v["showClosed"]
    assert "out of range" in v["page_size"]
    assert ei.value.reason == "INVALID_QUERY_PARAMETER"


def test_query_refuses_path_and_body_fields_and_messages() -> None:
    with pytest.raises(InvalidArgument) as ei:
        bind(account_service_pb2.UpdateAccountRequest,
             "account.name=x&account.id=y&account=z", path=("account.id",), body=("account",))
    v = violations(ei.value)
    assert v["account.name"] == "is set by the body, not the query"
    assert v["account.id"] == "is set by the path, not the query"
    assert "set by" in v["account"]
    with pytest.raises(InvalidArgument) as ei:
        bind(account_service_pb2.GetAccountRequest, "filter=x", path=("id",))
    assert violations(ei.value) == {"filter": "unknown query parameter"}
    with pytest.raises(InvalidArgument) as ei:
        bind(account_service_pb2.CloseAccountRequest, "id=x", closed=True)
    assert "JSON body" in violations(ei.value)["id"]


def test_query_single_field_given_twice() -> None:
    with pytest.raises(InvalidArgument) as ei:
        bind(account_service_pb2.ListAccountsRequest, "filter=a&filter=b")
    assert violations(ei.value) == {"filter": "takes one value, got 2"}


def test_snake_case() -> None:
    assert snake_case("primaryColor") == "primary_color"
    assert snake_case("logo_url") == "logo_url"
    assert snake_case("id") == "id"


# -- JSON bodies ----------------------------------------------------------------------------


def test_body_star_both_spellings() -> None:
    msg = account_service_pb2.CreateAccountRequest()
    merge_json(msg, {"account": {"name": "A", "primaryColor": "#fff", "logo_url": "u"},
                     "request_id": "r1"}, "*")
    assert msg.account.name == "A"
    assert msg.account.primary_color == "#fff"
    assert msg.account.logo_url == "u"
    assert msg.request_id == "r1"


def test_body_field_goes_into_that_field() -> None:
    msg = account_service_pb2.UpdateAccountRequest()
    merge_json(msg, {"name": "B", "etag": "e"}, "account")
    assert msg.account.name == "B"
    assert msg.account.etag == "e"
    empty = account_service_pb2.UpdateAccountRequest()
    merge_json(empty, {}, "account")
    assert empty.HasField("account")


@pytest.mark.parametrize(("body", "field", "fragment"), [
    ({"account": {"nmae": "x"}}, "account.nmae", "unknown field"),
    ({"bogus": 1}, "bogus", "unknown field"),
    ({"account": {"name": 5}}, "account.name", "must be a string, not a number"),
    ({"account": {"roles": "admin"}}, "account.roles", "must be a JSON array"),
    ({"account": "x"}, "account", "must be a JSON object, not a string"),
    ({"firstUser": {"kind": "NOPE"}}, "first_user.kind", "NOPE"),
    ({"requestId": 3}, "request_id", "must be a string, not a number"),
])
def test_body_errors_name_the_field(body: object, field: str, fragment: str) -> None:
    msg = account_service_pb2.CreateAccountRequest()
    with pytest.raises(InvalidArgument) as ei:
        merge_json(msg, body, "*")
    v = violations(ei.value)
    assert list(v) == [field], v
    assert fragment in v[field]
    assert ei.value.reason == "INVALID_JSON"


def test_body_timestamp_error_names_the_field() -> None:
    """(Every Timestamp of an accounts.v1 request is output-only: a message of this file's.)"""
    with pytest.raises(InvalidArgument) as ei:
        merge_json(_dynamic_messages()["Outer"](), {"inner": {"when": "yesterday"}}, "*")
    v = violations(ei.value)
    assert list(v) == ["inner.when"] and "timestamp" in v["inner.when"], v
    assert ei.value.reason == "INVALID_JSON"


# The document marks output-only fields readOnly, which a request may not carry: the shim
# refuses them whatever they hold (protojson would read null or "" as unset), with the
# reason the services give a set output-only field (FIELD_NOT_UPDATABLE in an update).
@pytest.mark.parametrize(("cls", "body_field", "body", "reason", "fields"), [
    # the fuzz finding (make fuzz, seed 11878080409866917103)
    (user_service_pb2.UpdateUserRequest, "user", {"id": None, "roles": None, "email": ""},
     "FIELD_NOT_UPDATABLE", ["user.id"]),
    (user_service_pb2.UpdateUserRequest, "user", {"id": "", "firstName": "x"},
     "FIELD_NOT_UPDATABLE", ["user.id"]),
    (user_service_pb2.UpdateUserRequest, "user",
     {"createTime": "2024-05-01T12:00:00Z", "update_time": None, "clientId": "c"},
     "FIELD_NOT_UPDATABLE", ["user.create_time", "user.update_time", "user.client_id"]),
    (user_group_service_pb2.UpdateUserGroupRequest, "user_group", {"memberIds": []},
     "FIELD_NOT_UPDATABLE", ["user_group.member_ids"]),
    (user_service_pb2.CreateUserRequest, "user", {"kind": "USER_KIND_HUMAN", "accountId": ""},
     "INVALID_ARGUMENT", ["user.account_id"]),
    (account_service_pb2.CreateAccountRequest, "*",
     {"account": {"name": "A", "closed": False}, "firstUser": {"client_id": None}},
     "INVALID_ARGUMENT", ["account.closed", "first_user.client_id"]),
    (partition_service_pb2.RegisterDevicesRequest, "*",
     {"devices": [{"deviceId": "d1"}, {"deviceId": "d2", "partitionId": ""}]},
     "INVALID_ARGUMENT", ["devices[1].partition_id"]),
    (user_service_pb2.UpsertUserOrderRequest, "*", {"order": {"id": None}},
     "INVALID_ARGUMENT", ["order.id"]),
])
def test_body_naming_an_output_only_field_is_refused_whatever_its_value(
        cls: Any, body_field: str, body: object, reason: str, fields: list[str]) -> None:
    with pytest.raises(InvalidArgument) as ei:
        merge_json(cls(), body, body_field)
    assert violations(ei.value) == dict.fromkeys(fields, OUTPUT_ONLY_TEXT)
    assert ei.value.reason == reason
    assert ei.value.code == "INVALID_ARGUMENT"


@pytest.mark.parametrize(("cls", "body_field", "body", "field"), [
    (user_service_pb2.UpdateUserRequest, "user", {"roles": None, "email": ""}, "user.roles"),
    (user_service_pb2.UpdateUserRequest, "user", {"email": None}, "user.email"),
    (user_service_pb2.CreateUserRequest, "user", {"kind": None}, "user.kind"),
    (account_service_pb2.CreateAccountRequest, "*", {"requestId": None}, "request_id"),
    # a oneof member: the document does not make it nullable
    (session_service_pb2.CreateSessionRequest, "*", {"user": {"userId": None}}, "user.user_id"),
    (partition_service_pb2.RegisterDevicesRequest, "*",
     {"devices": [{"deviceId": "d1"}, {"meterId": None}]}, "devices[1].meter_id"),
    (user_group_service_pb2.AddUserGroupMembersRequest, "*", {"userIds": None}, "user_ids"),
])
def test_body_null_where_the_document_forbids_it_is_refused(
        cls: Any, body_field: str, body: object, field: str) -> None:
    with pytest.raises(InvalidArgument) as ei:
        merge_json(cls(), body, body_field)
    assert violations(ei.value) == {field: "must not be null"}
    assert ei.value.reason == "INVALID_JSON"


def test_body_null_where_the_document_allows_it_means_unset() -> None:
    msg = account_service_pb2.CreateAccountRequest()
    merge_json(msg, {"account": None, "firstUser": None}, "*")
    assert not msg.HasField("account") and not msg.HasField("first_user")
    msg = session_service_pb2.CreateSessionRequest()
    merge_json(msg, {"user": {"externalId": "e1", "accountId": "a1"}}, "*")
    assert msg.user.external_id == "e1"
    m = _null_messages()
    holder = m()
    merge_json(holder, {"label": None, "anything": None, "child": None,
                        "children": [{"label": None}], "byName": {"k": {"child": None}}}, "*")
    assert not holder.HasField("label") and not holder.HasField("child")
    assert holder.anything.WhichOneof("kind") == "null_value"
    assert len(holder.children) == 1 and holder.by_name["k"].HasField("child") is False


@pytest.mark.parametrize(("body", "refused", "reason"), [
    ({"maybe": None}, "maybe", "must not be null"),  # proto3 optional: in a (synthetic) oneof
    ({"two": None}, "two", "must not be null"),  # a oneof member, a message
    ({"byName": None}, "by_name", "must not be null"),
    ({"children": None}, "children", "must not be null"),
    ({"plain": None}, "plain", "must not be null"),
    ({"secret": None}, "secret", OUTPUT_ONLY_TEXT),
    ({"child": {"child": {"secret": ""}}}, "child.child.secret", OUTPUT_ONLY_TEXT),
    ({"children": [{}, {"secret": "s"}]}, "children[1].secret", OUTPUT_ONLY_TEXT),
    ({"byName": {"k": {"secret": None}}}, "by_name[k].secret", OUTPUT_ONLY_TEXT),
    ({"byName": {"k": {"plain": None}}}, "by_name[k].plain", "must not be null"),
])
def test_body_refusals_at_any_depth(body: dict[str, Any], refused: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as ei:
        merge_json(_null_messages()(), body, "*")
    assert violations(ei.value) == {refused: reason}


def test_body_output_only_fields_are_named_before_nulls() -> None:
    """One error, one reason: every output-only field it names, else every bad null."""
    with pytest.raises(InvalidArgument) as ei:
        merge_json(_null_messages()(), {"plain": None, "secret": 1, "child": {"secret": 2}},
                   "*")
    assert violations(ei.value) == {"secret": OUTPUT_ONLY_TEXT, "child.secret": OUTPUT_ONLY_TEXT}
    with pytest.raises(InvalidArgument) as ei:
        merge_json(_null_messages()(), {"plain": None, "children": None}, "*")
    assert violations(ei.value) == {"plain": "must not be null", "children": "must not be null"}


def _admits_null(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    if kind is not None:
        return "null" in kind if isinstance(kind, list) else kind == "null"
    if "anyOf" in schema:
        return any(_admits_null(s) for s in schema["anyOf"])
    return "$ref" not in schema  # {}: google.protobuf.Value, anything


def _body_messages() -> list[Any]:
    """Every message a JSON request body can carry, at any depth."""
    todo = [r.method.input_type for r in routes_for(registry.service_descriptors()) if r.body]
    seen: dict[str, Any] = {}
    while todo:
        d = todo.pop()
        if d.full_name in seen or d.full_name.startswith("google.protobuf."):
            continue
        seen[d.full_name] = d
        todo += [f.message_type for f in d.fields if f.message_type is not None]
    return list(seen.values())


def test_refusals_follow_the_openapi_document() -> None:
    """Output-only is the document's readOnly, nullable its schemas that admit null."""
    messages = [*_body_messages(), _null_messages().DESCRIPTOR]
    assert len(messages) > 10
    for desc in messages:
        props = SchemaBuilder({}).message_schema(desc)["properties"]
        for f in desc.fields:
            schema = props[f.json_name]
            assert output_only(f) is bool(schema.get("readOnly")), f.full_name
            assert accepts_null(f) is _admits_null(schema), (f.full_name, schema)


@pytest.mark.parametrize("value", [[1], "x", 3, None, True])
def test_body_must_be_an_object(value: object) -> None:
    with pytest.raises(InvalidArgument) as ei:
        merge_json(account_service_pb2.CreateAccountRequest(), value, "*")
    assert "must be a JSON object" in violations(ei.value)["body"]
    with pytest.raises(InvalidArgument) as ei:
        merge_json(account_service_pb2.UpdateAccountRequest(), value, "account")
    assert "must be a JSON object" in violations(ei.value)["account"]


@pytest.mark.parametrize("raw", [b"{", b"{'a': 1}", b"\xff\xfe", b"[" * 100000, b"nul"])
def test_malformed_json(raw: bytes) -> None:
    with pytest.raises(InvalidArgument) as ei:
        load_json(raw)
    assert "malformed JSON" in violations(ei.value)["body"]


# -- errors ---------------------------------------------------------------------------------


def test_http_status_table() -> None:
    from google.rpc import code_pb2 as c

    table = {c.OK: 200, c.CANCELLED: 499, c.UNKNOWN: 500, c.INVALID_ARGUMENT: 400,
             c.DEADLINE_EXCEEDED: 504, c.NOT_FOUND: 404, c.ALREADY_EXISTS: 409,
             c.PERMISSION_DENIED: 403, c.UNAUTHENTICATED: 401, c.RESOURCE_EXHAUSTED: 429,
             c.FAILED_PRECONDITION: 400, c.ABORTED: 409, c.OUT_OF_RANGE: 400,
             c.UNIMPLEMENTED: 501, c.INTERNAL: 500, c.UNAVAILABLE: 503, c.DATA_LOSS: 500}
    for code, status in table.items():
        assert http_status(code) == status


def test_error_body_and_retry_after() -> None:
    from accounts_grpc.domain.errors import ResourceExhausted

    status = status_from_error(ResourceExhausted("slow down", retry_after=41.2))
    assert retry_after(status) == 41 or retry_after(status) == 42
    code, headers, body = error_response(status)
    assert code == 429
    assert dict(headers)[b"retry-after"] in (b"41", b"42")
    doc = json.loads(body)
    assert doc["code"] == 8 and doc["message"] == "slow down"
    types = [d["@type"] for d in doc["details"]]
    assert "type.googleapis.com/google.rpc.ErrorInfo" in types
    assert "type.googleapis.com/google.rpc.RetryInfo" in types
    code, headers, body = error_response(status_for("NOT_FOUND", "gone", "X_NOT_FOUND"))
    assert code == 404 and b"retry-after" not in dict(headers)
    assert json.loads(body)["details"][0]["reason"] == "X_NOT_FOUND"


# -- the token endpoint's request parsing ---------------------------------------------------


def basic(user: str, password: str) -> str:
    import base64
    from urllib.parse import quote_plus

    raw = f"{quote_plus(user)}:{quote_plus(password)}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def test_token_form_and_basic() -> None:
    form = b"grant_type=client_credentials&client_id=c1&client_secret=s%2B1&scope=a+b&x=ignored"
    msg, used_basic = build_request(form, "application/x-www-form-urlencoded", None)
    assert (msg.client_id, msg.client_secret, msg.scope, used_basic) == ("c1", "s+1", "a b", False)
    msg, used_basic = build_request(b"grant_type=client_credentials",
                                    "application/x-www-form-urlencoded; charset=utf-8",
                                    basic("c:1", "p&ss w+rd"))
    assert (msg.client_id, msg.client_secret, used_basic) == ("c:1", "p&ss w+rd", True)
    assert parse_basic(basic("a", "b:c")) == ("a", "b:c")


def test_token_json_either_spelling() -> None:
    msg, _ = build_request(json.dumps({"clientId": "c", "client_secret": "s"}).encode(),
                           "application/json", None)
    assert (msg.grant_type, msg.client_id, msg.client_secret) == ("", "c", "s")


@pytest.mark.parametrize(("body", "ctype", "auth", "status", "error"), [
    (b"client_id=c&client_secret=s", "application/x-www-form-urlencoded", None, 400,
     "invalid_request"),
    (b"grant_type=client_credentials", "application/x-www-form-urlencoded", None, 400,
     "invalid_request"),
    (b"grant_type=client_credentials&client_id=a&client_id=b&client_secret=s",
     "application/x-www-form-urlencoded", None, 400, "invalid_request"),
    (b"grant_type=client_credentials&client_secret=s", "application/x-www-form-urlencoded",
     "Basic Yzpz", 400, "invalid_request"),
    (b"grant_type=client_credentials", "application/x-www-form-urlencoded", "Basic !!", 401,
     "invalid_client"),
    (b"grant_type=client_credentials", "application/x-www-form-urlencoded", "Bearer x", 400,
     "invalid_request"),
    (b"<xml/>", "text/xml", None, 400, "invalid_request"),
    (b"[1]", "application/json", None, 400, "invalid_request"),
    (b'{"client_id": 1}', "application/json", None, 400, "invalid_request"),
])
def test_token_request_errors(body: bytes, ctype: str, auth: str | None, status: int,
                              error: str) -> None:
    with pytest.raises(OAuthError) as ei:
        build_request(body, ctype, auth)
    assert (ei.value.status, ei.value.error) == (status, error)
    code, headers, raw = ei.value.response()
    assert code == status and json.loads(raw)["error"] == error
    assert dict(headers)[b"cache-control"] == b"no-store"
    if status == 401:
        assert dict(headers)[b"www-authenticate"].startswith(b"Basic ")


def test_router_routes_cover_the_token_endpoint() -> None:
    router = Router(routes_for(registry.service_descriptors()))
    m = router.match("POST", "/v1/token")
    assert m is not None and m.route.public and m.route.body == "*"


# -- response JSON, as grpc-gateway v2 prints it --------------------------------------------


_F = descriptor_pb2.FieldDescriptorProto


def _dynamic_messages() -> dict[str, Any]:
    """A proto3 file with what accounts.v1 lacks: a proto3 ``optional`` scalar, a oneof, a
    map of messages and a nested unset message (the rules must hold for them too)."""
    fdp = descriptor_pb2.FileDescriptorProto(
        name="json_defaults_test.proto", package="jd", syntax="proto3",
        dependency=["google/protobuf/timestamp.proto", "google/protobuf/any.proto"])
    inner = fdp.message_type.add(name="Inner")
    inner.field.add(name="when", number=1, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL,
                    type_name=".google.protobuf.Timestamp")
    inner.field.add(name="count", number=2, type=_F.TYPE_INT64, label=_F.LABEL_OPTIONAL)
    outer = fdp.message_type.add(name="Outer")
    entry = outer.nested_type.add(name="ByNameEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL,
                    type_name=".jd.Inner")
    outer.oneof_decl.add(name="choice")
    outer.oneof_decl.add(name="_maybe")
    outer.field.add(name="flag", number=1, type=_F.TYPE_BOOL, label=_F.LABEL_OPTIONAL)
    outer.field.add(name="maybe", number=2, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL,
                    proto3_optional=True, oneof_index=1)
    outer.field.add(name="by_name", number=3, type=_F.TYPE_MESSAGE,
                    label=_F.LABEL_REPEATED, type_name=".jd.Outer.ByNameEntry")
    outer.field.add(name="one", number=4, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL,
                    oneof_index=0)
    outer.field.add(name="two", number=5, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL,
                    type_name=".jd.Inner", oneof_index=0)
    outer.field.add(name="inner", number=6, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL,
                    type_name=".jd.Inner")
    outer.field.add(name="items", number=7, type=_F.TYPE_MESSAGE, label=_F.LABEL_REPEATED,
                    type_name=".jd.Inner")
    outer.field.add(name="packed", number=8, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL,
                    type_name=".google.protobuf.Any")
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(fdp.name)
    except KeyError:
        pool.Add(fdp)
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"jd.{n}"))
            for n in ("Outer", "Inner")}


def _null_messages() -> Any:
    """``jn.Holder``: what accounts.v1 request bodies lack, to test which JSON nulls are
    taken (a wrapper, a Value, a oneof, a proto3 ``optional``, a map) and output-only
    fields inside lists and maps."""
    pool = descriptor_pool.Default()
    try:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName("jn.Holder"))
    except KeyError:
        pass
    fdp = descriptor_pb2.FileDescriptorProto(
        name="json_nulls_test.proto", package="jn", syntax="proto3",
        dependency=[wrappers_pb2.DESCRIPTOR.name, struct_pb2.DESCRIPTOR.name,
                    field_behavior_pb2.DESCRIPTOR.name])
    holder = fdp.message_type.add(name="Holder")
    entry = holder.nested_type.add(name="ByNameEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL,
                    type_name=".jn.Holder")
    holder.oneof_decl.add(name="pick")
    holder.oneof_decl.add(name="_maybe")
    add = holder.field.add
    add(name="label", number=1, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL,
        type_name=".google.protobuf.StringValue")
    add(name="anything", number=2, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL,
        type_name=".google.protobuf.Value")
    add(name="plain", number=3, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    add(name="maybe", number=4, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL,
        proto3_optional=True, oneof_index=1)
    add(name="child", number=5, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL,
        type_name=".jn.Holder")
    add(name="children", number=6, type=_F.TYPE_MESSAGE, label=_F.LABEL_REPEATED,
        type_name=".jn.Holder")
    add(name="by_name", number=7, type=_F.TYPE_MESSAGE, label=_F.LABEL_REPEATED,
        type_name=".jn.Holder.ByNameEntry")
    add(name="one", number=8, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL, oneof_index=0)
    add(name="two", number=9, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL,
        type_name=".jn.Holder", oneof_index=0)
    secret = add(name="secret", number=10, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    secret.options.Extensions[field_behavior_pb2.field_behavior].append(
        field_behavior_pb2.OUTPUT_ONLY)
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("jn.Holder"))


def test_response_json_writes_every_field_like_protojson_emit_unpopulated() -> None:
    """Scalars at their default, ``[]``, ``{}``; an unset message ``null``; an unset oneof
    member or proto3 ``optional`` left out; keys in declaration order."""
    m = _dynamic_messages()
    assert message_json(m["Outer"]()) == {
        "flag": False, "byName": {}, "inner": None, "items": [], "packed": None}
    assert list(message_json(m["Outer"]())) == ["flag", "byName", "inner", "items", "packed"]
    full = m["Outer"](maybe="", two=m["Inner"](count=3), items=[m["Inner"]()],
                      inner=m["Inner"](when=timestamp_pb2.Timestamp(seconds=1)))
    full.by_name["a"].count = 0
    assert message_json(full) == {
        "flag": False, "maybe": "", "byName": {"a": {"when": None, "count": "0"}},
        "two": {"when": None, "count": "3"},
        "inner": {"when": "1970-01-01T00:00:01Z", "count": "0"},
        "items": [{"when": None, "count": "0"}], "packed": None}
    assert list(message_json(full)) == ["flag", "maybe", "byName", "two", "inner", "items",
                                        "packed"]
    # an Any's packed message gets the same treatment, "@type" first
    packed = m["Outer"]()
    packed.packed.Pack(m["Inner"]())
    assert message_json(packed)["packed"] == {
        "@type": "type.googleapis.com/jd.Inner", "when": None, "count": "0"}


def test_response_json_of_accounts_messages() -> None:
    account = account_service_pb2.GetAccountResponse()
    account.account.id = "a1"
    out = response_json(account)
    assert out["account"]["closed"] is False and out["account"]["roles"] == []
    assert out["account"]["createTime"] is None and out["account"]["id"] == "a1"
    assert response_json(account, "account") == out["account"]
    assert response_json(account_service_pb2.GetAccountResponse()) == {"account": None}


def test_standard_shaped_responses_keep_their_rfc_form() -> None:
    s = session_service_pb2
    assert response_json(s.GetJwksResponse()) == {"keys": []}
    jwk = response_json(s.GetJwksResponse(keys=[session_pb2.Jwk(kty="EC", crv="P-256")]))
    assert jwk == {"keys": [{"kty": "EC", "crv": "P-256"}]}
    assert response_json(s.IntrospectTokenResponse()) == {"active": False}
    assert response_json(s.IntrospectTokenResponse(active=True, sub="u")) == {
        "active": True, "sub": "u"}
    assert response_json(s.CreateTokenResponse(
        access_token="t", token_type="Bearer", expires_in=60)) == {
        "access_token": "t", "token_type": "Bearer", "expires_in": 60}
    for name, members in STANDARD_JSON.items():  # every required member has no presence
        desc = descriptor_pool.Default().FindMessageTypeByName(name)
        for member in members:
            assert not emits_null(desc.fields_by_name[member]), (name, member)


def test_error_details_write_every_field() -> None:
    bad = error_details_pb2.BadRequest(field_violations=[
        error_details_pb2.BadRequest.FieldViolation(field="name", description="empty")])
    _, _, body = error_response(status_for("INVALID_ARGUMENT", "bad", "BAD", None, [bad]))
    info, request = json.loads(body)["details"]
    assert list(info) == ["@type", "reason", "domain", "metadata"] and info["metadata"] == {}
    assert request["fieldViolations"] == [
        {"field": "name", "description": "empty", "reason": "", "localizedMessage": None}]
