"""AccountService's errors end to end: one real call per RPC and per error class, over
gRPC (the status code, the ErrorInfo reason, the field violation, and that no account
row, user or audit event changed: tests/e2e/accounts_helpers.snapshot) and over REST
(the HTTP status and grpc-gateway body). The rules themselves, case by case, are asked
of the use cases in process: tests/usecases/test_accounts.py (its docstring maps each
test that was here to its new home).

Sizes: the server accepts messages up to 4 MiB (rpc/server.py). A 3 MB name reaches the
service and is a clean INVALID_ARGUMENT with a violation on the field; a 10 MB name
never does: grpc itself refuses the message with RESOURCE_EXHAUSTED ("Received message
larger than max"), before any of our code runs, so that answer has no ErrorInfo. That
is the honest outcome and the test pins it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from accounts.v1 import account_pb2, user_pb2
from google.protobuf import field_mask_pb2

from tests.e2e.accounts_helpers import new_account, pb, snapshot, uniq
from tests.e2e.rest_helpers import rest_error
from tests.support import Server, expect_error, failure

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
NOWHERE = "7d0c4a43-2b1e-4c55-9b7e-8c5f3a6d1e20"  # a well-formed id of no account
MB = 1_000_000


@dataclass(frozen=True)
class Case:
    rpc: str
    build: Callable[[str], Any]  # target account id → request
    code: grpc.StatusCode
    reason: str
    field: str | None


def create(**account: Any) -> Callable[[str], Any]:
    """CreateAccount of a fine account with these fields changed, and a fine first user."""
    fields = {"name": "Fine", "email": f"{uniq()}@x.io", **account}
    return lambda _target: pb.CreateAccountRequest(
        account=account_pb2.Account(**fields), first_user=user_pb2.User(email=f"{uniq()}@x.io"))


def fixed(msg: Any) -> Callable[[str], Any]:
    return lambda _target: msg


CASES: dict[str, Case] = {
    "create-3mb-name": Case("CreateAccount", create(name="n" * (3 * MB)), INVALID,
                            "INVALID_ARGUMENT", "account.name"),
    "create-control-char-name": Case("CreateAccount", create(name="a\x00b"), INVALID,
                                     "INVALID_CHARACTER", "account.name"),
    "update-mask-closed": Case("UpdateAccount", lambda target: pb.UpdateAccountRequest(
        account=account_pb2.Account(id=target, name="x"),
        update_mask=field_mask_pb2.FieldMask(paths=["name", "closed"])), INVALID,
        "INVALID_UPDATE_MASK", "update_mask.paths[1]"),
    "get-unknown-id": Case("GetAccount", fixed(pb.GetAccountRequest(id=NOWHERE)), NOT_FOUND,
                           "ACCOUNT_NOT_FOUND", None),
    "audit-unknown-id": Case("ListAuditEvents", fixed(pb.ListAuditEventsRequest(
        account_id=NOWHERE)), NOT_FOUND, "ACCOUNT_NOT_FOUND", None),
    "close-bad-id": Case("CloseAccount", fixed(pb.CloseAccountRequest(id="x" * 36)), INVALID,
                         "INVALID_ID", "id"),
    "list-garbage-token": Case("ListAccounts", fixed(pb.ListAccountsRequest(
        page_token="garbage")), INVALID, "INVALID_PAGE_TOKEN", "page_token"),
}


@pytest.fixture(scope="module")
def target(server: Server) -> str:
    return new_account(server, name=uniq("Target ")).account.id


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(server: Server, target: str, name: str) -> None:
    case = CASES[name]
    before = snapshot(server)
    fn = getattr(server.stubs.accounts, case.rpc)
    f = expect_error(fn, case.build(target), metadata=server.admin, code=case.code,
                     reason=case.reason, field=case.field)
    assert len(f.message) < 500, "the error echoes the input"
    if case.code == INVALID:
        assert f.violations, "INVALID_ARGUMENT without field violations"
    assert snapshot(server) == before, "a failed call changed something"


def test_a_message_over_4mb_is_refused_by_grpc(server: Server) -> None:
    """10 MB never reaches the service: grpc answers RESOURCE_EXHAUSTED itself."""
    before = snapshot(server)
    req = create(name="n" * (10 * MB))("")
    with pytest.raises(grpc.RpcError) as info:
        server.stubs.accounts.CreateAccount(req, metadata=server.admin)
    f = failure(info.value)
    assert f.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in f.message
    assert snapshot(server) == before
    # and the server is fine afterwards
    server.stubs.accounts.GetAccount(pb.GetAccountRequest(), metadata=server.admin)


@pytest.mark.parametrize(("method", "path", "body", "status", "code", "reason", "field"), [
    ("PATCH", "/v1/accounts/{target}", {"email": "nope@"}, 400, INVALID, "INVALID_ARGUMENT",
     "account.email"),
    ("GET", f"/v1/accounts/{NOWHERE}", None, 404, NOT_FOUND, "ACCOUNT_NOT_FOUND", None),
])
def test_rest_error(server: Server, target: str, method: str, path: str, body: Any,
                    status: int, code: grpc.StatusCode, reason: str, field: str | None) -> None:
    rest_error(server, method, path.format(target=target), body=body, snapshot=snapshot,
               token=server.admin_token, status=status, code=code, reason=reason, field=field)
