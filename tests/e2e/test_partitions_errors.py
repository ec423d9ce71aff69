"""PartitionService's errors end to end: one real call per RPC and per error class, over
gRPC (the status, the ErrorInfo reason, the field violations, and nothing changed: no
row, no audit event) and over REST (the HTTP status and grpc-gateway body).

The rules themselves, case by case, are asked of the use cases in process:
tests/usecases/test_partitions.py (its docstring maps each test that was here to its new
home).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from accounts.v1 import partition_pb2
from accounts.v1 import partition_service_pb2 as pb

from tests.e2e.groups_helpers import (
    Persona,
    close_account,
    create_account,
    device_id,
    human,
    make_partition,
    register,
    snapshot,
)
from tests.e2e.rest_helpers import rest_error
from tests.support import Server, expect_error

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXISTS = grpc.StatusCode.ALREADY_EXISTS
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


@dataclass
class World:
    account_id: str
    owner: Persona
    partition: Any  # "Main"
    full: Any  # a partition with a device
    closed_account_id: str


@pytest.fixture(scope="module")
def w(server: Server) -> World:
    account_id, owner_id = create_account(server, "Partition Errors AG")
    owner = human(server, "owner", account_id, ("account-admin",), user_id=owner_id)
    part = make_partition(server, account_id, "Main")
    make_partition(server, account_id, "Taken")
    full = make_partition(server, account_id)
    register(server, full.id, dict(device_id=device_id()))
    closed_id, _ = create_account(server, "Closed AG")
    close_account(server, closed_id)
    return World(account_id, owner, part, full, closed_id)


def P(**kw: Any) -> partition_pb2.Partition:
    return partition_pb2.Partition(**kw)


def D(**kw: Any) -> partition_pb2.Device:
    return partition_pb2.Device(**kw)


Case = tuple[str, Callable[[World], Any], grpc.StatusCode, str, list[str] | None]
CASES: dict[str, Case] = {
    "create: name and description too long": (
        "CreatePartition",
        lambda w: pb.CreatePartitionRequest(
            account_id=w.account_id, partition=P(name="x" * 201, description="y" * 2001)
        ),
        INVALID,
        "INVALID_ARGUMENT",
        ["partition.name", "partition.description"],
    ),
    "create: name taken": (
        "CreatePartition",
        lambda w: pb.CreatePartitionRequest(account_id=w.account_id, partition=P(name="Taken")),
        EXISTS,
        "PARTITION_ALREADY_EXISTS",
        None,
    ),
    "get: unknown": (
        "GetPartition",
        lambda w: pb.GetPartitionRequest(id=UNKNOWN_ID),
        NOT_FOUND,
        "PARTITION_NOT_FOUND",
        None,
    ),
    "list: unknown include": (
        "ListPartitions",
        lambda w: pb.ListPartitionsRequest(account_id=w.account_id, include=["account", "users"]),
        INVALID,
        "INVALID_INCLUDE",
        ["include[1]"],
    ),
    "update: stale etag": (
        "UpdatePartition",
        lambda w: pb.UpdatePartitionRequest(partition=P(id=w.partition.id, name="n", etag="e")),
        grpc.StatusCode.ABORTED,
        "ETAG_MISMATCH",
        None,
    ),
    "delete: holds devices": (
        "DeletePartition",
        lambda w: pb.DeletePartitionRequest(id=w.full.id),
        grpc.StatusCode.FAILED_PRECONDITION,
        "PARTITION_HAS_DEVICES",
        None,
    ),
    "register: no devices": (
        "RegisterDevices",
        lambda w: pb.RegisterDevicesRequest(partition_id=w.partition.id),
        INVALID,
        "INVALID_ARGUMENT",
        ["devices"],
    ),
    "register: device id with a control character": (
        "RegisterDevices",
        lambda w: pb.RegisterDevicesRequest(
            partition_id=w.partition.id, devices=[D(device_id="ABCD\x0012")]
        ),
        INVALID,
        "INVALID_CHARACTER",  # the edge refuses it for every field, before any use case
        ["devices[0].device_id"],
    ),
    "list devices: unknown partition": (
        "ListDevices",
        lambda w: pb.ListDevicesRequest(partition_id=UNKNOWN_ID),
        NOT_FOUND,
        "PARTITION_NOT_FOUND",
        None,
    ),
    "create: closed account": (
        "CreatePartition",
        lambda w: pb.CreatePartitionRequest(account_id=w.closed_account_id, partition=P(name="x")),
        grpc.StatusCode.FAILED_PRECONDITION,
        "ACCOUNT_CLOSED",
        None,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(server: Server, w: World, case: str) -> None:
    method, build, code, reason, fields = CASES[case]
    md = server.admin if "closed account" in case else w.owner.md  # admin may see a tombstone
    before = snapshot(server)
    f = expect_error(
        getattr(server.stubs.partitions, method), build(w), metadata=md, code=code, reason=reason
    )
    if fields is not None:
        assert [v[0] for v in f.violations] == fields, f.violations
        assert all(v[1] for v in f.violations)
    assert f.message and "Traceback" not in f.message
    assert snapshot(server) == before, "a failed call changed something"


# (method, path, JSON body, HTTP status, code, reason, field), as the owner
RestCase = tuple[str, Callable[[World], str], dict[str, Any], int, grpc.StatusCode, str,
                 str | None]
REST_CASES: dict[str, RestCase] = {
    "400 INVALID_ARGUMENT": (
        "POST", lambda w: f"/v1/accounts/{w.account_id}/partitions", {"description": "d"}, 400,
        INVALID, "INVALID_ARGUMENT", "partition.name"),
    "404 NOT_FOUND": (
        "GET", lambda w: f"/v1/partitions/{UNKNOWN_ID}", {}, 404, NOT_FOUND,
        "PARTITION_NOT_FOUND", None),
    "409 ALREADY_EXISTS": (
        "POST", lambda w: f"/v1/accounts/{w.account_id}/partitions", {"name": "Taken"}, 409,
        EXISTS, "PARTITION_ALREADY_EXISTS", None),
    "409 ABORTED": (
        "PATCH", lambda w: f"/v1/partitions/{w.partition.id}", {"name": "n", "etag": "e"}, 409,
        grpc.StatusCode.ABORTED, "ETAG_MISMATCH", None),
    "400 FAILED_PRECONDITION": (
        "DELETE", lambda w: f"/v1/partitions/{w.full.id}", {}, 400,
        grpc.StatusCode.FAILED_PRECONDITION, "PARTITION_HAS_DEVICES", None),
}


@pytest.mark.parametrize("case", list(REST_CASES))
def test_rest_error(server: Server, w: World, case: str) -> None:
    method, path, body, status, code, reason, field = REST_CASES[case]
    rest_error(server, method, path(w), body=body or None, snapshot=snapshot,
               token=w.owner.token, status=status, code=code, reason=reason, field=field)
