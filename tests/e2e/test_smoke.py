"""The first thing a new user does: bootstrap, token, GetMe."""

from __future__ import annotations

import grpc
from accounts.v1 import user_pb2, user_service_pb2

from tests.support import Server, expect_error


def test_get_me_with_bootstrap_token(server: Server) -> None:
    me = server.stubs.users.GetMe(user_service_pb2.GetMeRequest(), metadata=server.admin)
    assert me.user.kind == user_pb2.USER_KIND_MACHINE
    assert "admin" in me.user.roles
    assert me.account.id == me.user.account_id


def test_get_me_without_token_is_unauthenticated(server: Server) -> None:
    expect_error(server.stubs.users.GetMe, user_service_pb2.GetMeRequest(),
                 code=grpc.StatusCode.UNAUTHENTICATED, reason="TOKEN_MISSING")
