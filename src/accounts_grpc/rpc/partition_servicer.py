"""PartitionService: thin servicer (unpack, convert, call the use case, convert back)."""

from __future__ import annotations

from typing import Any

from accounts.v1 import partition_service_pb2 as pb
from accounts.v1 import partition_service_pb2_grpc

from accounts_grpc.domain.principal import current_principal
from accounts_grpc.rpc.convert.accounts import account_to_proto
from accounts_grpc.rpc.convert.partitions import (
    device_input,
    device_to_proto,
    partition_input,
    partition_to_proto,
    populated,
)
from accounts_grpc.services import Services


class PartitionServiceServicer(partition_service_pb2_grpc.PartitionServiceServicer):
    def __init__(self, services: Services) -> None:
        self.services = services
        self.partitions = services.partitions
        self.devices = services.devices

    def CreatePartition(
        self, request: pb.CreatePartitionRequest, context: Any
    ) -> pb.CreatePartitionResponse:
        row = self.partitions.create(
            current_principal(),
            request.account_id,
            partition_input(request.partition),
            request_id=request.request_id,
        )
        return pb.CreatePartitionResponse(partition=partition_to_proto(row))

    def GetPartition(
        self, request: pb.GetPartitionRequest, context: Any
    ) -> pb.GetPartitionResponse:
        row = self.partitions.get(current_principal(), request.id)
        return pb.GetPartitionResponse(partition=partition_to_proto(row))

    def ListPartitions(
        self, request: pb.ListPartitionsRequest, context: Any
    ) -> pb.ListPartitionsResponse:
        page = self.partitions.list_partitions(
            current_principal(),
            request.account_id,
            page_size=request.page_size,
            page_token=request.page_token,
            filter=request.filter,
            order_by=request.order_by,
            include=list(request.include),
        )
        return pb.ListPartitionsResponse(
            partitions=[partition_to_proto(r) for r in page.partitions],
            included_accounts=[account_to_proto(r) for r in page.included_accounts],
            next_page_token=page.next_page_token,
            previous_page_token=page.previous_page_token,
            total_size=page.total_size,
        )

    def UpdatePartition(
        self, request: pb.UpdatePartitionRequest, context: Any
    ) -> pb.UpdatePartitionResponse:
        row = self.partitions.update(
            current_principal(),
            request.partition.id,
            partition_input(request.partition),
            mask_paths=list(request.update_mask.paths),
            populated=populated(request.partition),
        )
        return pb.UpdatePartitionResponse(partition=partition_to_proto(row))

    def DeletePartition(
        self, request: pb.DeletePartitionRequest, context: Any
    ) -> pb.DeletePartitionResponse:
        self.partitions.delete(
            current_principal(), request.id, etag=request.etag, force=request.force
        )
        return pb.DeletePartitionResponse()

    def RegisterDevices(
        self, request: pb.RegisterDevicesRequest, context: Any
    ) -> pb.RegisterDevicesResponse:
        rows = self.devices.register_devices(
            current_principal(),
            request.partition_id,
            [device_input(d) for d in request.devices],
            request_id=request.request_id,
        )
        return pb.RegisterDevicesResponse(devices=[device_to_proto(r) for r in rows])

    def ListDevices(self, request: pb.ListDevicesRequest, context: Any) -> pb.ListDevicesResponse:
        page = self.devices.list_devices(
            current_principal(),
            partition_id=request.partition_id,
            account_id=request.account_id,
            page_size=request.page_size,
            page_token=request.page_token,
            filter=request.filter,
            order_by=request.order_by,
        )
        return pb.ListDevicesResponse(
            devices=[device_to_proto(r) for r in page.devices],
            next_page_token=page.next_page_token,
            previous_page_token=page.previous_page_token,
            total_size=page.total_size,
        )
