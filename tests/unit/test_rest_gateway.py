"""The REST gateway as an ASGI app over a fake pipeline (no sockets, no database).

The servicers here are stand-ins that record what the transcoder built, so these tests
pin the transcoding and error mapping independently of the real use cases.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from accounts.v1 import (
    account_service_pb2,
    account_service_pb2_grpc,
    partition_service_pb2,
    session_service_pb2_grpc,
)
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2

from accounts_grpc.config import Settings
from accounts_grpc.domain.errors import InvalidArgument
from accounts_grpc.rest.gateway import Gateway, GatewayConfig, Readiness
from accounts_grpc.rpc.pipeline import Admission, CallFailed
from accounts_grpc.rpc.status import status_for, status_from_error


class FakePipeline:
    """Calls the handler like Pipeline.call does, without authentication."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, dict[str, str], str, str]] = []

    def call(self, method: str, request: Any, metadata: dict[str, str], peer: str,
             transport: str, handler: Any, *, build: Any = None, **_kw: Any) -> Any:
        if build is not None:
            try:
                request = build()
            except InvalidArgument as e:
                raise CallFailed(status_from_error(e)) from None
        self.calls.append((method, request, dict(metadata), peer, transport))
        return handler(request)

    def admit(self, method: str, metadata: dict[str, str], peer: str,
              transport: str) -> Admission:
        return Admission(None)


class Accounts(account_service_pb2_grpc.AccountServiceServicer):
    """Implements only what the tests need; the rest stays the generated UNIMPLEMENTED."""

    def UpdateAccount(self, request: Any, context: Any) -> Any:
        assert context is None
        return account_service_pb2.UpdateAccountResponse(account=request.account)

    def CloseAccount(self, request: Any, context: Any) -> Any:
        raise CallFailed(status_for(
            "RESOURCE_EXHAUSTED", "slow down", "TOO_MANY",
            extra=[error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(
                seconds=7, nanos=200_000_000))]))

    def ListAccounts(self, request: Any, context: Any) -> Any:
        raise KeyError("a bug")  # a crash the pipeline would map; the fake does not


@dataclass
class State:
    """What the readiness check reads."""

    draining: bool = False
    database_up: bool = True


def config(state: State) -> GatewayConfig:
    return GatewayConfig.from_settings(
        Settings(http_max_body_bytes=4096),
        pipeline=FakePipeline(),
        servicers={
            "accounts.v1.AccountService": Accounts(),
            "accounts.v1.SessionService": session_service_pb2_grpc.SessionServiceServicer(),
        },
        readiness=Readiness(draining=lambda: state.draining,
                            database_answers=lambda: state.database_up),
    )


def request(gw: Gateway, method: str, path: str, body: bytes = b"", query: bytes = b"",
            headers: list[tuple[bytes, bytes]] | None = None
            ) -> tuple[int, dict[bytes, bytes], Any]:
    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(),
             "query_string": query, "headers": headers or [], "client": ("10.1.2.3", 5555)}
    sent: list[dict[str, Any]] = []
    chunks = [body]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": chunks.pop() if chunks else b"",
                "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(gw(scope, receive, send))
    start, end = sent
    raw = end["body"]
    ctype = dict(start["headers"]).get(b"content-type", b"")
    return start["status"], dict(start["headers"]), json.loads(raw) if b"json" in ctype else raw


@pytest.fixture
def state() -> State:
    return State()


@pytest.fixture
def gw(state: State) -> Iterator[Gateway]:
    gateway = Gateway(config(state))
    yield gateway
    gateway.close()


def calls(gw: Gateway) -> list[tuple[str, Any, dict[str, str], str, str]]:
    return gw.pipeline.calls  # type: ignore[attr-defined,no-any-return]


def test_not_implemented_rpc_is_501(gw: Gateway) -> None:
    status, _, body = request(gw, "GET", "/v1/accounts/a1")
    assert status == 501
    assert body["code"] == 12
    assert body["details"][0]["reason"] == "UNIMPLEMENTED"
    # a service with no servicer at all answers the same way
    status, _, body = request(gw, "GET", "/v1/me")
    assert status == 501 and body["code"] == 12


def test_body_field_path_and_query_are_combined_path_wins(gw: Gateway) -> None:
    status, _, body = request(
        gw, "PATCH", "/v1/accounts/from%20path",
        body=json.dumps({"name": "N", "primary_color": "#fff"}).encode(),  # id: output-only
        query=b"updateMask=name,primaryColor",
        headers=[(b"authorization", b"Bearer t"), (b"x-request-id", b"r1"),
                 (b"cookie", b"not passed")])
    assert status == 200, body
    account = body["account"]
    assert {k: account[k] for k in ("id", "name", "primaryColor")} == {
        "id": "from path", "name": "N", "primaryColor": "#fff"}
    # every other field too, at its default, as grpc-gateway writes it
    assert account["email"] == "" and account["roles"] == [] and account["closed"] is False
    assert account["createTime"] is None
    method, req, metadata, peer, transport = calls(gw)[-1]
    assert method == "/accounts.v1.AccountService/UpdateAccount"
    assert list(req.update_mask.paths) == ["name", "primary_color"]
    assert metadata == {"authorization": "Bearer t", "x-request-id": "r1"}
    assert (peer, transport) == ("10.1.2.3", "rest")


def test_any_429_carries_retry_after(gw: Gateway) -> None:
    status, headers, body = request(gw, "POST", "/v1/accounts/a1:close")
    assert status == 429
    assert headers[b"retry-after"] == b"8"  # 7.2 s, rounded up
    assert [d["@type"].rsplit(".", 1)[1] for d in body["details"]] == ["ErrorInfo", "RetryInfo"]
    assert body["details"][1]["retryDelay"] == "7.200s"


def test_a_crash_in_the_shim_is_a_bare_500(gw: Gateway) -> None:
    status, _, body = request(gw, "GET", "/v1/accounts")
    assert status == 500
    assert body["code"] == 13 and "KeyError" not in json.dumps(body)


def test_body_over_the_limit_is_413_before_the_call(gw: Gateway) -> None:
    status, _, body = request(gw, "PATCH", "/v1/accounts/a1", body=b"{" + b" " * 5000 + b"}",
                              headers=[(b"content-length", b"5002")])
    assert status == 413 and "4096" in body["message"]
    status, _, body = request(gw, "PATCH", "/v1/accounts/a1", body=b"{" + b" " * 5000 + b"}")
    assert status == 413
    assert calls(gw) == []


def test_query_binding_through_the_gateway(gw: Gateway) -> None:
    status, _, _ = request(gw, "GET", "/v1/accounts/acc%2F1/partitions",
                           query=b"include=account&include=more&pageSize=3&order_by=name+desc")
    assert status == 501  # PartitionService has no servicer in the fake
    req = calls(gw)[-1][1]
    assert isinstance(req, partition_service_pb2.ListPartitionsRequest)
    assert req.account_id == "acc/1"
    assert list(req.include) == ["account", "more"]
    assert (req.page_size, req.order_by) == (3, "name desc")


def test_readyz_asks_the_readiness_check_each_time(gw: Gateway, state: State) -> None:
    status, _, body = request(gw, "GET", "/readyz")
    assert status == 200 and body == {"ready": True}
    state.database_up = False
    status, _, body = request(gw, "GET", "/readyz")
    assert status == 503 and body == {"ready": False, "reason": "database unreachable"}


def test_draining_makes_readyz_503(gw: Gateway, state: State) -> None:
    state.draining = True
    status, _, body = request(gw, "GET", "/readyz")
    assert status == 503 and body == {"ready": False, "reason": "draining"}
