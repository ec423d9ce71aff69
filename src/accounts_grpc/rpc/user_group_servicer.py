"""UserGroupService: thin servicer (unpack, convert, call the use case, convert back)."""

from __future__ import annotations

from accounts.v1 import user_group_service_pb2_grpc
from accounts_grpc.services import Services


class UserGroupServiceServicer(user_group_service_pb2_grpc.UserGroupServiceServicer):
    def __init__(self, services: Services) -> None:
        self.services = services
