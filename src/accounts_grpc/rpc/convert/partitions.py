"""Partition and Device protos ⇄ the partitions use cases' inputs and rows."""

from __future__ import annotations

from typing import Any

from accounts.v1 import partition_pb2

from accounts_grpc.rpc.convert import ts, us_of
from accounts_grpc.services.devices import DeviceInput
from accounts_grpc.services.partitions import PartitionInput


def partition_to_proto(row: Any) -> partition_pb2.Partition:
    return partition_pb2.Partition(
        id=row.id,
        account_id=row.account_id,
        name=row.name,
        description=row.description,
        create_time=ts(row.create_time),
        update_time=ts(row.update_time),
        etag=row.etag,
    )


def device_to_proto(row: Any) -> partition_pb2.Device:
    return partition_pb2.Device(
        id=row.id,
        account_id=row.account_id,
        partition_id=row.partition_id,
        device_id=row.device_id or "",
        meter_id=row.meter_id or "",
        name=row.name,
        create_time=ts(row.create_time),
        update_time=ts(row.update_time),
        etag=row.etag,
    )


def partition_input(msg: partition_pb2.Partition) -> PartitionInput:
    return PartitionInput(
        name=msg.name,
        description=msg.description,
        etag=msg.etag,
        account_id=msg.account_id,
        create_time=us_of(msg.create_time) if msg.HasField("create_time") else None,
        update_time=us_of(msg.update_time) if msg.HasField("update_time") else None,
    )


def device_input(msg: partition_pb2.Device) -> DeviceInput:
    return DeviceInput(
        device_id=msg.device_id,
        meter_id=msg.meter_id,
        name=msg.name,
        partition_id=msg.partition_id,
    )


def populated(msg: Any) -> list[str]:
    """Names of the fields the client set (non-default values)."""
    return [f.name for f, _ in msg.ListFields()]
