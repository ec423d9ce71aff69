"""Device ids are unique per account, and no answer depends on another tenant's devices.

Two accounts, A and B, register the same device id and meter id: both succeed, and each
account's ListDevices, device permissions and orders see only its own device. Inside one
account an id is still unique (ALREADY_EXISTS). An account-admin asking about an id
that only another account holds gets exactly the answers of a never-registered id (no
existence oracle). An order's device_id must be a device of the user's account.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from accounts.v1 import partition_pb2, user_pb2
from accounts.v1 import partition_service_pb2 as ps
from accounts.v1 import user_service_pb2 as us

from tests.e2e.users_helpers import (
    EXTERNAL,
    HUMAN,
    Md,
    Persona,
    by_device,
    by_meter,
    create_account,
    device_id,
    new_user,
    ref,
    session_token,
    snapshot,
    uniq,
)
from tests.support import Failure, Server, expect_error, failure

C = grpc.StatusCode
SHIPPED = user_pb2.ORDER_STATUS_SHIPPED
RECEIVED = user_pb2.ORDER_STATUS_RECEIVED
DELIVERED = user_pb2.ORDER_STATUS_DELIVERED
LINK = "https://track.example.com/parcel/1"


@dataclass
class Tenant:
    account_id: str
    admin: Persona  # the account's first user, an account-admin
    partition: Any
    device: partition_pb2.Device  # registered with the shared ids
    human_id: str  # a HUMAN user, for device permissions
    external_id: str  # an EXTERNAL user, for orders


@dataclass
class Tenants:
    server: Server
    device_id: str  # registered in A and in B
    meter_id: str  # registered in A and in B
    a: Tenant
    b: Tenant


def D(**kw: Any) -> partition_pb2.Device:
    return partition_pb2.Device(**kw)


def make_partition(server: Server, account_id: str, md: Md) -> Any:
    return server.stubs.partitions.CreatePartition(
        ps.CreatePartitionRequest(
            account_id=account_id, partition=partition_pb2.Partition(name=uniq("p-"))
        ),
        metadata=md,
    ).partition


def register(server: Server, partition_id: str, md: Md, *devs: partition_pb2.Device) -> list[Any]:
    return list(
        server.stubs.partitions.RegisterDevices(
            ps.RegisterDevicesRequest(partition_id=partition_id, devices=list(devs)), metadata=md
        ).devices
    )


def tenant(server: Server, name: str, dev: str, meter: str) -> Tenant:
    """An intermediary account whose account-admin registers ``dev``/``meter``."""
    account_id, owner_id = create_account(server, name, roles=["intermediary"])
    admin = Persona("account-admin", owner_id, account_id, session_token(server, owner_id))
    part = make_partition(server, account_id, admin.md)
    [device] = register(server, part.id, admin.md, D(device_id=dev, meter_id=meter, name=name))
    return Tenant(
        account_id,
        admin,
        part,
        device,
        new_user(server, account_id, HUMAN, md=admin.md).user.id,
        new_user(server, account_id, EXTERNAL, md=admin.md).user.id,
    )


@pytest.fixture(scope="module")
def t(server: Server) -> Tenants:
    dev, meter = device_id(), uniq("MTR-")
    a, b = tenant(server, "A", dev, meter), tenant(server, "B", dev, meter)
    return Tenants(server, dev, meter, a, b)


def same_but_for(f: Failure, value: str, g: Failure, other: str) -> None:
    """Two failures are identical once each names its own id as ``<id>``."""

    def norm(x: Failure, v: str) -> tuple[Any, ...]:
        return (
            x.code,
            x.message.replace(v, "<id>"),
            x.reason,
            x.domain,
            {k: m.replace(v, "<id>") for k, m in x.metadata.items()},
            [(field, d.replace(v, "<id>")) for field, d in x.violations],
        )

    assert norm(f, value) == norm(g, other)


def call_failure(fn: Any, request: Any, md: Md) -> Failure:
    try:
        fn(request, metadata=md)
    except grpc.RpcError as e:
        return failure(e)
    raise AssertionError("expected the call to fail")


# -- registering ----------------------------------------------------------------------------


def test_two_accounts_register_the_same_ids(t: Tenants) -> None:
    a, b = t.a.device, t.b.device
    assert (a.device_id, a.meter_id) == (b.device_id, b.meter_id) == (t.device_id, t.meter_id)
    assert a.id != b.id
    assert (a.account_id, a.partition_id) == (t.a.account_id, t.a.partition.id)
    assert (b.account_id, b.partition_id) == (t.b.account_id, t.b.partition.id)


def test_an_id_is_still_unique_inside_one_account(t: Tenants) -> None:
    s, a = t.server, t.a
    other_part = make_partition(s, a.account_id, a.admin.md)
    fresh = device_id()
    before = snapshot(s)
    for part in (a.partition, other_part):  # the same partition or another: the account counts
        f = expect_error(
            s.stubs.partitions.RegisterDevices,
            ps.RegisterDevicesRequest(
                partition_id=part.id,
                devices=[D(device_id=fresh), D(device_id=t.device_id), D(meter_id=t.meter_id)],
            ),
            metadata=a.admin.md,
            code=C.ALREADY_EXISTS,
            reason="DEVICE_ALREADY_EXISTS",
        )
        assert f.metadata == {
            "device_ids": t.device_id,
            "meter_ids": t.meter_id,
            "fields": "devices[1].device_id,devices[2].meter_id",
        }
    assert snapshot(s) == before
    # all or nothing: the fresh id was not registered, so it is free
    register(s, other_part.id, a.admin.md, D(device_id=fresh))


# -- reading --------------------------------------------------------------------------------


def test_each_account_lists_only_its_own_device(t: Tenants) -> None:
    lst = t.server.stubs.partitions.ListDevices
    for me in (t.a, t.b):
        for md in (me.admin.md, t.server.admin):
            for req in (
                ps.ListDevicesRequest(account_id=me.account_id, filter=t.device_id),
                ps.ListDevicesRequest(account_id=me.account_id, filter=t.meter_id),
                ps.ListDevicesRequest(partition_id=me.partition.id),
            ):
                r = lst(req, metadata=md)
                assert [d.id for d in r.devices] == [me.device.id] and r.total_size == 1, req
                assert r.devices[0].account_id == me.account_id


def test_permissions_resolve_ids_inside_the_users_account(t: Tenants) -> None:
    users = t.server.stubs.users
    for me in (t.a, t.b):
        # by device_id as the account-admin, by meter_id as the platform admin: same device
        asks = ((me.admin.md, by_device(t.device_id)), (t.server.admin, by_meter(t.meter_id)))
        for md, dref in asks:
            [perm] = users.AddDevicePermissions(
                us.AddDevicePermissionsRequest(user=ref(me.human_id), devices=[dref]), metadata=md
            ).permissions
            assert (perm.device.id, perm.device.account_id) == (me.device.id, me.account_id)
        on = users.AddChargingPermission(
            us.AddChargingPermissionRequest(user=ref(me.human_id), device=by_meter(t.meter_id)),
            metadata=me.admin.md,
        ).permission
        assert on.charging and on.device.id == me.device.id
        listed = users.ListDevicePermissions(
            us.ListDevicePermissionsRequest(user=ref(me.human_id), filter=t.device_id),
            metadata=me.admin.md,
        )
        assert [p.device.id for p in listed.permissions] == [me.device.id]
    # removing A's permission by the shared id leaves B's alone
    users.RemoveDevicePermissions(
        us.RemoveDevicePermissionsRequest(user=ref(t.a.human_id), devices=[by_device(t.device_id)]),
        metadata=t.a.admin.md,
    )
    for me, held in ((t.a, []), (t.b, [t.b.device.id])):
        listed = users.ListDevicePermissions(
            us.ListDevicePermissionsRequest(user=ref(me.human_id)), metadata=me.admin.md
        )
        assert [p.device.id for p in listed.permissions] == held


# -- no existence oracle --------------------------------------------------------------------


def test_an_id_held_elsewhere_answers_like_a_never_registered_one(t: Tenants) -> None:
    """A's account-admin, about ids only B holds vs ids nobody holds: the same answers."""
    s, a = t.server, t.a
    elsewhere_dev, elsewhere_meter = device_id(), uniq("MTR-")
    b_md = t.b.admin.md
    register(s, t.b.partition.id, b_md, D(device_id=elsewhere_dev, meter_id=elsewhere_meter))
    never_dev, never_meter = device_id(), uniq("MTR-")
    users, md, user = s.stubs.users, a.admin.md, ref(a.human_id)

    # lists: nothing either way
    for held, never in ((elsewhere_dev, never_dev), (elsewhere_meter, never_meter)):
        got = [
            s.stubs.partitions.ListDevices(
                ps.ListDevicesRequest(account_id=a.account_id, filter=x), metadata=md
            )
            for x in (held, never)
        ]
        assert [(list(r.devices), r.total_size) for r in got] == [([], 0), ([], 0)]

    # device permissions: the same NOT_FOUND, whichever id and RPC
    calls = [
        (
            users.AddDevicePermissions,
            lambda r: us.AddDevicePermissionsRequest(user=user, devices=[r]),
        ),
        (
            users.RemoveDevicePermissions,
            lambda r: us.RemoveDevicePermissionsRequest(user=user, devices=[r]),
        ),
        (
            users.AddChargingPermission,
            lambda r: us.AddChargingPermissionRequest(user=user, device=r),
        ),
        (
            users.RemoveChargingPermission,
            lambda r: us.RemoveChargingPermissionRequest(user=user, device=r),
        ),
    ]
    for fn, make in calls:
        for held, never, by in (
            (elsewhere_dev, never_dev, by_device),
            (elsewhere_meter, never_meter, by_meter),
        ):
            before = snapshot(s)
            f = call_failure(fn, make(by(held)), md)
            g = call_failure(fn, make(by(never)), md)
            assert (f.code, f.reason) == (C.NOT_FOUND, "DEVICE_NOT_FOUND")
            same_but_for(f, held, g, never)
            assert snapshot(s) == before

    # orders: the same INVALID_ARGUMENT
    def order(dev: str) -> us.UpsertUserOrderRequest:
        return us.UpsertUserOrderRequest(
            user=ref(a.external_id),
            order=user_pb2.Order(
                order_id=uniq("o-"), status=SHIPPED, device_id=dev, tracking_link=LINK
            ),
        )

    f = call_failure(users.UpsertUserOrder, order(elsewhere_dev), md)
    g = call_failure(users.UpsertUserOrder, order(never_dev), md)
    same_but_for(f, elsewhere_dev, g, never_dev)

    # registering: both succeed alike
    got = register(
        s,
        a.partition.id,
        md,
        D(device_id=elsewhere_dev, meter_id=elsewhere_meter),
        D(device_id=never_dev, meter_id=never_meter),
    )
    assert [(d.device_id, d.meter_id, d.account_id) for d in got] == [
        (elsewhere_dev, elsewhere_meter, a.account_id),
        (never_dev, never_meter, a.account_id),
    ]


