"""Who may do what in PartitionService: every RPC, every kind of caller, exact outcome.

The callers and account A are those of groups_helpers.policy_world: the member's
group reaches partition "fixture reach" (device "fixture d-reach") and not "fixture
other" (device "fixture d-other"). A cell is "ok", the set of names a list returns,
or (code, ErrorInfo reason).
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from accounts.v1 import partition_pb2
from accounts.v1 import partition_service_pb2 as pb

from tests.e2e.groups_helpers import (
    NO_ACCOUNT,
    OK,
    PERSONAS,
    ROLE_REQUIRED,
    PolicyTable,
    PolicyWorld,
    check_cell,
    check_table_covers,
    device_id,
    make_partition,
    policy_world,
    register,
    uniq,
)
from tests.support import Server

NO_PARTITION = (grpc.StatusCode.NOT_FOUND, "PARTITION_NOT_FOUND")

BOTH = frozenset({"fixture reach", "fixture other"})
REACH = frozenset({"fixture reach"})
BOTH_DEVICES = frozenset({"fixture d-reach", "fixture d-other"})
REACH_DEVICE = frozenset({"fixture d-reach"})
OTHER_DEVICE = frozenset({"fixture d-other"})



def _partition_names(resp: Any) -> Any:
    # the owning account comes along, and only it
    assert [a.name for a in resp.included_accounts] == ["Tenant A"]
    return frozenset(p.name for p in resp.partitions)


def _device_names(resp: Any) -> frozenset[str]:
    return frozenset(d.name for d in resp.devices)


def _fresh(server: Server, w: PolicyWorld) -> Any:
    return make_partition(server, w.account_id, uniq("policy "))


def _fresh_with_device(server: Server, w: PolicyWorld) -> Any:
    p = _fresh(server, w)
    register(server, p.id, dict(device_id=device_id()))
    return p


WRITE = {
    "member": ROLE_REQUIRED,
    "account-admin": OK,
    "intermediary machine": ROLE_REQUIRED,
    "consultant": ROLE_REQUIRED,
    "admin-reader": ROLE_REQUIRED,
    "admin": OK,
    "stranger": NO_PARTITION,
}

TABLE: PolicyTable = {
    "CreatePartition": (
        lambda s, w: (
            "CreatePartition",
            pb.CreatePartitionRequest(
                account_id=w.account_id, partition=partition_pb2.Partition(name=uniq("new "))
            ),
            None,
        ),
        {**WRITE, "stranger": NO_ACCOUNT},
    ),
    "GetPartition (reached by the member's group)": (
        lambda s, w: ("GetPartition", pb.GetPartitionRequest(id=w.reach.id), None),
        {
            "member": OK,
            "account-admin": OK,
            "intermediary machine": OK,
            "consultant": OK,
            "admin-reader": OK,
            "admin": OK,
            "stranger": NO_PARTITION,
        },
    ),
    "GetPartition (not reached)": (
        lambda s, w: ("GetPartition", pb.GetPartitionRequest(id=w.other.id), None),
        {
            "member": NO_PARTITION,
            "account-admin": OK,
            "intermediary machine": OK,
            "consultant": OK,
            "admin-reader": OK,
            "admin": OK,
            "stranger": NO_PARTITION,
        },
    ),
    "ListPartitions": (
        lambda s, w: (
            "ListPartitions",
            pb.ListPartitionsRequest(
                account_id=w.account_id, filter="fixture", include=["account"]
            ),
            _partition_names,
        ),
        {
            "member": REACH,
            "account-admin": BOTH,
            "intermediary machine": BOTH,
            "consultant": BOTH,
            "admin-reader": BOTH,
            "admin": BOTH,
            "stranger": NO_ACCOUNT,
        },
    ),
    "UpdatePartition": (
        lambda s, w: (
            "UpdatePartition",
            pb.UpdatePartitionRequest(
                partition=partition_pb2.Partition(id=_fresh(s, w).id, description="changed")
            ),
            None,
        ),
        WRITE,
    ),
    "DeletePartition": (
        lambda s, w: ("DeletePartition", pb.DeletePartitionRequest(id=_fresh(s, w).id), None),
        WRITE,
    ),
    "DeletePartition (force, with a device)": (
        lambda s, w: (
            "DeletePartition",
            pb.DeletePartitionRequest(id=_fresh_with_device(s, w).id, force=True),
            None,
        ),
        WRITE,
    ),
    "RegisterDevices": (
        lambda s, w: (
            "RegisterDevices",
            pb.RegisterDevicesRequest(
                partition_id=_fresh(s, w).id,
                devices=[partition_pb2.Device(device_id=device_id(), meter_id=uniq("M-"))],
            ),
            None,
        ),
        WRITE,
    ),
    "ListDevices (a reached partition)": (
        lambda s, w: ("ListDevices", pb.ListDevicesRequest(partition_id=w.reach.id), _device_names),
        {
            "member": REACH_DEVICE,
            "account-admin": REACH_DEVICE,
            "intermediary machine": REACH_DEVICE,
            "consultant": REACH_DEVICE,
            "admin-reader": REACH_DEVICE,
            "admin": REACH_DEVICE,
            "stranger": NO_PARTITION,
        },
    ),
    "ListDevices (a partition not reached)": (
        lambda s, w: ("ListDevices", pb.ListDevicesRequest(partition_id=w.other.id), _device_names),
        {
            "member": NO_PARTITION,
            "account-admin": OTHER_DEVICE,
            "intermediary machine": OTHER_DEVICE,
            "consultant": OTHER_DEVICE,
            "admin-reader": OTHER_DEVICE,
            "admin": OTHER_DEVICE,
            "stranger": NO_PARTITION,
        },
    ),
    "ListDevices (the whole account)": (
        lambda s, w: (
            "ListDevices",
            pb.ListDevicesRequest(account_id=w.account_id, filter="fixture"),
            _device_names,
        ),
        {
            "member": REACH_DEVICE,
            "account-admin": BOTH_DEVICES,
            "intermediary machine": BOTH_DEVICES,
            "consultant": BOTH_DEVICES,
            "admin-reader": BOTH_DEVICES,
            "admin": BOTH_DEVICES,
            "stranger": NO_ACCOUNT,
        },
    ),
}


def test_table_covers_every_rpc_and_caller() -> None:
    check_table_covers(TABLE, pb.DESCRIPTOR.services_by_name["PartitionService"])


@pytest.fixture(scope="module")
def world(server: Server) -> PolicyWorld:
    return policy_world(server)


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize("rpc", list(TABLE))
def test_policy(server: Server, world: PolicyWorld, rpc: str, persona: str) -> None:
    check_cell(server, world, server.stubs.partitions, TABLE, rpc, persona)
