"""The PostgreSQL connection pool: a process never opens more than pool + overflow
connections, reuses them under a burst, and a call that finds none free within
--db-pool-timeout gets UNAVAILABLE (DATABASE_BUSY, RetryInfo) rather than INTERNAL."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from accounts.v1 import account_service_pb2 as pb
from accounts.v1 import account_service_pb2_grpc

from accounts_grpc.config import Settings
from tests.support import Server, failure, running_server


def _postgres_only(backend: str) -> None:
    if backend != "postgres":
        pytest.skip("the pool limits only PostgreSQL (SQLite connections are local)")


@pytest.fixture
def small_pool(backend: str, tmp_path: Path) -> Iterator[Server]:
    _postgres_only(backend)
    with running_server(backend, tmp_path, grpc_workers=32, db_pool_size=2,
                        db_max_overflow=0, db_pool_timeout=0.5) as srv:
        yield srv


@pytest.fixture
def pool_of_four(backend: str, tmp_path: Path) -> Iterator[Server]:
    _postgres_only(backend)
    with running_server(backend, tmp_path, grpc_workers=64, db_pool_size=4,
                        db_max_overflow=0) as srv:
        yield srv


def test_default_pool_is_sized_from_the_workers_and_never_overflows() -> None:
    s = Settings()
    assert s.db_max_overflow == 0
    assert s.pool_size() == 16
    assert Settings(grpc_workers=2, http_port=-1).pool_size() == 4
    assert Settings(grpc_workers=2).pool_size() == 8  # + 4 REST workers
    assert Settings(db_pool_size=3).pool_size() == 3


def test_a_call_past_the_pool_gets_database_busy_then_calls_succeed(small_pool: Server
                                                                     ) -> None:
    server = small_pool
    stub = server.stubs.accounts
    engine: sa.Engine = server.app.db.engine
    assert engine.pool.size() == 2  # type: ignore[attr-defined]
    held = [engine.connect() for _ in range(2)]  # every pooled connection busy
    try:
        for c in held:
            c.exec_driver_sql("SELECT 1")
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            stub.ListAccounts(pb.ListAccountsRequest(), metadata=server.admin, timeout=10)
        elapsed = time.monotonic() - started
        f = failure(err.value)
        assert f.code == grpc.StatusCode.UNAVAILABLE, (f.code, f.reason, f.message)
        assert f.reason == "DATABASE_BUSY"
        assert f.retry_seconds == 1
        assert 0.4 <= elapsed < 2.0, elapsed
    finally:
        for c in held:
            c.close()
    for _ in range(3):
        stub.ListAccounts(pb.ListAccountsRequest(), metadata=server.admin, timeout=10)


def test_a_burst_reuses_the_pool_and_never_opens_more(pool_of_four: Server) -> None:
    server = pool_of_four
    engine: sa.Engine = server.app.db.engine
    pool = engine.pool
    accounts = server.stubs.accounts.ListAccounts(
        pb.ListAccountsRequest(), metadata=server.admin, timeout=10).accounts
    assert accounts
    account_id = accounts[0].id
    before = pool.checkedin() + pool.checkedout()  # type: ignore[attr-defined]
    connects: list[int] = []

    def on_connect(*_: object) -> None:
        connects.append(1)

    sa.event.listen(pool, "connect", on_connect)
    most = [0]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            open_now = pool.checkedin() + pool.checkedout()  # type: ignore[attr-defined]
            most[0] = max(most[0], open_now)
            time.sleep(0.001)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    channels = [grpc.insecure_channel(server.address) for _ in range(4)]
    try:
        stubs = [account_service_pb2_grpc.AccountServiceStub(c) for c in channels]
        for _round in range(3):
            futures = [stubs[i % 4].GetAccount.future(pb.GetAccountRequest(id=account_id),
                                                      metadata=server.admin, timeout=30)
                       for i in range(64)]
            codes: Counter[str] = Counter()
            for fut in futures:
                try:
                    fut.result()
                    codes["OK"] += 1
                except grpc.RpcError as e:
                    codes[f"{e.code().name} {failure(e).reason}"] += 1
            assert codes == Counter({"OK": 64})
    finally:
        stop.set()
        watcher.join()
        sa.event.remove(pool, "connect", on_connect)
        for c in channels:
            c.close()
    assert most[0] <= 4, most[0]
    assert before + len(connects) <= 4, (before, len(connects))  # reused, not reopened
