"""The REST shim's errors, exactly as grpc-gateway writes them, for each client mistake.

Each body is ``{"code", "message", "details"}`` with google.rpc.ErrorInfo (and
BadRequest for INVALID_ARGUMENT); never a 500 for something the client did.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from accounts.v1 import user_pb2, user_service_pb2

from tests.support import Server, expect_error

ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.http_url, timeout=30,
                      headers={"authorization": f"Bearer {server.admin_token}"}) as c:
        yield c


def error(r: httpx.Response, status: int, code: int) -> dict[str, Any]:
    """Assert the grpc-gateway error shape; return the body."""
    assert r.status_code == status, f"{r.status_code} {r.text}"
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"code", "message", "details"}, body
    assert body["code"] == code
    assert body["message"]
    assert isinstance(body["details"], list)
    return body


def info(body: dict[str, Any]) -> dict[str, Any]:
    found = [d for d in body["details"] if d["@type"] == ERROR_INFO]
    assert found, body
    assert found[0]["domain"] == "accounts.v1"
    return found[0]


def violations(body: dict[str, Any]) -> dict[str, str]:
    found = [d for d in body["details"] if d["@type"] == BAD_REQUEST]
    assert found, body
    return {v["field"]: v["description"] for v in found[0]["fieldViolations"]}


# -- routing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("PUT", "/v1/me", "GET"),
    ("DELETE", "/v1/accounts", "GET, POST"),
    ("GET", "/v1/sessions/s1", "DELETE"),
    ("GET", "/v1/token", "POST"),
    ("POST", "/v1/accounts/a1", "GET, PATCH"),
    ("POST", "/healthz", "GET, HEAD"),
])
def test_wrong_method_is_405_with_allow(http: httpx.Client, method: str, path: str,
                                        allow: str) -> None:
    body = error(http.request(method, path), 405, 12)
    r = http.request(method, path)
    assert r.headers["allow"] == allow
    assert info(body)["reason"] == "METHOD_NOT_ALLOWED"


@pytest.mark.parametrize("path", ["/nope", "/v1", "/v1/accounts/a1/nothing", "/v1/me/", "/v2/me",
                                  "//v1/me"])
def test_unknown_path_is_404(http: httpx.Client, path: str) -> None:
    body = error(http.get(path), 404, 5)
    assert info(body)["reason"] == "ROUTE_NOT_FOUND"


# -- authentication -------------------------------------------------------------------------------


def test_missing_token_is_401_with_details(server: Server) -> None:
    r = httpx.get(f"{server.http_url}/v1/me")
    body = error(r, 401, 16)
    assert info(body)["reason"] == "TOKEN_MISSING"
    assert r.headers["www-authenticate"].startswith("Bearer")


def test_bad_token_is_401(server: Server) -> None:
    r = httpx.get(f"{server.http_url}/v1/accounts",
                  headers={"authorization": "Bearer not-a-token"})
    error(r, 401, 16)


def test_authenticated_route_checks_token_before_the_servicer(server: Server) -> None:
    r = httpx.post(f"{server.http_url}/v1/accounts", json={"account": {"name": "x"}})
    error(r, 401, 16)


# -- bodies ---------------------------------------------------------------------------------------


def test_malformed_json_is_400(http: httpx.Client) -> None:
    r = http.post("/v1/accounts", content=b'{"account": {"name": "x"',
                  headers={"content-type": "application/json"})
    body = error(r, 400, 3)
    assert info(body)["reason"] == "INVALID_JSON"
    assert "malformed JSON" in violations(body)["body"]


def test_non_object_body_is_400(http: httpx.Client) -> None:
    body = error(http.post("/v1/accounts", json=["account"]), 400, 3)
    assert "must be a JSON object" in violations(body)["body"]


def test_wrong_json_type_is_400_naming_the_field(http: httpx.Client) -> None:
    body = error(http.post("/v1/accounts", json={"account": {"name": 42}}), 400, 3)
    assert violations(body) == {"account.name": "must be a string, not a number"}
    body = error(http.post("/v1/accounts", json={"account": "Acme"}), 400, 3)
    assert "account" in violations(body)
    body = error(http.patch("/v1/accounts/a1", json=[1, 2]), 400, 3)
    assert "account" in violations(body)


def test_unknown_json_field_is_400(http: httpx.Client) -> None:
    body = error(http.post("/v1/accounts", json={"account": {"nmae": "x"}}), 400, 3)
    assert violations(body) == {"account.nmae": "unknown field"}
    body = error(http.post("/v1/sessions", json={"usr": {}}), 400, 3)
    assert violations(body) == {"usr": "unknown field"}


def test_bad_enum_value_is_400(http: httpx.Client) -> None:
    body = error(http.post("/v1/accounts", json={
        "account": {"name": "x"}, "firstUser": {"kind": "USER_KIND_ROBOT"}}), 400, 3)
    assert "first_user.kind" in violations(body)


def new_account(http: httpx.Client) -> tuple[str, dict[str, Any]]:
    """A new account through REST: its id and its first user (HUMAN)."""
    tag = uuid.uuid4().hex[:8]
    r = http.post("/v1/accounts", json={
        "account": {"name": f"Shim {tag}", "email": f"ops-{tag}@example.com"},
        "firstUser": {"kind": "USER_KIND_HUMAN", "email": f"ada-{tag}@example.com"}})
    assert r.status_code == 200, r.text
    return r.json()["account"]["id"], r.json()["firstUser"]


def test_output_only_field_in_the_body_is_400_whatever_its_value(http: httpx.Client) -> None:
    """The document makes ``id`` readOnly: a body naming it is refused even as ``null``,
    which protojson would read as unset (make fuzz, seed 11878080409866917103, had
    200 for exactly this request, the curl below); nothing is written."""
    _, user = new_account(http)
    path = f"/v1/users/{user['id']}"
    before = http.get(path).json()
    r = http.patch(path, content=b'{"id": null, "roles": null, "email": ""}',
                   headers={"content-type": "application/json"})
    body = error(r, 400, 3)
    assert info(body)["reason"] == "FIELD_NOT_UPDATABLE"
    assert violations(body) == {"user.id": "is output-only and cannot be set"}
    assert "user.id" in body["message"]
    for value in ("", user["accountId"], None):  # at its default, unchanged, null
        body = error(http.patch(path, json={"accountId": value, "firstName": "Eve"}), 400, 3)
        assert violations(body) == {"user.account_id": "is output-only and cannot be set"}
    assert http.get(path).json() == before


def test_output_only_refusal_is_the_services_for_a_set_value(server: Server,
                                                             http: httpx.Client) -> None:
    """What the shim answers for an output-only field at its default is what the services
    answer over gRPC when it holds a value: FIELD_NOT_UPDATABLE in an update,
    INVALID_ARGUMENT on create, naming the same field."""
    account_id, user = new_account(http)
    users = server.stubs.users
    grpc_update = expect_error(
        users.UpdateUser, user_service_pb2.UpdateUserRequest(
            user=user_pb2.User(id=user["id"], client_id="c1", first_name="Eve")),
        metadata=server.admin, code=grpc.StatusCode.INVALID_ARGUMENT)
    rest_update = error(http.patch(f"/v1/users/{user['id']}",
                                   json={"clientId": "", "firstName": "Eve"}), 400, 3)
    assert grpc_update.reason == info(rest_update)["reason"] == "FIELD_NOT_UPDATABLE"
    assert [f for f, _ in grpc_update.violations] == list(violations(rest_update)) \
        == ["user.client_id"]
    email = f"bo-{uuid.uuid4().hex[:8]}@example.com"
    grpc_create = expect_error(
        users.CreateUser, user_service_pb2.CreateUserRequest(
            account_id=account_id, user=user_pb2.User(kind=user_pb2.USER_KIND_HUMAN,
                                                      email=email, client_id="c1")),
        metadata=server.admin, code=grpc.StatusCode.INVALID_ARGUMENT)
    rest_create = error(http.post(f"/v1/accounts/{account_id}/users", json={
        "kind": "USER_KIND_HUMAN", "email": email, "clientId": None}), 400, 3)
    assert grpc_create.reason == info(rest_create)["reason"] == "INVALID_ARGUMENT"
    assert [f for f, _ in grpc_create.violations] == list(violations(rest_create)) \
        == ["user.client_id"]
    listed = http.get(f"/v1/accounts/{account_id}/users").json()["users"]
    assert [u["id"] for u in listed] == [user["id"]]  # nothing was created


def test_null_the_document_forbids_is_400(http: httpx.Client) -> None:
    """``null`` for a field whose schema is not nullable (a list, a string, a oneof
    member) is a wrong JSON type, not "unset"; nothing is written."""
    _, user = new_account(http)
    path = f"/v1/users/{user['id']}"
    before = http.get(path).json()
    body = error(http.patch(path, json={"roles": None, "email": ""}), 400, 3)
    assert info(body)["reason"] == "INVALID_JSON"
    assert violations(body) == {"user.roles": "must not be null"}
    body = error(http.patch(path, json={"firstName": None}), 400, 3)
    assert violations(body) == {"user.first_name": "must not be null"}
    body = error(http.post("/v1/sessions", json={"user": {"userId": None}}), 400, 3)
    assert violations(body) == {"user.user_id": "must not be null"}
    assert http.get(path).json() == before


def test_null_the_document_allows_means_unset(http: httpx.Client) -> None:
    """A message field is nullable: ``null`` is the field left out."""
    tag = uuid.uuid4().hex[:8]
    account = {"name": f"Shim {tag}", "email": f"ops-{tag}@example.com"}
    body = error(http.post("/v1/accounts", json={"account": account, "firstUser": None}),
                 400, 3)
    assert list(violations(body)) == ["first_user.email"]  # the service: no first user
    made = http.post("/v1/accounts", json={
        "account": account, "requestId": uuid.uuid4().hex,
        "firstUser": {"kind": "USER_KIND_HUMAN", "email": f"ada-{tag}@example.com"}})
    assert made.status_code == 200, made.text


def test_path_wins_over_a_body_field_the_document_allows(http: httpx.Client) -> None:
    """grpc-gateway's rule where the body may name the field the path sets (``id`` of a
    whole-body route, not output-only): the path's account is closed, not the body's."""
    a, _ = new_account(http)
    b, _ = new_account(http)
    r = http.post(f"/v1/accounts/{a}:close", json={"id": b})
    assert r.status_code == 200, r.text
    closed = r.json()["account"]
    assert closed["id"] == a and closed["closed"] is True
    assert http.get(f"/v1/accounts/{b}").json()["account"]["closed"] is False


def test_oversize_body_is_413(server: Server, http: httpx.Client) -> None:
    limit = server.app.settings.http_max_body_bytes
    big = b'{"account": {"name": "' + b"x" * limit + b'"}}'
    body = error(http.post("/v1/accounts", content=big,
                           headers={"content-type": "application/json"}), 413, 8)
    assert str(limit) in body["message"]
    assert info(body)["reason"] == "REQUEST_TOO_LARGE"

    def chunks() -> Iterator[bytes]:  # no Content-Length: cut off while reading
        yield b'{"account": {"name": "'
        for _ in range(limit // 65536 + 2):
            yield b"x" * 65536
        yield b'"}}'

    r = http.post("/v1/accounts", content=chunks(), headers={"content-type": "application/json"})
    error(r, 413, 8)


def test_body_at_the_limit_is_read(server: Server, http: httpx.Client) -> None:
    limit = server.app.settings.http_max_body_bytes
    filler = limit - len(b'{"account": {"name": ""}}')
    r = http.post("/v1/accounts", content=b'{"account": {"name": "' + b"x" * filler + b'"}}',
                  headers={"content-type": "application/json"})
    assert r.status_code not in (413, 500), r.text


# -- query strings --------------------------------------------------------------------------------


def test_unknown_query_parameter_is_400(http: httpx.Client) -> None:
    body = error(http.get("/v1/accounts", params={"colour": "red"}), 400, 3)
    assert violations(body) == {"colour": "unknown query parameter"}
    assert info(body)["reason"] == "INVALID_QUERY_PARAMETER"


def test_bad_query_value_is_400(http: httpx.Client) -> None:
    body = error(http.get("/v1/accounts", params={"pageSize": "lots", "showClosed": "maybe"}),
                 400, 3)
    assert set(violations(body)) == {"pageSize", "showClosed"}


def test_query_parameter_on_a_whole_body_route_is_400(http: httpx.Client) -> None:
    body = error(http.post("/v1/accounts", params={"requestId": "x"},
                           json={"account": {"name": "x"}}), 400, 3)
    assert "requestId" in violations(body)


def test_path_field_in_the_query_is_400(http: httpx.Client) -> None:
    body = error(http.get("/v1/accounts/a1/auditlog", params={"account_id": "other"}), 400, 3)
    assert violations(body) == {"account_id": "is set by the path, not the query"}


def test_negative_page_size_is_400_from_the_service(http: httpx.Client) -> None:
    body = error(http.get("/v1/accounts", params={"pageSize": -1}), 400, 3)
    assert "page_size" in violations(body)


# -- metadata -------------------------------------------------------------------------------------


def test_x_request_id_and_user_agent_are_passed_on(server: Server) -> None:
    """The pipeline sees them (the session's user agent defaults to the User-Agent)."""
    seen: list[dict[str, str]] = []
    pipeline = server.app.pipeline
    original = pipeline.call

    def spy(method: str, request: Any, metadata: Any, peer: str, transport: str,
            handler: Any, **kw: Any) -> Any:
        seen.append({"method": method, "peer": peer, "transport": transport, **metadata})
        return original(method, request, metadata, peer, transport, handler, **kw)

    pipeline.call = spy  # type: ignore[method-assign]
    try:
        r = httpx.get(f"{server.http_url}/v1/me", headers={
            "authorization": f"Bearer {server.admin_token}", "x-request-id": "req-123",
            "user-agent": "curl/8.5", "grpc-metadata-x-tenant": "t1"})
        assert r.status_code == 200
    finally:
        del pipeline.call
    assert seen == [{
        "method": "/accounts.v1.UserService/GetMe", "peer": "127.0.0.1", "transport": "rest",
        "authorization": f"Bearer {server.admin_token}", "x-request-id": "req-123",
        "user-agent": "curl/8.5", "x-tenant": "t1"}]
