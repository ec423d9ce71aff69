"""The CreateToken attempt limiter: three counters, each bounded on its own (the client
id at an address, the address, the client id).

End to end through a real channel, every call comes from 127.0.0.1 (the kernel picks
that source address for any loopback destination, and grpcio cannot bind a client's
source address), so the end-to-end tests see one address. Which counter blocks what (a
client at an address, an address, a client everywhere) is shown by calling the very same
use case in process with the call's facts set as the pipeline sets them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from accounts.v1 import session_service_pb2 as spb
from accounts.v1 import session_service_pb2_grpc

from accounts_grpc.app import App
from accounts_grpc.domain.call import CallInfo, reset_call, set_call
from accounts_grpc.domain.errors import ResourceExhausted, Unauthenticated
from tests import support
from tests.e2e.auth_helpers import UserCreds, make_account, make_user
from tests.support import Server, expect_error, running_server

MAX_FAILURES = 3  # one client id at one address
PER_ADDRESS = 6  # one address, any client ids
PER_CLIENT = 5  # one client id, any addresses
BLOCK_SECONDS = 2
LIMITS = dict(
    auth_max_failures=MAX_FAILURES, auth_max_failures_per_address=PER_ADDRESS,
    auth_max_failures_per_client=PER_CLIENT, auth_failure_window=60,
    auth_block_seconds=BLOCK_SECONDS,
)
UNAUTH = grpc.StatusCode.UNAUTHENTICATED
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.fixture
def limited(backend: str, tmp_path: Path) -> Iterator[Server]:
    """A server of its own for each test: a test leaves 127.0.0.1 blocked."""
    with running_server(backend, tmp_path, **LIMITS) as srv:
        yield srv


def fresh_user(srv: Server) -> UserCreds:
    return make_user(srv, make_account(srv))


def create_token(srv: Server, client_id: str, secret: str) -> str:
    resp = srv.stubs.sessions.CreateToken(
        spb.CreateTokenRequest(client_id=client_id, client_secret=secret), timeout=10
    )
    return str(resp.access_token)


def fails(srv: Server, client_id: str, secret: str, code: grpc.StatusCode, reason: str
          ) -> int | None:
    return expect_error(create_token, srv, client_id, secret, code=code, reason=reason
                        ).retry_seconds


# -- end to end --------------------------------------------------------------------------------


def test_repeated_failures_block_even_correct_credentials(limited: Server) -> None:
    good = fresh_user(limited)
    for _ in range(PER_ADDRESS):  # a guesser trying client ids, from one address
        fails(limited, f"cid_{uuid.uuid4().hex[:24]}", "cs_guess", UNAUTH, "INVALID_CLIENT")
    # refused before the secret is even looked at
    retry = fails(limited, good.client_id, good.client_secret, EXHAUSTED,
                  "TOO_MANY_FAILED_ATTEMPTS")
    assert retry is not None and 1 <= retry <= BLOCK_SECONDS, "RetryInfo says when to retry"


def test_successes_do_not_count(limited: Server) -> None:
    u = fresh_user(limited)
    for _ in range(MAX_FAILURES * 3):
        assert create_token(limited, u.client_id, u.client_secret)
    for _ in range(MAX_FAILURES - 1):
        fails(limited, u.client_id, "cs_wrong", UNAUTH, "INVALID_CLIENT")
    assert create_token(limited, u.client_id, u.client_secret), "still below the limit"
    fails(limited, u.client_id, "cs_wrong", UNAUTH, "INVALID_CLIENT")
    fails(limited, u.client_id, u.client_secret, EXHAUSTED, "TOO_MANY_FAILED_ATTEMPTS")


def test_block_ends_after_block_seconds(limited: Server) -> None:
    u = fresh_user(limited)
    for _ in range(MAX_FAILURES):
        fails(limited, u.client_id, "cs_wrong", UNAUTH, "INVALID_CLIENT")
    fails(limited, u.client_id, u.client_secret, EXHAUSTED, "TOO_MANY_FAILED_ATTEMPTS")
    time.sleep(BLOCK_SECONDS + 0.2)
    assert create_token(limited, u.client_id, u.client_secret)
    # the counter starts afresh: one more failure does not block again
    fails(limited, u.client_id, "cs_wrong", UNAUTH, "INVALID_CLIENT")
    assert create_token(limited, u.client_id, u.client_secret)


def test_missing_credentials_count_as_failures(limited: Server) -> None:
    u = fresh_user(limited)
    for _ in range(PER_ADDRESS):  # no client id: they count on the address
        fails(limited, "", "", UNAUTH, "INVALID_CLIENT")
    fails(limited, u.client_id, u.client_secret, EXHAUSTED, "TOO_MANY_FAILED_ATTEMPTS")


def test_servers_sharing_a_database_share_the_limit(limited: Server) -> None:
    """Failures counted by one server block the client on another (same database)."""
    second = App(support.test_settings(limited.db_url, limited.tmp, **LIMITS))
    second.start()
    try:
        u = fresh_user(limited)
        for _ in range(MAX_FAILURES):
            fails(limited, u.client_id, "cs_wrong", UNAUTH, "INVALID_CLIENT")
        with grpc.insecure_channel(f"127.0.0.1:{second.grpc_port}") as channel:
            stub = session_service_pb2_grpc.SessionServiceStub(channel)
            expect_error(
                stub.CreateToken,
                spb.CreateTokenRequest(client_id=u.client_id, client_secret=u.client_secret),
                code=EXHAUSTED, reason="TOO_MANY_FAILED_ATTEMPTS",
            )
    finally:
        second.stop(grace=1.0)


# -- which counter blocks what: the use case, with the call's peer set ---------------------------


def attempt(srv: Server, address: str, client_id: str, secret: str) -> str:
    """CreateToken's use case as the pipeline runs it for a call from ``address``."""
    token = set_call(CallInfo("/accounts.v1.SessionService/CreateToken", "grpc", address, {}))
    try:
        return srv.app.services.sessions.create_token(client_id, secret).token
    finally:
        reset_call(token)


