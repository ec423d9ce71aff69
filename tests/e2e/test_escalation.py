"""No acting on a user who outranks you, however the user came by its roles.

Every RPC that acts on a user or its credentials (RotateClientSecret, UpdateUser,
DeleteUser, CreateSession, ListSessions, RevokeSession, Add/RemoveDevicePermissions,
Add/RemoveChargingPermission, UpsertUserOrder) is called by the account-admin of the
user's own account, on a target whose privileged role (``admin-reader`` or ``admin``)
is direct, granted by a user group, or both: PERMISSION_DENIED ``USER_OUTRANKS_CALLER``
every time, and nothing changed (no row, no audit event, the secret and the tokens still
work). The control rows (a target with only ``member``, directly or through a group
granting it; one holding the caller's own rank through a group) are allowed, so the
matrix fails both ways.

The RFC 7009 revocation endpoint (``POST /oauth2/revoke``), which revokes a session as
RevokeSession does, follows the same rule for a machine account-admin's client: a session
of a user who outranks it, however, is not revoked (400 ``unauthorized_client``).

Then the reported escalation, end to end (a machine user put into a group granting
``admin-reader``), and the other half of the fix: RotateClientSecret revokes, for this
server, the JWTs issued with the old secret (UNAUTHENTICATED ``TOKEN_REVOKED``,
IntrospectToken inactive), while tokens from the new secret work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import jwt
import pytest
from accounts.v1 import account_service_pb2 as acs
from accounts.v1 import session_service_pb2 as ss
from accounts.v1 import user_group_pb2, user_group_service_pb2, user_pb2
from accounts.v1 import user_service_pb2 as us
from google.protobuf import field_mask_pb2

from tests.e2e.users_helpers import (
    EXTERNAL,
    HUMAN,
    MACHINE,
    Dev,
    Md,
    Persona,
    by_device,
    create_account,
    machine_token,
    new_user,
    ref,
    register_devices,
    session_token,
    snapshot,
    uniq,
)
from tests.support import Server, bearer, expect_error

C = grpc.StatusCode
OUTRANKS = "USER_OUTRANKS_CALLER"


# -- the world: one account, its account-admin, groups granting each role, a device ---------


@dataclass
class Tenant:
    server: Server
    account_id: str
    other_account_id: str  # another tenant, for the repro's GetAccount
    caller: Persona  # the account's account-admin (its first user)
    device: Dev
    groups: dict[str, str] = field(default_factory=dict)  # role -> id of a group granting it
    machine: Target | None = None  # the account's machine account-admin (OAuth client)

    def client(self) -> Target:
        """A MACHINE account-admin of the account: a client of the OAuth endpoints."""
        if self.machine is None:
            self.machine = make_target(self, MACHINE, ("account-admin",), ())
        return self.machine

    def group(self, role: str) -> str:
        """A group of the account granting ``role`` (made by the admin on first use)."""
        if role not in self.groups:
            self.groups[role] = self.server.stubs.groups.CreateUserGroup(
                user_group_service_pb2.CreateUserGroupRequest(
                    account_id=self.account_id,
                    user_group=user_group_pb2.UserGroup(name=uniq(f"{role}-"), roles=[role]),
                ),
                metadata=self.server.admin,
            ).user_group.id
        return self.groups[role]


@pytest.fixture(scope="module")
def tenant(server: Server) -> Tenant:
    aid, aa = create_account(server, "Escalation")
    other, _ = create_account(server, "Elsewhere")
    caller = Persona("account-admin", aa, aid, session_token(server, aa))
    return Tenant(server, aid, other, caller, register_devices(server, aid, 1)[0])


@dataclass
class Target:
    id: str
    kind: int
    external_id: str = ""
    client_id: str = ""
    client_secret: str = ""

    @property
    def ref(self) -> user_pb2.UserRef:
        return ref(self.id)


def make_target(t: Tenant, kind: int, direct: tuple[str, ...], via_group: tuple[str, ...]
                ) -> Target:
    """A fresh user of the tenant's account, made by the admin: ``direct`` roles on the
    user, and membership of a group granting each role of ``via_group``."""
    resp = new_user(t.server, t.account_id, kind, roles=direct)
    for role in via_group:
        t.server.stubs.groups.AddUserGroupMembers(
            user_group_service_pb2.AddUserGroupMembersRequest(
                id=t.group(role), user_ids=[resp.user.id]
            ),
            metadata=t.server.admin,
        )
    return Target(resp.user.id, kind, resp.user.external_id, resp.user.client_id,
                  resp.client_secret)


# -- what each RPC does, how to see that it did, and that it did not ------------------------


def _users(t: Tenant) -> Any:
    return t.server.stubs.users


def _sessions(t: Tenant) -> Any:
    return t.server.stubs.sessions


def _me(t: Tenant, token: str) -> str:
    return str(_users(t).GetMe(us.GetMeRequest(), metadata=bearer(token), timeout=10).user.id)


def _get_user(t: Tenant, x: Target) -> user_pb2.User:
    return _users(t).GetUser(us.GetUserRequest(id=x.id), metadata=t.server.admin).user


def _permissions(t: Tenant, x: Target) -> list[tuple[str, bool]]:
    resp = _users(t).ListDevicePermissions(
        us.ListDevicePermissionsRequest(user=x.ref), metadata=t.server.admin
    )
    return [(p.device.device_id, p.charging) for p in resp.permissions]


def _grant(t: Tenant, x: Target, *, charging: bool = False) -> None:
    _users(t).AddDevicePermissions(
        us.AddDevicePermissionsRequest(user=x.ref, devices=[by_device(t.device.device_id)]),
        metadata=t.server.admin,
    )
    if charging:
        _users(t).AddChargingPermission(
            us.AddChargingPermissionRequest(user=x.ref, device=by_device(t.device.device_id)),
            metadata=t.server.admin,
        )


def _session_ids(t: Tenant, x: Target) -> list[str]:
    resp = _sessions(t).ListSessions(ss.ListSessionsRequest(user=x.ref), metadata=t.server.admin)
    return [s.id for s in resp.sessions]


def _orders(t: Tenant, x: Target) -> list[str]:
    resp = _users(t).ListUserOrders(us.ListUserOrdersRequest(user=x.ref), metadata=t.server.admin)
    return [o.order_id for o in resp.orders]


@dataclass(frozen=True)
class Rpc:
    name: str
    kind: int  # the target's kind (the RPC must make sense for it)
    call: Callable[[Tenant, Target, dict[str, Any], Md], Any]
    #: after a denial: the target, its credentials and its things are as before
    intact: Callable[[Tenant, Target, dict[str, Any]], None]
    #: after an allowed call: it took effect
    done: Callable[[Tenant, Target, dict[str, Any], Any], None]
    #: state the admin builds first (a session to list or revoke, a permission to take)
    prepare: Callable[[Tenant, Target], dict[str, Any]] = lambda t, x: {}


def _prepare_machine(t: Tenant, x: Target) -> dict[str, Any]:
    return {"jwt": machine_token(t.server, x.client_id, x.client_secret),
            "etag": _get_user(t, x).etag}


def _rotate_intact(t: Tenant, x: Target, ctx: dict[str, Any]) -> None:
    assert machine_token(t.server, x.client_id, x.client_secret), "the old secret works"
    assert _me(t, ctx["jwt"]) == x.id, "the token issued with it works"
    assert _get_user(t, x).etag == ctx["etag"]


def _rotate_done(t: Tenant, x: Target, ctx: dict[str, Any], resp: Any) -> None:
    expect_error(_sessions(t).CreateToken,
                 ss.CreateTokenRequest(client_id=x.client_id, client_secret=x.client_secret),
                 code=C.UNAUTHENTICATED, reason="INVALID_CLIENT")
    expect_error(_me, t, ctx["jwt"], code=C.UNAUTHENTICATED, reason="TOKEN_REVOKED")
    assert _me(t, machine_token(t.server, x.client_id, resp.client_secret)) == x.id


def _prepare_session(t: Tenant, x: Target) -> dict[str, Any]:
    resp = _sessions(t).CreateSession(ss.CreateSessionRequest(user=x.ref), metadata=t.server.admin)
    return {"session_id": resp.session.id, "token": resp.access_token}


def _session_intact(t: Tenant, x: Target, ctx: dict[str, Any]) -> None:
    assert _session_ids(t, x) == [ctx["session_id"]]
    assert _me(t, ctx["token"]) == x.id


def _rotate(t: Tenant, x: Target, ctx: dict[str, Any], md: Md) -> Any:
    return _users(t).RotateClientSecret(us.RotateClientSecretRequest(id=x.id), metadata=md)


def _update(t: Tenant, x: Target, ctx: dict[str, Any], md: Md) -> Any:
    return _users(t).UpdateUser(
        us.UpdateUserRequest(user=user_pb2.User(id=x.id, first_name="Renamed"),
                             update_mask=field_mask_pb2.FieldMask(paths=["first_name"])),
        metadata=md,
    )


def _update_intact(t: Tenant, x: Target, ctx: dict[str, Any]) -> None:
    assert _get_user(t, x).first_name == ""


def _update_done(t: Tenant, x: Target, ctx: dict[str, Any], resp: Any) -> None:
    assert _get_user(t, x).first_name == "Renamed"


def _delete(t: Tenant, x: Target, ctx: dict[str, Any], md: Md) -> Any:
    return _users(t).DeleteUser(us.DeleteUserRequest(id=x.id), metadata=md)


def _delete_intact(t: Tenant, x: Target, ctx: dict[str, Any]) -> None:
    assert _get_user(t, x).id == x.id


def _delete_done(t: Tenant, x: Target, ctx: dict[str, Any], resp: Any) -> None:
    expect_error(_get_user, t, x, code=C.NOT_FOUND, reason="USER_NOT_FOUND")


def _create_session(t: Tenant, x: Target, ctx: dict[str, Any], md: Md) -> Any:
    return _sessions(t).CreateSession(ss.CreateSessionRequest(user=x.ref), metadata=md)


def _no_session(t: Tenant, x: Target, ctx: dict[str, Any]) -> None:
    assert _session_ids(t, x) == []


def _create_session_done(t: Tenant, x: Target, ctx: dict[str, Any], resp: Any) -> None:
    assert _me(t, resp.access_token) == x.id


def _list_sessions(t: Tenant, x: Target, ctx: dict[str, Any], md: Md) -> Any:
    return _sessions(t).ListSessions(ss.ListSessionsRequest(user=x.ref), metadata=md)


def _list_sessions_done(t: Tenant, x: Target, ctx: dict[str, Any], resp: Any) -> None:
    assert [s.id for s in resp.sessions] == [ctx["session_id"]]


def _revoke_session(t: Tenant, x: Target, ctx: dict[str, Any], md: Md) -> Any:
    return _sessions(t).RevokeSession(ss.RevokeSessionRequest(id=ctx["session_id"]), metadata=md)


def _revoke_session_done(t: Tenant, x: Target, ctx: dict[str, Any], resp: Any) -> None:
    expect_error(_me, t, ctx["token"], code=C.UNAUTHENTICATED, reason="SESSION_REVOKED")


def _device(t: Tenant) -> user_pb2.DeviceRef:
    return by_device(t.device.device_id)


def _add_permission(t: Tenant, x: Target, ctx: dict[str, Any], md: Md) -> Any:
    return _users(t).AddDevicePermissions(
        us.AddDevicePermissionsRequest(user=x.ref, devices=[_device(t)]), metadata=md)


def _remove_permission(t: Tenant, x: Target, ctx: dict[str, Any], md: Md) -> Any:
    return _users(t).RemoveDevicePermissions(
        us.RemoveDevicePermissionsRequest(user=x.ref, devices=[_device(t)]), metadata=md)


def _add_charging(t: Tenant, x: Target, ctx: dict[str, Any], md: Md) -> Any:
    return _users(t).AddChargingPermission(
        us.AddChargingPermissionRequest(user=x.ref, device=_device(t)), metadata=md)


def _remove_charging(t: Tenant, x: Target, ctx: dict[str, Any], md: Md) -> Any:
    return _users(t).RemoveChargingPermission(
        us.RemoveChargingPermissionRequest(user=x.ref, device=_device(t)), metadata=md)


def _holds(*expected: tuple[str, bool]) -> Callable[..., None]:
    """A check that the target holds exactly these (device_id, charging) permissions."""
    def check(t: Tenant, x: Target, *_: Any) -> None:
        want = [(t.device.device_id if d else "", c) for d, c in expected]
        assert _permissions(t, x) == want
    return check


SEES, CHARGES = ("device", False), ("device", True)


def _granted(t: Tenant, x: Target) -> dict[str, Any]:
    _grant(t, x)
    return {}


def _charging(t: Tenant, x: Target) -> dict[str, Any]:
    _grant(t, x, charging=True)
    return {}


def _upsert_order(t: Tenant, x: Target, ctx: dict[str, Any], md: Md) -> Any:
    order = user_pb2.Order(order_id=f"order-{x.id}", status=user_pb2.ORDER_STATUS_RECEIVED)
    return _users(t).UpsertUserOrder(us.UpsertUserOrderRequest(user=x.ref, order=order),
                                     metadata=md)


def _no_order(t: Tenant, x: Target, ctx: dict[str, Any]) -> None:
    assert _orders(t, x) == []


def _order_done(t: Tenant, x: Target, ctx: dict[str, Any], resp: Any) -> None:
    assert _orders(t, x) == [f"order-{x.id}"]


RPCS = [
    Rpc("RotateClientSecret", MACHINE, _rotate, _rotate_intact, _rotate_done, _prepare_machine),
    Rpc("UpdateUser", HUMAN, _update, _update_intact, _update_done),
    Rpc("DeleteUser", HUMAN, _delete, _delete_intact, _delete_done),
    Rpc("CreateSession", HUMAN, _create_session, _no_session, _create_session_done),
    Rpc("ListSessions", HUMAN, _list_sessions, _session_intact, _list_sessions_done,
        _prepare_session),
    Rpc("RevokeSession", HUMAN, _revoke_session, _session_intact, _revoke_session_done,
        _prepare_session),
    Rpc("AddDevicePermissions", EXTERNAL, _add_permission, _holds(), _holds(SEES)),
    Rpc("RemoveDevicePermissions", EXTERNAL, _remove_permission, _holds(SEES), _holds(),
        _granted),
    Rpc("AddChargingPermission", EXTERNAL, _add_charging, _holds(SEES), _holds(CHARGES),
        _granted),
    Rpc("RemoveChargingPermission", EXTERNAL, _remove_charging, _holds(CHARGES),
        _holds(SEES), _charging),
    Rpc("UpsertUserOrder", EXTERNAL, _upsert_order, _no_order, _order_done),
]

#: (direct roles, roles through groups): a privileged role each way
PRIVILEGED = {
    f"{role}-{how}": (direct, via)
    for role in ("admin-reader", "admin")
    for how, direct, via in (
        ("direct", (role,), ()),
        ("group", (), (role,)),
        ("both", (role,), (role,)),
    )
}
#: targets the account-admin may act on
ALLOWED = {
    "member-direct": ((), ()),
    "member-group": ((), ("member",)),
    "account-admin-group": ((), ("account-admin",)),  # the caller's own rank: grantable
}


def test_the_matrix_covers_every_rpc_that_acts_on_a_user() -> None:
    assert {r.name for r in RPCS} == {
        "RotateClientSecret", "UpdateUser", "DeleteUser", "CreateSession", "ListSessions",
        "RevokeSession", "AddDevicePermissions", "RemoveDevicePermissions",
        "AddChargingPermission", "RemoveChargingPermission", "UpsertUserOrder",
    }


@pytest.mark.parametrize("roles", list(PRIVILEGED), ids=list(PRIVILEGED))
@pytest.mark.parametrize("rpc", RPCS, ids=[r.name for r in RPCS])
def test_denied_for_a_user_who_outranks_the_caller(tenant: Tenant, rpc: Rpc, roles: str
                                                   ) -> None:
    direct, via = PRIVILEGED[roles]
    x = make_target(tenant, rpc.kind, direct, via)
    ctx = rpc.prepare(tenant, x)
    before = snapshot(tenant.server)
    f = expect_error(rpc.call, tenant, x, ctx, tenant.caller.md,
                     code=C.PERMISSION_DENIED, reason=OUTRANKS)
    assert f.metadata == {"roles": (direct + via)[0]}, f.metadata
    assert "group" in f.message
    assert snapshot(tenant.server) == before, "a denied call changed nothing"
    rpc.intact(tenant, x, ctx)


@pytest.mark.parametrize("roles", list(ALLOWED), ids=list(ALLOWED))
@pytest.mark.parametrize("rpc", RPCS, ids=[r.name for r in RPCS])
def test_allowed_for_a_user_the_caller_could_have_made(tenant: Tenant, rpc: Rpc, roles: str
                                                      ) -> None:
    direct, via = ALLOWED[roles]
    x = make_target(tenant, rpc.kind, direct, via)
    ctx = rpc.prepare(tenant, x)
    resp = rpc.call(tenant, x, ctx, tenant.caller.md)
    rpc.done(tenant, x, ctx, resp)


def test_the_admin_passes_everything(tenant: Tenant) -> None:
    for rpc in RPCS:
        x = make_target(tenant, rpc.kind, ("admin",), ("admin-reader",))
        ctx = rpc.prepare(tenant, x)
        rpc.done(tenant, x, ctx, rpc.call(tenant, x, ctx, tenant.server.admin))


def test_a_user_acts_on_itself_whatever_its_groups_grant(tenant: Tenant) -> None:
    """The rule is about others: a user holds its own roles already."""
    t = tenant
    me = make_target(t, MACHINE, ("account-admin",), ("admin-reader",))
    token = machine_token(t.server, me.client_id, me.client_secret)
    md = bearer(token)
    renamed = _users(t).UpdateUser(
        us.UpdateUserRequest(user=user_pb2.User(id=me.id, first_name="Self"),
                             update_mask=field_mask_pb2.FieldMask(paths=["first_name"])),
        metadata=md,
    ).user
    assert renamed.first_name == "Self"
    s = _sessions(t).CreateSession(ss.CreateSessionRequest(user=me.ref), metadata=md)
    assert [x.id for x in _sessions(t).ListSessions(
        ss.ListSessionsRequest(user=me.ref), metadata=md).sessions] == [s.session.id]
    _sessions(t).RevokeSession(ss.RevokeSessionRequest(id=s.session.id), metadata=md)
    rotated = _users(t).RotateClientSecret(us.RotateClientSecretRequest(id=me.id), metadata=md)
    expect_error(_me, t, token, code=C.UNAUTHENTICATED, reason="TOKEN_REVOKED")
    assert _me(t, machine_token(t.server, me.client_id, rotated.client_secret)) == me.id


@pytest.mark.parametrize("roles", [*PRIVILEGED, *ALLOWED])
def test_oauth_revocation_follows_the_same_rule(tenant: Tenant, roles: str) -> None:
    t = tenant
    direct, via = {**PRIVILEGED, **ALLOWED}[roles]
    client = t.client()
    x = make_target(t, HUMAN, direct, via)
    ctx = _prepare_session(t, x)
    before = snapshot(t.server)
    r = httpx.post(f"{t.server.http_url}/oauth2/revoke", timeout=10,
                   auth=(client.client_id, client.client_secret), data={"token": ctx["token"]})
    if roles in ALLOWED:
        assert r.status_code == 200, r.text
        _revoke_session_done(t, x, ctx, None)
        return
    assert r.status_code == 400 and r.json()["error"] == "unauthorized_client", r.text
    assert "through its user groups" in r.json()["error_description"]
    assert snapshot(t.server) == before, "a refused revocation changed nothing"
    _session_intact(t, x, ctx)


# -- the reported escalation, end to end ----------------------------------------------------


def _claims(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


def _introspect(t: Tenant, token: str) -> ss.IntrospectTokenResponse:
    return _sessions(t).IntrospectToken(ss.IntrospectTokenRequest(token=token),
                                        metadata=t.server.admin)


def test_the_reported_escalation_through_a_group_is_closed(tenant: Tenant) -> None:
    t = tenant
    get_other = acs.GetAccountRequest(id=t.other_account_id)
    # the admin puts machine user M of account A into a group of A granting admin-reader
    m = make_target(t, MACHINE, (), ("admin-reader",))
    old_jwt = machine_token(t.server, m.client_id, m.client_secret)
    assert "admin-reader" in _claims(old_jwt)["roles"] and _claims(old_jwt)["gen"] == 0

    # A's account-admin may not take over M's credentials ...
    before = snapshot(t.server)
    f = expect_error(_users(t).RotateClientSecret, us.RotateClientSecretRequest(id=m.id),
                     metadata=t.caller.md, code=C.PERMISSION_DENIED, reason=OUTRANKS)
    assert f.metadata == {"roles": "admin-reader"}
    assert snapshot(t.server) == before
    # ... nor open a session as M; and it cannot read the other tenant itself
    expect_error(_sessions(t).CreateSession, ss.CreateSessionRequest(user=m.ref),
                 metadata=t.caller.md, code=C.PERMISSION_DENIED, reason=OUTRANKS)
    expect_error(t.server.stubs.accounts.GetAccount, get_other, metadata=t.caller.md,
                 code=C.NOT_FOUND)
    assert _me(t, old_jwt) == m.id  # M itself is untouched

    # the admin may rotate: the JWT issued with the old secret is revoked at once ...
    rotated = _users(t).RotateClientSecret(us.RotateClientSecretRequest(id=m.id),
                                           metadata=t.server.admin)
    f = expect_error(_me, t, old_jwt, code=C.UNAUTHENTICATED, reason="TOKEN_REVOKED")
    assert "the client secret was rotated after this token was issued" in f.message
    expect_error(t.server.stubs.accounts.GetAccount, get_other, metadata=bearer(old_jwt),
                 code=C.UNAUTHENTICATED, reason="TOKEN_REVOKED")
    assert _introspect(t, old_jwt).active is False
    expect_error(_sessions(t).CreateToken,
                 ss.CreateTokenRequest(client_id=m.client_id, client_secret=m.client_secret),
                 code=C.UNAUTHENTICATED, reason="INVALID_CLIENT")
    # ... and a token from the new secret works, with the new generation
    new_jwt = machine_token(t.server, m.client_id, rotated.client_secret)
    assert _claims(new_jwt)["gen"] == 1
    assert _me(t, new_jwt) == m.id
    info = _introspect(t, new_jwt)
    assert info.active and info.sub == m.id and "admin-reader" in info.roles
    got = t.server.stubs.accounts.GetAccount(get_other, metadata=bearer(new_jwt))
    assert got.account.id == t.other_account_id  # M's own, legitimate reach


def test_every_rotation_revokes_the_tokens_before_it(tenant: Tenant) -> None:
    t = tenant
    m = make_target(t, MACHINE, (), ())
    # a token without ``gen`` (issued before the claim existed) counts as generation 0
    legacy = t.server.app.jwts.issue(user_id=m.id, account_id=t.account_id, roles=["member"],
                                     kind="MACHINE").token
    assert "gen" not in _claims(legacy)
    assert _me(t, legacy) == m.id
    tokens = [machine_token(t.server, m.client_id, m.client_secret)]
    for generation in (1, 2):
        secret = _users(t).RotateClientSecret(us.RotateClientSecretRequest(id=m.id),
                                              metadata=t.caller.md).client_secret
        for old in [legacy, *tokens]:
            expect_error(_me, t, old, code=C.UNAUTHENTICATED, reason="TOKEN_REVOKED")
            assert _introspect(t, old).active is False
        tokens.append(machine_token(t.server, m.client_id, secret))
        assert _claims(tokens[-1])["gen"] == generation
        assert _me(t, tokens[-1]) == m.id
    # sessions are not client-secret credentials: a rotation leaves them working
    s = _sessions(t).CreateSession(ss.CreateSessionRequest(user=m.ref), metadata=t.caller.md)
    _users(t).RotateClientSecret(us.RotateClientSecretRequest(id=m.id), metadata=t.caller.md)
    assert _me(t, s.access_token) == m.id
