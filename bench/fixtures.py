"""Set-up data through the public API (the 100k list accounts are seeded, see ``seed.py``).

The platform admin from ``accounts-grpc bootstrap --json`` gets a token (CreateToken), makes
a bench tenant (CreateAccount), a human user H and a machine user M in it (CreateUser), a
partition (CreatePartition) with 16 devices (RegisterDevices), three groups reaching that
partition with M as a member (CreateUserGroup, AddUserGroupMembers), M's JWT
(CreateToken), and a session for H (CreateSession). It then walks ListAccounts to the
page-1,000 token once (only when the page-1,000 row is measured). Each step that fails
(an RPC still UNIMPLEMENTED, say) is recorded against what it would have produced, so
only the rows that need it are "n/a".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
from accounts.v1 import (
    account_pb2,
    account_service_pb2,
    account_service_pb2_grpc,
    partition_pb2,
    partition_service_pb2,
    partition_service_pb2_grpc,
    session_service_pb2,
    session_service_pb2_grpc,
    user_group_pb2,
    user_group_service_pb2,
    user_group_service_pb2_grpc,
    user_pb2,
    user_service_pb2,
    user_service_pb2_grpc,
)

from bench import rows
from bench.seed import NEEDLE

T = 30.0  # set-up calls get a generous deadline
N_DEVICES = 16
N_GROUPS = 3


def _why(e: BaseException) -> str:
    return f"{rows.error_code(e)}: {rows.error_detail(e)}" if isinstance(e, grpc.RpcError) \
        else f"{type(e).__name__}: {e}"


class Setup:
    def __init__(self, ctx: dict[str, Any], log: Callable[[str], None]) -> None:
        self.ctx = ctx
        self.failed: dict[str, str] = {}  # ctx key -> why it could not be made
        self.log = log

    def step(self, name: str, needs: tuple[str, ...], makes: tuple[str, ...],
             fn: Callable[[], dict[str, Any]]) -> None:
        missing = [k for k in needs if k not in self.ctx]
        if missing:
            why = self.failed.get(missing[0], f"set-up {name}: no {missing[0]}")
            self.log(f"  set-up {name}: skipped ({why})")
            for k in makes:
                self.failed.setdefault(k, why)
            return
        t0 = time.perf_counter()
        try:
            made = fn()
        except Exception as e:
            why = f"set-up {name}: {rows.error_code(e)}"
            self.log(f"  set-up {name}: FAILED {_why(e)}")
            for k in makes:
                self.failed[k] = why
            return
        self.ctx.update(made)
        self.log(f"  set-up {name}: ok ({time.perf_counter() - t0:.2f}s)")


def run_setup(ctx: dict[str, Any], *, page: int | None,
              log: Callable[[str], None]) -> dict[str, str]:
    """Fill ``ctx`` with tokens and ids; return {ctx key: why it is missing}. ``page``:
    walk to that page's token (None: no walk)."""
    s = Setup(ctx, log)
    ch = grpc.insecure_channel(ctx["grpc_address"])
    try:
        _steps(s, ch, page)
    finally:
        ch.close()
    return s.failed