def test_the_pair_bound_blocks_a_client_at_its_address(limited: Server) -> None:
    stale = fresh_user(limited)
    for _ in range(MAX_FAILURES):  # a deployment still running with an old secret
        with pytest.raises(Unauthenticated):
            attempt(limited, "203.0.113.7", stale.client_id, "cs_stale")
    with pytest.raises(ResourceExhausted) as e:  # refused before the secret is looked at
        attempt(limited, "203.0.113.7", stale.client_id, stale.client_secret)
    assert e.value.reason == "TOO_MANY_FAILED_ATTEMPTS"
    assert 1 <= e.value.retry_after <= BLOCK_SECONDS
    assert "this client or address" in str(e.value), "never which counter"


def test_a_clients_failures_do_not_block_other_clients_at_its_address(limited: Server) -> None:
    stale, neighbour = fresh_user(limited), fresh_user(limited)
    for _ in range(MAX_FAILURES):
        with pytest.raises(Unauthenticated):
            attempt(limited, "203.0.113.7", stale.client_id, "cs_stale")
    for _ in range(PER_ADDRESS * 2):  # it keeps retrying: refused, and counted nowhere
        with pytest.raises(ResourceExhausted):
            attempt(limited, "203.0.113.7", stale.client_id, "cs_stale")
    assert attempt(limited, "203.0.113.7", neighbour.client_id, neighbour.client_secret), (
        "a client's failures block only that client at that address"
    )


def test_a_clients_failures_at_one_address_do_not_block_it_at_another(limited: Server) -> None:
    u = fresh_user(limited)
    for _ in range(MAX_FAILURES):
        with pytest.raises(Unauthenticated):
            attempt(limited, "203.0.113.7", u.client_id, "cs_stale")
    with pytest.raises(ResourceExhausted):
        attempt(limited, "203.0.113.7", u.client_id, u.client_secret)
    assert MAX_FAILURES < PER_CLIENT
    assert attempt(limited, "203.0.113.8", u.client_id, u.client_secret), (
        "below the per-client bound the client is blocked only where it failed"
    )


