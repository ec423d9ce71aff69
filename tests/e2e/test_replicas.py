"""Three replicas on one database: what one replica does, every replica answers at once.

The setup is a deployment in miniature: one database (a fresh SQLite file, or a fresh
PostgreSQL schema with ACCOUNTS_TEST_POSTGRES_URL; the ``backend`` fixture runs both),
one key-encryption-key file, and three real ``accounts-grpc serve --processes 1``
processes, A, B and C, each on ports of its own. They share nothing but the database and
the key-encryption key (the signing keys and the page-token secret derive from it).
Each test acts on one replica and then calls every replica directly, on a channel to its
own address, and asserts that all three answer the same, at the very next call: no
replica may keep serving from memory what the database has changed.

Starting processes is slow, so one set of replicas (``replicas``) serves the module per
backend, started with small key caches for the rotation test; every test makes its own
account and users, so the tests do not meet. Two scenarios start replicas of their own:
the rate limit (a small ``--auth-max-failures``; a limit may count per address too, and
every call here comes from 127.0.0.1, so on the shared replicas its block could refuse
the other tests' tokens) and the drain (it stops a replica).

Scenarios: revoke, close, role change, key rotation, rate limit, idempotent create,
page tokens, drain.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import httpx
import jwt
import pytest
from accounts.v1 import account_pb2, user_group_pb2, user_pb2, user_service_pb2_grpc
from accounts.v1 import account_service_pb2 as apb
from accounts.v1 import session_service_pb2 as spb
from accounts.v1 import user_group_service_pb2 as gpb
from accounts.v1 import user_service_pb2 as upb
from google.protobuf import field_mask_pb2

from tests import support
from tests.serving import CLI, LoggedProcess, clean_env, cli
from tests.support import Stubs, bearer

pytestmark = pytest.mark.timeout(180)

NAMES = ("A", "B", "C")
T = 10.0  #: seconds: the deadline of every call
GRACE = 3.0  #: --shutdown-grace of every replica
#: the rotation test's key caches: a replica re-reads the keys every second
KEY_CACHE = ("--key-cache-seconds", "1", "--jwks-max-age", "1")
MAX_FAILURES, BLOCK_SECONDS = 3, 3  #: the rate-limit test's replicas
DRAIN_DELAY = 1.5  #: the drained replica's --drain-delay
ME = "/accounts.v1.UserService/GetMe"

Md = tuple[tuple[str, str], ...]


# -- the replicas ----------------------------------------------------------------------------


@dataclass
class Replica(LoggedProcess):
    """One ``serve --processes 1`` process, its log as it comes, and stubs on a channel to
    its own address."""

    name: str
    grpc_port: int = 0
    http_port: int = 0
    channel: grpc.Channel | None = None
    stubs: Stubs = field(init=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def connect(self) -> None:
        m = self.wait_for(r"serving gRPC on 127\.0\.0\.1:(\d+), HTTP on 127\.0\.0\.1:(\d+) ",
                          timeout=60)
        self.grpc_port, self.http_port = int(m.group(1)), int(m.group(2))
        self.channel = grpc.insecure_channel(self.address)
        self.stubs = Stubs.on(self.channel)

    def calls(self, method: str, code: str = "OK") -> int:
        """How many calls of ``method`` this replica has logged with ``code``."""
        return len(re.findall(rf"accounts_grpc\.calls: grpc {re.escape(method)} {code} ",
                              self.log))


@dataclass
class Replicas:
    """Three replicas of one database, and the platform admin (``bootstrap``)."""

    all: list[Replica]
    db_flags: list[str]  #: --database-url and --key-encryption-key-file, for the CLI
    admin_client_id: str
    admin_client_secret: str
    admin: Md = ()

    def __iter__(self) -> Iterator[Replica]:
        return iter(self.all)

    @property
    def a(self) -> Replica:
        return self.all[0]

    @property
    def b(self) -> Replica:
        return self.all[1]

    @property
    def c(self) -> Replica:
        return self.all[2]


@contextlib.contextmanager
def replica_set(backend: str, tmp: Path, flags: Sequence[str] = (),
                per_replica: Mapping[str, Sequence[str]] | None = None) -> Iterator[Replicas]:
    """A fresh database, bootstrapped, and replicas A, B and C serving it; ``flags`` (and
    ``per_replica[name]``) come last, so they override the defaults here. Every process
    is gone when this returns, whatever happened."""
    with support.database_url(backend, tmp) as url:
        db_flags = ["--database-url", url, "--key-encryption-key-file", str(tmp / "shared.kek")]
        if backend == "postgres":
            cli("migrate", *db_flags)  # PostgreSQL is never migrated by `serve`
        boot = json.loads(cli("bootstrap", "--json", *db_flags))
        started: list[tuple[Replica, threading.Thread]] = []
        try:
            for name in NAMES:
                proc = subprocess.Popen(
                    [*CLI, "serve", "--processes", "1", *db_flags, "--bind-host", "127.0.0.1",
                     "--grpc-port", "0", "--http-port", "0", "--shutdown-grace", str(GRACE),
                     "--drain-delay", "0", "--db-pool-size", "4", "--log-level", "INFO",
                     "--no-log-json", "--no-print-bootstrap", *flags,
                     *(per_replica or {}).get(name, ())],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                    env={**clean_env(), "TMPDIR": str(tmp)},
                )
                replica = Replica(proc, name)
                reader = threading.Thread(target=replica.read_stderr, daemon=True)
                reader.start()
                started.append((replica, reader))
            for replica, _ in started:  # they start side by side; wait for each
                replica.connect()
            rs = Replicas([r for r, _ in started], db_flags, boot["client_id"],
                          boot["client_secret"])
            rs.admin = bearer(token(rs.a, rs.admin_client_id, rs.admin_client_secret))
            yield rs
        finally:
            for replica, _ in started:
                if replica.channel is not None:
                    replica.channel.close()
                if replica.proc.poll() is None:
                    replica.proc.send_signal(signal.SIGTERM)
            for replica, reader in started:
                try:
                    replica.proc.wait(DRAIN_DELAY + GRACE + 15)
                except subprocess.TimeoutExpired:
                    replica.proc.kill()
                    replica.proc.wait()
                reader.join(10)


@pytest.fixture(scope="module")
def replicas(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    """The module's replicas, per backend (starting processes is slow)."""
    with replica_set(backend, tmp_path_factory.mktemp(f"replicas-{backend}"),
                     KEY_CACHE) as rs:
        yield rs


