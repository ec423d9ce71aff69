"""UserService: thin servicer (unpack, convert, call the use case, convert back)."""

from __future__ import annotations

from typing import Any

from accounts.v1 import user_service_pb2 as pb
from accounts.v1 import user_service_pb2_grpc
from accounts_grpc.domain.principal import current_principal
from accounts_grpc.rpc.convert.accounts import account_to_proto
from accounts_grpc.rpc.convert.users import user_to_proto
from accounts_grpc.services import Services


class UserServiceServicer(user_service_pb2_grpc.UserServiceServicer):
    def __init__(self, services: Services) -> None:
        self.services = services
        self.users = services.users

    def GetMe(self, request: pb.GetMeRequest, context: Any) -> pb.GetMeResponse:
        user, account = self.users.get_me(current_principal())
        return pb.GetMeResponse(user=user_to_proto(user), account=account_to_proto(account))