# -- orders ---------------------------------------------------------------------------------


def _orders(t: Tenants, me: Tenant) -> list[tuple[str, int, str, str]]:
    listed = t.server.stubs.users.ListUserOrders(
        us.ListUserOrdersRequest(user=ref(me.external_id), page_size=1000),
        metadata=me.admin.md,
    )
    return [(o.order_id, o.status, o.device_id, o.etag) for o in listed.orders]


def _upsert(t: Tenants, me: Tenant, **order: Any) -> user_pb2.Order:
    return t.server.stubs.users.UpsertUserOrder(
        us.UpsertUserOrderRequest(user=ref(me.external_id), order=user_pb2.Order(**order)),
        metadata=me.admin.md,
    ).order


def _bad_device(t: Tenants, me: Tenant, **order: Any) -> Failure:
    """The upsert is INVALID_ARGUMENT on order.device_id and writes nothing."""
    orders_before, before = _orders(t, me), snapshot(t.server)
    f = expect_error(
        _upsert,
        t,
        me,
        code=C.INVALID_ARGUMENT,
        reason="DEVICE_NOT_FOUND",
        field="order.device_id",
        **order,
    )
    assert f.violations == [("order.device_id", "is not a device of this account")]
    assert _orders(t, me) == orders_before and snapshot(t.server) == before
    return f


