"""accounts_grpc.verifier end to end: real ``serve`` processes on one database (both
databases); changes made on replica A, the verifier following replica B's REST feed.

Each change that kills a token (a deleted user, a removed device permission, a closed
account, a retired signing key; a revoked session by its ``sid``) makes the verifier
reject the affected token as soon as the event arrives, long before its ``exp`` (the
latency is printed, never asserted), while tokens it does not affect still pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
from accounts.v1 import session_service_pb2 as spb
from accounts.v1 import user_service_pb2

from accounts_grpc.verifier import Revoked, Verifier
from tests.e2e.groups_helpers import (
    close_account,
    create_account,
    create_user,
    device_id,
    machine_token,
    make_partition,
    register,
    uniq,
)
from tests.e2e.test_replicas import Replica, Replicas, replica_set
from tests.e2e.users_helpers import by_device, ref
from tests.serving import cli
from tests.support import Stubs

pytestmark = pytest.mark.timeout(300)

T = 30.0  #: seconds the verifier gets to reject a token (it takes about one)


@dataclass
class On:
    """What the helpers of groups_helpers ask of a server: stubs and the admin."""

    stubs: Stubs
    admin: tuple[tuple[str, str], ...]


@pytest.fixture(scope="module")
def replicas(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    with replica_set(backend, tmp_path_factory.mktemp(f"verifier-{backend}")) as rs:
        yield rs


@pytest.fixture
def verifier(replicas: Replicas) -> Iterator[Verifier]:
    claims = jwt.decode(replicas.admin[0][1].split()[1], options={"verify_signature": False})
    v = Verifier(f"http://127.0.0.1:{replicas.b.http_port}", audience=claims["aud"],
                 issuer=claims["iss"],
                 credentials=(replicas.admin_client_id, replicas.admin_client_secret))
    assert v.wait_connected(T)
    time.sleep(0.3)  # the stream is open on B: every event from now on reaches it
    yield v
    v.close()


def machine(a: On, replica: Replica, account_id: str) -> tuple[str, str]:
    """A MACHINE user of ``account_id`` and a JWT of it issued by ``replica``."""
    user_id, client_id, secret = create_user(a, account_id, kind="MACHINE")  # type: ignore[arg-type]
    return user_id, machine_token(replica, client_id, secret)  # type: ignore[arg-type]


def rejected_within(verifier: Verifier, token: str, change: Callable[[], object],
                    what: str) -> float:
    """Seconds from ``change`` (made on A) until ``verifier`` rejects ``token``."""
    verifier.verify(token)
    change()
    done = time.monotonic()
    deadline = done + T
    while True:
        try:
            verifier.verify(token)
        except Revoked:
            took = time.monotonic() - done
            print(f"\n{what}: rejected {took:.3f} s after the change")
            return took
        assert time.monotonic() < deadline, f"{what}: the token still passes after {T} s"
        time.sleep(0.01)


def test_revocations_made_on_a_reach_a_verifier_following_b(replicas: Replicas,
                                                             verifier: Verifier) -> None:
    a = On(replicas.a.stubs, replicas.admin)
    account_id, _ = create_account(a, uniq("v-"))  # type: ignore[arg-type]
    other_id, _ = create_account(a, uniq("other-"))  # type: ignore[arg-type]
    deleted, deleted_token = machine(a, replicas.a, account_id)
    held, held_token = machine(a, replicas.a, account_id)
    _, bystander = machine(a, replicas.a, account_id)
    _, elsewhere = machine(a, replicas.a, other_id)
    users = replicas.a.stubs.users

    rejected_within(verifier, deleted_token, lambda: users.DeleteUser(
        user_service_pb2.DeleteUserRequest(id=deleted), metadata=replicas.admin),
        "user deleted")
    verifier.verify(held_token)

    partition = make_partition(a, account_id)  # type: ignore[arg-type]
    dev = register(a, partition.id, {"device_id": device_id(),  # type: ignore[arg-type]
                                     "meter_id": uniq("m")})[0]
    users.AddDevicePermissions(user_service_pb2.AddDevicePermissionsRequest(
        user=ref(held), devices=[by_device(dev.device_id)]), metadata=replicas.admin)
    rejected_within(verifier, held_token, lambda: users.RemoveDevicePermissions(
        user_service_pb2.RemoveDevicePermissionsRequest(
            user=ref(held), devices=[by_device(dev.device_id)]), metadata=replicas.admin),
        "device permission removed")
    verifier.verify(bystander)

    # JWTs carry no session id today: the verifier is asked about a token that would
    session = replicas.a.stubs.sessions.CreateSession(
        spb.CreateSessionRequest(user=ref(held)), metadata=replicas.admin).session
    replicas.a.stubs.sessions.RevokeSession(spb.RevokeSessionRequest(id=session.id),
                                            metadata=replicas.admin)
    deadline = time.monotonic() + T
    while not verifier.revoked({"sid": session.id, "sub": "x", "iat": 0}):
        assert time.monotonic() < deadline, "the session's revocation never came"
        time.sleep(0.01)
    assert not verifier.revoked({"sid": "another", "sub": "x", "iat": 0})

    rejected_within(verifier, bystander, lambda: close_account(a, account_id),  # type: ignore[arg-type]
                    "account closed")
    assert verifier.verify(elsewhere)["sub"]

    # a token of the other account, signed with the key about to be retired
    old_kid = jwt.get_unverified_header(elsewhere)["kid"]
    flags = replicas.db_flags
    rejected_within(verifier, elsewhere, lambda: (cli("keys", "rotate", *flags),
                                                  cli("keys", "retire", old_kid, *flags)),
                    "signing key retired")
    assert verifier.revoked({}, old_kid)


def test_the_verifier_resumes_after_its_server_restarts(backend: str, tmp_path: Path) -> None:
    """The feed breaks (B stops); the verifier, pointed at C (another server of the
    same database), reconnects and resumes from its cursor: a revocation made on A
    while it was away still arrives."""
    with replica_set(backend, tmp_path) as rs:
        claims = jwt.decode(rs.admin[0][1].split()[1], options={"verify_signature": False})
        a = On(rs.a.stubs, rs.admin)
        account_id, _ = create_account(a, uniq("r-"))  # type: ignore[arg-type]
        victim, token = machine(a, rs.a, account_id)
        v = Verifier(f"http://127.0.0.1:{rs.b.http_port}", audience=claims["aud"],
                     issuer=claims["iss"], credentials=(rs.admin_client_id,
                                                        rs.admin_client_secret),
                     reconnect_delay=0.2)
        try:
            assert v.wait_connected(T)
            v.verify(token)
            before = v.cursor
            v.base_url = f"http://127.0.0.1:{rs.c.http_port}"  # B's replacement
            rs.b.proc.terminate()
            rs.b.proc.wait(30)
            rs.a.stubs.users.DeleteUser(user_service_pb2.DeleteUserRequest(id=victim),
                                        metadata=rs.admin)
            deadline = time.monotonic() + T
            while True:
                try:
                    v.verify(token)
                except Revoked:
                    break
                assert time.monotonic() < deadline, "the revocation made while away never came"
                time.sleep(0.05)
            assert v.cursor != before
        finally:
            v.close()
