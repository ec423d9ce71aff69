"""The connection pool's state as the metrics get it (store/pool.py), on SQLite and
PostgreSQL: connections checked out and returned, opened past the pool's size, and a
caller waiting for one while every connection is in use."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import sqlalchemy as sa

from accounts_grpc.store.db import Database, normalize_url
from accounts_grpc.store.pool import PoolState, WatchedPool


class Reports:
    def __init__(self) -> None:
        self.states: list[PoolState] = []
        self._changed = threading.Condition()

    def __call__(self, state: PoolState) -> None:
        with self._changed:
            self.states.append(state)
            self._changed.notify_all()

    @property
    def last(self) -> PoolState:
        return self.states[-1]

    def wait_for(self, ok: Callable[[PoolState], bool], timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not (self.states and ok(self.states[-1])):
                left = deadline - time.monotonic()
                assert left > 0, f"never reported; the reports: {self.states}"
                self._changed.wait(left)


def test_checkouts_returns_and_a_waiting_caller_are_reported(db_url: str) -> None:
    engine = sa.create_engine(normalize_url(db_url), poolclass=WatchedPool, pool_size=1,
                              max_overflow=1, pool_timeout=20)
    pool = engine.pool
    assert isinstance(pool, WatchedPool)
    reports = Reports()
    pool.watch(reports)
    try:
        assert reports.last == PoolState(size=1, checked_out=0, overflow=0, waiting=0)
        first = engine.connect()
        assert reports.last == PoolState(1, 1, 0, 0)
        second = engine.connect()  # the one overflow connection
        assert reports.last == PoolState(1, 2, 1, 0)
        got: list[sa.Connection] = []
        waiter = threading.Thread(target=lambda: got.append(engine.connect()))
        waiter.start()  # every connection is in use and no more may open: it waits
        reports.wait_for(lambda s: s.waiting == 1)
        assert reports.last == PoolState(1, 2, 1, 1) and not got
        first.close()  # handed to the waiting caller
        waiter.join(10)
        assert got and reports.last == PoolState(1, 2, 1, 0)
        second.close()  # kept, in the pool's free place: still two open
        assert reports.last == PoolState(1, 1, 1, 0)
        got[0].close()  # past the pool's size: closed on return
        assert reports.last == PoolState(1, 0, 0, 0)
    finally:
        engine.dispose()


def test_the_database_s_pool_is_watched(db_url: str) -> None:
    """Database makes its engine with the watched pool (both databases)."""
    d = Database(db_url, pool_size=3)
    reports = Reports()
    try:
        d.watch_pool(reports)
        assert reports.last.size == 3 and reports.last.checked_out == 0
        with d.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
            assert reports.last.checked_out == 1
        assert reports.last.checked_out == 0
    finally:
        d.dispose()
