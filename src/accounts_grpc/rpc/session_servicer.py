"""SessionService: thin servicer (unpack, convert, call the use case, convert back)."""

from __future__ import annotations

from typing import Any

from accounts.v1 import session_service_pb2 as pb
from accounts.v1 import session_service_pb2_grpc
from accounts_grpc.services import Services


class SessionServiceServicer(session_service_pb2_grpc.SessionServiceServicer):
    def __init__(self, services: Services) -> None:
        self.services = services
        self.sessions = services.sessions

    def CreateToken(self, request: pb.CreateTokenRequest, context: Any) -> pb.CreateTokenResponse:
        issued = self.sessions.create_token(
            request.client_id, request.client_secret, request.grant_type
        )
        return pb.CreateTokenResponse(
            access_token=issued.token, token_type="Bearer", expires_in=issued.expires_in,
            scope=request.scope,
        )
