"""Idempotent creates on a real server: retries, concurrent retries, reused ids."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
from accounts.v1 import account_pb2, user_pb2

from tests.e2e.accounts_helpers import (
    account_count,
    audit_count,
    pb,
    snapshot,
    uniq,
    user_count,
)
from tests.support import Server, expect_error


def request(request_id: str, name: str | None = None) -> pb.CreateAccountRequest:
    tag = uniq()
    return pb.CreateAccountRequest(
        account=account_pb2.Account(name=name or f"Idem {tag}", email=f"idem-{tag}@x.io"),
        first_user=user_pb2.User(email=f"first-{tag}@x.io", first_name="I"),
        request_id=request_id,
    )


def test_retry_returns_the_first_result_and_creates_nothing(server: Server) -> None:
    req = request(uniq("req-"))
    first = server.stubs.accounts.CreateAccount(req, metadata=server.admin)
    before = (account_count(server), user_count(server), audit_count(server))
    again = server.stubs.accounts.CreateAccount(req, metadata=server.admin)
    assert again.account.id == first.account.id
    assert again.first_user.id == first.first_user.id
    assert again == first  # nothing changed meanwhile: the very same result
    assert (account_count(server), user_count(server), audit_count(server)) == before


def test_retry_after_a_change_returns_the_resource_as_it_is_now(server: Server) -> None:
    req = request(uniq("req-"))
    first = server.stubs.accounts.CreateAccount(req, metadata=server.admin)
    server.stubs.accounts.UpdateAccount(pb.UpdateAccountRequest(
        account=account_pb2.Account(id=first.account.id, name="Changed")), metadata=server.admin)
    again = server.stubs.accounts.CreateAccount(req, metadata=server.admin)
    assert again.account.id == first.account.id and again.account.name == "Changed"


def test_same_id_for_another_request_is_invalid(server: Server) -> None:
    rid = uniq("req-")
    server.stubs.accounts.CreateAccount(request(rid), metadata=server.admin)
    before = snapshot(server)
    expect_error(server.stubs.accounts.CreateAccount, request(rid), metadata=server.admin,
                 code=grpc.StatusCode.INVALID_ARGUMENT, reason="REQUEST_ID_REUSED",
                 field="request_id")
    assert snapshot(server) == before


def test_without_request_id_every_call_creates(server: Server) -> None:
    req = request("")
    a = server.stubs.accounts.CreateAccount(req, metadata=server.admin)
    req.account.email = f"{uniq()}@x.io"
    b = server.stubs.accounts.CreateAccount(req, metadata=server.admin)
    assert a.account.id != b.account.id


def test_overlong_request_id_is_invalid(server: Server) -> None:
    before = snapshot(server)
    expect_error(server.stubs.accounts.CreateAccount, request("r" * 201), metadata=server.admin,
                 code=grpc.StatusCode.INVALID_ARGUMENT, field="request_id")
    assert snapshot(server) == before


def test_concurrent_calls_with_one_id_create_one_account(server: Server) -> None:
    req = request(uniq("race-"))
    n = 8
    barrier = threading.Barrier(n)
    before = account_count(server)

    def call(_: int) -> pb.CreateAccountResponse:
        barrier.wait()
        return server.stubs.accounts.CreateAccount(req, metadata=server.admin, timeout=30)

    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(call, range(n)))
    assert len({r.account.id for r in results}) == 1
    assert len({r.first_user.id for r in results}) == 1
    assert account_count(server) == before + 1
    listed = server.stubs.accounts.ListAccounts(
        pb.ListAccountsRequest(filter=f'"{req.account.name}"'), metadata=server.admin)
    assert listed.total_size == 1


def test_concurrent_creates_with_one_email_make_one_account(server: Server) -> None:
    """Without request ids, the email's unique index decides: one wins, the rest are
    ALREADY_EXISTS, never INTERNAL."""
    email = f"{uniq('race-')}@x.io"
    n = 6
    barrier = threading.Barrier(n)

    def call(i: int) -> str:
        r = request("")
        r.account.email = email
        barrier.wait()
        try:
            server.stubs.accounts.CreateAccount(r, metadata=server.admin, timeout=30)
            return "OK"
        except grpc.RpcError as e:
            return e.code().name

    with ThreadPoolExecutor(n) as pool:
        outcomes = sorted(pool.map(call, range(n)))
    assert outcomes == ["ALREADY_EXISTS"] * (n - 1) + ["OK"]


def _race(server: Server, reqs: list[pb.UpdateAccountRequest]) -> list[str]:
    barrier = threading.Barrier(len(reqs))

    def call(req: pb.UpdateAccountRequest) -> str:
        barrier.wait()
        try:
            server.stubs.accounts.UpdateAccount(req, metadata=server.admin, timeout=30)
            return "OK"
        except grpc.RpcError as e:
            return e.code().name

    with ThreadPoolExecutor(len(reqs)) as pool:
        return list(pool.map(call, reqs))


def test_concurrent_updates_without_etag_both_apply(server: Server) -> None:
    a = server.stubs.accounts.CreateAccount(request(""), metadata=server.admin).account
    out = _race(server, [
        pb.UpdateAccountRequest(account=account_pb2.Account(id=a.id, primary_color="#111111")),
        pb.UpdateAccountRequest(account=account_pb2.Account(id=a.id, secondary_color="#222222")),
    ])
    assert out == ["OK", "OK"]
    now = server.stubs.accounts.GetAccount(pb.GetAccountRequest(id=a.id),
                                           metadata=server.admin).account
    assert (now.primary_color, now.secondary_color) == ("#111111", "#222222")


def test_concurrent_updates_with_one_etag_one_wins(server: Server) -> None:
    a = server.stubs.accounts.CreateAccount(request(""), metadata=server.admin).account
    before = audit_count(server, a.id)
    out = _race(server, [
        pb.UpdateAccountRequest(account=account_pb2.Account(id=a.id, name=f"N{i}", etag=a.etag))
        for i in range(4)
    ])
    assert sorted(out) == ["ABORTED"] * 3 + ["OK"]
    assert audit_count(server, a.id) == before + 1
