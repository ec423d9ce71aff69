"""Failed client-credential attempts, counted in the database so every server sharing it
shares the limit.

Two counters per attempt: one for the client id, one for the client's address (the
peer of the gRPC call, or of the HTTP request when the REST token endpoint calls the
same CreateToken use case; behind proxies named by ``--trusted-proxies``, the address
their X-Forwarded-For gives, see ``rpc.pipeline.client_address``). Only *failed*
attempts count. ``auth_max_failures`` failures of one counter within
``auth_failure_window`` seconds block it for ``auth_block_seconds``: while either
counter of an attempt is blocked, the attempt is refused with RESOURCE_EXHAUSTED
(``google.rpc.RetryInfo`` says when to retry) *before* the secret is checked, so a
blocked client learns nothing about guesses it keeps making.

Atomic: an attempt is *reserved* before its secret is checked. In one write transaction,
each of its counters is counted up by one statement (``INSERT ... ON CONFLICT DO UPDATE
... WHERE not blocked RETURNING``) that refuses a blocked counter; then the secret is
checked; a failure commits the reservation, a success rolls it back (successes count
nothing). The transaction holds the counters' rows (PostgreSQL row locks; SQLite's one
writer) while the secret is checked, so concurrent attempts on one counter are checked
one after another against the committed count: of 150 concurrent wrong guesses at most
``auth_max_failures`` are ever checked, on every server sharing the database.

A counter whose window has passed, or whose block has ended, starts afresh at its next
failure. Stale rows are pruned now and then on the failure path.
``auth_max_failures = 0`` turns the limit off.

Note: a counter per client id means that someone who knows a client id can get that
client refused for a while by failing on purpose (the usual lockout trade-off; the
address counter alone would not stop a distributed guesser). Client ids are not secret,
but secrets are 256-bit random, so the block only ever costs the real client a retry
delay, never its credentials.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from accounts_grpc.config import Settings
from accounts_grpc.domain.errors import ResourceExhausted
from accounts_grpc.store.db import Database, now_us
from accounts_grpc.store.tables import rate_limits

log = logging.getLogger(__name__)

_MAX_KEY_PART = 100  # rate_limits.key is 128 characters
_US = 1_000_000


def _key(kind: str, value: str) -> str:
    if len(value) <= _MAX_KEY_PART and value.isprintable():
        return f"{kind}:{value}"
    return f"{kind}#" + hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()[:64]


class Attempt:
    """A reserved attempt: check the secret on ``conn``; ``succeeded()`` if it matched."""

    __slots__ = ("conn", "ok")

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn
        self.ok = False

    def succeeded(self) -> None:
        self.ok = True


class FailureLimiter:
    def __init__(self, db: Database, settings: Settings) -> None:
        self._db = db
        self._max = settings.auth_max_failures
        self._window_us = settings.auth_failure_window * _US
        self._block_us = settings.auth_block_seconds * _US
        self._prune_every = max(60.0, float(settings.auth_failure_window))
        self._last_prune = 0.0
        self._prune_lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._max > 0

    @staticmethod
    def keys(client_id: str, address: str | None) -> list[str]:
        """The counters an attempt touches: its client id and its address (when known)."""
        out = []
        if client_id:
            out.append(_key("client", client_id))
        if address:
            out.append(_key("addr", address))
        return sorted(out)

    @contextmanager
    def attempt(self, keys: Sequence[str]) -> Iterator[Attempt]:
        """One client-credential attempt: reserve it against every key, or raise
        RESOURCE_EXHAUSTED (nothing counted) if a key is blocked; the body checks the
        secret on ``Attempt.conn`` and calls ``succeeded()`` if it matched. A failed
        attempt is committed as a failure; a successful one is rolled back."""
        if not self.enabled or not keys:
            with self._db.connect() as conn:
                yield Attempt(conn)
            return
        with self._db.write() as uow:
            now = now_us()
            dialect = uow.conn.dialect.name
            for k in sorted(keys):  # one order everywhere: no deadlocks on PostgreSQL
                if uow.conn.execute(self._upsert(dialect, k, now)).first() is None:
                    self._refuse(uow.conn, k, now)
            at = Attempt(uow.conn)
            yield at
            if not at.ok:
                self._maybe_prune(uow.conn)
                uow.commit()

    @staticmethod
    def _refuse(conn: sa.Connection, key: str, now: int) -> None:
        until = conn.execute(
            sa.select(rate_limits.c.blocked_until).where(rate_limits.c.key == key)
        ).scalar() or now
        retry_after = max(1, math.ceil((until - now) / _US))
        raise ResourceExhausted(
            "too many failed attempts for this client or address; "
            f"retry in {retry_after} seconds",
            retry_after=retry_after,
            reason="TOO_MANY_FAILED_ATTEMPTS",
        )

    def _upsert(self, dialect: str, key: str, now: int) -> sa.Executable:
        t = rate_limits
        # the stored counter is stale: its window has passed or its block has ended
        fresh = sa.or_(
            t.c.window_start <= now - self._window_us,
            sa.and_(t.c.blocked_until.is_not(None), t.c.blocked_until <= now),
        )
        failures = sa.case((fresh, 1), else_=t.c.failures + 1)
        first_blocks = self._max <= 1
        insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(t).values(
            key=key,
            window_start=now,
            failures=1,
            blocked_until=now + self._block_us if first_blocks else None,
        )
        return insert.on_conflict_do_update(
            index_elements=[t.c.key],
            # a counter blocked now is left as it is, and returns no row: refused
            where=sa.or_(t.c.blocked_until.is_(None), t.c.blocked_until <= now),
            set_={
                "window_start": sa.case((fresh, now), else_=t.c.window_start),
                "failures": failures,
                "blocked_until": sa.case(
                    (failures >= self._max, now + self._block_us),
                    (fresh, sa.null()),
                    else_=t.c.blocked_until,
                ),
            },
        ).returning(t.c.failures)

    def _maybe_prune(self, conn: sa.Connection) -> None:
        mono = time.monotonic()
        with self._prune_lock:
            if mono - self._last_prune < self._prune_every:
                return
            self._last_prune = mono
        now = now_us()
        conn.execute(
            rate_limits.delete().where(
                rate_limits.c.window_start < now - self._window_us,
                sa.or_(rate_limits.c.blocked_until.is_(None), rate_limits.c.blocked_until < now),
            )
        )
