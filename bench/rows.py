"""The rows of the tables: what each one calls, what it needs, and the aims it is held to.

A row's call is built per client (a thread, or an asyncio task with ``aio=True``) by
``build_call(key, ctx, channel, i)`` and is one closed-loop iteration: it returns when the
response (or error) is back (with ``aio=True`` it returns an awaitable that does). ``ctx``
holds what the set-up made (addresses, tokens, ids); a row whose ``needs`` are missing
from it is "n/a" with the set-up error that stopped it.

Aims (the issue "Serving under real load"): a row is "met" only if every part of its aim
holds: its rps / its baseline row's rps (same run, same database) >= ``aim``, its p99
under ``p99_max_ms``, no failed call (``no_errors``), and an exact ``total_size``
(``exact_total``: the first page's count equals the accounts counted in the database).
"""

from __future__ import annotations

import http.client
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from accounts.v1 import (
    access_pb2,
    account_service_pb2,
    account_service_pb2_grpc,
    session_service_pb2,
    session_service_pb2_grpc,
    user_group_service_pb2,
    user_group_service_pb2_grpc,
    user_pb2,
    user_service_pb2,
    user_service_pb2_grpc,
)

from bench.echo_server import METHOD as ECHO_METHOD

CALL_TIMEOUT = 10.0  # seconds; every call is bounded
PAGE_SIZE = 20
ECHO_PAYLOAD = b"x" * 64


@dataclass(frozen=True)
class Row:
    key: str
    title: str
    kind: str = "grpc"  # "grpc" (accounts server), "echo" (echo server), "http" (REST shim),
    #                     "local" (a PyJWT loop in a pinned subprocess, no server)
    needs: tuple[str, ...] = ()
    baseline: str | None = None  # key of the row this one is compared with
    aim: float | None = None  # this row's rps / the baseline's rps must be >= aim
    aim_text: str = ""
    p99_max_ms: float | None = None  # and its p99 must be under this
    no_errors: bool = False  # and no call may fail
    exact_total: bool = False  # and total_size must equal the accounts counted
    extra: bool = False  # not in the default table (``--rows all`` adds it)
    note: str = ""

    @property
    def per_db(self) -> bool:
        """Measured once per database (False: the echo and the PyJWT loop, shared)."""
        return self.kind not in ("echo", "local")


ROWS: tuple[Row, ...] = (
    Row("echo", "bare grpcio echo (ceiling)", "echo", ("echo_address",)),
    Row("getme_jwt", "GetMe (JWT)", needs=("admin_token",), baseline="echo", aim=0.6,
        p99_max_ms=50, no_errors=True, aim_text=">= 0.6x echo, p99 < 50ms, 0 err"),
    Row("get_account", "GetAccount by id", needs=("account_id",), baseline="echo", aim=0.5,
        p99_max_ms=50, no_errors=True, aim_text=">= 0.5x echo, p99 < 50ms, 0 err"),
    Row("list_p1", "ListAccounts page 1 (20 of 100k)", needs=("admin_token",),
        baseline="get_account", aim=0.5, exact_total=True,
        aim_text=">= 0.5x GetAccount, exact total"),
    Row("list_filtered", "ListAccounts filtered (1% match)", needs=("admin_token",),
        baseline="get_account", aim=0.4, aim_text=">= 0.4x GetAccount",
        note="FlexMeasures REST: ~10 req/s"),
    Row("pyjwt_sign", "PyJWT sign loop", "local",
        note="1 thread, pinned to the server's core, no server running"),
    Row("create_token", "CreateToken (client credentials)", needs=("admin_client_id",),
        baseline="pyjwt_sign", aim=0.5, aim_text=">= 0.5x PyJWT sign",
        note="signs one JWT per call"),
    # --rows all (or by name): the rest of the service's hot paths
    Row("getme_session", "GetMe, session token", needs=("session_token",), baseline="echo",
        extra=True),
    Row("list_p1000", "ListAccounts page 1,000", needs=("page1000_token",), baseline="list_p1",
        aim=1 / 1.2, aim_text="cost <= 1.2x page 1", extra=True),
    Row("my_groups", "ListMyUserGroups (in 3 groups)", needs=("member_token",), extra=True),
    Row("add_device_perms", "AddDevicePermissions (re-add)",
        needs=("human_user_id", "device_ids"), extra=True),
    Row("session_getme", "CreateSession + GetMe(session)", needs=("human_user_id",),
        baseline="getme_session", note="one iteration = both calls", extra=True),
    Row("rest_get_account", "REST GET /v1/accounts/{id}", "http", ("account_id",),
        baseline="get_account", aim=0.5, aim_text=">= 0.5x gRPC GetAccount",
        note="FlexMeasures REST: ~130 req/s", extra=True),
    Row("rest_me", "REST GET /v1/me", "http", ("admin_token",), baseline="getme_jwt",
        extra=True),
    # issue 15: the access check, one asset and a batch of 100 (admin asks about user H)
    Row("check_access", "CheckAccess (1 device)", needs=("human_user_id", "device_ids"),
        baseline="get_account", aim=0.5, no_errors=True,
        aim_text=">= 0.5x GetAccount, 0 err"),
    Row("check_access_100", "CheckAccess batch of 100 devices",
        needs=("human_user_id", "device_ids"), baseline="check_access", aim=0.2,
        no_errors=True, aim_text=">= 0.2x the single call: >= 20x faster per asset",
        note="one call answers 100 checks"),
    Row("exchange_token", "ExchangeToken (RFC 8693, admin -> member)",
        needs=("admin_token", "account_id"), baseline="create_token",
        note="verifies, signs one JWT and audits the exchange per call", extra=True),
)
BY_KEY = {r.key: r for r in ROWS}


