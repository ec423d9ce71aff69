"""Delegated tokens end to end: RFC 8693 token exchange as SessionService.ExchangeToken
(gRPC) and at ``POST /v1/token`` (form posts with httpx, JSON, and Authlib's generic
OAuth 2 client: Authlib 1.x has no token-exchange grant of its own, its ``rfc8693``
package is empty, but ``fetch_token`` posts any grant type with its parameters)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import jwt
import pytest
from accounts.v1 import account_pb2, partition_pb2, user_pb2
from accounts.v1 import account_service_pb2 as apb
from accounts.v1 import partition_service_pb2 as ppb
from accounts.v1 import session_service_pb2 as spb
from accounts.v1 import user_service_pb2 as upb
from authlib.integrations.httpx_client import OAuth2Client

from tests.e2e.auth_helpers import UserCreds, claims_for, sign_with_server_key
from tests.e2e.users_helpers import (
    MACHINE,
    Md,
    audit_events,
    create_account,
    human,
    new_user,
)
from tests.support import Server, bearer, expect_error

GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAUTH = grpc.StatusCode.UNAUTHENTICATED
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@dataclass(frozen=True)
class Machine:
    id: str
    account_id: str
    client_id: str
    secret: str
    token: str

    @property
    def md(self) -> Md:
        return bearer(self.token)


def machine(server: Server, account_id: str, roles: tuple[str, ...] = ()) -> Machine:
    resp = new_user(server, account_id, MACHINE, roles=roles)
    token = server.stubs.sessions.CreateToken(spb.CreateTokenRequest(
        client_id=resp.user.client_id, client_secret=resp.client_secret)).access_token
    return Machine(resp.user.id, account_id, resp.user.client_id, resp.client_secret, token)


@dataclass(frozen=True)
class World:
    consultancy: str  # C
    client: str  # D: consultancy_account_id = C
    other_client: str  # E: another client of C
    consultant: Machine  # consultant of C
    rival: Machine  # consultant of another consultancy
    plain: Machine  # a member of C without the consultant role
    installer_account: str
    admin_id: str


@pytest.fixture(scope="module")
def world(server: Server) -> World:
    c, _ = create_account(server, "consultancy", roles=("consultancy",))
    d, _ = create_account(server, "client", consultancy_account_id=c)
    e, _ = create_account(server, "other client", consultancy_account_id=c)
    c2, _ = create_account(server, "rival", roles=("consultancy",))
    i, _ = create_account(server, "installers")
    admin_id = server.stubs.users.GetMe(upb.GetMeRequest(), metadata=server.admin).user.id
    return World(c, d, e, machine(server, c, ("consultant",)),
                 machine(server, c2, ("consultant",)), machine(server, c), i, admin_id)


def exchange(server: Server, subject_token: str, account_id: str,
             **kw: Any) -> spb.ExchangeTokenResponse:
    kw.setdefault("subject_token_type", ACCESS)
    return server.stubs.sessions.ExchangeToken(spb.ExchangeTokenRequest(
        subject_token=subject_token, account_id=account_id, **kw), timeout=10)


def claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def get_account(server: Server, md: Md, account_id: str) -> account_pb2.Account:
    return server.stubs.accounts.GetAccount(apb.GetAccountRequest(id=account_id), metadata=md,
                                            timeout=10).account


def rename(server: Server, md: Md, account_id: str) -> Any:
    return server.stubs.accounts.UpdateAccount(apb.UpdateAccountRequest(
        account=account_pb2.Account(id=account_id, name=f"renamed {time.time()}")),
        metadata=md, timeout=10)


def events(server: Server, account_id: str, action: str) -> list[Any]:
    return [e for e in audit_events(server, account_id) if e.action == action]


# -- consultancy -------------------------------------------------------------------------------


def test_consultant_gets_a_read_only_token_confined_to_its_client(
        server: Server, world: World) -> None:
    resp = exchange(server, world.consultant.token, world.client)
    assert resp.token_type == "Bearer" and resp.issued_token_type == ACCESS
    assert resp.scope == "consultant"
    c = claims(resp.access_token)
    assert c["act"]["sub"] == world.consultant.id
    assert c["act"]["account_id"] == world.consultancy
    assert c["sub"] == world.consultant.id and c["account_id"] == world.client
    assert c["roles"] == ["consultant"]
    assert c["exp"] - c["iat"] == resp.expires_in
    assert 0 < resp.expires_in <= server.app.settings.delegation_max_lifetime
    md = bearer(resp.access_token)
    # reads in D work; writes do not
    assert get_account(server, md, world.client).id == world.client
    server.stubs.users.ListUsers(upb.ListUsersRequest(account_id=world.client), metadata=md)
    expect_error(rename, server, md, world.client, code=DENIED)
    expect_error(server.stubs.partitions.CreatePartition, ppb.CreatePartitionRequest(
        account_id=world.client, partition=partition_pb2.Partition(name="p")),
        metadata=md, code=DENIED)
    # the consultant's own token reads E and C; the delegated one reads neither
    assert get_account(server, world.consultant.md, world.other_client).id == world.other_client
    for elsewhere in (world.other_client, world.consultancy):
        expect_error(get_account, server, md, elsewhere, code=grpc.StatusCode.NOT_FOUND)
    listed = server.stubs.accounts.ListAccounts(apb.ListAccountsRequest(), metadata=md).accounts
    assert [a.id for a in listed] == [world.client]
    # GetMe names the actor, acting in D
    me = server.stubs.users.GetMe(upb.GetMeRequest(), metadata=md)
    assert me.user.id == world.consultant.id and me.account.id == world.client
    # audited in D's log, naming actor and subject
    [ev] = [e for e in events(server, world.client, "token.exchange")
            if e.actor_user_id == world.consultant.id]
    assert ev.delegation_actor_user_id == world.consultant.id
    assert ev.delegation_subject_user_id == world.consultant.id
    assert ev.resource_type == "Account" and ev.resource_id == world.client


def test_lifetime_is_capped_by_the_subject_token_and_the_request(
        server: Server, world: World) -> None:
    creds = UserCreds(world.consultant.id, world.consultancy)
    short = sign_with_server_key(server, claims_for(
        server, creds, exp=int(time.time()) + 100, roles=["consultant"]))
    resp = exchange(server, short, world.client, subject_token_type=JWT_TYPE)
    assert 0 < resp.expires_in <= 100
    assert exchange(server, world.consultant.token, world.client,
                    requested_lifetime=60).expires_in == 60


def test_a_session_token_is_a_subject_token_too(server: Server, world: World) -> None:
    person = human(server, "consultant", world.consultancy, roles=("consultant",))
    resp = exchange(server, person.token, world.client)
    assert claims(resp.access_token)["act"]["sub"] == person.user_id
    get_account(server, bearer(resp.access_token), world.client)
    expect_error(exchange, server, person.token, world.client, subject_token_type=JWT_TYPE,
                 code=INVALID, field="subject_token_type")


def test_refusals_are_clear_and_audited(server: Server, world: World) -> None:
    expect_error(exchange, server, world.rival.token, world.client, code=DENIED,
                 reason="NOT_CONSULTANT_OF_ACCOUNT")
    [ev] = [e for e in events(server, world.client, "token.exchange_denied")
            if e.actor_user_id == world.rival.id]
    assert ev.delegation_actor_user_id == ev.delegation_subject_user_id == world.rival.id
    expect_error(exchange, server, world.plain.token, world.client, code=DENIED,
                 reason="NOT_CONSULTANT")
    assert [e for e in events(server, world.client, "token.exchange_denied")
            if e.actor_user_id == world.plain.id]
    expect_error(exchange, server, world.consultant.token, world.client, scope="account-admin",
                 code=DENIED, reason="ROLE_NOT_DELEGABLE")
    expect_error(exchange, server, world.consultant.token, world.client,
                 actor_user_id=world.plain.id, code=DENIED, reason="ACTOR_NOT_ALLOWED")
    expect_error(exchange, server, world.consultant.token, world.client, scope="wizard",
                 code=INVALID, reason="UNKNOWN_ROLE")
    expect_error(exchange, server, "st_not-a-token", world.client, code=INVALID,
                 reason="SUBJECT_TOKEN_INVALID")
    expect_error(exchange, server, world.consultant.token, "not-an-id", code=INVALID,
                 field="account_id")


def test_a_delegated_token_cannot_be_exchanged_again(server: Server, world: World) -> None:
    delegated = exchange(server, world.consultant.token, world.client).access_token
    f = expect_error(exchange, server, delegated, world.client, code=DENIED,
                     reason="DELEGATED_TOKEN")
    assert "delegated" in f.message
    assert [e for e in events(server, world.client, "token.exchange_denied")
            if e.delegation_subject_user_id == world.consultant.id]


def test_closing_the_client_kills_its_delegated_tokens(server: Server, world: World) -> None:
    d, _ = create_account(server, "closing client", consultancy_account_id=world.consultancy)
    md = bearer(exchange(server, world.consultant.token, d).access_token)
    get_account(server, md, d)
    server.stubs.accounts.CloseAccount(apb.CloseAccountRequest(id=d), metadata=server.admin)
    expect_error(get_account, server, md, d, code=UNAUTH, reason="DELEGATION_REVOKED")
    expect_error(exchange, server, world.consultant.token, d,
                 code=grpc.StatusCode.FAILED_PRECONDITION, reason="ACCOUNT_CLOSED")


def test_moving_the_client_to_another_consultancy_kills_the_token(
        server: Server, world: World) -> None:
    d, _ = create_account(server, "moving client", consultancy_account_id=world.consultancy)
    md = bearer(exchange(server, world.consultant.token, d).access_token)
    get_account(server, md, d)
    server.stubs.accounts.UpdateAccount(apb.UpdateAccountRequest(
        account=account_pb2.Account(id=d, consultancy_account_id=world.rival.account_id)),
        metadata=server.admin)
    expect_error(get_account, server, md, d, code=UNAUTH, reason="DELEGATION_REVOKED")


# -- installer -----------------------------------------------------------------------------------


def test_admin_issues_an_installer_token_whose_writes_name_both(
        server: Server, world: World) -> None:
    installer = machine(server, world.installer_account)
    resp = exchange(server, server.admin_token, world.client, actor_user_id=installer.id,
                    scope="account-admin", requested_token_type=JWT_TYPE)
    assert resp.issued_token_type == JWT_TYPE and resp.scope == "account-admin"
    c = claims(resp.access_token)
    assert c["sub"] == world.admin_id and c["act"]["sub"] == installer.id
    assert c["roles"] == ["account-admin"] and c["account_id"] == world.client
    md = bearer(resp.access_token)
    made = server.stubs.partitions.CreatePartition(ppb.CreatePartitionRequest(
        account_id=world.client, partition=partition_pb2.Partition(name="installed")),
        metadata=md)
    [ev] = [e for e in audit_events(server, world.client) if e.resource_id == made.partition.id]
    assert ev.action == "partition.create"
    assert ev.actor_user_id == installer.id
    assert ev.delegation_actor_user_id == installer.id
    assert ev.delegation_subject_user_id == world.admin_id
    # confined to its account, even as account-admin
    expect_error(rename, server, md, world.installer_account, code=grpc.StatusCode.NOT_FOUND)
    [ex] = [e for e in events(server, world.client, "token.exchange")
            if e.delegation_actor_user_id == installer.id]
    assert ex.actor_user_id == world.admin_id and ex.delegation_subject_user_id == world.admin_id


def test_admin_cannot_delegate_platform_roles(server: Server, world: World) -> None:
    for scope in ("admin", "admin-reader member"):
        expect_error(exchange, server, server.admin_token, world.client, scope=scope,
                     code=DENIED, reason="ROLE_NOT_DELEGABLE")
    expect_error(exchange, server, server.admin_token, world.client,
                 actor_user_id="6f0c3f0e-0000-4000-8000-000000000000",
                 code=grpc.StatusCode.NOT_FOUND, reason="USER_NOT_FOUND")


def test_deleting_or_rotating_the_actor_kills_the_token(server: Server, world: World) -> None:
    doomed, rotated = machine(server, world.installer_account), machine(
        server, world.installer_account)
    tokens = {}
    for who in (doomed, rotated):
        tokens[who.id] = bearer(exchange(server, server.admin_token, world.client,
                                         actor_user_id=who.id, scope="member").access_token)
        get_account(server, tokens[who.id], world.client)
    server.stubs.users.DeleteUser(upb.DeleteUserRequest(id=doomed.id), metadata=server.admin)
    expect_error(get_account, server, tokens[doomed.id], world.client, code=UNAUTH,
                 reason="USER_DELETED")
    server.stubs.users.RotateClientSecret(upb.RotateClientSecretRequest(id=rotated.id),
                                          metadata=server.admin)
    expect_error(get_account, server, tokens[rotated.id], world.client, code=UNAUTH,
                 reason="TOKEN_REVOKED")


# -- over HTTP: POST /v1/token -------------------------------------------------------------------


def token_url(server: Server) -> str:
    return server.http_url + "/v1/token"


def test_form_post_exchanges_and_the_token_reads_over_rest(server: Server, world: World) -> None:
    r = httpx.post(token_url(server), data={
        "grant_type": GRANT, "subject_token": world.consultant.token,
        "subject_token_type": ACCESS, "account_id": world.client})
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["token_type"] == "Bearer" and body["issued_token_type"] == ACCESS
    assert isinstance(body["expires_in"], int)
    auth = {"authorization": f"Bearer {body['access_token']}"}
    got = httpx.get(f"{server.http_url}/v1/accounts/{world.client}", headers=auth)
    assert got.status_code == 200 and got.json()["account"]["id"] == world.client
    patched = httpx.patch(f"{server.http_url}/v1/accounts/{world.client}", headers=auth,
                          json={"name": "nope"})
    assert patched.status_code == 403
    # RFC 8693 section 2.2.2 errors, RFC 6749 section 5.2 shape
    again = httpx.post(token_url(server), data={
        "grant_type": GRANT, "subject_token": body["access_token"],
        "subject_token_type": ACCESS, "account_id": world.client})
    assert again.status_code == 400 and again.json()["error"] == "invalid_request"
    rival = httpx.post(token_url(server), json={
        "grant_type": GRANT, "subject_token": world.rival.token,
        "subject_token_type": ACCESS, "account_id": world.client})
    assert rival.status_code == 400 and rival.json()["error"] == "invalid_target"
    assert "consultancy" in rival.json()["error_description"]
    for extra, error in (({"resource": "https://x"}, "invalid_target"),
                         ({"actor_token": "t"}, "invalid_request"),
                         ({"requested_lifetime": "soon"}, "invalid_request"),
                         ({"scope": "admin"}, "invalid_scope")):
        r = httpx.post(token_url(server), data={
            "grant_type": GRANT, "subject_token": world.consultant.token,
            "subject_token_type": ACCESS, "account_id": world.client, **extra})
        assert (r.status_code, r.json()["error"]) == (400, error), (extra, r.text)


def test_json_post_and_its_own_route(server: Server, world: World) -> None:
    doc = {"grant_type": GRANT, "subject_token": world.consultant.token,
           "subject_token_type": ACCESS, "account_id": world.client, "requested_lifetime": 30}
    r = httpx.post(token_url(server), json=doc)
    assert r.status_code == 200 and r.json()["expires_in"] == 30, r.text
    own = httpx.post(server.http_url + "/v1/token:exchange", json=doc)
    assert own.status_code == 200 and own.json()["expires_in"] == 30, own.text


def test_authlib_generic_client_fetches_an_exchanged_token(server: Server, world: World) -> None:
    with OAuth2Client(token_endpoint_auth_method="none") as client:
        token = client.fetch_token(token_url(server), grant_type=GRANT,
                                   subject_token=world.consultant.token,
                                   subject_token_type=ACCESS, account_id=world.client)
    assert token["issued_token_type"] == ACCESS
    assert claims(token["access_token"])["act"]["sub"] == world.consultant.id


def test_metadata_lists_the_grant_type(server: Server) -> None:
    doc = httpx.get(server.http_url + "/.well-known/oauth-authorization-server").json()
    assert GRANT in doc["grant_types_supported"]
    assert "act" in doc["claims_supported"]


def test_user_kind_of_an_installer_token_is_its_actor(server: Server, world: World) -> None:
    resp = exchange(server, server.admin_token, world.client, scope="member")
    me = server.stubs.users.GetMe(upb.GetMeRequest(), metadata=bearer(resp.access_token))
    assert me.user.kind == user_pb2.USER_KIND_MACHINE and me.account.id == world.client