# -- what every replica answers --------------------------------------------------------------


def outcome(call: Callable[[], Any]) -> str:
    """``"OK"``, or the failure as ``"CODE REASON"``."""
    try:
        call()
    except grpc.RpcError as e:
        f = support.failure(e)
        return f"{f.code.name} {f.reason}".strip()
    return "OK"


def answers(rs: Replicas, call: Callable[[Stubs], Any]) -> dict[str, str]:
    """What each replica answers to ``call``, called on A, B and C in turn."""
    return {r.name: outcome(functools.partial(call, r.stubs)) for r in rs}


def everywhere(answer: Any) -> dict[str, Any]:
    return dict.fromkeys(NAMES, answer)


def on_each(rs: Replicas, call: Callable[..., Any], *args: Any) -> dict[str, Any]:
    """Each replica's response to ``call(stubs, *args)``; a failure names the replica."""
    out = {}
    for r in rs:
        try:
            out[r.name] = call(r.stubs, *args)
        except grpc.RpcError as e:
            f = support.failure(e)
            raise AssertionError(f"replica {r.name}: {f.code.name} {f.reason}: {f.message}"
                                 ) from None
    return out


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not {what} within {timeout:.0f} s"
        time.sleep(every)


# -- test data, made through the API -----------------------------------------------------------


