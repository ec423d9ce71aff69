"""UserService on a real server: the three kinds, lookups, lists, updates, deletes, secrets."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from accounts.v1 import session_service_pb2, user_pb2
from accounts.v1 import user_service_pb2 as us
from google.protobuf import field_mask_pb2

from tests.e2e.users_helpers import (
    EXTERNAL,
    HUMAN,
    MACHINE,
    World,
    build_world,
    by_device,
    machine_token,
    new_user,
    ref,
    session_token,
    snapshot,
    uniq,
)
from tests.support import Server, bearer, expect_error, failure

C = grpc.StatusCode


@pytest.fixture(scope="module")
def world(server: Server) -> World:
    return build_world(server)


def test_create_the_three_kinds(world: World) -> None:
    s = world.server
    aa = world["account-admin"]
    human = new_user(
        s,
        world.inter,
        HUMAN,
        md=aa.md,
        email="Ada@Example.com",
        first_name="Ada",
        last_name="Lovelace",
        roles=["consultant"],
    )
    assert human.client_secret == ""
    u = human.user
    assert (u.kind, u.email, u.first_name, u.last_name) == (
        HUMAN,
        "Ada@Example.com",
        "Ada",
        "Lovelace",
    )
    assert list(u.roles) == ["consultant"] and u.account_id == world.inter
    assert u.id and u.etag and u.create_time.seconds and u.update_time == u.create_time

    ext = new_user(s, world.inter, EXTERNAL, md=aa.md, external_id="cust-1").user
    assert ext.external_id == "cust-1" and ext.email == "" and list(ext.roles) == ["member"]

    mach = new_user(s, world.inter, MACHINE, md=aa.md)
    assert mach.user.client_id and mach.client_secret
    assert mach.user.email == "" and mach.user.external_id == ""
    labelled = new_user(s, world.inter, MACHINE, md=aa.md, first_name="billing").user
    assert labelled.first_name == "billing"
    token = machine_token(s, mach.user.client_id, mach.client_secret)
    me = s.stubs.users.GetMe(us.GetMeRequest(), metadata=bearer(token))
    assert me.user.id == mach.user.id


def test_get_user_by_id_email_and_external_id(world: World) -> None:
    s = world.server
    users = s.stubs.users
    email = f"{uniq('Grace-')}@Example.com"
    h = new_user(s, world.inter, HUMAN, email=email).user
    x = new_user(s, world.inter, EXTERNAL).user
    aa = world["account-admin"]
    assert users.GetUser(us.GetUserRequest(id=h.id), metadata=aa.md).user == h
    # email is case-insensitive; the account defaults to the caller's own
    assert users.GetUser(us.GetUserRequest(email=email.lower()), metadata=aa.md).user == h
    assert users.GetUser(us.GetUserRequest(external_id=x.external_id), metadata=aa.md).user == x
    # an admin names the account
    got = users.GetUser(
        us.GetUserRequest(external_id=x.external_id, account_id=world.inter), metadata=s.admin
    )
    assert got.user == x
    expect_error(
        users.GetUser,
        us.GetUserRequest(external_id=x.external_id),
        metadata=s.admin,
        code=C.NOT_FOUND,
        reason="USER_NOT_FOUND",
    )


def test_external_id_is_unique_per_account_not_across(world: World) -> None:
    s = world.server
    a = new_user(s, world.inter, EXTERNAL, external_id="shared-1").user
    b = new_user(s, world.other, EXTERNAL, external_id="shared-1").user
    assert a.id != b.id
    # each account's machine user resolves its own
    got = s.stubs.users.GetUser(
        us.GetUserRequest(external_id="shared-1"), metadata=world["stranger"].md
    )
    assert got.user.id == b.id


def test_list_users_filter_order_kind_and_paging(server: Server, world: World) -> None:
    s = server
    users = s.stubs.users
    acct = world.other
    tag = uniq("zeta")
    made = [
        new_user(s, acct, HUMAN, first_name=f"{tag} Bob", last_name="Brown").user,
        new_user(s, acct, HUMAN, first_name="Alice", last_name=tag, email=f"{uniq()}@ex.com").user,
        new_user(s, acct, EXTERNAL, external_id=f"{tag}-ext").user,
        new_user(s, acct, HUMAN, email=f"{tag}@mail.example.com").user,
    ]
    found = users.ListUsers(
        us.ListUsersRequest(account_id=acct, filter=tag.upper(), page_size=100), metadata=s.admin
    )
    assert {u.id for u in found.users} == {u.id for u in made} and found.total_size == 4
    # every term must match; quoted phrases stay whole
    two = users.ListUsers(
        us.ListUsersRequest(account_id=acct, filter=f'"{tag} bob" brown'), metadata=s.admin
    )
    assert [u.id for u in two.users] == [made[0].id]
    assert (
        users.ListUsers(
            us.ListUsersRequest(account_id=acct, filter=f'"bob {tag}"'), metadata=s.admin
        ).total_size
        == 0
    )
    ext = users.ListUsers(
        us.ListUsersRequest(account_id=acct, filter=tag, kind=EXTERNAL), metadata=s.admin
    )
    assert [u.id for u in ext.users] == [made[2].id]
    # order_by name: "first last", else email / external id
    by_name = users.ListUsers(
        us.ListUsersRequest(account_id=acct, filter=tag, order_by="name"), metadata=s.admin
    )
    names = [
        (u.first_name + " " + u.last_name).strip() or u.email or u.external_id
        for u in by_name.users
    ]
    assert names == sorted(names)
    desc = users.ListUsers(
        us.ListUsersRequest(account_id=acct, filter=tag, order_by="create_time desc"),
        metadata=s.admin,
    )
    assert [u.id for u in desc.users] == [u.id for u in reversed(made)]
    for order in ("email", "email desc", "update_time", "lastName desc"):
        users.ListUsers(us.ListUsersRequest(account_id=acct, order_by=order), metadata=s.admin)
    # keyset paging, both ways, nothing skipped or repeated
    seen, token, pages = [], "", []
    while True:
        page = users.ListUsers(
            us.ListUsersRequest(
                account_id=acct, filter=tag, page_size=1, order_by="name", page_token=token
            ),
            metadata=s.admin,
        )
        pages.append(page)
        seen += [u.id for u in page.users]
        assert page.total_size == 4
        token = page.next_page_token
        if not token:
            break
    assert seen == [u.id for u in by_name.users]
    assert pages[0].previous_page_token == ""
    back = users.ListUsers(
        us.ListUsersRequest(
            account_id=acct,
            filter=tag,
            page_size=1,
            order_by="name",
            page_token=pages[-1].previous_page_token,
        ),
        metadata=s.admin,
    )
    assert [u.id for u in back.users] == [seen[-2]]


def test_update_user_mask_etag_and_roles(world: World) -> None:
    s = world.server
    users = s.stubs.users
    aa = world["account-admin"]
    u = new_user(s, world.inter, HUMAN, md=aa.md, first_name="Old").user
    upd = users.UpdateUser(
        us.UpdateUserRequest(
            user=user_pb2.User(id=u.id, first_name="New", last_name="Name", etag=u.etag),
            update_mask=field_mask_pb2.FieldMask(paths=["first_name"]),
        ),
        metadata=aa.md,
    ).user
    assert (upd.first_name, upd.last_name) == ("New", "")  # only masked paths change
    assert upd.etag != u.etag and upd.update_time.ToMicroseconds() > u.update_time.ToMicroseconds()
    expect_error(
        users.UpdateUser,
        us.UpdateUserRequest(user=user_pb2.User(id=u.id, last_name="X", etag=u.etag)),
        metadata=aa.md,
        code=C.ABORTED,
        reason="ETAG_MISMATCH",
    )
    # read-modify-write: sending back what was read, with one field edited, is fine
    read = users.GetUser(us.GetUserRequest(id=u.id), metadata=aa.md).user
    read.last_name = "Edited"
    read.roles[:] = ["account-admin", "member"]
    upd2 = users.UpdateUser(us.UpdateUserRequest(user=read), metadata=aa.md).user
    assert upd2.last_name == "Edited" and list(upd2.roles) == ["account-admin", "member"]
    # email change keeps the lookup working; roles cleared become member
    upd3 = users.UpdateUser(
        us.UpdateUserRequest(
            user=user_pb2.User(id=u.id, email="renamed@example.com"),
            update_mask=field_mask_pb2.FieldMask(paths=["email", "roles"]),
        ),
        metadata=aa.md,
    ).user
    assert upd3.email == "renamed@example.com" and list(upd3.roles) == ["member"]
    assert (
        users.GetUser(us.GetUserRequest(email="RENAMED@example.com"), metadata=aa.md).user.id
        == u.id
    )
    # the role change takes effect on the user's next call
    tok = bearer(session_token(s, u.id))
    expect_error(
        users.RotateClientSecret,
        us.RotateClientSecretRequest(id=world["intermediary-machine"].user_id),
        metadata=tok,
        code=C.PERMISSION_DENIED,
        reason="ROLE_REQUIRED",
    )
    users.UpdateUser(
        us.UpdateUserRequest(user=user_pb2.User(id=u.id, roles=["account-admin"])), metadata=aa.md
    )
    assert users.ListUsers(us.ListUsersRequest(account_id=world.inter), metadata=tok).total_size > 1


def test_machine_user_manages_only_external_users(world: World) -> None:
    s = world.server
    users = s.stubs.users
    bot = world["intermediary-machine"]
    x = new_user(s, world.inter, EXTERNAL, md=bot.md, external_id=uniq("c-")).user
    got = users.UpdateUser(
        us.UpdateUserRequest(user=user_pb2.User(id=x.id, email="end@example.com")), metadata=bot.md
    ).user
    assert got.email == "end@example.com"
    listed = users.ListUsers(
        us.ListUsersRequest(account_id=world.inter, page_size=1000), metadata=bot.md
    )
    assert {u.kind for u in listed.users if u.id != bot.user_id} == {EXTERNAL}
    # a machine user of a non-intermediary account may not
    plain = new_user(s, world.other, MACHINE)
    plain_md = bearer(machine_token(s, plain.user.client_id, plain.client_secret))
    expect_error(
        new_user,
        s,
        world.other,
        EXTERNAL,
        md=plain_md,
        code=C.PERMISSION_DENIED,
        reason="PERMISSION_DENIED",
    )


def test_delete_user_removes_everything_and_its_tokens_die(world: World) -> None:
    s = world.server
    users = s.stubs.users
    x = new_user(s, world.inter, EXTERNAL).user
    users.AddDevicePermissions(
        us.AddDevicePermissionsRequest(
            user=ref(x.id), devices=[by_device(world.devices[0].device_id)]
        ),
        metadata=s.admin,
    )
    users.UpsertUserOrder(
        us.UpsertUserOrderRequest(
            user=ref(x.id),
            order=user_pb2.Order(order_id=uniq(), status=user_pb2.ORDER_STATUS_RECEIVED),
        ),
        metadata=s.admin,
    )
    tok = bearer(session_token(s, x.id))
    jwt = bearer(
        s.app.jwts.issue(
            user_id=x.id, account_id=world.inter, roles=["member"], kind="EXTERNAL"
        ).token
    )
    for md in (tok, jwt):
        users.GetMe(us.GetMeRequest(), metadata=md)
    etag = users.GetUser(us.GetUserRequest(id=x.id), metadata=s.admin).user.etag
    users.DeleteUser(us.DeleteUserRequest(id=x.id, etag=etag), metadata=s.admin)
    for md in (tok, jwt):
        expect_error(users.GetMe, us.GetMeRequest(), metadata=md, code=C.UNAUTHENTICATED)
    expect_error(
        users.GetUser,
        us.GetUserRequest(id=x.id),
        metadata=s.admin,
        code=C.NOT_FOUND,
        reason="USER_NOT_FOUND",
    )
    rows = snapshot(s)
    assert not any(x.id in r for table in rows[:5] for r in table)
    expect_error(
        users.DeleteUser,
        us.DeleteUserRequest(id=x.id),
        metadata=s.admin,
        code=C.NOT_FOUND,
        reason="USER_NOT_FOUND",
    )


def test_rotate_client_secret(world: World) -> None:
    s = world.server
    users = s.stubs.users
    aa = world["account-admin"]
    m = new_user(s, world.inter, MACHINE, md=aa.md)
    old_token = machine_token(s, m.user.client_id, m.client_secret)
    rotated = users.RotateClientSecret(us.RotateClientSecretRequest(id=m.user.id), metadata=aa.md)
    assert rotated.client_id == m.user.client_id and rotated.client_secret != m.client_secret
    expect_error(
        s.stubs.sessions.CreateToken,
        session_service_pb2.CreateTokenRequest(
            client_id=m.user.client_id, client_secret=m.client_secret
        ),
        code=C.UNAUTHENTICATED,
    )
    new_token = machine_token(s, m.user.client_id, rotated.client_secret)
    # the rotation revokes, for this server, the JWTs issued with the old secret
    expect_error(users.GetMe, us.GetMeRequest(), metadata=bearer(old_token),
                 code=C.UNAUTHENTICATED, reason="TOKEN_REVOKED")
    assert users.GetMe(us.GetMeRequest(), metadata=bearer(new_token)).user.id == m.user.id
    after = users.GetUser(us.GetUserRequest(id=m.user.id), metadata=aa.md).user
    assert after.etag != m.user.etag


def test_concurrent_creates_with_one_email_make_one_user(world: World) -> None:
    s = world.server
    email = f"{uniq('race-')}@example.com"

    def attempt(_: int) -> Any:
        try:
            new_user(s, world.inter, HUMAN, email=email)
            return "OK"
        except grpc.RpcError as e:
            f = failure(e)
            return (f.code, f.reason)

    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(attempt, range(8)))
    assert results.count("OK") == 1, results
    assert all(r == (C.ALREADY_EXISTS, "EMAIL_TAKEN") for r in results if r != "OK")
