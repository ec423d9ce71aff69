"""SessionService end to end: CreateSession, ListSessions, RevokeSession, IntrospectToken,
GetJwks, and the sliding expiry of session tokens."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from accounts.v1 import session_service_pb2 as spb
from accounts.v1 import user_pb2
from accounts.v1 import user_service_pb2 as upb

from accounts_grpc.store.tables import audit_events, sessions
from tests.e2e.auth_helpers import (
    UserCreds,
    claims_for,
    make_account,
    make_user,
    sign_with_server_key,
    token_for,
)
from tests.support import Server, bearer, expect_error

INVALID = grpc.StatusCode.INVALID_ARGUMENT
DENIED = grpc.StatusCode.PERMISSION_DENIED
NOT_FOUND = grpc.StatusCode.NOT_FOUND


def ref(u: UserCreds | str, **kw: Any) -> user_pb2.UserRef:
    if isinstance(u, str):
        return user_pb2.UserRef(user_id=u, **kw)
    return user_pb2.UserRef(user_id=u.id, **kw)


def create(srv: Server, caller: tuple[tuple[str, str], ...], user: user_pb2.UserRef,
           **kw: Any) -> spb.CreateSessionResponse:
    return srv.stubs.sessions.CreateSession(
        spb.CreateSessionRequest(user=user, **kw), metadata=caller, timeout=10
    )


def session_row(srv: Server, sid: str) -> Any:
    with srv.app.db.read() as uow:
        return uow.conn.execute(sa.select(sessions).where(sessions.c.id == sid)).first()


def me(srv: Server, token: str) -> upb.GetMeResponse:
    return srv.stubs.users.GetMe(upb.GetMeRequest(), metadata=bearer(token), timeout=10)


@pytest.fixture(scope="module")
def tenant(server: Server) -> dict[str, Any]:
    """An intermediary account with an account-admin, a machine user, a human and an
    external user; and a second, unrelated account."""
    aid = make_account(server, roles=("intermediary",))
    other = make_account(server)
    t: dict[str, Any] = {
        "account": aid,
        "admin": make_user(server, aid, roles=("account-admin",)),
        "machine": make_user(server, aid),
        "human": make_user(server, aid, kind="HUMAN"),
        "external": make_user(server, aid, kind="EXTERNAL", external_id="ext-1"),
        "reader": make_user(server, aid, kind="HUMAN", roles=("admin-reader",)),
        "stranger": make_user(server, other, roles=("account-admin",)),
        "stranger_human": make_user(server, other, kind="HUMAN"),
    }
    for k in ("admin", "machine", "stranger"):
        t[k + "_token"] = bearer(token_for(server, t[k]))
    return t


# -- CreateSession -----------------------------------------------------------------------------


def test_create_session_shows_the_token_once_and_stores_its_hash(
    server: Server, tenant: dict[str, Any]
) -> None:
    u = tenant["human"]
    before = time.time()
    resp = create(server, server.admin, ref(u), user_agent="Firefox/1")
    s = resp.session
    assert resp.access_token.startswith("st_") and len(resp.access_token) > 40
    assert (s.user_id, s.account_id, s.user_agent) == (u.id, u.account_id, "Firefox/1")
    assert s.id and s.etag and not s.HasField("revoke_time")
    assert before - 1 <= s.create_time.seconds <= time.time() + 1
    assert s.expire_time.seconds - s.create_time.seconds == server.app.settings.session_ttl
    assert s.update_time == s.create_time == s.last_activity_time

    row = session_row(server, s.id)
    assert row.token_hash == hashlib.sha256(resp.access_token.encode()).hexdigest()
    assert resp.access_token not in repr(tuple(row)), "the token itself is not stored"

    assert me(server, resp.access_token).user.id == u.id
    with server.app.db.read() as uow:
        ev = uow.conn.execute(
            sa.select(audit_events).where(audit_events.c.resource_id == s.id)
        ).one()
    assert (ev.action, ev.resource_type, ev.account_id) == (
        "session.create", "Session", u.account_id)
    assert resp.access_token not in repr(tuple(ev))


def test_user_agent_defaults_to_the_callers(server: Server, tenant: dict[str, Any]) -> None:
    s = create(server, server.admin, ref(tenant["human"])).session
    assert "grpc-python" in s.user_agent


def test_who_may_create_a_session(server: Server, tenant: dict[str, Any]) -> None:
    t = tenant
    # the account's admin, for its users
    assert create(server, t["admin_token"], ref(t["human"])).access_token
    # an intermediary's machine user, for its EXTERNAL users, by external id
    resp = create(server, t["machine_token"], user_pb2.UserRef(external_id="ext-1"))
    assert resp.session.user_id == t["external"].id
    # ... but not for its other users, which it may not even see
    expect_error(create, server, t["machine_token"], ref(t["human"]), code=NOT_FOUND,
                 reason="USER_NOT_FOUND")
    # a user for itself: no (it is USER_MANAGE)
    expect_error(create, server, t["machine_token"], ref(t["machine"]), code=DENIED)
    # another account's admin does not even see the user
    expect_error(create, server, t["stranger_token"], ref(t["human"]), code=NOT_FOUND,
                 reason="USER_NOT_FOUND")
    expect_error(create, server, t["stranger_token"],
                 user_pb2.UserRef(external_id="ext-1", account_id=t["account"]),
                 code=NOT_FOUND)
    # an account-admin may not act as a user with more rights than its own
    expect_error(create, server, t["admin_token"], ref(t["reader"]), code=DENIED,
                 reason="USER_OUTRANKS_CALLER")
    # the platform admin may, and names the account of an external id
    resp = create(server, server.admin,
                  user_pb2.UserRef(external_id="ext-1", account_id=t["account"]))
    assert resp.session.user_id == t["external"].id


def test_create_session_bad_requests(server: Server) -> None:
    expect_error(create, server, server.admin, user_pb2.UserRef(), code=INVALID, field="user")
    expect_error(create, server, server.admin, ref("not-a-uuid"), code=INVALID,
                 field="user.user_id")
    expect_error(create, server, server.admin, ref("00000000-0000-4000-8000-000000000000"),
                 code=NOT_FOUND, reason="USER_NOT_FOUND")
    expect_error(create, server, server.admin, user_pb2.UserRef(external_id="nobody"),
                 code=NOT_FOUND, reason="USER_NOT_FOUND")
    u = make_user(server, make_account(server))
    expect_error(create, server, server.admin, ref(u), user_agent="x" * 501, code=INVALID,
                 field="user_agent")


def test_create_session_request_id(server: Server, tenant: dict[str, Any]) -> None:
    u = tenant["human"]
    first = create(server, server.admin, ref(u), request_id="req-42")
    again = create(server, server.admin, ref(u), request_id="req-42")
    assert again.session.id == first.session.id, "a retry creates nothing new"
    assert again.access_token == "", "the token exists only as a hash: shown once"
    assert me(server, first.access_token).user.id == u.id
    expect_error(create, server, server.admin, ref(tenant["external"]), request_id="req-42",
                 code=INVALID, reason="REQUEST_ID_REUSED")


# -- ListSessions ------------------------------------------------------------------------------


def list_sessions(srv: Server, caller: Any, user: user_pb2.UserRef, **kw: Any
                  ) -> spb.ListSessionsResponse:
    return srv.stubs.sessions.ListSessions(
        spb.ListSessionsRequest(user=user, **kw), metadata=caller, timeout=10
    )


def test_list_sessions_pages_newest_first(server: Server) -> None:
    u = make_user(server, make_account(server), kind="HUMAN")
    made = [create(server, server.admin, ref(u)) for _ in range(5)]
    ids = [m.session.id for m in reversed(made)]  # newest first

    seen: list[str] = []
    page = list_sessions(server, server.admin, ref(u), page_size=2)
    pages = 1
    assert page.total_size == 5 and page.previous_page_token == ""
    seen += [s.id for s in page.sessions]
    while page.next_page_token:
        page = list_sessions(server, server.admin, ref(u), page_size=2,
                             page_token=page.next_page_token)
        pages += 1
        seen += [s.id for s in page.sessions]
        assert page.previous_page_token
    assert seen == ids and pages == 3
    back = list_sessions(server, server.admin, ref(u), page_size=2,
                         page_token=page.previous_page_token)
    assert [s.id for s in back.sessions] == ids[2:4]

    # the user itself lists its sessions with one of them
    own = list_sessions(server, bearer(made[0].access_token), ref(u))
    assert [s.id for s in own.sessions] == ids

    # revoked sessions are not listed
    server.stubs.sessions.RevokeSession(spb.RevokeSessionRequest(id=ids[0]),
                                        metadata=server.admin)
    after = list_sessions(server, server.admin, ref(u))
    assert [s.id for s in after.sessions] == ids[1:] and after.total_size == 4


def test_list_sessions_bad_requests_and_scope(server: Server, tenant: dict[str, Any]) -> None:
    u = make_user(server, make_account(server), kind="HUMAN")
    create(server, server.admin, ref(u))
    create(server, server.admin, ref(u))
    expect_error(list_sessions, server, server.admin, ref(u), page_size=-1, code=INVALID,
                 field="page_size")
    page = list_sessions(server, server.admin, ref(u), page_size=1)
    other = tenant["human"]
    expect_error(list_sessions, server, server.admin, ref(other),
                 page_token=page.next_page_token, code=INVALID, field="page_token")
    expect_error(list_sessions, server, server.admin, ref(u), page_token="garbage",
                 code=INVALID, field="page_token")
    # a plain user may not see another user, nor may a stranger
    expect_error(list_sessions, server, tenant["machine_token"], ref(tenant["human"]),
                 code=NOT_FOUND)
    expect_error(list_sessions, server, tenant["stranger_token"], ref(tenant["human"]),
                 code=NOT_FOUND)
    create(server, server.admin, ref(tenant["human"]))  # (not left to an earlier test)
    assert list_sessions(server, tenant["admin_token"], ref(tenant["human"])).total_size >= 1


# -- RevokeSession -----------------------------------------------------------------------------


def revoke(srv: Server, caller: Any, sid: str) -> spb.RevokeSessionResponse:
    return srv.stubs.sessions.RevokeSession(spb.RevokeSessionRequest(id=sid), metadata=caller,
                                            timeout=10)


def test_revoke_own_session_and_revoking_twice(server: Server, tenant: dict[str, Any]) -> None:
    created = create(server, server.admin, ref(tenant["human"]))
    own = bearer(created.access_token)
    first = revoke(server, own, created.session.id)  # log out with the session itself
    assert first.session.HasField("revoke_time")
    assert first.session.etag != created.session.etag
    expect_error(me, server, created.access_token, code=grpc.StatusCode.UNAUTHENTICATED,
                 reason="SESSION_REVOKED")
    again = revoke(server, server.admin, created.session.id)  # idempotent
    assert again.session.revoke_time == first.session.revoke_time
    assert again.session.etag == first.session.etag
    with server.app.db.read() as uow:
        actions = uow.conn.execute(
            sa.select(audit_events.c.action).where(
                audit_events.c.resource_id == created.session.id
            )
        ).scalars().all()
    assert sorted(actions) == ["session.create", "session.revoke"], "revoked once"


def test_who_may_revoke(server: Server, tenant: dict[str, Any]) -> None:
    t = tenant
    sid = create(server, server.admin, ref(t["human"])).session.id
    expect_error(revoke, server, t["stranger_token"], sid, code=NOT_FOUND,
                 reason="SESSION_NOT_FOUND")
    expect_error(revoke, server, t["machine_token"], sid, code=NOT_FOUND,
                 reason="SESSION_NOT_FOUND")
    own = create(server, server.admin, ref(t["machine"])).session.id
    assert revoke(server, t["machine_token"], own).session.HasField("revoke_time")
    consultant = make_user(server, t["account"], kind="HUMAN", roles=("consultant",))
    cs = bearer(create(server, server.admin, ref(consultant)).access_token)
    expect_error(revoke, server, cs, sid, code=DENIED)  # sees the user, may not manage it
    assert revoke(server, t["admin_token"], sid).session.HasField("revoke_time")
    ext = create(server, t["machine_token"], user_pb2.UserRef(external_id="ext-1"))
    assert revoke(server, t["machine_token"], ext.session.id).session.HasField("revoke_time")
    expect_error(revoke, server, server.admin, "not-a-uuid", code=INVALID, field="id")
    expect_error(revoke, server, server.admin, "", code=INVALID, field="id")
    expect_error(revoke, server, server.admin, "00000000-0000-4000-8000-000000000000",
                 code=NOT_FOUND, reason="SESSION_NOT_FOUND")


# -- sliding expiry ----------------------------------------------------------------------------


def test_session_expiry_slides_with_use_and_then_expires(server: Server) -> None:
    u = make_user(server, make_account(server), kind="HUMAN")
    created = create(server, server.admin, ref(u))
    sid = created.session.id
    hour = 3600 * 1_000_000
    with server.app.db.write() as uow:  # as if last used two hours ago
        old = session_row(server, sid)
        uow.conn.execute(sessions.update().where(sessions.c.id == sid).values(
            last_activity_time=old.last_activity_time - 2 * hour,
            expire_time=old.expire_time - 2 * hour,
        ))
        uow.commit()
    stale = session_row(server, sid)
    me(server, created.access_token)
    fresh = session_row(server, sid)
    ttl = server.app.settings.session_ttl * 1_000_000
    assert fresh.last_activity_time > stale.last_activity_time + hour
    assert abs(fresh.expire_time - (fresh.last_activity_time + ttl)) < 1_000_000
    assert fresh.etag != stale.etag and fresh.update_time == fresh.last_activity_time

    with server.app.db.write() as uow:  # not used for a whole ttl
        uow.conn.execute(sessions.update().where(sessions.c.id == sid).values(
            expire_time=fresh.expire_time - ttl - 1))
        uow.commit()
    expect_error(me, server, created.access_token, code=grpc.StatusCode.UNAUTHENTICATED,
                 reason="SESSION_EXPIRED")
    assert sid not in [s.id for s in list_sessions(server, server.admin, ref(u)).sessions]


# -- IntrospectToken ---------------------------------------------------------------------------


def introspect(srv: Server, caller: Any, token: str) -> spb.IntrospectTokenResponse:
    return srv.stubs.sessions.IntrospectToken(spb.IntrospectTokenRequest(token=token),
                                              metadata=caller, timeout=10)


INACTIVE = spb.IntrospectTokenResponse(active=False)


def test_introspect_session_token(server: Server, tenant: dict[str, Any]) -> None:
    u = tenant["human"]
    created = create(server, server.admin, ref(u))
    info = introspect(server, tenant["admin_token"], created.access_token)
    assert info.active and info.token_type == "session"
    assert (info.sub, info.account_id, info.jti) == (u.id, u.account_id, created.session.id)
    assert info.kind == user_pb2.USER_KIND_HUMAN and list(info.roles) == ["member"]
    assert info.exp == created.session.expire_time.seconds
    assert info.iat == created.session.create_time.seconds
    assert not info.client_id

    # looking does not slide the session
    before = session_row(server, created.session.id)
    with server.app.db.write() as uow:
        uow.conn.execute(sessions.update().where(sessions.c.id == created.session.id).values(
            last_activity_time=before.last_activity_time - 7200 * 1_000_000))
        uow.commit()
    stale = session_row(server, created.session.id)
    assert introspect(server, server.admin, created.access_token).active
    assert session_row(server, created.session.id).last_activity_time == stale.last_activity_time

    revoke(server, server.admin, created.session.id)
    assert introspect(server, server.admin, created.access_token) == INACTIVE


def test_introspect_jwt(server: Server, tenant: dict[str, Any]) -> None:
    m = tenant["machine"]
    token = token_for(server, m)
    info = introspect(server, tenant["machine_token"], token)
    assert info.active and info.token_type == "jwt"
    assert (info.sub, info.account_id, info.client_id) == (m.id, m.account_id, m.client_id)
    assert info.iss == server.app.settings.issuer and info.aud == server.app.settings.audience
    assert info.exp - info.iat == 86400 and info.jti
    assert info.kind == user_pb2.USER_KIND_MACHINE


def test_introspect_inactive_is_only_active_false(server: Server, tenant: dict[str, Any]) -> None:
    m = tenant["machine"]
    now = int(time.time())
    expired = sign_with_server_key(server, claims_for(server, m, iat=now - 900, exp=now - 300))
    for token in (expired, "garbage", "a.b.c", "st_" + "n" * 43, token_for(server, m) + "x"):
        assert introspect(server, server.admin, token) == INACTIVE


def test_introspect_other_accounts_tokens(server: Server, tenant: dict[str, Any]) -> None:
    theirs = token_for(server, tenant["stranger"])
    assert introspect(server, tenant["machine_token"], theirs) == INACTIVE
    assert introspect(server, tenant["admin_token"], theirs) == INACTIVE
    assert introspect(server, server.admin, theirs).active, "the platform admin sees all"
    reader = create(server, server.admin, ref(tenant["reader"])).access_token
    assert introspect(server, bearer(reader), theirs).active, "so does admin-reader"


def test_introspect_needs_a_caller_and_a_token(server: Server) -> None:
    expect_error(server.stubs.sessions.IntrospectToken,
                 spb.IntrospectTokenRequest(token=server.admin_token),
                 code=grpc.StatusCode.UNAUTHENTICATED, reason="TOKEN_MISSING")
    expect_error(introspect, server, server.admin, "", code=INVALID, field="token")


# -- GetJwks -----------------------------------------------------------------------------------


def test_get_jwks_is_public(server: Server) -> None:
    keys = server.stubs.sessions.GetJwks(spb.GetJwksRequest(), timeout=10).keys
    assert keys and all(k.kid and k.use == "sig" and (
        (k.alg == "ES256" and k.kty == "EC" and k.crv == "P-256" and k.x and k.y)
        or (k.alg == "RS256" and k.kty == "RSA" and k.n and k.e)) for k in keys)
