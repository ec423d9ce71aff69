"""PartitionService's devices, what works: RegisterDevices, ListDevices in a partition
and across an account, filters on either id, deleting a partition with force."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from accounts.v1 import partition_pb2
from accounts.v1 import partition_service_pb2 as pb

from accounts_grpc.store.db import new_etag, new_id, now_us
from accounts_grpc.store.tables import device_permissions, devices
from tests.e2e.groups_helpers import (
    Persona,
    create_account,
    device_id,
    events,
    human,
    make_group,
    make_partition,
    register,
    uniq,
)
from tests.support import Server, expect_error, failure


@pytest.fixture(scope="module")
def acct(server: Server) -> tuple[str, Persona]:
    account_id, owner_id = create_account(server, "Devices GmbH")
    return account_id, human(server, "owner", account_id, ("account-admin",), user_id=owner_id)


def D(**kw: str) -> partition_pb2.Device:
    return partition_pb2.Device(**kw)


def test_register_devices(server: Server, acct: tuple[str, Persona]) -> None:
    account_id, owner = acct
    part = make_partition(server, account_id)
    d1, m2 = device_id(), uniq("MTR-")
    resp = server.stubs.partitions.RegisterDevices(
        pb.RegisterDevicesRequest(
            partition_id=part.id,
            devices=[
                D(device_id=d1, name="charger"),
                D(meter_id=m2),
                D(device_id=device_id(), meter_id=uniq("MTR-"), partition_id=part.id),
            ],
            request_id="rid-batch-1",
        ),
        metadata=owner.md,
    )
    assert [(d.device_id, d.meter_id, d.name) for d in resp.devices[:2]] == [
        (d1, "", "charger"),
        ("", m2, ""),
    ]
    for d in resp.devices:
        assert d.id and d.etag and d.create_time.seconds
        assert (d.account_id, d.partition_id) == (account_id, part.id)
        [ev] = events(server, d.id)
        assert (ev.action, ev.resource_type, ev.actor_user_id, ev.request_id) == (
            "device.register",
            "Device",
            owner.user_id,
            "rid-batch-1",
        )
    assert events(server, resp.devices[0].id)[0].changed_fields == ["device_id", "name"]


def test_register_devices_is_idempotent_with_request_id(
    server: Server, acct: tuple[str, Persona]
) -> None:
    account_id, owner = acct
    part = make_partition(server, account_id)
    req = pb.RegisterDevicesRequest(
        partition_id=part.id, devices=[D(device_id=device_id())], request_id=uniq("rid-")
    )
    first = server.stubs.partitions.RegisterDevices(req, metadata=owner.md)
    again = server.stubs.partitions.RegisterDevices(req, metadata=owner.md)
    assert again == first
    req.devices[0].device_id = device_id()
    expect_error(
        server.stubs.partitions.RegisterDevices,
        req,
        metadata=owner.md,
        code=grpc.StatusCode.INVALID_ARGUMENT,
        reason="REQUEST_ID_REUSED",
    )


def test_list_devices_by_partition_and_account_with_filters(
    server: Server, acct: tuple[str, Persona]
) -> None:
    account_id, owner = acct
    pa, pb_ = make_partition(server, account_id), make_partition(server, account_id)
    tag = uniq("dev")
    a1, a2, b1 = device_id(), device_id(), device_id()
    register(server, pa.id, dict(device_id=a1, name=f"{tag} heat pump"))
    register(server, pa.id, dict(device_id=a2, meter_id=f"{tag}-M2", name=f"{tag} boiler"))
    register(server, pb_.id, dict(device_id=b1, name=f"{tag} charger"), dict(meter_id=f"{tag}-M9"))
    lst = server.stubs.partitions.ListDevices

    def ids(resp: pb.ListDevicesResponse) -> list[str]:
        return [d.device_id or d.meter_id for d in resp.devices]

    # one partition
    r = lst(pb.ListDevicesRequest(partition_id=pa.id), metadata=owner.md)
    assert ids(r) == [a1, a2] and r.total_size == 2
    # a whole account, filtered on the name
    r = lst(
        pb.ListDevicesRequest(account_id=account_id, filter=tag, order_by="name"),
        metadata=owner.md,
    )
    assert ids(r) == [f"{tag}-M9", a2, b1, a1]  # the unnamed meter first; found by meter_id
    # either id finds a device, case-insensitively
    for term, want in [(a1.lower(), [a1]), (f"{tag}-m2", [a2]), (f"{tag}-M9", [f"{tag}-M9"])]:
        r = lst(pb.ListDevicesRequest(account_id=account_id, filter=term), metadata=owner.md)
        assert ids(r) == want, term
    # order by device id, descending; paging
    seen: list[str] = []
    req = pb.ListDevicesRequest(
        account_id=account_id, filter=tag, order_by="device_id desc", page_size=3
    )
    while True:
        page = lst(req, metadata=owner.md)
        seen += ids(page)
        if not page.next_page_token:
            break
        req.page_token = page.next_page_token
    assert seen == [*sorted([a1, a2, b1], reverse=True), f"{tag}-M9"]
    # both parents given and consistent: fine
    r = lst(pb.ListDevicesRequest(partition_id=pb_.id, account_id=account_id), metadata=owner.md)
    assert ids(r) == [b1, f"{tag}-M9"]


def test_member_lists_devices_of_reachable_partitions_only(
    server: Server, acct: tuple[str, Persona]
) -> None:
    account_id, _ = acct
    near, far = make_partition(server, account_id), make_partition(server, account_id)
    tag = uniq("reach")
    d_near, d_far = device_id(), device_id()
    register(server, near.id, dict(device_id=d_near, name=tag))
    register(server, far.id, dict(device_id=d_far, name=tag))
    member = human(server, "member", account_id)
    make_group(server, account_id, partition_ids=(near.id,), members=(member.user_id,))
    r = server.stubs.partitions.ListDevices(
        pb.ListDevicesRequest(account_id=account_id, filter=tag), metadata=member.md
    )
    assert [d.device_id for d in r.devices] == [d_near] and r.total_size == 1
    expect_error(
        server.stubs.partitions.ListDevices,
        pb.ListDevicesRequest(partition_id=far.id),
        metadata=member.md,
        code=grpc.StatusCode.NOT_FOUND,
        reason="PARTITION_NOT_FOUND",
    )


def test_delete_partition_with_devices_needs_force(
    server: Server, acct: tuple[str, Persona]
) -> None:
    account_id, owner = acct
    part = make_partition(server, account_id)
    devs = register(server, part.id, dict(device_id=device_id()), dict(meter_id=uniq("M-")))
    holder = human(server, "holder", account_id)
    now = now_us()
    with server.app.db.write() as uow:  # a permission (AddDevicePermissions is another issue's)
        uow.conn.execute(
            device_permissions.insert().values(
                user_id=holder.user_id,
                device_pk=devs[0].id,
                id=new_id(),
                account_id=account_id,
                charging=True,
                create_time=now,
                update_time=now,
                etag=new_etag(),
            )
        )
        uow.commit()
    f = expect_error(
        server.stubs.partitions.DeletePartition,
        pb.DeletePartitionRequest(id=part.id),
        metadata=owner.md,
        code=grpc.StatusCode.FAILED_PRECONDITION,
        reason="PARTITION_HAS_DEVICES",
    )
    assert f.metadata["device_count"] == "2"
    server.stubs.partitions.DeletePartition(
        pb.DeletePartitionRequest(id=part.id, force=True), metadata=owner.md
    )
    with server.app.db.read() as uow:
        left = uow.conn.execute(
            sa.select(sa.func.count()).select_from(devices).where(devices.c.partition_id == part.id)
        ).scalar_one()
        perms = uow.conn.execute(
            sa.select(sa.func.count())
            .select_from(device_permissions)
            .where(device_permissions.c.device_pk == devs[0].id)
        ).scalar_one()
    assert (left, perms) == (0, 0)
    for d in devs:
        assert [e.action for e in events(server, d.id)] == ["device.register", "device.delete"]
    assert [(e.action, e.changed_fields) for e in events(server, part.id)][-1] == (
        "partition.delete",
        ["devices"],
    )
    # the ids are free again
    register(server, make_partition(server, account_id).id, dict(device_id=devs[0].device_id))


def test_concurrent_registrations_of_one_id(server: Server, acct: tuple[str, Persona]) -> None:
    """Two batches in two partitions race for one device id: one wins, the other is
    ALREADY_EXISTS naming it and registers nothing."""
    account_id, owner = acct
    parts = [make_partition(server, account_id) for _ in range(4)]
    shared = device_id()
    barrier = threading.Barrier(len(parts))

    def run(i: int) -> Any:
        barrier.wait()
        try:
            return server.stubs.partitions.RegisterDevices(
                pb.RegisterDevicesRequest(
                    partition_id=parts[i].id,
                    devices=[D(meter_id=uniq("own-")), D(device_id=shared)],
                ),
                metadata=owner.md,
            )
        except grpc.RpcError as e:
            return failure(e)

    with ThreadPoolExecutor(len(parts)) as pool:
        results = list(pool.map(run, range(len(parts))))
    losers = [r for r in results if not isinstance(r, pb.RegisterDevicesResponse)]
    assert len(losers) == len(parts) - 1, results
    for f in losers:
        assert (f.code, f.reason) == (grpc.StatusCode.ALREADY_EXISTS, "DEVICE_ALREADY_EXISTS")
        assert f.metadata.get("device_ids") == shared
    with server.app.db.read() as uow:
        n = uow.conn.execute(
            sa.select(sa.func.count())
            .select_from(devices)
            .where(devices.c.partition_id.in_([p.id for p in parts]))
        ).scalar_one()
    assert n == 2  # the winner's two devices, nothing of the losers
