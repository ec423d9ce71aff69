"""REST JSON as grpc-gateway v2 prints it: every field present, at its default too.

grpc-gateway's default marshaler is protojson with ``EmitUnpopulated``: ``"closed":
false``, ``"roles": []``, ``"nextPageToken": ""`` are written, never left out, and an
unset message field (a timestamp not reached yet) is ``null``; keys come in declaration
order. So a typed client can tell ``false`` from "not sent". Where a standard defines the
JSON it wins: the JWK Set, the OAuth 2 token response and token introspection leave
members at their default out (RFC 7517, RFC 6749 section 5.1, RFC 7662). Error details
follow the gateway's rule too. The OpenAPI document says all this, and marks the fields
of response-only messages required.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from accounts.v1 import (
    account_pb2,
    account_service_pb2,
    session_pb2,
    session_service_pb2,
    user_group_pb2,
    user_pb2,
)

from accounts_grpc.rest import openapi
from tests.support import Server


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    """An HTTP client authenticated as the bootstrap admin."""
    with httpx.Client(base_url=server.http_url, timeout=30,
                      headers={"authorization": f"Bearer {server.admin_token}"}) as c:
        yield c


def ok(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    body = r.json()
    assert isinstance(body, dict)
    return body


def fields(message: Any) -> list[str]:
    """The JSON names of a message's fields, in declaration order (protojson's)."""
    return [f.json_name for f in message.DESCRIPTOR.fields]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def new_account(http: httpx.Client) -> dict[str, Any]:
    """A plain account (no account roles) with its first user, through the REST API."""
    name = unique("Plain")
    email = f"{name.lower()}@example.com"
    return ok(http.post("/v1/accounts", json={
        "account": {"name": name, "email": email},
        "firstUser": {"kind": "USER_KIND_HUMAN", "email": f"admin.{email}"}}))


# -- defaults are written -------------------------------------------------------------------------


def test_open_account_shows_closed_false_and_no_roles(http: httpx.Client) -> None:
    account_id = new_account(http)["account"]["id"]
    r = http.get(f"/v1/accounts/{account_id}")
    assert '"closed":false' in r.text and '"roles":[]' in r.text  # on the wire, literally
    account = ok(r)["account"]
    assert account["closed"] is False
    assert account["roles"] == []
    assert account["primaryColor"] == "" and account["consultancyAccountId"] == ""
    assert list(account) == fields(account_pb2.Account), "every field, in proto order"


def test_closed_account_shows_closed_true(http: httpx.Client) -> None:
    account_id = new_account(http)["account"]["id"]
    closed = ok(http.post(f"/v1/accounts/{account_id}:close"))["account"]
    assert closed["closed"] is True and closed["roles"] == []


def test_user_shows_its_empty_fields(http: httpx.Client) -> None:
    account_id = new_account(http)["account"]["id"]
    created = ok(http.post(f"/v1/accounts/{account_id}/users",
                           json={"kind": "USER_KIND_HUMAN", "email": f"{unique('u')}@x.org"}))
    user = ok(http.get(f"/v1/users/{created['user']['id']}"))["user"]
    assert user["roles"] == ["member"]  # a user given no roles is a member (user_fields.py)
    assert user["firstName"] == "" and user["lastName"] == "" and user["externalId"] == ""
    assert user["clientId"] == "", "a human has no client id: written empty, not left out"
    assert list(user) == fields(user_pb2.User)


def test_group_without_roles_shows_empty_roles(http: httpx.Client) -> None:
    account_id = new_account(http)["account"]["id"]
    created = ok(http.post(f"/v1/accounts/{account_id}/userGroups",
                           json={"name": unique("nobody")}))["userGroup"]
    group = ok(http.get(f"/v1/userGroups/{created['id']}"))["userGroup"]
    assert group["roles"] == [] and group["partitionIds"] == [] and group["memberIds"] == []
    assert group["description"] == ""
    assert list(group) == fields(user_group_pb2.UserGroup)


def test_response_wrappers_write_their_defaults(http: httpx.Client) -> None:
    created = new_account(http)
    assert list(created) == fields(account_service_pb2.CreateAccountResponse)
    page = ok(http.get(f"/v1/accounts/{created['account']['id']}/partitions"))
    assert page["partitions"] == [] and page["includedAccounts"] == []
    assert page["nextPageToken"] == "" and page["previousPageToken"] == ""
    assert page["totalSize"] == 0


def test_unset_message_fields_are_null(http: httpx.Client) -> None:
    """A field with presence (a Timestamp here) that is not set is ``null``, as protojson
    with EmitUnpopulated writes it; once set it is the value."""
    user = new_account(http)["firstUser"]
    opened = ok(http.post("/v1/sessions", json={"user": {"userId": user["id"]}}))
    assert list(opened) == fields(session_service_pb2.CreateSessionResponse)
    session = opened["session"]
    assert list(session) == fields(session_pb2.Session)
    assert session["revokeTime"] is None, "an active session: revokeTime null, not left out"
    revoked = ok(http.delete(f"/v1/sessions/{session['id']}"))["session"]
    assert isinstance(revoked["revokeTime"], str) and revoked["revokeTime"].endswith("Z")


# -- error bodies ---------------------------------------------------------------------------------


def test_error_details_write_their_defaults(http: httpx.Client) -> None:
    r = http.post("/v1/sessions", json={"user": {}})
    assert r.status_code == 400, r.text
    body = r.json()
    assert list(body) == ["code", "message", "details"]
    by_type = {d["@type"].rsplit(".", 1)[-1]: d for d in body["details"]}
    info = by_type["ErrorInfo"]
    assert list(info) == ["@type", "reason", "domain", "metadata"]
    violations = by_type["BadRequest"]["fieldViolations"]
    assert violations
    for v in violations:
        # google.rpc.BadRequest.FieldViolation: reason "" and localizedMessage null (unset
        # message) are written, as grpc-gateway writes them
        assert list(v) == ["field", "description", "reason", "localizedMessage"], v
        assert v["localizedMessage"] is None


def test_not_found_has_empty_details_metadata_written(http: httpx.Client) -> None:
    r = http.get(f"/v1/accounts/{uuid.uuid4()}")
    assert r.status_code == 404, r.text
    [info] = [d for d in r.json()["details"] if d["@type"].endswith("ErrorInfo")]
    assert isinstance(info["metadata"], dict)


# -- where a standard says otherwise --------------------------------------------------------------


def test_jwks_members_are_rfc7517(server: Server) -> None:
    doc = ok(httpx.get(f"{server.http_url}/.well-known/jwks.json"))
    assert list(doc) == ["keys"] and doc["keys"]
    for key in doc["keys"]:
        assert all(v not in ("", None, [], {}) for v in key.values()), key
        absent = {"RSA": {"crv", "x", "y"}, "EC": {"n", "e"}, "OKP": {"n", "e", "y"}}
        assert not absent[key["kty"]] & set(key), "members of other key types left out"


def test_token_response_is_rfc6749(server: Server) -> None:
    r = httpx.post(f"{server.http_url}/v1/token", data={
        "grant_type": "client_credentials", "client_id": server.admin_client_id,
        "client_secret": server.admin_client_secret})
    body = ok(r)
    assert set(body) == {"access_token", "token_type", "expires_in"}, \
        "no scope requested: no empty scope member"
    assert body["token_type"] == "Bearer" and body["expires_in"] > 0


def test_introspection_is_rfc7662(server: Server, http: httpx.Client) -> None:
    user = new_account(http)["firstUser"]
    token = ok(http.post("/v1/sessions", json={"user": {"userId": user["id"]}}))["accessToken"]
    active = ok(http.post("/v1/token:introspect", json={"token": token}))
    assert active["active"] is True and active["token_type"] == "session"
    assert "client_id" not in active, "a session token has no client: the member is absent"
    assert all(v not in ("", None, [], 0) for v in active.values()), active
    inactive = ok(http.post("/v1/token:introspect", json={"token": "not-a-token"}))
    assert inactive == {"active": False}, "RFC 7662: active (required), and nothing else"


# -- the document says so -------------------------------------------------------------------------


def test_openapi_document_says_defaults_are_written(server: Server) -> None:
    doc = ok(httpx.get(f"{server.http_url}/openapi.json"))
    text = doc["info"]["description"]
    assert "every field of its message, at its default too" in text
    assert "RFC 7517" in text and "RFC 6749" in text and "RFC 7662" in text
    schemas = doc["components"]["schemas"]
    # response-only messages require every field; unset message fields may be null
    assert schemas["Session"]["required"] == fields(session_pb2.Session)
    assert "null" in schemas["Session"]["properties"]["revokeTime"]["type"]
    assert schemas["ListAccountsResponse"]["required"] == \
        fields(account_service_pb2.ListAccountsResponse)
    # a message requests carry too keeps its request-side required list only
    assert schemas["Account"]["required"] == ["name", "email"]
    # standard-shaped ones require the standard's members only
    assert schemas["GetJwksResponse"]["required"] == ["keys"]
    assert "required" not in schemas["Jwk"]
    assert schemas["IntrospectTokenResponse"]["required"] == ["active"]
    assert schemas["CreateTokenResponse"]["required"] == ["access_token", "token_type"]
    assert doc == openapi.document()