class HttpError(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(body[:200].decode("utf-8", "replace"))
        self.status = status


def error_code(e: BaseException) -> str:
    """A short name for a failed call: the gRPC code, 'HTTP 404', or the exception type."""
    if isinstance(e, grpc.RpcError) and hasattr(e, "code"):
        return str(e.code().name)
    if isinstance(e, HttpError):
        return "UNIMPLEMENTED" if e.status == 501 else f"HTTP {e.status}"
    return type(e).__name__


def error_detail(e: BaseException) -> str:
    if isinstance(e, grpc.RpcError) and hasattr(e, "details"):
        return str(e.details() or "")[:160]
    return str(e)[:160]


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _http_get(port: int, path: str, token: str) -> Callable[[], None]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CALL_TIMEOUT)
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    def call() -> None:
        try:
            conn.request("GET", path, headers=headers)
            r = conn.getresponse()
            body = r.read()
        except (OSError, http.client.HTTPException):
            conn.close()  # the next request reconnects
            raise
        if r.status != 200:
            raise HttpError(r.status, body)

    return call


def _access_call(users: Any, ctx: dict[str, Any], admin: Any, n: int,
                 i: int) -> Callable[[], Any]:
    """CheckAccess as admin about user H: ``n`` checks (read, control, charge in turn) of
    the tenant's devices, from device ``i`` on."""
    devices = ctx["device_ids"]
    actions = (access_pb2.ACCESS_ACTION_READ, access_pb2.ACCESS_ACTION_CONTROL,
               access_pb2.ACCESS_ACTION_CHARGE)
    req = user_service_pb2.CheckAccessRequest(user_id=ctx["human_user_id"], checks=[
        access_pb2.AccessCheck(action=actions[k % 3], device_id=devices[(i + k) % len(devices)])
        for k in range(n)])
    check = users.CheckAccess
    return lambda: check(req, metadata=admin, timeout=CALL_TIMEOUT)


