"""Device permissions: by device_id or meter_id, idempotent, charging, lists, visibility."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from accounts.v1 import user_service_pb2 as us

from tests.e2e.users_helpers import (
    EXTERNAL,
    World,
    audit_events,
    build_world,
    by_device,
    by_meter,
    new_user,
    ref,
    register_devices,
    session_token,
)
from tests.support import Server, bearer, expect_error

C = grpc.StatusCode


@pytest.fixture(scope="module")
def world(server: Server) -> World:
    return build_world(server)


def _list(w: World, user: str, md: object = None, **kw: object) -> us.ListDevicePermissionsResponse:
    return w.server.stubs.users.ListDevicePermissions(
        us.ListDevicePermissionsRequest(user=ref(user), **kw), metadata=md or w.server.admin
    )


def test_add_is_idempotent_and_either_id_finds_the_device(world: World) -> None:
    users = world.server.stubs.users
    bot = world["intermediary-machine"]
    x = new_user(world.server, world.inter, EXTERNAL, md=bot.md).user
    d0, d1 = world.devices[0], world.devices[1]
    first = users.AddDevicePermissions(
        us.AddDevicePermissionsRequest(
            user=ref(external_id=x.external_id),
            devices=[by_device(d0.device_id), by_meter(d1.meter_id), by_meter(d0.meter_id)],
        ),
        metadata=bot.md,
    ).permissions
    # the same device named twice (by either id) is one permission
    assert [p.device.id for p in first] == [d0.id, d1.id]
    again = users.AddDevicePermissions(
        us.AddDevicePermissionsRequest(user=ref(x.id), devices=[by_meter(d0.meter_id)]),
        metadata=bot.md,
    ).permissions
    assert [(p.id, p.etag) for p in again] == [(first[0].id, first[0].etag)]
    listed = _list(world, x.id)
    assert listed.total_size == 2 and {p.id for p in listed.permissions} == {p.id for p in first}
    p = listed.permissions[0]
    assert p.user_id == x.id and p.device.account_id == world.inter and p.device.partition_id
    assert p.create_time.seconds and p.etag and p.device.name.startswith("device ")
    # removing one not held is no error; removing by meter id works
    users.RemoveDevicePermissions(
        us.RemoveDevicePermissionsRequest(
            user=ref(x.id), devices=[by_meter(d1.meter_id), by_device(world.devices[4].device_id)]
        ),
        metadata=bot.md,
    )
    assert [p.device.id for p in _list(world, x.id).permissions] == [d0.id]


def test_charging(world: World) -> None:
    users = world.server.stubs.users
    x = new_user(world.server, world.inter, EXTERNAL).user
    d = world.devices[2]
    users.AddDevicePermissions(
        us.AddDevicePermissionsRequest(user=ref(x.id), devices=[by_device(d.device_id)]),
        metadata=world.server.admin,
    )
    on = users.AddChargingPermission(
        us.AddChargingPermissionRequest(user=ref(x.id), device=by_meter(d.meter_id)),
        metadata=world.server.admin,
    ).permission
    assert on.charging
    again = users.AddChargingPermission(
        us.AddChargingPermissionRequest(user=ref(x.id), device=by_device(d.device_id)),
        metadata=world.server.admin,
    ).permission
    assert again.etag == on.etag  # no change, no write
    # adding the view permission again keeps charging
    kept = users.AddDevicePermissions(
        us.AddDevicePermissionsRequest(user=ref(x.id), devices=[by_device(d.device_id)]),
        metadata=world.server.admin,
    ).permissions
    assert kept[0].charging
    off = users.RemoveChargingPermission(
        us.RemoveChargingPermissionRequest(user=ref(x.id), device=by_device(d.device_id)),
        metadata=world.server.admin,
    ).permission
    assert not off.charging and _list(world, x.id).total_size == 1  # may still see it
    # removing the device permission takes charging with it
    users.AddChargingPermission(
        us.AddChargingPermissionRequest(user=ref(x.id), device=by_device(d.device_id)),
        metadata=world.server.admin,
    )
    users.RemoveDevicePermissions(
        us.RemoveDevicePermissionsRequest(user=ref(x.id), devices=[by_device(d.device_id)]),
        metadata=world.server.admin,
    )
    expect_error(
        users.RemoveChargingPermission,
        us.RemoveChargingPermissionRequest(user=ref(x.id), device=by_device(d.device_id)),
        metadata=world.server.admin,
        code=C.FAILED_PRECONDITION,
        reason="DEVICE_PERMISSION_REQUIRED",
    )


def test_an_external_user_sees_only_its_own_devices(world: World) -> None:
    users = world.server.stubs.users
    a = new_user(world.server, world.inter, EXTERNAL).user
    b = new_user(world.server, world.inter, EXTERNAL).user
    for u, d in ((a, world.devices[0]), (b, world.devices[1])):
        users.AddDevicePermissions(
            us.AddDevicePermissionsRequest(user=ref(u.id), devices=[by_device(d.device_id)]),
            metadata=world.server.admin,
        )
    a_md = bearer(session_token(world.server, a.id))
    mine = _list(world, a.id, a_md)
    assert [p.device.device_id for p in mine.permissions] == [world.devices[0].device_id]
    # by its own external id too (resolved in its own account)
    by_ext = users.ListDevicePermissions(
        us.ListDevicePermissionsRequest(user=ref(external_id=a.external_id)), metadata=a_md
    )
    assert by_ext.permissions == mine.permissions
    expect_error(_list, world, b.id, a_md, code=C.NOT_FOUND, reason="USER_NOT_FOUND")
    expect_error(
        users.RemoveDevicePermissions,
        us.RemoveDevicePermissionsRequest(
            user=ref(a.id), devices=[by_device(world.devices[0].device_id)]
        ),
        metadata=a_md,
        code=C.PERMISSION_DENIED,
    )


def test_list_filter_and_paging(world: World) -> None:
    users = world.server.stubs.users
    x = new_user(world.server, world.inter, EXTERNAL).user
    devs = register_devices(world.server, world.inter, 5)
    users.AddDevicePermissions(
        us.AddDevicePermissionsRequest(
            user=ref(x.id), devices=[by_device(d.device_id) for d in devs]
        ),
        metadata=world.server.admin,
    )
    hit = _list(world, x.id, filter=devs[3].meter_id.lower())
    assert [p.device.id for p in hit.permissions] == [devs[3].id]
    assert _list(world, x.id, filter=devs[1].device_id).total_size == 1
    seen, token = [], ""
    while True:
        page = _list(world, x.id, page_size=2, page_token=token)
        seen += [p.device.id for p in page.permissions]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(d.id for d in devs) and len(seen) == 5
    expect_error(
        _list,
        world,
        x.id,
        page_token=page.previous_page_token,
        filter="zz",
        code=C.INVALID_ARGUMENT,
        reason="PAGE_TOKEN_QUERY_MISMATCH",
    )


def test_devices_of_another_account_are_not_found(world: World) -> None:
    users = world.server.stubs.users
    x = new_user(world.server, world.inter, EXTERNAL).user
    foreign = world.other_devices[1]
    f = expect_error(
        users.AddDevicePermissions,
        us.AddDevicePermissionsRequest(user=ref(x.id), devices=[by_device(foreign.device_id)]),
        metadata=world.server.admin,
        code=C.NOT_FOUND,
        reason="DEVICE_NOT_FOUND",
    )
    assert f.metadata == {"device_id": foreign.device_id}
    assert _list(world, x.id).total_size == 0


def test_concurrent_adds_make_one_permission(world: World) -> None:
    users = world.server.stubs.users
    x = new_user(world.server, world.inter, EXTERNAL).user
    d = world.devices[5]
    req = us.AddDevicePermissionsRequest(user=ref(x.id), devices=[by_device(d.device_id)])

    def add(_: int) -> str:
        return users.AddDevicePermissions(req, metadata=world.server.admin).permissions[0].id

    with ThreadPoolExecutor(8) as ex:
        ids = set(ex.map(add, range(8)))
    assert len(ids) == 1 and _list(world, x.id).total_size == 1
    adds = [e for e in audit_events(world.server, world.inter) if e.resource_id in ids]
    assert [e.action for e in adds] == ["device_permission.add"]
