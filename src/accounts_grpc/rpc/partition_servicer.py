"""PartitionService: thin servicer (unpack, convert, call the use case, convert back)."""

from __future__ import annotations

from accounts.v1 import partition_service_pb2_grpc
from accounts_grpc.services import Services


class PartitionServiceServicer(partition_service_pb2_grpc.PartitionServiceServicer):
    def __init__(self, services: Services) -> None:
        self.services = services