def test_the_address_bound_blocks_every_client_at_that_address(limited: Server) -> None:
    good = fresh_user(limited)
    for _ in range(PER_ADDRESS):  # a scanner: one guess for each of many client ids
        with pytest.raises(Unauthenticated):
            attempt(limited, "203.0.113.7", f"cid_{uuid.uuid4().hex[:24]}", "cs_guess")
    with pytest.raises(ResourceExhausted) as e:
        attempt(limited, "203.0.113.7", good.client_id, good.client_secret)
    assert e.value.retry_after >= 1
    assert attempt(limited, "203.0.113.8", good.client_id, good.client_secret), (
        "the client itself is not blocked, only that address"
    )


def test_the_client_bound_blocks_that_client_at_every_address(limited: Server) -> None:
    victim, bystander = fresh_user(limited), fresh_user(limited)
    for i in range(PER_CLIENT):  # one failure from each of several addresses
        with pytest.raises(Unauthenticated):
            attempt(limited, f"198.51.100.{i + 1}", victim.client_id, "cs_guess")
    with pytest.raises(ResourceExhausted):
        attempt(limited, "198.51.100.99", victim.client_id, victim.client_secret)
    with pytest.raises(ResourceExhausted):
        attempt(limited, "198.51.100.1", victim.client_id, victim.client_secret)
    assert attempt(limited, "198.51.100.99", bystander.client_id, bystander.client_secret), (
        "that address is not blocked, only that client"
    )


def test_a_bound_of_zero_turns_its_counter_off(backend: str, tmp_path: Path) -> None:
    with running_server(backend, tmp_path, **{**LIMITS, "auth_max_failures_per_address": 0,
                                              "auth_max_failures_per_client": 0}) as srv:
        u = fresh_user(srv)
        for i in range(PER_CLIENT + PER_ADDRESS):  # many client ids at one address, and
            with pytest.raises(Unauthenticated):  # one client id at many addresses
                attempt(srv, "203.0.113.7", f"cid_{uuid.uuid4().hex[:24]}", "cs_guess")
            with pytest.raises(Unauthenticated):
                attempt(srv, f"198.51.100.{i + 1}", u.client_id, "cs_guess")
        assert attempt(srv, "203.0.113.7", u.client_id, u.client_secret)
        for _ in range(MAX_FAILURES):  # the pair bound alone is left
            with pytest.raises(Unauthenticated):
                attempt(srv, "203.0.113.7", u.client_id, "cs_guess")
        with pytest.raises(ResourceExhausted):
            attempt(srv, "203.0.113.7", u.client_id, u.client_secret)


# -- behind a proxy ----------------------------------------------------------------------------


@pytest.fixture
def proxied(backend: str, tmp_path: Path) -> Iterator[Server]:
    """The test's own calls come from 127.0.0.1, which plays the trusted proxy."""
    with running_server(backend, tmp_path, trusted_proxies="127.0.0.1", **LIMITS) as srv:
        yield srv


def create_token_from(srv: Server, address: str, client_id: str, secret: str) -> str:
    resp = srv.stubs.sessions.CreateToken(
        spb.CreateTokenRequest(client_id=client_id, client_secret=secret),
        metadata=(("x-forwarded-for", f"6.6.6.6, {address}"),), timeout=10,
    )
    return str(resp.access_token)


def rest_token_from(srv: Server, address: str, client_id: str, secret: str) -> int:
    import httpx

    r = httpx.post(f"{srv.http_url}/v1/token", headers={"x-forwarded-for": address},
                   data={"grant_type": "client_credentials", "client_id": client_id,
                         "client_secret": secret}, timeout=10)
    return r.status_code


