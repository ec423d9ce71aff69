"""Every AccountService RPC, for every role, against its own account, a client account
and a stranger's account: the exact outcome of each cell.

The world (built once per server through the public API, as admin):
- the platform account P (bootstrap): ``admin`` (the bootstrap machine user) and an
  ``admin-reader``;
- a consultancy C (account role ``consultancy``): its first user (``account-admin``), a
  ``member`` and a ``consultant``;
- X, a client of C (``consultancy_account_id`` = C);
- S, a stranger's account;
- an intermediary account I (account role ``intermediary``) with a MACHINE user that has
  no role but ``member``.

Columns: "own" is the caller's account, "client" is X (C's client: only C's consultant
may read it), "stranger" is S. A role the RPC does not admit at all is refused by the
proto's access rule before anything is loaded (PERMISSION_DENIED ROLE_REQUIRED, the same
for every target, so nothing leaks); an admitted role that may not see the account gets
NOT_FOUND (ACCOUNT_NOT_FOUND), exactly as for an id that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from accounts.v1 import account_pb2, account_service_pb2, user_service_pb2
from google.protobuf import field_mask_pb2

from tests.e2e.accounts_helpers import (
    MACHINE,
    Md,
    add_user,
    get,
    human_token,
    new_account,
    pb,
    uniq,
    update,
)
from tests.support import Server, failure

CALLERS = ["member", "account-admin", "consultant", "admin-reader", "admin", "intermediary-machine"]
TARGETS = ["own", "client", "stranger"]

OK = "OK"
LISTED, HIDDEN = "listed", "hidden"
ROLE = ("PERMISSION_DENIED", "ROLE_REQUIRED")  # refused by the RPC's access rule
FIELD = ("PERMISSION_DENIED", "FIELD_PERMISSION_DENIED")  # a masked path beyond the caller
NF = ("NOT_FOUND", "ACCOUNT_NOT_FOUND")
OWN_ACCOUNT = ("FAILED_PRECONDITION", "OWN_ACCOUNT")

# rpc → caller → (own, client, stranger)
EXPECT: dict[str, dict[str, tuple[Any, Any, Any]]] = {
    "GetAccount": {
        "member": (OK, NF, NF),
        "account-admin": (OK, NF, NF),
        "consultant": (OK, OK, NF),
        "admin-reader": (OK, OK, OK),
        "admin": (OK, OK, OK),
        "intermediary-machine": (OK, NF, NF),
    },
    "GetAccountByEmail": {
        "member": (OK, NF, NF),
        "account-admin": (OK, NF, NF),
        "consultant": (OK, OK, NF),
        "admin-reader": (OK, OK, OK),
        "admin": (OK, OK, OK),
        "intermediary-machine": (OK, NF, NF),
    },
    "ListAccounts": {
        "member": (LISTED, HIDDEN, HIDDEN),
        "account-admin": (LISTED, HIDDEN, HIDDEN),
        "consultant": (LISTED, LISTED, HIDDEN),
        "admin-reader": (LISTED, LISTED, LISTED),
        "admin": (LISTED, LISTED, LISTED),
        "intermediary-machine": (LISTED, HIDDEN, HIDDEN),
    },
    "UpdateAccount(name)": {
        "member": (ROLE, ROLE, ROLE),
        "account-admin": (OK, NF, NF),
        "consultant": (ROLE, ROLE, ROLE),
        "admin-reader": (ROLE, ROLE, ROLE),
        "admin": (OK, OK, OK),
        "intermediary-machine": (ROLE, ROLE, ROLE),
    },
    "UpdateAccount(roles)": {
        "member": (ROLE, ROLE, ROLE),
        "account-admin": (FIELD, NF, NF),
        "consultant": (ROLE, ROLE, ROLE),
        "admin-reader": (ROLE, ROLE, ROLE),
        "admin": (OK, OK, OK),
        "intermediary-machine": (ROLE, ROLE, ROLE),
    },
    "UpdateAccount(consultancy_account_id)": {
        "member": (ROLE, ROLE, ROLE),
        "account-admin": (FIELD, NF, NF),
        "consultant": (ROLE, ROLE, ROLE),
        "admin-reader": (ROLE, ROLE, ROLE),
        "admin": (OK, OK, OK),
        "intermediary-machine": (ROLE, ROLE, ROLE),
    },
    "CloseAccount": {
        "member": (ROLE, ROLE, ROLE),
        "account-admin": (ROLE, ROLE, ROLE),
        "consultant": (ROLE, ROLE, ROLE),
        "admin-reader": (ROLE, ROLE, ROLE),
        "admin": (OWN_ACCOUNT, OK, OK),
        "intermediary-machine": (ROLE, ROLE, ROLE),
    },
    "ListAuditEvents": {
        "member": (ROLE, ROLE, ROLE),
        "account-admin": (OK, NF, NF),
        "consultant": (ROLE, ROLE, ROLE),
        "admin-reader": (OK, OK, OK),
        "admin": (OK, OK, OK),
        "intermediary-machine": (ROLE, ROLE, ROLE),
    },
    # the feed of one account: whoever may list its audit events (the same rule)
    "WatchEvents": {
        "member": (ROLE, ROLE, ROLE),
        "account-admin": (OK, NF, NF),
        "consultant": (ROLE, ROLE, ROLE),
        "admin-reader": (OK, OK, OK),
        "admin": (OK, OK, OK),
        "intermediary-machine": (ROLE, ROLE, ROLE),
    },
}
# CreateAccount names no existing account: one cell per caller
EXPECT_CREATE = {
    "member": ROLE,
    "account-admin": ROLE,
    "consultant": ROLE,
    "admin-reader": ROLE,
    "admin": OK,
    "intermediary-machine": ROLE,
}


@dataclass
class World:
    server: Server
    callers: dict[str, Md]
    own: dict[str, str]  # caller → its account id
    consultancy: str
    client: str
    stranger: str

    def target(self, caller: str, which: str) -> str:
        return {"own": self.own[caller], "client": self.client, "stranger": self.stranger}[which]

    def fresh_target(self, which: str) -> str:
        """A throw-away account in the same relation, for cells that close an account."""
        if which == "client":
            return new_account(self.server, consultancy_account_id=self.consultancy).account.id
        return new_account(self.server).account.id


@pytest.fixture(scope="module")
def world(server: Server) -> World:
    me = server.stubs.users.GetMe(user_service_pb2.GetMeRequest(), metadata=server.admin)
    platform = me.account.id
    reader = add_user(server, platform, roles=("admin-reader",))

    c = new_account(server, name=uniq("Consultancy "))
    cons = update(server, account_pb2.Account(id=c.account.id, roles=["consultancy"]), ["roles"])
    assert list(cons.roles) == ["consultancy"]
    x = new_account(server, name=uniq("Client "))
    client = update(
        server, account_pb2.Account(id=x.account.id, consultancy_account_id=c.account.id)
    )
    assert client.consultancy_account_id == c.account.id
    s = new_account(server, name=uniq("Stranger "))
    i = new_account(server, name=uniq("Intermediary "), roles=("intermediary",))

    member = add_user(server, c.account.id)
    consultant = add_user(server, c.account.id, roles=("consultant",))
    machine = add_user(server, i.account.id, kind=MACHINE)
    callers = {
        "member": member.metadata,
        "account-admin": human_token(server, c.first_user),
        "consultant": consultant.metadata,
        "admin-reader": reader.metadata,
        "admin": server.admin,
        "intermediary-machine": machine.metadata,
    }
    own = {
        "member": c.account.id,
        "account-admin": c.account.id,
        "consultant": c.account.id,
        "admin-reader": platform,
        "admin": platform,
        "intermediary-machine": i.account.id,
    }
    return World(server, callers, own, c.account.id, x.account.id, s.account.id)


def outcome(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        fn(*args, **kwargs)
    except grpc.RpcError as e:
        f = failure(e)
        assert f.domain == "accounts.v1", f"no ErrorInfo: {f}"
        return (f.code.name, f.reason)
    return OK


def run_cell(w: World, rpc: str, caller: str, which: str) -> Any:
    srv, md = w.server, w.callers[caller]
    stub = srv.stubs.accounts
    if rpc == "CloseAccount" and not (caller == "admin" and which == "own"):
        # a cell that might succeed closes a throw-away account in the same relation
        target = w.fresh_target(which) if caller == "admin" else w.target(caller, which)
    else:
        target = w.target(caller, which)
    current = get(srv, target)  # as admin: names, emails and roles to send back
    if rpc == "GetAccount":
        return outcome(stub.GetAccount, pb.GetAccountRequest(id=target), metadata=md)
    if rpc == "GetAccountByEmail":
        return outcome(
            stub.GetAccount, pb.GetAccountRequest(email=current.email.upper()), metadata=md
        )
    if rpc == "ListAccounts":
        resp = stub.ListAccounts(pb.ListAccountsRequest(page_size=1000), metadata=md)
        assert not resp.next_page_token
        return LISTED if target in {a.id for a in resp.accounts} else HIDDEN
    if rpc == "UpdateAccount(name)":
        acct = account_pb2.Account(id=target, name=f"{current.name.split(' ~')[0]} ~{caller}")
        return outcome(stub.UpdateAccount, pb.UpdateAccountRequest(account=acct), metadata=md)
    if rpc == "UpdateAccount(roles)":
        # an explicit mask: asking is what needs the right, even for the same value
        acct = account_pb2.Account(id=target, roles=list(current.roles))
        req = pb.UpdateAccountRequest(
            account=acct, update_mask=field_mask_pb2.FieldMask(paths=["roles"])
        )
        return outcome(stub.UpdateAccount, req, metadata=md)
    if rpc == "UpdateAccount(consultancy_account_id)":
        acct = account_pb2.Account(id=target, consultancy_account_id=current.consultancy_account_id)
        req = pb.UpdateAccountRequest(
            account=acct, update_mask=field_mask_pb2.FieldMask(paths=["consultancy_account_id"])
        )
        return outcome(stub.UpdateAccount, req, metadata=md)
    if rpc == "CloseAccount":
        got = outcome(stub.CloseAccount, pb.CloseAccountRequest(id=target), metadata=md)
        assert get(srv, target).closed == (got == OK)
        return got
    if rpc == "ListAuditEvents":
        return outcome(
            stub.ListAuditEvents, pb.ListAuditEventsRequest(account_id=target), metadata=md
        )
    if rpc == "WatchEvents":
        return outcome(watch_opens, stub, pb.WatchEventsRequest(account_id=target), md)
    raise AssertionError(rpc)


def watch_opens(stub: Any, request: pb.WatchEventsRequest, md: Md) -> None:
    """A refused stream fails at once; an admitted one, from "now", waits for an event
    that never comes until its deadline (which is then the sign it was open)."""
    try:
        next(stub.WatchEvents(request, metadata=md, timeout=1.0))
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
            raise


CELLS = [(rpc, caller, i) for rpc in EXPECT for caller in CALLERS for i in range(3)]


@pytest.mark.parametrize(
    ("rpc", "caller", "col"), CELLS, ids=[f"{r}-{c}-{TARGETS[i]}" for r, c, i in CELLS]
)
def test_cell(world: World, rpc: str, caller: str, col: int) -> None:
    want = EXPECT[rpc][caller][col]
    got = run_cell(world, rpc, caller, TARGETS[col])
    assert got == want, f"{rpc} by {caller} on {TARGETS[col]}: expected {want}, got {got}"


@pytest.mark.parametrize("caller", CALLERS)
def test_create_account(world: World, caller: str) -> None:
    got = outcome(new_account, world.server, metadata=world.callers[caller])
    assert got == EXPECT_CREATE[caller]


def test_the_matrix_covers_every_rpc() -> None:
    rpcs = {
        m.name for m in account_service_pb2.DESCRIPTOR.services_by_name["AccountService"].methods
    }
    covered = {r.split("(")[0].replace("ByEmail", "") for r in EXPECT} | {"CreateAccount"}
    assert rpcs == covered
    for table in EXPECT.values():
        assert set(table) == set(CALLERS)


def test_not_found_for_strangers_is_the_same_as_for_nothing(world: World) -> None:
    """A stranger's account and an id that exists nowhere answer alike (nothing leaks)."""
    md = world.callers["account-admin"]
    stub = world.server.stubs.accounts
    nowhere = "00000000-0000-4000-8000-000000000000"
    a = failure_of(stub.GetAccount, pb.GetAccountRequest(id=world.stranger), md)
    b = failure_of(stub.GetAccount, pb.GetAccountRequest(id=nowhere), md)
    assert (a.code, a.reason) == (b.code, b.reason)
    assert a.message.replace(world.stranger, "ID") == b.message.replace(nowhere, "ID")


