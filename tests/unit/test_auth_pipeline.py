"""The call pipeline without a network: access rules, errors mapped once, the call's facts."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from google.rpc import code_pb2, error_details_pb2

from accounts_grpc.domain.call import current_call
from accounts_grpc.domain.errors import (
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
)
from accounts_grpc.domain.principal import Principal, maybe_principal
from accounts_grpc.rpc.pipeline import CallFailed, Pipeline, peer_address
from accounts_grpc.rpc.registry import AccessRule, access_rules
from accounts_grpc.rpc.status import status_from_error

ALICE = Principal(user_id="u1", account_id="a1", kind="HUMAN",
                  roles=frozenset({"member"}), account_roles=frozenset())


class FakeAuthn:
    def authenticate(self, authorization: str | None) -> Principal:
        if authorization != "Bearer good":
            raise Unauthenticated("no", reason="TOKEN_INVALID")
        return ALICE


RULES = {
    "/t.S/Public": AccessRule(True, frozenset()),
    "/t.S/Member": AccessRule(False, frozenset({"member"})),
    "/t.S/Admin": AccessRule(False, frozenset({"admin"})),
}


def pipeline() -> Pipeline:
    return Pipeline(FakeAuthn(), RULES)  # type: ignore[arg-type]


def call(method: str, handler: Any = lambda req: "ok", auth: str | None = "Bearer good",
         peer: str = "ipv4:10.1.2.3:5555") -> Any:
    md = {"authorization": auth} if auth else {}
    return pipeline().call(method, "req", md, peer, "grpc", handler)


def details(e: CallFailed) -> dict[str, Any]:
    out: dict[str, Any] = {"code": code_pb2.Code.Name(e.status.code)}
    for d in e.status.details:
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            d.Unpack(info)
            out["reason"], out["domain"] = info.reason, info.domain
        if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            r = error_details_pb2.RetryInfo()
            d.Unpack(r)
            out["retry"] = r.retry_delay.seconds
        if d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            b = error_details_pb2.BadRequest()
            d.Unpack(b)
            out["fields"] = [v.field for v in b.field_violations]
    return out


def failed(method: str, **kw: Any) -> dict[str, Any]:
    with pytest.raises(CallFailed) as e:
        call(method, **kw)
    return details(e.value)


def test_every_rpc_of_the_protos_declares_an_access_rule() -> None:
    from accounts_grpc.rpc.registry import service_descriptors

    methods = {f"/{s.full_name}/{m.name}" for s in service_descriptors() for m in s.methods}
    assert methods == set(access_rules())
    rules = access_rules()
    assert rules["/accounts.v1.SessionService/CreateToken"].public
    assert rules["/accounts.v1.SessionService/GetJwks"].public
    assert not rules["/accounts.v1.UserService/GetMe"].public


def test_access_rules() -> None:
    assert call("/t.S/Public", auth=None) == "ok"
    assert call("/t.S/Member") == "ok"
    assert failed("/t.S/Member", auth=None) == {
        "code": "UNAUTHENTICATED", "reason": "TOKEN_INVALID", "domain": "accounts.v1"}
    assert failed("/t.S/Admin")["reason"] == "ROLE_REQUIRED"
    assert failed("/t.S/Unknown") == {
        "code": "PERMISSION_DENIED", "reason": "NO_ACCESS_RULE", "domain": "accounts.v1"}


def test_the_handler_sees_the_principal_and_the_call() -> None:
    seen: dict[str, Any] = {}

    def handler(req: Any) -> str:
        seen["principal"] = maybe_principal()
        seen["call"] = current_call()
        return "ok"

    call("/t.S/Member", handler, peer="ipv6:%5B::1%5D:4444")
    assert seen["principal"] == ALICE
    assert seen["call"].peer == "::1" and seen["call"].method == "/t.S/Member"
    assert seen["call"].metadata["authorization"] == "Bearer good"
    assert maybe_principal() is None and current_call() is None, "reset after the call"


def test_domain_errors_are_mapped_once() -> None:
    def raise_(e: Exception) -> Any:
        def handler(req: Any) -> Any:
            raise e
        return handler

    assert failed("/t.S/Member", handler=raise_(NotFound("x", reason="THING_NOT_FOUND"))) == {
        "code": "NOT_FOUND", "reason": "THING_NOT_FOUND", "domain": "accounts.v1"}
    bad = failed("/t.S/Member", handler=raise_(InvalidArgument.field("a.b", "is wrong")))
    assert bad["code"] == "INVALID_ARGUMENT" and bad["fields"] == ["a.b"]
    busy = failed("/t.S/Member", handler=raise_(ResourceExhausted("slow", retry_after=1.2)))
    assert busy["code"] == "RESOURCE_EXHAUSTED" and busy["retry"] == 2, "rounded up"


def test_unexpected_errors_are_internal_with_nothing_on_the_wire(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def handler(req: Any) -> Any:
        raise RuntimeError("db password is hunter2")

    with pytest.raises(CallFailed) as e:
        call("/t.S/Member", handler)
    assert details(e.value) == {"code": "INTERNAL", "reason": "INTERNAL", "domain": "accounts.v1"}
    assert "hunter2" not in e.value.status.message
    assert "hunter2" in caplog.text, "the details go to the log"


def test_one_log_line_per_call(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="accounts_grpc.calls")
    call("/t.S/Member")
    with pytest.raises(CallFailed):
        call("/t.S/Member", auth="Bearer bad")
    lines = [r for r in caplog.records if r.name == "accounts_grpc.calls"]
    assert [(r.rpc_code, r.caller) for r in lines] == [  # type: ignore[attr-defined]
        ("OK", "u1"), ("UNAUTHENTICATED", None)]
    assert all("Bearer" not in r.getMessage() for r in lines)


def test_peer_address() -> None:
    assert peer_address("ipv4:127.0.0.1:5555") == "127.0.0.1"
    assert peer_address("ipv6:[::1]:5555") == "::1"
    assert peer_address("ipv6:%5B2001:db8::1%5D:80") == "2001:db8::1"
    assert peer_address("10.0.0.1") == "10.0.0.1"


def test_retry_info_is_at_least_a_second() -> None:
    s = status_from_error(ResourceExhausted("x", retry_after=0.1))
    [_, packed] = s.details
    r = error_details_pb2.RetryInfo()
    packed.Unpack(r)
    assert r.retry_delay.seconds == 1