def build_call(key: str, ctx: dict[str, Any], channel: Any, i: int, *,
               aio: bool = False) -> Callable[[], Any]:
    """One closed-loop iteration of row ``key`` for client ``i``. ``channel`` is a
    ``grpc.Channel``, or with ``aio=True`` a ``grpc.aio.Channel``: the generated stubs work
    on both, and then the call returns an awaitable (REST rows have no asyncio form)."""
    t = CALL_TIMEOUT
    if aio and BY_KEY[key].kind in ("http", "local"):
        raise ValueError(f"row {key!r} has no asyncio client")
    if key == "echo":
        assert channel is not None
        echo = channel.unary_unary(ECHO_METHOD)  # type: ignore[call-arg]  # raw bytes
        return lambda: echo(ECHO_PAYLOAD, timeout=t)
    if key == "rest_get_account":
        return _http_get(ctx["http_port"], f"/v1/accounts/{ctx['account_id']}", ctx["admin_token"])
    if key == "rest_me":
        return _http_get(ctx["http_port"], "/v1/me", ctx["admin_token"])

    assert channel is not None
    users = user_service_pb2_grpc.UserServiceStub(channel)
    accts = account_service_pb2_grpc.AccountServiceStub(channel)
    groups = user_group_service_pb2_grpc.UserGroupServiceStub(channel)
    sessions = session_service_pb2_grpc.SessionServiceStub(channel)
    admin = bearer(ctx["admin_token"]) if "admin_token" in ctx else ()

    if key == "getme_jwt":
        get_me, req = users.GetMe, user_service_pb2.GetMeRequest()
        return lambda: get_me(req, metadata=admin, timeout=t)
    if key == "getme_session":
        get_me, req = users.GetMe, user_service_pb2.GetMeRequest()
        md = bearer(ctx["session_token"])
        return lambda: get_me(req, metadata=md, timeout=t)
    if key == "create_token":
        create = sessions.CreateToken
        treq = session_service_pb2.CreateTokenRequest(
            grant_type="client_credentials", client_id=ctx["admin_client_id"],
            client_secret=ctx["admin_client_secret"])
        return lambda: create(treq, timeout=t)
    if key == "exchange_token":
        exchange = sessions.ExchangeToken
        xreq = session_service_pb2.ExchangeTokenRequest(
            subject_token=ctx["admin_token"], account_id=ctx["account_id"], scope="member",
            subject_token_type="urn:ietf:params:oauth:token-type:access_token")
        return lambda: exchange(xreq, timeout=t)
    if key == "get_account":
        get, areq = accts.GetAccount, account_service_pb2.GetAccountRequest(id=ctx["account_id"])
        return lambda: get(areq, metadata=admin, timeout=t)
    if key in ("list_p1", "list_p1000", "list_filtered"):
        lst = accts.ListAccounts
        lreq = account_service_pb2.ListAccountsRequest(page_size=PAGE_SIZE)
        if key == "list_p1000":
            lreq.page_token = ctx["page1000_token"]
        if key == "list_filtered":
            lreq.filter = ctx["filter"]
        return lambda: lst(lreq, metadata=admin, timeout=t)
    if key == "my_groups":
        mine = groups.ListMyUserGroups
        mreq = user_group_service_pb2.ListMyUserGroupsRequest()
        md = bearer(ctx["member_token"])
        return lambda: mine(mreq, metadata=md, timeout=t)
    if key == "add_device_perms":
        add = users.AddDevicePermissions
        devices = ctx["device_ids"]
        dreq = user_service_pb2.AddDevicePermissionsRequest(
            user=user_pb2.UserRef(user_id=ctx["human_user_id"]),
            devices=[user_pb2.DeviceRef(device_id=devices[i % len(devices)])])
        return lambda: add(dreq, metadata=admin, timeout=t)
    if key in ("check_access", "check_access_100"):
        return _access_call(users, ctx, admin, 100 if key == "check_access_100" else 1, i)
    if key == "session_getme":
        create_s, get_me = sessions.CreateSession, users.GetMe
        sreq = session_service_pb2.CreateSessionRequest(
            user=user_pb2.UserRef(user_id=ctx["human_user_id"]), user_agent="bench")
        me_req = user_service_pb2.GetMeRequest()

        async def apair() -> None:
            s = await create_s(sreq, metadata=admin, timeout=t)
            await get_me(me_req, metadata=bearer(s.access_token), timeout=t)

        if aio:
            return apair

        def pair() -> None:
            s = create_s(sreq, metadata=admin, timeout=t)
            get_me(me_req, metadata=bearer(s.access_token), timeout=t)

        return pair
    raise KeyError(f"unknown bench row {key!r}")