def test_behind_a_trusted_proxy_each_client_address_has_its_own_count(proxied: Server) -> None:
    good = fresh_user(proxied)
    for _ in range(PER_ADDRESS):  # a guesser behind the proxy, at 203.0.113.7
        expect_error(create_token_from, proxied, "203.0.113.7", f"cid_{uuid.uuid4().hex[:24]}",
                     "cs_guess", code=UNAUTH, reason="INVALID_CLIENT")
    expect_error(create_token_from, proxied, "203.0.113.7", good.client_id, good.client_secret,
                 code=EXHAUSTED, reason="TOO_MANY_FAILED_ATTEMPTS")
    # everyone else behind the same proxy is not blocked (the proxy's own address is not
    # what is counted), nor fooled by what the guesser wrote left of the proxy's entry
    assert create_token_from(proxied, "203.0.113.8", good.client_id, good.client_secret)
    assert rest_token_from(proxied, "203.0.113.9", good.client_id, good.client_secret) == 200
    assert rest_token_from(proxied, "203.0.113.7", good.client_id, good.client_secret) == 429


def test_without_trusted_proxies_the_header_is_ignored(limited: Server) -> None:
    good = fresh_user(limited)
    for i in range(PER_ADDRESS):  # each claims another address: all are 127.0.0.1
        expect_error(create_token_from, limited, f"203.0.113.{i + 1}",
                     f"cid_{uuid.uuid4().hex[:24]}", "cs_guess", code=UNAUTH,
                     reason="INVALID_CLIENT")
    expect_error(create_token_from, limited, "203.0.113.99", good.client_id,
                 good.client_secret, code=EXHAUSTED, reason="TOO_MANY_FAILED_ATTEMPTS")


# -- atomic: concurrent guesses are checked against the committed count ---------------------------


@pytest.mark.parametrize("tightest", ["pair", "client", "address"])
def test_150_concurrent_wrong_secrets_check_at_most_the_limit(backend: str, tmp_path: Path,
                                                               tightest: str) -> None:
    """Whichever of the three bounds is the tightest, concurrent guesses that share its
    counter are checked against the committed count: at most ``limit`` of them."""
    limit, loose = 10, 1000
    bounds = {
        "pair": dict(auth_max_failures=limit, auth_max_failures_per_address=loose,
                     auth_max_failures_per_client=loose),
        "client": dict(auth_max_failures=loose, auth_max_failures_per_address=loose,
                       auth_max_failures_per_client=limit),
        "address": dict(auth_max_failures=loose, auth_max_failures_per_address=limit,
                        auth_max_failures_per_client=loose),
    }[tightest]
    with running_server(backend, tmp_path, auth_failure_window=60, auth_block_seconds=60,
                        **bounds) as srv:
        victim = fresh_user(srv)
        # the address bound is shown by a scanner: another client id for every guess
        ids = [f"cid_{uuid.uuid4().hex[:24]}" if tightest == "address" else victim.client_id
               for _ in range(150)]
        channels = [grpc.insecure_channel(srv.address) for _ in range(6)]
        try:
            stubs = [session_service_pb2_grpc.SessionServiceStub(c) for c in channels]
            futures = [stubs[i % 6].CreateToken.future(
                spb.CreateTokenRequest(client_id=ids[i], client_secret=f"cs_{i}"),
                timeout=60) for i in range(150)]
            codes: dict[grpc.StatusCode, int] = {}
            for f in futures:
                try:
                    f.result()
                    raise AssertionError("a wrong secret was accepted")
                except grpc.RpcError as e:
                    codes[e.code()] = codes.get(e.code(), 0) + 1
        finally:
            for c in channels:
                c.close()
        # every guess beyond the limit was refused before its secret was looked at
        assert set(codes) == {UNAUTH, EXHAUSTED}, codes
        assert 1 <= codes[UNAUTH] <= limit, codes
        assert codes[UNAUTH] + codes[EXHAUSTED] == 150
        fails(srv, victim.client_id, victim.client_secret, EXHAUSTED, "TOO_MANY_FAILED_ATTEMPTS")
