"""The energy intermediary story, end to end, as a new user would walk it with grpcurl.

Admin creates an account and makes it an `intermediary`; its account-admin creates a
MACHINE user; the machine user gets a token with its client credentials and then, for
an end user known by its own external id: creates the EXTERNAL user, gives it device
permissions by device_id and by meter_id, grants and removes charging, opens a session
for it (the session token works as that user and sees only its devices), records an
order RECEIVED → PROCESSING → SHIPPED, lists the orders, removes permissions and
deletes the user, whose session dies at once.
"""

from __future__ import annotations

import grpc
from accounts.v1 import (
    account_pb2,
    account_service_pb2,
    session_service_pb2,
    user_pb2,
)
from accounts.v1 import user_service_pb2 as us
from google.protobuf import field_mask_pb2

from tests.e2e.users_helpers import (
    EXTERNAL,
    MACHINE,
    audit_events,
    by_device,
    by_meter,
    create_account,
    machine_token,
    register_devices,
    session_token,
    uniq,
)
from tests.support import Server, bearer, expect_error

SHIPPED = user_pb2.ORDER_STATUS_SHIPPED


def test_energy_intermediary_story(server: Server) -> None:
    users = server.stubs.users

    # 1. admin creates the account and gives it the intermediary role
    account_id, owner_id = create_account(server, "Energy Intermediary")
    acct = server.stubs.accounts.UpdateAccount(
        account_service_pb2.UpdateAccountRequest(
            account=account_pb2.Account(id=account_id, roles=["intermediary"]),
            update_mask=field_mask_pb2.FieldMask(paths=["roles"]),
        ),
        metadata=server.admin,
    ).account
    assert list(acct.roles) == ["intermediary"]
    owner = bearer(session_token(server, owner_id))

    # devices of the account (registered by its account-admin in a partition)
    d1, d2, d3 = register_devices(server, account_id, 3, md=owner)
    _, foreign = create_account(server, "Someone Else")  # a second tenant, for contrast

    # 2. its account-admin creates a MACHINE user; the secret is shown this once
    created = users.CreateUser(
        us.CreateUserRequest(account_id=account_id, user=user_pb2.User(kind=MACHINE)),
        metadata=owner,
    )
    assert created.user.client_id.startswith("cid_") and created.client_secret
    got = users.GetUser(us.GetUserRequest(id=created.user.id), metadata=owner).user
    assert got.client_id == created.user.client_id
    assert "secret" not in str(got).lower()

    # 3. the machine user gets a token with its client credentials
    bot = bearer(machine_token(server, created.user.client_id, created.client_secret))
    me = users.GetMe(us.GetMeRequest(), metadata=bot)
    assert me.user.id == created.user.id and me.account.id == account_id

    # 4. ... and creates the end user by its own external id
    ext_id = uniq("customer-")
    end_user = users.CreateUser(
        us.CreateUserRequest(
            account_id=account_id,
            user=user_pb2.User(kind=EXTERNAL, external_id=ext_id, first_name="Eve"),
        ),
        metadata=bot,
    ).user
    assert end_user.kind == EXTERNAL and end_user.external_id == ext_id
    assert list(end_user.roles) == ["member"]
    eve = user_pb2.UserRef(external_id=ext_id)  # resolved inside the machine user's account

    # 5. device permissions by device_id and by meter_id
    added = users.AddDevicePermissions(
        us.AddDevicePermissionsRequest(
            user=eve, devices=[by_device(d1.device_id), by_meter(d2.meter_id)]
        ),
        metadata=bot,
    ).permissions
    assert [(p.device.device_id, p.device.meter_id) for p in added] == [
        (d1.device_id, d1.meter_id),
        (d2.device_id, d2.meter_id),
    ]
    assert all(p.user_id == end_user.id and not p.charging for p in added)

    # 6. charging granted and removed on one device
    on = users.AddChargingPermission(
        us.AddChargingPermissionRequest(user=eve, device=by_device(d1.device_id)), metadata=bot
    ).permission
    assert on.charging and on.device.device_id == d1.device_id
    off = users.RemoveChargingPermission(
        us.RemoveChargingPermissionRequest(user=eve, device=by_meter(d1.meter_id)), metadata=bot
    ).permission
    assert not off.charging and off.id == on.id and off.etag != on.etag
    users.AddChargingPermission(
        us.AddChargingPermissionRequest(user=eve, device=by_device(d2.device_id)), metadata=bot
    )

    # 7. a session for the end user: its token works as that user ...
    session = server.stubs.sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(user=eve), metadata=bot
    )
    eve_md = bearer(session.access_token)
    assert users.GetMe(us.GetMeRequest(), metadata=eve_md).user.id == end_user.id
    # ... and sees only its devices
    mine = users.ListDevicePermissions(
        us.ListDevicePermissionsRequest(user=user_pb2.UserRef(user_id=end_user.id)),
        metadata=eve_md,
    )
    assert mine.total_size == 2
    assert {p.device.device_id: p.charging for p in mine.permissions} == {
        d1.device_id: False,
        d2.device_id: True,
    }
    assert d3.device_id not in {p.device.device_id for p in mine.permissions}
    # the end user cannot manage itself, nor see other users
    expect_error(
        users.AddDevicePermissions,
        us.AddDevicePermissionsRequest(user=eve, devices=[by_device(d3.device_id)]),
        metadata=eve_md,
        code=grpc.StatusCode.PERMISSION_DENIED,
    )
    expect_error(
        users.GetUser,
        us.GetUserRequest(id=created.user.id),
        metadata=eve_md,
        code=grpc.StatusCode.NOT_FOUND,
        reason="USER_NOT_FOUND",
    )

    # 8. an order moves RECEIVED -> PROCESSING -> SHIPPED
    order_id = uniq("order-")
    link = "https://track.example.com/parcel/123"
    for status, extra in (
        (user_pb2.ORDER_STATUS_RECEIVED, {}),
        (user_pb2.ORDER_STATUS_PROCESSING, {}),
        (SHIPPED, {"device_id": d3.device_id, "tracking_link": link}),
    ):
        order = users.UpsertUserOrder(
            us.UpsertUserOrderRequest(
                user=eve, order=user_pb2.Order(order_id=order_id, status=status, **extra)
            ),
            metadata=bot,
        ).order
        assert order.status == status and order.order_id == order_id
    assert (order.device_id, order.tracking_link) == (d3.device_id, link)
    expect_error(  # never backwards
        users.UpsertUserOrder,
        us.UpsertUserOrderRequest(
            user=eve,
            order=user_pb2.Order(order_id=order_id, status=user_pb2.ORDER_STATUS_PROCESSING),
        ),
        metadata=bot,
        code=grpc.StatusCode.FAILED_PRECONDITION,
        reason="ORDER_STATUS_BACKWARDS",
    )

    # 9. the user's orders (the end user sees them too)
    for md in (bot, eve_md):
        listed = users.ListUserOrders(us.ListUserOrdersRequest(user=eve), metadata=md)
        assert [(o.order_id, o.status) for o in listed.orders] == [(order_id, SHIPPED)]

    # 10. permissions removed (a device not held is no error)
    users.RemoveDevicePermissions(
        us.RemoveDevicePermissionsRequest(
            user=eve, devices=[by_device(d1.device_id), by_device(d3.device_id)]
        ),
        metadata=bot,
    )
    left = users.ListDevicePermissions(us.ListDevicePermissionsRequest(user=eve), metadata=bot)
    assert [p.device.device_id for p in left.permissions] == [d2.device_id]

    # 11. the user is deleted: its session dies at once, its data is gone
    users.DeleteUser(us.DeleteUserRequest(id=end_user.id), metadata=bot)
    expect_error(
        users.GetMe, us.GetMeRequest(), metadata=eve_md, code=grpc.StatusCode.UNAUTHENTICATED
    )
    expect_error(
        users.ListUserOrders,
        us.ListUserOrdersRequest(user=eve),
        metadata=bot,
        code=grpc.StatusCode.NOT_FOUND,
        reason="USER_NOT_FOUND",
    )
    # the external id is free again inside the account
    again = users.CreateUser(
        us.CreateUserRequest(
            account_id=account_id, user=user_pb2.User(kind=EXTERNAL, external_id=ext_id)
        ),
        metadata=bot,
    ).user
    assert again.id != end_user.id
    assert foreign  # the other tenant was never touched

    # every step is in the account's audit log, with the machine user as actor, no secrets
    events = audit_events(server, account_id)
    by_bot = [e.action for e in reversed(events) if e.actor_user_id == created.user.id]
    assert by_bot[:1] == ["user.create"]
    for action, n in (
        ("device_permission.add", 2),
        ("device_permission.update", 3),
        ("order.create", 1),
        ("order.update", 2),
        ("device_permission.remove", 1),
        ("user.delete", 1),
    ):
        assert by_bot.count(action) == n, (action, by_bot)
    assert all("secret" not in f for e in events for f in e.changed_fields)
