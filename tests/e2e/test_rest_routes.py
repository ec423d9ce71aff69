"""API.md's required REST routes, as a curl user drives them, against the real server.

Everything goes over HTTP/JSON through the transcoder: proto3 JSON out (lowerCamelCase),
both spellings in, path values winning over the body, the remaining fields from the
query string.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import Server


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    """An HTTP client authenticated as the bootstrap admin."""
    with httpx.Client(base_url=server.http_url, timeout=30,
                      headers={"authorization": f"Bearer {server.admin_token}"}) as c:
        yield c


def ok(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert isinstance(body, dict)
    return body


def no_snake_keys(value: Any) -> None:
    """proto3 JSON out: lowerCamelCase everywhere (no field name with an underscore)."""
    if isinstance(value, dict):
        for k, v in value.items():
            assert "_" not in k or k.startswith("@"), f"snake_case key {k!r} in a response"
            no_snake_keys(v)
    elif isinstance(value, list):
        for v in value:
            no_snake_keys(v)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create_account(http: httpx.Client, *, snake: bool = False) -> dict[str, Any]:
    name = unique("Acme")
    email = f"{name.lower()}@example.com"
    if snake:
        body = {"account": {"name": name, "email": email, "primary_color": "#112233"},
                "first_user": {"kind": "USER_KIND_HUMAN", "email": f"admin.{email}",
                               "first_name": "Ada", "last_name": "Admin"},
                "request_id": uuid.uuid4().hex}
    else:
        body = {"account": {"name": name, "email": email, "primaryColor": "#112233"},
                "firstUser": {"kind": "USER_KIND_HUMAN", "email": f"admin.{email}",
                              "firstName": "Ada", "lastName": "Admin"},
                "requestId": uuid.uuid4().hex}
    created = ok(http.post("/v1/accounts", json=body))
    no_snake_keys(created)
    assert created["account"]["name"] == name
    assert created["account"]["primaryColor"] == "#112233"
    assert created["firstUser"]["firstName"] == "Ada"
    assert created["firstUser"]["kind"] == "USER_KIND_HUMAN"
    assert "account-admin" in created["firstUser"]["roles"]
    return created


# -- public routes ----------------------------------------------------------------------------


def test_jwks_is_rfc7517(server: Server) -> None:
    r = httpx.get(f"{server.http_url}/.well-known/jwks.json")
    doc = ok(r)
    assert list(doc) == ["keys"] and doc["keys"]
    for key in doc["keys"]:
        assert key["use"] == "sig"
        assert {"kty", "kid", "alg"} <= set(key)
        assert all(v != "" for v in key.values()), "unset JWK members must be left out"
        if key["kty"] == "RSA":
            assert {"n", "e"} <= set(key) and not {"crv", "x", "y"} & set(key)
        if key["kty"] == "EC":
            assert {"crv", "x", "y"} <= set(key) and not {"n", "e"} & set(key)


# -- me -----------------------------------------------------------------------------------------


def test_get_me(http: httpx.Client) -> None:
    me = ok(http.get("/v1/me"))
    no_snake_keys(me)
    assert me["user"]["kind"] == "USER_KIND_MACHINE"
    assert "admin" in me["user"]["roles"]
    assert me["account"]["id"] == me["user"]["accountId"]
    assert "createTime" in me["user"] and me["user"]["createTime"].endswith("Z")


def test_get_me_passes_authorization_on(server: Server) -> None:
    r = httpx.get(f"{server.http_url}/v1/me",
                  headers={"Authorization": f"Bearer {server.admin_token}"})
    assert ok(r)["user"]["clientId"] == server.admin_client_id


def test_list_my_user_groups(http: httpx.Client) -> None:
    mine = ok(http.get("/v1/me/usergroups", params={"pageSize": 10}))
    no_snake_keys(mine)
    assert isinstance(mine["userGroups"], list)  # written even when empty


# -- accounts -----------------------------------------------------------------------------------


def test_create_account_lower_camel_and_snake_case(http: httpx.Client) -> None:
    a = create_account(http)
    b = create_account(http, snake=True)
    assert a["account"]["id"] != b["account"]["id"]


def test_create_account_is_idempotent_by_request_id(http: httpx.Client) -> None:
    name = unique("Idem")
    body = {"account": {"name": name, "email": f"{name}@example.com"},
            "firstUser": {"kind": "USER_KIND_HUMAN", "email": f"u.{name}@example.com"},
            "requestId": uuid.uuid4().hex}
    first = ok(http.post("/v1/accounts", json=body))
    again = ok(http.post("/v1/accounts", json=body))
    assert again["account"]["id"] == first["account"]["id"]


def test_get_account_by_id_and_by_email(http: httpx.Client) -> None:
    created = create_account(http)["account"]
    got = ok(http.get(f"/v1/accounts/{created['id']}"))["account"]
    assert got["id"] == created["id"] and got["name"] == created["name"]
    looked_up = ok(http.get("/v1/accounts:lookup", params={"email": created["email"]}))
    assert looked_up["account"]["id"] == created["id"]
    # with neither id nor email: the caller's own account
    own = ok(http.get("/v1/accounts:lookup"))["account"]
    me = ok(http.get("/v1/me"))
    assert own["id"] == me["account"]["id"]


def test_list_accounts_with_query_parameters(http: httpx.Client) -> None:
    created = create_account(http)["account"]
    page = ok(http.get("/v1/accounts", params={"filter": created["name"], "pageSize": 5}))
    no_snake_keys(page)
    assert [a["id"] for a in page["accounts"]] == [created["id"]]
    assert page["totalSize"] == 1 and isinstance(page["totalSize"], int)
    # snake_case query names work too, and a repeated paging walk is stable
    first = ok(http.get("/v1/accounts", params={"page_size": 1, "order_by": "name"}))
    assert len(first["accounts"]) == 1
    assert first.get("nextPageToken")
    second = ok(http.get("/v1/accounts", params={"page_size": 1, "order_by": "name",
                                                 "pageToken": first["nextPageToken"]}))
    assert second["accounts"][0]["id"] != first["accounts"][0]["id"]


def test_update_account_with_update_mask_query_parameter(http: httpx.Client) -> None:
    acc = create_account(http)["account"]
    r = http.patch(f"/v1/accounts/{acc['id']}", params={"updateMask": "primaryColor,logoUrl"},
                   json={"primaryColor": "#abcdef", "logoUrl": "https://example.com/l.png",
                         "name": "ignored: not in the mask"})
    updated = ok(r)["account"]
    assert updated["primaryColor"] == "#abcdef"
    assert updated["logoUrl"] == "https://example.com/l.png"
    assert updated["name"] == acc["name"]
    # snake_case mask paths and body names are accepted as well
    r = http.patch(f"/v1/accounts/{acc['id']}", params={"update_mask": "secondary_color"},
                   json={"secondary_color": "#000000"})
    assert ok(r)["account"]["secondaryColor"] == "#000000"


def test_update_account_body_cannot_name_another_account(http: httpx.Client) -> None:
    """The path names the account; the body's ``id`` is output-only, so refused (not
    overridden by the path): neither account changes."""
    a = create_account(http)["account"]
    b = create_account(http)["account"]
    r = http.patch(f"/v1/accounts/{a['id']}", params={"updateMask": "primaryColor"},
                   json={"id": b["id"], "primaryColor": "#0000ff"})
    assert r.status_code == 400, r.text
    assert r.json()["details"][0]["reason"] == "FIELD_NOT_UPDATABLE"
    assert ok(http.get(f"/v1/accounts/{a['id']}"))["account"]["primaryColor"] == "#112233"
    assert ok(http.get(f"/v1/accounts/{b['id']}"))["account"]["primaryColor"] == "#112233"


def test_update_account_stale_etag_is_409(http: httpx.Client) -> None:
    acc = create_account(http)["account"]
    r = http.patch(f"/v1/accounts/{acc['id']}", params={"updateMask": "name"},
                   json={"name": unique("New"), "etag": "stale"})
    assert r.status_code == 409, r.text
    body = r.json()
    assert body["code"] == 10  # ABORTED
    assert body["details"][0]["reason"] == "ETAG_MISMATCH"


def test_audit_log(http: httpx.Client) -> None:
    acc = create_account(http)["account"]
    ok(http.patch(f"/v1/accounts/{acc['id']}", params={"updateMask": "primaryColor"},
                  json={"primaryColor": "#fefefe"}))
    log = ok(http.get(f"/v1/accounts/{acc['id']}/auditlog", params={"pageSize": 50}))
    no_snake_keys(log)
    events = log["auditEvents"]
    assert events[0]["action"] == "account.update"  # newest first
    assert "primary_color" in events[0]["changedFields"] or \
        "primaryColor" in events[0]["changedFields"]
    assert all(e["accountId"] == acc["id"] for e in events)


def test_partitions_with_include_account(http: httpx.Client) -> None:
    acc = create_account(http)["account"]
    created = ok(http.post(f"/v1/accounts/{acc['id']}/partitions",
                           json={"name": unique("north"), "description": "d"}))
    part = created["partition"]
    assert part["accountId"] == acc["id"]
    page = ok(http.get(f"/v1/accounts/{acc['id']}/partitions", params={"include": "account"}))
    no_snake_keys(page)
    assert [p["id"] for p in page["partitions"]] == [part["id"]]
    assert [a["id"] for a in page["includedAccounts"]] == [acc["id"]]
    plain = ok(http.get(f"/v1/accounts/{acc['id']}/partitions"))
    assert plain["includedAccounts"] == []  # written, empty, as grpc-gateway does


def test_close_account(http: httpx.Client) -> None:
    acc = create_account(http)["account"]
    closed = ok(http.post(f"/v1/accounts/{acc['id']}:close"))["account"]
    assert closed["id"] == acc["id"] and closed["closed"] is True
    again = http.post(f"/v1/accounts/{acc['id']}:close", json={})
    assert again.status_code == 400, again.text  # FAILED_PRECONDITION
    body = again.json()
    assert body["code"] == 9
    assert body["details"][0]["reason"] == "ACCOUNT_CLOSED"


def test_missing_account_is_404_with_details(http: httpx.Client) -> None:
    r = http.get(f"/v1/accounts/{uuid.uuid4()}")
    assert r.status_code == 404, r.text
    body = r.json()
    assert body["code"] == 5
    info = body["details"][0]
    assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert info["domain"] == "accounts.v1" and info["reason"] == "ACCOUNT_NOT_FOUND"


# -- sessions -------------------------------------------------------------------------------------


def test_sessions_create_use_and_revoke(server: Server, http: httpx.Client) -> None:
    created = create_account(http)
    user = created["firstUser"]
    r = http.post("/v1/sessions", json={"user": {"userId": user["id"]}, "userAgent": "curl/8"})
    opened = ok(r)
    no_snake_keys(opened)
    session, token = opened["session"], opened["accessToken"]
    assert session["userId"] == user["id"] and token
    as_user = {"authorization": f"Bearer {token}"}
    me = ok(httpx.get(f"{server.http_url}/v1/me", headers=as_user))
    assert me["user"]["id"] == user["id"]
    # the user's own groups, through its session token
    group = ok(http.post(f"/v1/accounts/{created['account']['id']}/userGroups",
                         json={"name": unique("ops"), "roles": ["member"]}))["userGroup"]
    ok(http.post(f"/v1/userGroups/{group['id']}:addMembers", json={"userIds": [user["id"]]}))
    mine = ok(httpx.get(f"{server.http_url}/v1/me/usergroups", headers=as_user))
    assert [g["id"] for g in mine["userGroups"]] == [group["id"]]
    # snake_case request body works too
    second = ok(http.post("/v1/sessions", json={"user": {"user_id": user["id"]},
                                                "user_agent": "x"}))
    assert second["session"]["id"] != session["id"]
    revoked = ok(http.delete(f"/v1/sessions/{session['id']}"))["session"]
    assert revoked["id"] == session["id"] and revoked.get("revokeTime")
    r = httpx.get(f"{server.http_url}/v1/me", headers=as_user)
    assert r.status_code == 401, r.text
    assert r.json()["code"] == 16


def test_list_sessions_by_dotted_path_binding(http: httpx.Client) -> None:
    user = create_account(http)["firstUser"]
    ok(http.post("/v1/sessions", json={"user": {"userId": user["id"]}}))
    page = ok(http.get(f"/v1/users/{user['id']}/sessions"))
    assert [s["userId"] for s in page["sessions"]] == [user["id"]]
    also = ok(http.get("/v1/sessions", params={"user.userId": user["id"]}))
    assert [s["id"] for s in also["sessions"]] == [s["id"] for s in page["sessions"]]