def test_an_order_names_a_device_of_the_users_account(t: Tenants) -> None:
    a = t.a
    b_only = register(t.server, t.b.partition.id, t.b.admin.md, D(device_id=device_id()))[0]
    unknown = device_id()
    # a new order
    oid = uniq("o-")
    f = _bad_device(t, a, order_id=oid, status=SHIPPED, device_id=unknown, tracking_link=LINK)
    g = _bad_device(
        t, a, order_id=oid, status=SHIPPED, device_id=b_only.device_id, tracking_link=LINK
    )
    same_but_for(f, unknown, g, b_only.device_id)
    # an existing order
    o1 = _upsert(t, a, order_id=oid, status=RECEIVED)
    for bad in (unknown, b_only.device_id):
        _bad_device(t, a, order_id=oid, status=SHIPPED, device_id=bad, tracking_link=LINK)
    # its own device: fine, in A and in B, by the id both hold
    for me in (a, t.b):
        o2 = _upsert(t, me, order_id=oid, status=SHIPPED, device_id=t.device_id, tracking_link=LINK)
        assert (o2.status, o2.device_id) == (SHIPPED, t.device_id)
    assert o2.id != o1.id  # B's order with the same order_id is B's own


def test_a_kept_device_id_is_not_checked_again(t: Tenants) -> None:
    """The device an order shipped may go away later; the order keeps naming it."""
    a, s = t.a, t.server
    part = make_partition(s, a.account_id, a.admin.md)
    [dev] = register(s, part.id, a.admin.md, D(device_id=device_id()))
    oid = uniq("o-")
    o1 = _upsert(t, a, order_id=oid, status=SHIPPED, device_id=dev.device_id, tracking_link=LINK)
    s.stubs.partitions.DeletePartition(
        ps.DeletePartitionRequest(id=part.id, force=True), metadata=a.admin.md
    )
    # re-sent unchanged: a no-op; DELIVERED keeps it
    again = _upsert(t, a, order_id=oid, status=SHIPPED, device_id=dev.device_id, tracking_link=LINK)
    assert again.etag == o1.etag
    o2 = _upsert(t, a, order_id=oid, status=DELIVERED)
    assert (o2.status, o2.device_id) == (DELIVERED, dev.device_id)