def failure_of(fn: Any, req: Any, md: Md) -> Any:
    try:
        fn(req, metadata=md)
    except grpc.RpcError as e:
        return failure(e)
    raise AssertionError("expected a failure")


def test_consultant_loses_a_client_when_the_link_is_removed(world: World) -> None:
    srv = world.server
    x2 = new_account(srv, consultancy_account_id=world.consultancy).account
    md = world.callers["consultant"]
    assert get(srv, x2.id, md).id == x2.id
    update(srv, account_pb2.Account(id=x2.id), ["consultancy_account_id"])
    assert outcome(get, srv, x2.id, md) == NF


def test_closed_client_is_hidden_from_its_consultant(world: World) -> None:
    srv = world.server
    x3 = new_account(srv, consultancy_account_id=world.consultancy).account
    srv.stubs.accounts.CloseAccount(pb.CloseAccountRequest(id=x3.id), metadata=srv.admin)
    assert outcome(get, srv, x3.id, world.callers["consultant"]) == NF
    assert get(srv, x3.id, world.callers["admin-reader"]).closed
    listed = srv.stubs.accounts.ListAccounts(
        pb.ListAccountsRequest(page_size=1000, show_closed=True),
        metadata=world.callers["consultant"],
    )
    assert x3.id not in {a.id for a in listed.accounts}
