"""Failed client-credential attempts, counted in the database so every server sharing it
shares the limit.

Two counters per attempt: one for the client id, one for the client's address (the
peer of the gRPC call, or of the HTTP request when the REST token endpoint calls the
same CreateToken use case; behind proxies named by ``--trusted-proxies``, the address
their X-Forwarded-For gives, see ``rpc.pipeline.client_address``). Only *failed*
attempts count. ``auth_max_failures`` failures of one counter within
``auth_failure_window`` seconds block it for
``auth_block_seconds``: while either counter of an attempt is blocked, the attempt is
refused with RESOURCE_EXHAUSTED (``google.rpc.RetryInfo`` says when to retry) *before*
the secret is checked, so a blocked client learns nothing about guesses it keeps making.

A counter whose window has passed, or whose block has ended, starts afresh at its next
failure. Each failure is one atomic upsert (``INSERT ... ON CONFLICT DO UPDATE``), so
concurrent failures on several servers are all counted. Stale rows are pruned now and
then on the failure path. ``auth_max_failures = 0`` turns the limit off.

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
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from accounts_grpc.config import Settings
from accounts_grpc.domain.errors import ResourceExhausted
from accounts_grpc.store.db import Database, db_error, now_us
from accounts_grpc.store.tables import rate_limits

log = logging.getLogger(__name__)

_MAX_KEY_PART = 100  # rate_limits.key is 128 characters
_US = 1_000_000


def _key(kind: str, value: str) -> str:
    if len(value) <= _MAX_KEY_PART and value.isprintable():
        return f"{kind}:{value}"
    return f"{kind}#" + hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()[:64]


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

    def check(self, conn: sa.Connection, keys: Sequence[str]) -> None:
        """RESOURCE_EXHAUSTED if any of ``keys`` is blocked now."""
        if not self.enabled or not keys:
            return
        now = now_us()
        until = conn.execute(
            sa.select(sa.func.max(rate_limits.c.blocked_until)).where(
                rate_limits.c.key.in_(keys), rate_limits.c.blocked_until > now
            )
        ).scalar()
        if until is not None:
            retry_after = max(1, math.ceil((until - now) / _US))
            raise ResourceExhausted(
                "too many failed attempts for this client or address; "
                f"retry in {retry_after} seconds",
                retry_after=retry_after,
                reason="TOO_MANY_FAILED_ATTEMPTS",
            )

    def record_failure(self, keys: Sequence[str]) -> None:
        """Count one failed attempt against every key (best effort: never raises)."""
        if not self.enabled or not keys:
            return
        try:
            with self._db.write() as uow:
                for k in sorted(keys):  # one order everywhere: no deadlocks on PostgreSQL
                    uow.conn.execute(self._upsert(uow.conn.dialect.name, k, now_us()))
                self._maybe_prune(uow.conn)
                uow.commit()
        except sa.exc.DBAPIError as e:
            log.warning("could not record a failed client-credential attempt: %s", db_error(e))

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
            set_={
                "window_start": sa.case((fresh, now), else_=t.c.window_start),
                "failures": failures,
                "blocked_until": sa.case(
                    (failures >= self._max, now + self._block_us),
                    (fresh, sa.null()),
                    else_=t.c.blocked_until,
                ),
            },
        )

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
