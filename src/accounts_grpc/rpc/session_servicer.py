"""SessionService: thin servicer (unpack, convert, call the use case, convert back)."""

from __future__ import annotations

from typing import Any

from accounts.v1 import session_service_pb2 as pb
from accounts.v1 import session_service_pb2_grpc

from accounts_grpc.domain.principal import current_principal
from accounts_grpc.rpc.convert.sessions import (
    exchange_args_of,
    exchanged_to_proto,
    jwks_to_proto,
    session_to_proto,
    token_info_to_proto,
    user_ref_of,
)
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

    def GetJwks(self, request: pb.GetJwksRequest, context: Any) -> pb.GetJwksResponse:
        return jwks_to_proto(self.sessions.jwks())

    def CreateSession(
        self, request: pb.CreateSessionRequest, context: Any
    ) -> pb.CreateSessionResponse:
        row, token = self.sessions.create_session(
            current_principal(),
            user_ref_of(request.user),
            user_agent=request.user_agent,
            request_id=request.request_id,
        )
        return pb.CreateSessionResponse(session=session_to_proto(row), access_token=token)

    def ListSessions(
        self, request: pb.ListSessionsRequest, context: Any
    ) -> pb.ListSessionsResponse:
        page = self.sessions.list_sessions(
            current_principal(),
            user_ref_of(request.user),
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListSessionsResponse(
            sessions=[session_to_proto(r) for r in page.rows],
            next_page_token=page.next_page_token,
            previous_page_token=page.previous_page_token,
            total_size=page.total_size,
        )

    def RevokeSession(
        self, request: pb.RevokeSessionRequest, context: Any
    ) -> pb.RevokeSessionResponse:
        row = self.sessions.revoke_session(current_principal(), request.id)
        return pb.RevokeSessionResponse(session=session_to_proto(row))

    def IntrospectToken(
        self, request: pb.IntrospectTokenRequest, context: Any
    ) -> pb.IntrospectTokenResponse:
        return token_info_to_proto(self.sessions.introspect(current_principal(), request.token))

    def ExchangeToken(
        self, request: pb.ExchangeTokenRequest, context: Any
    ) -> pb.ExchangeTokenResponse:
        return exchanged_to_proto(self.services.exchange.exchange(exchange_args_of(request)))
