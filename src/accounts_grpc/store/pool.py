"""The connection pool, reporting its state for the metrics: size, checked out, overflow,
and the callers waiting for a connection.

``WatchedPool`` is SQLAlchemy's QueuePool (the pool the engines would get anyway) that,
once watched (``Database.watch_pool``; app.py hands it the metrics, as the store knows
no Prometheus), reports its state after every checkout and every return, the only two
operations that change it, read from the pool's own accounting. SQLAlchemy's pool events
would not do: ``checkin`` fires before the connection is back, ``close`` before the
overflow count drops, and nothing fires when a caller starts to wait.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from sqlalchemy.pool import ConnectionPoolEntry, QueuePool


class PoolState(NamedTuple):
    #: connections the pool keeps open once made (``pool_size``)
    size: int
    #: connections in use now (on SQLite each worker thread keeps one for its reads)
    checked_out: int
    #: connections open beyond ``size`` (``max_overflow``; unbounded on SQLite)
    overflow: int
    #: callers blocked until a connection is returned: every one is in use and no more
    #: may be opened; each waits at most ``pool_timeout`` (then DATABASE_BUSY)
    waiting: int


class WatchedPool(QueuePool):
    #: SQLAlchemy names a pool's logger after its class: keep QueuePool's, out of our
    #: own loggers (which log INFO: "Pool disposed" at every stop)
    _sqla_logger_namespace = "sqlalchemy.pool.impl.QueuePool"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.waiting = 0
        self._watcher: Callable[[PoolState], None] | None = None
        self._lock = threading.Lock()

    def watch(self, watcher: Callable[[PoolState], None]) -> None:
        """Report the state to ``watcher`` now and after every change (on the changing
        thread, one report at a time, so the last report is the current state)."""
        self._watcher = watcher
        self._report(0)

    def state(self) -> PoolState:
        return PoolState(self.size(), self.checkedout(), max(0, self.overflow()), self.waiting)

    def _report(self, waiting: int) -> None:
        with self._lock:
            self.waiting += waiting
            if self._watcher is not None:
                self._watcher(self.state())

    def _do_get(self) -> ConnectionPoolEntry:
        if self._watcher is None:
            return super()._do_get()
        # QueuePool blocks (up to its timeout) exactly when this holds
        waits = (-1 < self._max_overflow <= self._overflow) and self._pool.empty()
        if waits:
            self._report(1)
        try:
            return super()._do_get()
        finally:
            self._report(-1 if waits else 0)

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        try:
            super()._do_return_conn(record)
        finally:
            if self._watcher is not None:
                self._report(0)