def _steps(s: Setup, ch: grpc.Channel, page: int | None) -> None:
    ctx = s.ctx
    accts = account_service_pb2_grpc.AccountServiceStub(ch)
    users = user_service_pb2_grpc.UserServiceStub(ch)
    groups = user_group_service_pb2_grpc.UserGroupServiceStub(ch)
    parts = partition_service_pb2_grpc.PartitionServiceStub(ch)
    sess = session_service_pb2_grpc.SessionServiceStub(ch)
    stamp = time.strftime("%H%M%S")

    def token(client_id: str, secret: str) -> str:
        r = sess.CreateToken(session_service_pb2.CreateTokenRequest(
            grant_type="client_credentials", client_id=client_id, client_secret=secret), timeout=T)
        return str(r.access_token)

    def admin() -> tuple[tuple[str, str], ...]:
        return rows.bearer(ctx["admin_token"])

    s.step("CreateToken (admin)", ("admin_client_id",), ("admin_token",),
           lambda: {"admin_token": token(ctx["admin_client_id"], ctx["admin_client_secret"])})

    def tenant() -> dict[str, Any]:
        r = accts.CreateAccount(account_service_pb2.CreateAccountRequest(
            account=account_pb2.Account(name=f"Bench Tenant {stamp}",
                                        email=f"bench-{stamp}@tenant.example.com"),
            first_user=user_pb2.User(kind=user_pb2.USER_KIND_HUMAN,
                                     email=f"owner-{stamp}@tenant.example.com",
                                     first_name="Bench", last_name="Owner")),
            metadata=admin(), timeout=T)
        return {"tenant_id": r.account.id}

    s.step("CreateAccount (bench tenant)", ("admin_token",), ("tenant_id",), tenant)

    def human() -> dict[str, Any]:
        r = users.CreateUser(user_service_pb2.CreateUserRequest(
            account_id=ctx["tenant_id"],
            user=user_pb2.User(kind=user_pb2.USER_KIND_HUMAN, email=f"h-{stamp}@tenant.example.com",
                               first_name="Hannah", last_name="Bench")),
            metadata=admin(), timeout=T)
        return {"human_user_id": r.user.id}

    s.step("CreateUser (human H)", ("tenant_id",), ("human_user_id",), human)

    def machine() -> dict[str, Any]:
        r = users.CreateUser(user_service_pb2.CreateUserRequest(
            account_id=ctx["tenant_id"],
            user=user_pb2.User(kind=user_pb2.USER_KIND_MACHINE, first_name="bench-member")),
            metadata=admin(), timeout=T)
        return {"member_user_id": r.user.id, "member_client_id": r.user.client_id,
                "member_client_secret": r.client_secret}

    s.step("CreateUser (machine M)", ("tenant_id",), ("member_user_id",), machine)

    def partition() -> dict[str, Any]:
        r = parts.CreatePartition(partition_service_pb2.CreatePartitionRequest(
            account_id=ctx["tenant_id"], partition=partition_pb2.Partition(name="bench-site")),
            metadata=admin(), timeout=T)
        return {"partition_id": r.partition.id}

    s.step("CreatePartition", ("tenant_id",), ("partition_id",), partition)

    def devices() -> dict[str, Any]:
        ids = [f"BD{stamp[-2:]}{i:04d}" for i in range(N_DEVICES)]  # exactly 8 characters
        parts.RegisterDevices(partition_service_pb2.RegisterDevicesRequest(
            partition_id=ctx["partition_id"],
            devices=[partition_pb2.Device(device_id=d, name=f"bench device {d}") for d in ids]),
            metadata=admin(), timeout=T)
        return {"device_ids": ids}

    s.step("RegisterDevices (16)", ("partition_id",), ("device_ids",), devices)

    def group_setup() -> dict[str, Any]:
        made = []
        for g in range(N_GROUPS):
            r = groups.CreateUserGroup(user_group_service_pb2.CreateUserGroupRequest(
                account_id=ctx["tenant_id"],
                user_group=user_group_pb2.UserGroup(
                    name=f"bench-group-{g}", description="bench",
                    partition_ids=[ctx["partition_id"]])),
                metadata=admin(), timeout=T)
            groups.AddUserGroupMembers(user_group_service_pb2.AddUserGroupMembersRequest(
                id=r.user_group.id, user_ids=[ctx["member_user_id"]]), metadata=admin(), timeout=T)
            made.append(r.user_group.id)
        return {"group_ids": made}

    s.step("CreateUserGroup x3 + AddUserGroupMembers", ("member_user_id", "partition_id"),
           ("group_ids",), group_setup)

    s.step("CreateToken (M)", ("member_client_id", "group_ids"), ("member_token",),
           lambda: {"member_token": token(ctx["member_client_id"], ctx["member_client_secret"])})

    def session() -> dict[str, Any]:
        r = sess.CreateSession(session_service_pb2.CreateSessionRequest(
            user=user_pb2.UserRef(user_id=ctx["human_user_id"]), user_agent="bench"),
            metadata=admin(), timeout=T)
        return {"session_token": r.access_token}

    s.step("CreateSession (H)", ("human_user_id",), ("session_token",), session)

    def walk() -> dict[str, Any]:
        """The token of page ``page`` (page size 20). AIP-158 lets page_size change between
        pages and keyset tokens only hold the last row's sort key, so stride with pages of
        1,000 first, then 20s; the first row of the page fetched is checked against the
        seeded order, and if the server refuses the stride we walk 20 at a time."""
        assert page is not None
        target = (page - 1) * rows.PAGE_SIZE  # rows before the page we want
        t0 = time.perf_counter()
        calls = 0
        for stride in (1000, rows.PAGE_SIZE):
            tok, done = "", 0
            try:
                while done < target:
                    size = stride if target - done >= stride else rows.PAGE_SIZE
                    r = accts.ListAccounts(account_service_pb2.ListAccountsRequest(
                        page_size=size, page_token=tok), metadata=admin(), timeout=T)
                    calls += 1
                    done += len(r.accounts)
                    tok = r.next_page_token
                    if not tok:
                        break
                check = accts.ListAccounts(account_service_pb2.ListAccountsRequest(
                    page_size=rows.PAGE_SIZE, page_token=tok), metadata=admin(), timeout=T)
            except grpc.RpcError as e:
                if stride == rows.PAGE_SIZE or e.code() != grpc.StatusCode.INVALID_ARGUMENT:
                    raise
                continue
            first = check.accounts[0].name if check.accounts else ""
            if done == target and first.endswith(f"{target:06d}"):
                break  # the stride landed exactly where 999 pages of 20 would have
            if stride == rows.PAGE_SIZE:
                break
        reached = done // rows.PAGE_SIZE + 1
        s.log(f"  page {reached} token after {calls} ListAccounts calls in "
              f"{time.perf_counter() - t0:.1f}s; it starts at {first!r}")
        return {"page1000_token": tok, "page_reached": reached}

    if page is not None:
        s.step(f"ListAccounts walk to page {page}", ("admin_token",), ("page1000_token",), walk)
    else:
        s.failed["page1000_token"] = "not set up"

    def filtered() -> dict[str, Any]:
        r = accts.ListAccounts(account_service_pb2.ListAccountsRequest(
            page_size=rows.PAGE_SIZE, filter=NEEDLE), metadata=admin(), timeout=T)
        return {"filter": NEEDLE, "filter_total": r.total_size, "filter_page": len(r.accounts)}

    ctx["filter"] = NEEDLE
    s.step("ListAccounts filter probe", ("admin_token",), ("filter_total",), filtered)


def total_size(ctx: dict[str, Any], filtered: bool) -> int:
    """The ``total_size`` ListAccounts answers for the first page (filtered or not)."""
    with grpc.insecure_channel(ctx["grpc_address"]) as ch:
        req = account_service_pb2.ListAccountsRequest(page_size=rows.PAGE_SIZE)
        if filtered:
            req.filter = ctx["filter"]
        r = account_service_pb2_grpc.AccountServiceStub(ch).ListAccounts(
            req, metadata=rows.bearer(ctx["admin_token"]), timeout=T)
        return int(r.total_size)
