"""Key rotation across replicas, on real servers over real channels (auth/keys.py).

Three servers share one database (SQLite; PostgreSQL too with ACCOUNTS_TEST_POSTGRES_URL)
with tiny key caches (``key_cache_seconds=1``, ``jwks_max_age=1``). While every server
issues tokens and every token is checked by GetMe on every server and by an offline
verifier (``jwt.PyJWKClient``, caching each server's JWKS for its max-age and never
refetching it for an unknown kid), a key rotates: no token is rejected anywhere; the new
kid is in every JWKS before any token carries it; every server switches at the
activation time; the old key leaves the JWKS only after the longest token lifetime.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import jwt
import pytest
import sqlalchemy as sa
from accounts.v1 import session_service_pb2 as spb
from accounts.v1 import session_service_pb2_grpc, user_service_pb2, user_service_pb2_grpc

from accounts_grpc.app import App
from accounts_grpc.auth import keys as keys_mod
from accounts_grpc.auth.jwt_tokens import LEEWAY_SECONDS
from accounts_grpc.auth.keys import KeyStore, load_kek
from accounts_grpc.services.bootstrap import bootstrap
from accounts_grpc.store.db import Database
from accounts_grpc.store.tables import signing_keys
from tests import support
from tests.support import bearer, failure, running_server

TINY = {"key_cache_seconds": 1, "jwks_max_age": 1}
#: the token lifetimes of the three servers: the first issues the longest
LIFETIMES = (9, 6, 6)
S = 1_000_000


@contextlib.contextmanager
def replicas(url: str, tmp: Path, lifetimes: tuple[int, ...]) -> Iterator[list[App]]:
    apps: list[App] = []
    try:
        for i, lifetime in enumerate(lifetimes):
            app = App(support.test_settings(url, tmp, token_lifetime=lifetime, **TINY),
                      auto_migrate=i == 0)
            app.start()
            apps.append(app)
        yield apps
    finally:
        for app in apps:
            app.stop(grace=1.0)


def key_row(db: Database, kid: str) -> sa.Row[Any]:
    with db.read() as uow:
        r = uow.conn.execute(sa.select(signing_keys).where(signing_keys.c.kid == kid)).one()
    return r


def sleep_until(t: float) -> None:
    time.sleep(max(0.0, t - time.time()))


@dataclass
class Issued:
    started: float
    ended: float
    server: int
    kid: str
    exp: int
    token: str


@dataclass
class Poll:
    started: float
    ended: float
    server: int
    kids: frozenset[str]
    cache_control: str | None


@dataclass
class Load:
    """CreateToken on every server from threads; each token at once to GetMe on every
    server and to an offline verifier of every server's JWKS; the JWKS polled besides."""

    apps: list[App]
    client_id: str
    client_secret: str
    issued: list[Issued] = field(default_factory=list)
    polls: list[Poll] = field(default_factory=list)
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # server, kid, why
    offline_rejected: list[tuple[int, str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def jwks_url(self, j: int) -> str:
        return f"http://127.0.0.1:{self.apps[j].http_port}/.well-known/jwks.json"

    def verifier(self, j: int) -> jwt.PyJWKClient:
        # caches the JWKS as long as the server says (max-age 1 s) and never refetches
        # it for a kid it lacks: a kid missing from the cached JWKS is a rejected token
        return jwt.PyJWKClient(self.jwks_url(j), cache_jwk_set=True, lifespan=1,
                               cooldown_duration=3600)

    def verify_everywhere(self, token: str, users: list[Any],
                          verifiers: list[jwt.PyJWKClient]) -> None:
        kid = jwt.get_unverified_header(token)["kid"]
        for j, stub in enumerate(users):
            try:
                stub.GetMe(user_service_pb2.GetMeRequest(), metadata=bearer(token), timeout=10)
            except grpc.RpcError as e:
                f = failure(e)
                self.rejected.append((j, kid, f"{f.code.name} {f.reason}: {f.message}"))
        settings = self.apps[0].settings
        for j, verifier in enumerate(verifiers):
            try:
                key = verifier.get_signing_key_from_jwt(token)
                # with the clock leeway a verifier has (ours: 30 s), as the tokens live
                # only seconds here and the machine may be busy
                jwt.decode(token, key.key, algorithms=[settings.signing_alg],
                           audience=settings.audience,
                           issuer=settings.issuer, leeway=LEEWAY_SECONDS)
            except jwt.PyJWTError as e:
                self.offline_rejected.append((j, kid, repr(e)))

    def work(self, i: int) -> None:
        channels = [grpc.insecure_channel(f"127.0.0.1:{a.grpc_port}") for a in self.apps]
        try:
            sessions = session_service_pb2_grpc.SessionServiceStub(channels[i])
            users = [user_service_pb2_grpc.UserServiceStub(c) for c in channels]
            verifiers = [self.verifier(j) for j in range(len(self.apps))]
            while not self.stop.is_set():
                started = time.time()
                token = sessions.CreateToken(spb.CreateTokenRequest(
                    client_id=self.client_id, client_secret=self.client_secret),
                    timeout=10).access_token
                ended = time.time()
                claims = jwt.decode(token, options={"verify_signature": False})
                self.issued.append(Issued(started, ended, i,
                                          jwt.get_unverified_header(token)["kid"],
                                          claims["exp"], token))
                self.verify_everywhere(token, users, verifiers)
        except Exception as e:  # the load must not die quietly
            self.errors.append(f"server {i}: {e!r}")
        finally:
            for c in channels:
                c.close()

    def watch(self, j: int) -> None:
        try:
            with httpx.Client(timeout=10) as http:
                while not self.stop.is_set():
                    started = time.time()
                    r = http.get(self.jwks_url(j))
                    ended = time.time()
                    kids = frozenset(k["kid"] for k in r.json()["keys"])
                    self.polls.append(Poll(started, ended, j, kids,
                                           r.headers.get("cache-control")))
                    time.sleep(0.05)
        except Exception as e:
            self.errors.append(f"JWKS of server {j}: {e!r}")

    def start(self, per_server: int = 2) -> None:
        for i in range(len(self.apps)):
            self.threads.append(threading.Thread(target=self.watch, args=(i,), daemon=True))
            for _ in range(per_server):
                self.threads.append(threading.Thread(target=self.work, args=(i,), daemon=True))
        for t in self.threads:
            t.start()

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)


def test_a_rotation_under_load_rejects_no_token(backend: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # a 1 s margin past the caches, instead of 60 s, to see the old key leave in the test
    monkeypatch.setattr(keys_mod, "EXPIRY_MARGIN_SECONDS", 1)
    with support.database_url(backend, tmp_path) as url, \
            replicas(url, tmp_path, LIFETIMES) as apps:
        boot = bootstrap(apps[0].db)
        old_kid = apps[0].keys.signing_key().kid
        load = Load(apps, boot.client_id, boot.client_secret)
        load.start()
        db = Database(url)
        try:
            time.sleep(2)
            # `keys rotate`, from a process whose own token lifetime (1 day) does not count
            settings = support.test_settings(url, tmp_path, **TINY)
            rotated_at = time.time()
            new = KeyStore(db, load_kek(settings), settings).rotate()
            rotated_end = time.time()
            activate = new.activate_time / S
            lead = 1 + 1 + keys_mod.PUBLISH_MARGIN_SECONDS
            assert rotated_at + lead - 0.01 <= activate <= rotated_end + lead
            sleep_until(activate - 1)
            assert key_row(db, new.kid).max_token_lifetime == max(LIFETIMES), (
                "every server records its lifetime before it signs with the key")
            sleep_until(activate + 1)
            # a token of the old key, issued just before the switch, verifies everywhere
            last_old = max((t for t in load.issued if t.kid == old_kid and t.server == 0),
                           key=lambda t: t.started)
            assert last_old.exp > time.time()
            channels = [grpc.insecure_channel(f"127.0.0.1:{a.grpc_port}") for a in apps]
            load.verify_everywhere(
                last_old.token, [user_service_pb2_grpc.UserServiceStub(c) for c in channels],
                [load.verifier(j) for j in range(len(apps))])
            for c in channels:
                c.close()
            old = key_row(db, old_kid)
            expire = old.expire_time / S
            sleep_until(expire + 2)
        finally:
            load.join()
            db.dispose()

    assert load.errors == []
    assert load.rejected == [], "no server rejected a token"
    assert load.offline_rejected == [], "no offline verifier rejected a token"
    servers = range(len(apps))
    kids_by_server = {i: {t.kid for t in load.issued if t.server == i} for i in servers}
    assert all(kids == {old_kid, new.kid} for kids in kids_by_server.values()), kids_by_server

    # every server switches at the activation time, from the keys it had read
    for t in load.issued:
        if t.ended < activate:
            assert t.kid == old_kid, t
        elif t.started > activate:
            assert t.kid == new.kid, t

    # the new kid was in every JWKS, and had left every cache that honours the max-age,
    # before any token carried it (and was there within a key cache of the rotation)
    first_new = min(t.started for t in load.issued if t.kid == new.kid)
    assert all(t.ended >= activate for t in load.issued if t.kid == new.kid)
    for j in servers:
        polls = [p for p in load.polls if p.server == j]
        assert {p.cache_control for p in polls} == {"public, max-age=1"}
        without_new = [p for p in polls if new.kid not in p.kids]
        assert max(p.ended for p in without_new) < first_new - 1
        assert all(new.kid in p.kids for p in polls if p.started > rotated_end + 1 + 2)

    # the old key stayed until the longest lifetime had passed, then left
    assert old.retire_time == new.activate_time
    assert old.max_token_lifetime == max(LIFETIMES) and old.max_cache_seconds == 2
    assert old.expire_time == old.retire_time + (max(LIFETIMES) + 2 + 1) * S
    last_exp = max(t.exp for t in load.issued if t.kid == old_kid)
    for j in servers:
        polls = [p for p in load.polls if p.server == j and p.started > rotated_end]
        gone = [p for p in polls if old_kid not in p.kids]
        assert gone, f"the old key never left server {j}'s JWKS"
        assert min(p.started for p in gone) >= max(activate + max(LIFETIMES), last_exp)
        assert all(old_kid in p.kids for p in polls if p.ended < expire)


def test_concurrent_first_calls_with_a_new_kid_wait_for_one_reread(
        backend: str, tmp_path: Path) -> None:
    """A server that has not read a key yet (its key cache: 60 s) gets 32 calls at once
    with a token of it: they all wait for the one re-read, none is UNAUTHENTICATED."""
    with running_server(backend, tmp_path) as srv:
        other = App(support.test_settings(srv.db_url, srv.tmp))
        other.start()
        try:
            new = other.keys.rotate(activate_in=0)  # switching at once: for this test only
            with grpc.insecure_channel(f"127.0.0.1:{other.grpc_port}") as channel:
                token = session_service_pb2_grpc.SessionServiceStub(channel).CreateToken(
                    spb.CreateTokenRequest(client_id=srv.admin_client_id,
                                           client_secret=srv.admin_client_secret),
                    timeout=10).access_token
            assert jwt.get_unverified_header(token)["kid"] == new.kid
            assert new.kid not in {k["kid"] for k in srv.app.keys.jwks()}, "not read yet"

            loads = [0]
            load = srv.app.keys._load

            def counted() -> None:  # a slow database: the calls arrive during the re-read
                loads[0] += 1
                time.sleep(0.3)
                load()

            srv.app.keys._load = counted  # type: ignore[method-assign]
            barrier = threading.Barrier(32)
            outcomes: list[str] = []

            def call() -> None:
                barrier.wait()
                try:
                    srv.stubs.users.GetMe(user_service_pb2.GetMeRequest(),
                                          metadata=bearer(token), timeout=10)
                    outcomes.append("OK")
                except grpc.RpcError as e:
                    f = failure(e)
                    outcomes.append(f"{f.code.name} {f.reason}")

            threads = [threading.Thread(target=call) for _ in range(32)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert outcomes == ["OK"] * 32
            assert loads == [1], "one re-read for them all"

            # and tokens with made-up kids start at most one re-read a second
            forged = [jwt.encode({"sub": "x"}, "k" * 32, headers={"kid": uuid.uuid4().hex})
                      for _ in range(40)]
            started = time.monotonic()
            for f_token in forged:
                with pytest.raises(grpc.RpcError) as e:
                    srv.stubs.users.GetMe(user_service_pb2.GetMeRequest(),
                                          metadata=bearer(f_token), timeout=10)
                assert failure(e.value).reason == "TOKEN_UNKNOWN_KEY"
            elapsed = time.monotonic() - started
            assert loads[0] - 1 <= 1 + elapsed / keys_mod.MISS_RELOAD_INTERVAL
        finally:
            other.stop(grace=1.0)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ACCOUNTS_")}
    base.update(env or {})
    return subprocess.run([sys.executable, "-m", "accounts_grpc.cli", *args],
                          capture_output=True, text=True, env=base, timeout=120, check=False)


def test_the_old_key_outlives_the_longest_lifetime_a_server_issues(
        backend: str, tmp_path: Path) -> None:
    """A server issuing 7-day tokens records that on its key; a plain `keys rotate` (with
    a 1-minute lifetime of its own) keeps the old key until retirement + 7 days."""
    week = 7 * 86400
    with running_server(backend, tmp_path, token_lifetime=week) as srv:
        old_kid = srv.app.keys.signing_key().kid
        flags = ["--database-url", srv.db_url,
                 "--key-encryption-key-file", str(tmp_path / "test.kek")]
        gone = cli("keys", "rotate", "--token-lifetime", "60", *flags)
        assert gone.returncode == 2 and "--token-lifetime" in gone.stderr, "no such flag"
        p = cli("keys", "rotate", "--json", *flags, env={"ACCOUNTS_TOKEN_LIFETIME": "60"})
        assert p.returncode == 0, p.stderr
        rotated = json.loads(p.stdout)
        assert rotated["phase"] == "pending" and rotated["max_token_lifetime"] == 0

        old = key_row(srv.app.db, old_kid)
        new = key_row(srv.app.db, rotated["kid"])
        assert old.max_token_lifetime == week
        assert old.retire_time == new.activate_time
        margin = old.max_cache_seconds + keys_mod.EXPIRY_MARGIN_SECONDS
        assert old.max_cache_seconds == 60 + 30, "the server's key cache + JWKS max-age"
        assert old.expire_time == old.retire_time + (week + margin) * S
        listed = json.loads(cli("keys", "list", "--json", *flags).stdout)
        assert [(k["kid"], k["phase"]) for k in listed] == [
            (rotated["kid"], "pending"), (old_kid, "active")]
        assert listed[1]["expire_time"] == time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(old.expire_time // S))
        text = cli("keys", "list", *flags).stdout
        assert "pending" in text and "activates" in text and "retires" in text

        # the server has read the pending key and recorded its lifetime on it
        srv.app.keys.refresh()
        assert key_row(srv.app.db, rotated["kid"]).max_token_lifetime == week


def test_the_jwks_says_how_long_it_may_be_cached(backend: str, tmp_path: Path) -> None:
    with running_server(backend, tmp_path, jwks_max_age=45) as srv:
        r = httpx.get(f"{srv.http_url}/.well-known/jwks.json", timeout=10)
        assert r.status_code == 200 and r.headers["cache-control"] == "public, max-age=45"
        r = httpx.get(f"{srv.http_url}/healthz", timeout=10)
        assert "cache-control" not in r.headers