def uniq(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def account_request(name: str = "", request_id: str = "") -> apb.CreateAccountRequest:
    return apb.CreateAccountRequest(
        account=account_pb2.Account(name=name or uniq("Replicated "),
                                    email=f"{uniq('ops-')}@example.com"),
        first_user=user_pb2.User(kind=user_pb2.USER_KIND_HUMAN,
                                 email=f"{uniq('first-')}@example.com", first_name="Fay"),
        request_id=request_id,
    )


def new_account(rs: Replicas, name: str = "") -> apb.CreateAccountResponse:
    """An account (its first user: a HUMAN account-admin), made on A."""
    return rs.a.stubs.accounts.CreateAccount(account_request(name), metadata=rs.admin,
                                             timeout=T)


@dataclass(frozen=True)
class Machine:
    id: str
    client_id: str
    client_secret: str


def new_machine(rs: Replicas, account_id: str, roles: Sequence[str] = ()) -> Machine:
    resp = rs.a.stubs.users.CreateUser(
        upb.CreateUserRequest(account_id=account_id, user=user_pb2.User(
            kind=user_pb2.USER_KIND_MACHINE, roles=list(roles))),
        metadata=rs.admin, timeout=T)
    return Machine(resp.user.id, resp.user.client_id, resp.client_secret)


def create_token(client_id: str, client_secret: str) -> Callable[[Stubs], str]:
    def call(s: Stubs) -> str:
        return str(s.sessions.CreateToken(spb.CreateTokenRequest(
            client_id=client_id, client_secret=client_secret), timeout=T).access_token)
    return call


def token(replica: Replica, client_id: str, client_secret: str) -> str:
    """A JWT issued by ``replica``."""
    return create_token(client_id, client_secret)(replica.stubs)


def get_me(access_token: str) -> Callable[[Stubs], upb.GetMeResponse]:
    return lambda s: s.users.GetMe(upb.GetMeRequest(), metadata=bearer(access_token),
                                   timeout=T)


def kid(jwt_token: str) -> str:
    return str(jwt.get_unverified_header(jwt_token)["kid"])


# -- 1. revoke -------------------------------------------------------------------------------


def test_a_revoked_session_or_token_is_refused_by_every_replica_at_once(
        replicas: Replicas) -> None:
    rs = replicas
    created = new_account(rs)
    opened = rs.a.stubs.sessions.CreateSession(
        spb.CreateSessionRequest(user=user_pb2.UserRef(user_id=created.first_user.id)),
        metadata=rs.admin, timeout=T)
    machine = new_machine(rs, created.account.id)
    jwt_token = token(rs.b, machine.client_id, machine.client_secret)
    # every replica has taken both (and keeps the verified JWT in its cache)
    assert answers(rs, get_me(opened.access_token)) == everywhere("OK")
    assert answers(rs, get_me(jwt_token)) == everywhere("OK")

    rs.a.stubs.sessions.RevokeSession(spb.RevokeSessionRequest(id=opened.session.id),
                                      metadata=rs.admin, timeout=T)
    assert answers(rs, get_me(opened.access_token)) == everywhere(
        "UNAUTHENTICATED SESSION_REVOKED")

    # a new client secret revokes the JWTs issued with the old one (their `gen` claim)
    rotated = rs.a.stubs.users.RotateClientSecret(
        upb.RotateClientSecretRequest(id=machine.id), metadata=rs.admin, timeout=T)
    assert answers(rs, get_me(jwt_token)) == everywhere("UNAUTHENTICATED TOKEN_REVOKED")
    fresh = token(rs.c, rotated.client_id, rotated.client_secret)
    assert answers(rs, get_me(fresh)) == everywhere("OK")


# -- 2. close --------------------------------------------------------------------------------


def test_a_closed_account_is_closed_on_every_replica_at_once(replicas: Replicas) -> None:
    rs = replicas
    created = new_account(rs)
    aid = created.account.id
    machine = new_machine(rs, aid, roles=["account-admin"])
    jwt_token = token(rs.b, machine.client_id, machine.client_secret)
    session = rs.c.stubs.sessions.CreateSession(
        spb.CreateSessionRequest(user=user_pb2.UserRef(user_id=created.first_user.id)),
        metadata=rs.admin, timeout=T).access_token
    assert answers(rs, get_me(jwt_token)) == everywhere("OK")
    assert answers(rs, get_me(session)) == everywhere("OK")

    closed = rs.a.stubs.accounts.CloseAccount(apb.CloseAccountRequest(id=aid),
                                              metadata=rs.admin, timeout=T).account
    assert closed.closed

    # its users and sessions are gone with it: their tokens authenticate nowhere
    assert answers(rs, get_me(jwt_token)) == everywhere("UNAUTHENTICATED USER_DELETED")
    assert answers(rs, get_me(session)) == everywhere("UNAUTHENTICATED TOKEN_INVALID")
    assert answers(rs, create_token(machine.client_id, machine.client_secret)) == everywhere(
        "UNAUTHENTICATED INVALID_CLIENT")
    # ... and the tombstone takes no write, not even the platform admin's
    assert answers(rs, lambda s: s.accounts.UpdateAccount(apb.UpdateAccountRequest(
        account=account_pb2.Account(id=aid, name="Zombie"),
        update_mask=field_mask_pb2.FieldMask(paths=["name"])),
        metadata=rs.admin, timeout=T)) == everywhere("FAILED_PRECONDITION ACCOUNT_CLOSED")
    assert answers(rs, lambda s: s.users.CreateUser(upb.CreateUserRequest(
        account_id=aid, user=user_pb2.User(kind=user_pb2.USER_KIND_MACHINE)),
        metadata=rs.admin, timeout=T)) == everywhere("FAILED_PRECONDITION ACCOUNT_CLOSED")
    read = on_each(rs, lambda s: s.accounts.GetAccount(apb.GetAccountRequest(id=aid),
                                                       metadata=rs.admin, timeout=T))
    assert {n: r.account.closed for n, r in read.items()} == everywhere(True)


# -- 3. role change --------------------------------------------------------------------------


def test_a_role_change_applies_to_earlier_tokens_on_every_replica(replicas: Replicas) -> None:
    """A JWT's ``roles`` claim is a snapshot for offline verifiers; the replicas re-read a
    user's effective roles (direct and through its groups) on every call. A role change
    does not revoke the token (only a new client secret does): the token keeps
    authenticating, with the new roles, on every replica at its next call."""
    rs = replicas
    aid = new_account(rs).account.id
    machine = new_machine(rs, aid, roles=["account-admin"])
    jwt_token = token(rs.a, machine.client_id, machine.client_secret)
    md = bearer(jwt_token)

    def audit_log(s: Stubs) -> Any:  # account-admin (or admin, admin-reader) only
        return s.accounts.ListAuditEvents(
            apb.ListAuditEventsRequest(account_id=aid, page_size=1), metadata=md, timeout=T)

    def roles(s: Stubs) -> list[str]:  # the effective roles, as the replica sees them now
        return list(s.sessions.IntrospectToken(
            spb.IntrospectTokenRequest(token=jwt_token), metadata=md, timeout=T).roles)

    assert answers(rs, audit_log) == everywhere("OK")
    assert on_each(rs, roles) == everywhere(["account-admin", "member"])

    rs.a.stubs.users.UpdateUser(upb.UpdateUserRequest(
        user=user_pb2.User(id=machine.id, roles=[]),
        update_mask=field_mask_pb2.FieldMask(paths=["roles"])), metadata=rs.admin, timeout=T)
    assert answers(rs, get_me(jwt_token)) == everywhere("OK")
    assert answers(rs, audit_log) == everywhere("PERMISSION_DENIED ROLE_REQUIRED")
    assert on_each(rs, roles) == everywhere(["member"])
    assert "account-admin" in jwt.decode(jwt_token, options={"verify_signature": False})[
        "roles"], "the claim itself is not rewritten"

    # through a group: granted on B, taken away on C
    group = rs.b.stubs.groups.CreateUserGroup(gpb.CreateUserGroupRequest(
        account_id=aid, user_group=user_group_pb2.UserGroup(name=uniq("admins "),
                                                            roles=["account-admin"])),
        metadata=rs.admin, timeout=T).user_group
    rs.b.stubs.groups.AddUserGroupMembers(gpb.AddUserGroupMembersRequest(
        id=group.id, user_ids=[machine.id]), metadata=rs.admin, timeout=T)
    assert answers(rs, audit_log) == everywhere("OK")
    assert on_each(rs, roles) == everywhere(["account-admin", "member"])
    rs.c.stubs.groups.RemoveUserGroupMembers(gpb.RemoveUserGroupMembersRequest(
        id=group.id, user_ids=[machine.id]), metadata=rs.admin, timeout=T)
    assert answers(rs, audit_log) == everywhere("PERMISSION_DENIED ROLE_REQUIRED")


# -- 4. key rotation -------------------------------------------------------------------------


def jwks_kids(replica: Replica) -> set[str]:
    r = httpx.get(f"http://127.0.0.1:{replica.http_port}/.well-known/jwks.json", timeout=T)
    assert r.status_code == 200, r.text
    return {k["kid"] for k in r.json()["keys"]}


def test_a_key_rotation_reaches_every_replica(replicas: Replicas) -> None:
    """``keys rotate`` (the CLI, while the replicas serve): the new kid is in every
    replica's JWKS within a key cache, long before any replica signs with it; from the
    activation time every replica signs with it; tokens from before and after verify on
    every replica. (The rotation under load, and the old key's exit from the JWKS:
    test_key_rotation.py.) The activation comes a key cache plus a JWKS max-age plus a
    fixed 10 s after the rotation, so this test takes about 12 s."""
    rs = replicas
    machine = new_machine(rs, new_account(rs).account.id)
    issue = create_token(machine.client_id, machine.client_secret)
    before = token(rs.a, machine.client_id, machine.client_secret)
    old_kid = kid(before)

    rotated = json.loads(cli("keys", "rotate", "--json", *rs.db_flags, *KEY_CACHE))
    new_kid = rotated["kid"]
    activate = datetime.fromisoformat(rotated["activate_time"]).timestamp()
    assert rotated["phase"] == "pending" and new_kid != old_kid

    wait_until(lambda: all(new_kid in jwks_kids(r) for r in rs), 10,
               "the new kid is in every replica's JWKS")
    assert time.time() < activate
    assert {r.name: old_kid in jwks_kids(r) for r in rs} == everywhere(True)
    assert {n: kid(t) for n, t in on_each(rs, issue).items()} == everywhere(old_kid), (
        "a pending key signs nowhere")

    wait_until(lambda: {kid(t) for t in on_each(rs, issue).values()} == {new_kid},
               max(0.0, activate - time.time()) + 10,
               "every replica signs with the new key", every=0.25)
    after = on_each(rs, issue)
    for t in [before, *after.values()]:
        assert answers(rs, get_me(t)) == everywhere("OK"), f"a token of key {kid(t)}"
    assert {r.name: jwks_kids(r) >= {old_kid, new_kid} for r in rs} == everywhere(True)


# -- 5. rate limit ---------------------------------------------------------------------------


def test_failed_secrets_on_every_replica_add_up_to_one_limit(
        backend: str, tmp_path: Path) -> None:
    """One wrong secret on each replica: no replica has seen the limit's three, yet the
    database has, so every replica refuses the right secret until the block ends.

    All calls come from 127.0.0.1: the counter of that client id and address (the pair
    counter of the policy with three counters, the client and address counters of the
    one with two) reaches ``--auth-max-failures`` first."""
    flags = ("--auth-max-failures", str(MAX_FAILURES),
             "--auth-block-seconds", str(BLOCK_SECONDS))
    with replica_set(backend, tmp_path, flags) as rs:
        right = create_token(rs.admin_client_id, rs.admin_client_secret)
        wrong = create_token(rs.admin_client_id, "cs_" + "x" * 43)
        assert answers(rs, wrong) == everywhere("UNAUTHENTICATED INVALID_CLIENT")

        refused: dict[str, support.Failure] = {}
        for r in rs:
            try:
                right(r.stubs)
            except grpc.RpcError as e:
                refused[r.name] = support.failure(e)
        assert {n: f.code.name for n, f in refused.items()} == everywhere(
            "RESOURCE_EXHAUSTED")
        for f in refused.values():  # RetryInfo says when to come back
            assert f.retry_seconds is not None and 1 <= f.retry_seconds <= BLOCK_SECONDS, f

        # the block ends on every replica at once (a refused attempt does not prolong it)
        wait_until(lambda: outcome(lambda: right(rs.a.stubs)) == "OK", BLOCK_SECONDS + 10,
                   "the block ended", every=0.25)
        assert answers(rs, right) == everywhere("OK")


# -- 6. idempotent create --------------------------------------------------------------------


def test_one_request_id_sent_to_every_replica_at_once_creates_one_account(
        replicas: Replicas) -> None:
    rs = replicas
    name = uniq("Once ")
    request = account_request(name, request_id=str(uuid.uuid4()))
    start = threading.Barrier(len(NAMES))

    def send(r: Replica) -> apb.CreateAccountResponse | str:
        start.wait(T)
        try:
            return r.stubs.accounts.CreateAccount(request, metadata=rs.admin, timeout=T)
        except grpc.RpcError as e:
            f = support.failure(e)
            return f"{f.code.name} {f.reason}: {f.message}"

    with ThreadPoolExecutor(len(NAMES)) as pool:
        sent = dict(zip(NAMES, pool.map(send, rs), strict=True))
    created = {n: r for n, r in sent.items() if isinstance(r, apb.CreateAccountResponse)}
    assert created.keys() == set(NAMES), sent
    ids = {n: (r.account.id, r.first_user.id) for n, r in created.items()}
    assert len(set(ids.values())) == 1, ids

    account_id = ids["A"][0]
    listed = on_each(rs, lambda s: s.accounts.ListAccounts(apb.ListAccountsRequest(
        filter=f'"{name}"'), metadata=rs.admin, timeout=T))
    assert {n: [a.id for a in r.accounts] for n, r in listed.items()} == everywhere(
        [account_id])
    users = on_each(rs, lambda s: s.users.ListUsers(upb.ListUsersRequest(
        account_id=account_id), metadata=rs.admin, timeout=T))
    assert {n: r.total_size for n, r in users.items()} == everywhere(1)


# -- 7. page tokens --------------------------------------------------------------------------


def pages_on_every_replica(rs: Replicas, page: Callable[[Stubs, str], Any],
                           items: Callable[[Any], list[str]]) -> list[Any]:
    """The pages of a list, from its first, read on A. Every replica is asked for the
    page each next page token names, and must answer the same page (items and tokens);
    and the previous page token of that page leads back, on every replica."""
    pages = [page(rs.a.stubs, "")]
    while pages[-1].next_page_token:
        following = on_each(rs, page, pages[-1].next_page_token)
        assert all(p == following["A"] for p in following.values()), (
            f"page {len(pages) + 1} differs between the replicas: {following}")
        back = on_each(rs, page, following["A"].previous_page_token)
        assert {n: items(p) for n, p in back.items()} == everywhere(items(pages[-1]))
        pages.append(following["A"])
    return pages


def test_a_page_token_from_one_replica_continues_on_every_other(replicas: Replicas) -> None:
    rs = replicas
    word = uniq("paged")
    accounts = [new_account(rs, name=f"{word} {i}").account for i in range(5)]
    pages = pages_on_every_replica(rs, lambda s, t: s.accounts.ListAccounts(
        apb.ListAccountsRequest(filter=word, order_by="name", page_size=2, page_token=t),
        metadata=rs.admin, timeout=T), lambda p: [a.id for a in p.accounts])
    assert [[a.id for a in p.accounts] for p in pages] == [
        [a.id for a in accounts[i:i + 2]] for i in range(0, 5, 2)]

    aid = accounts[0].id
    for _ in range(4):
        new_machine(rs, aid)
    pages = pages_on_every_replica(rs, lambda s, t: s.users.ListUsers(
        upb.ListUsersRequest(account_id=aid, page_size=2, page_token=t),
        metadata=rs.admin, timeout=T), lambda p: [u.id for u in p.users])
    ids = [u.id for p in pages for u in p.users]
    assert [len(p.users) for p in pages] == [2, 2, 1] and len(set(ids)) == 5
    assert {p.total_size for p in pages} == {5}


# -- 8. drain --------------------------------------------------------------------------------


def round_robin(addresses: Sequence[str]) -> grpc.Channel:
    """A client that spreads calls over ``addresses`` and leaves a replica as soon as its
    health turns NOT_SERVING (as test_drain.py)."""
    config = {"loadBalancingConfig": [{"round_robin": {}}],
              "healthCheckConfig": {"serviceName": ""}}
    return grpc.insecure_channel("ipv4:" + ",".join(addresses), options=[
        ("grpc.service_config", json.dumps(config)), ("grpc.enable_retries", 0)])


def test_stopping_a_replica_under_round_robin_load_fails_no_call(
        backend: str, tmp_path: Path) -> None:
    """SIGTERM to C while a round-robin client keeps every replica busy with GetMe: C
    turns NOT_SERVING and keeps serving for its --drain-delay, the client moves to A and
    B, no call fails, and C exits 0."""
    with replica_set(backend, tmp_path, per_replica={
            "C": ("--drain-delay", str(DRAIN_DELAY))}) as rs:
        channel = round_robin([r.address for r in rs])
        stub = user_service_pb2_grpc.UserServiceStub(channel)
        stub.GetMe(upb.GetMeRequest(), metadata=rs.admin, timeout=T, wait_for_ready=True)
        done = threading.Event()
        results: list[str] = []
        lock = threading.Lock()

        def load() -> None:
            while not done.is_set():
                answer = outcome(lambda: stub.GetMe(upb.GetMeRequest(), metadata=rs.admin,
                                                    timeout=T))
                with lock:
                    results.append(answer)

        threads = [threading.Thread(target=load) for _ in range(6)]
        for t in threads:
            t.start()
        try:
            wait_until(lambda: all(r.calls(ME) >= 20 for r in rs), 30,
                       "every replica serves the load")
            rs.c.proc.send_signal(signal.SIGTERM)
            code = rs.c.proc.wait(DRAIN_DELAY + GRACE + 15)
            served = {r.name: r.calls(ME) for r in (rs.a, rs.b)}
            wait_until(lambda: all(r.calls(ME) >= served[r.name] + 20 for r in (rs.a, rs.b)),
                       30, "A and B serve on after C has gone")
        finally:
            done.set()
            for t in threads:
                t.join(T + 5)
            channel.close()
        failed = [r for r in results if r != "OK"]
        assert failed == [], f"{len(failed)} of {len(results)} calls failed: {failed[:5]}"
        assert code == 0, rs.c.log
        rs.c.wait_for(rf"not serving: new calls are still taken for {DRAIN_DELAY}s")
        rs.c.wait_for(r"accounts_grpc: stopped")
