"""The failed-attempt counters (table ``rate_limits``) in the store: ``uow.rate_limits``.

The policy (which counters an attempt has, and their limits) lives in
services/ratelimit.py; here is the SQL, three statements:

- ``reserve`` counts one failure on every counter of an attempt in ONE statement, a
  multi-row ``INSERT ... ON CONFLICT (key) DO UPDATE ... WHERE not blocked RETURNING
  key`` (SQLite 3.35+ and PostgreSQL alike). Each counter has a limit of its own: the
  table has no column for it, so the statement carries it as ``CASE key WHEN <key> THEN
  <limit> ... END``, one branch per counter of the attempt. A counter blocked now is
  left as it is and returns no row: the keys missing from the answer are the blocked
  ones. The rows are sent sorted by key, so PostgreSQL locks them in the same order in
  every transaction (no deadlocks between attempts that share counters).
- ``blocked_until``: when the last of some blocked counters frees up.
- ``prune``: deletes the counters whose window and block have both passed.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping

import sqlalchemy as sa

from accounts_grpc.store.rows import Repository
from accounts_grpc.store.tables import rate_limits

__all__ = ["RateLimits"]


class RateLimits(Repository):
    """The failed-attempt counters (see the module docstring)."""

    __slots__ = ()

    def reserve(
        self, limits: Mapping[str, int], *, now: int, window_us: int, block_us: int
    ) -> set[str]:
        """Count a failure on each counter ``key`` of ``limits`` (its limit, at least 1)
        that is not blocked at ``now``; returns the keys that are blocked (counted
        nothing). A counter that reaches its limit is blocked until ``now + block_us``; a
        counter whose window (``window_us``) or block has passed starts afresh at 1. Meant
        for a write transaction that commits it if the attempt fails and rolls it back
        otherwise."""
        if not limits:
            return set()
        keys = sorted(limits)  # one lock order everywhere (PostgreSQL)
        params: dict[str, object] = {
            "now": now, "stale": now - window_us, "until": now + block_us,
        }
        for i, k in enumerate(keys):
            params[f"k{i}"] = params[f"c{i}"] = k
            params[f"l{i}"] = limits[k]
            params[f"b{i}"] = now + block_us if limits[k] <= 1 else None
        counted = set(self.conn.execute(_reserve_statement(len(keys)), params).scalars())
        return set(keys) - counted

    def blocked_until(self, keys: Collection[str]) -> int | None:
        """The time the last of ``keys`` stops being blocked (None: none is blocked)."""
        until: int | None = self.conn.execute(
            sa.select(sa.func.max(rate_limits.c.blocked_until)).where(
                rate_limits.c.key.in_(sorted(keys))
            )
        ).scalar()
        return until

    def prune(self, *, now: int, window_us: int) -> None:
        """Delete the counters that would start afresh anyway: window and block both
        over."""
        t = rate_limits
        self.conn.execute(
            t.delete().where(
                t.c.window_start < now - window_us,
                sa.or_(t.c.blocked_until.is_(None), t.c.blocked_until < now),
            )
        )


@functools.cache
def _reserve_statement(n: int) -> sa.TextClause:
    """The reservation of ``n`` counters: the same SQL on SQLite and PostgreSQL.

    Written out rather than built with ``insert().values([...])``, because SQLAlchemy
    caches no multi-row VALUES construct: it would be compiled again on every attempt.
    ``:c<i>`` repeats ``:k<i>`` so that PostgreSQL deduces each parameter's type from one
    place only."""
    rows = ", ".join(f"(:k{i}, :now, 1, :b{i})" for i in range(n))
    limit = "CASE rate_limits.key " + " ".join(
        f"WHEN :c{i} THEN :l{i}" for i in range(n)
    ) + " END"
    # the stored counter is stale: its window has passed or its block has ended
    fresh = "(rate_limits.window_start <= :stale OR rate_limits.blocked_until <= :now)"
    failures = f"CASE WHEN {fresh} THEN 1 ELSE rate_limits.failures + 1 END"
    return sa.text(
        f"INSERT INTO rate_limits (key, window_start, failures, blocked_until) VALUES {rows} "
        "ON CONFLICT (key) DO UPDATE SET "
        f"window_start = CASE WHEN {fresh} THEN :now ELSE rate_limits.window_start END, "
        f"failures = {failures}, "
        f"blocked_until = CASE WHEN {failures} >= {limit} THEN :until "
        f"WHEN {fresh} THEN NULL ELSE rate_limits.blocked_until END "
        # a counter blocked now is left as it is, and returns no row: refused
        "WHERE rate_limits.blocked_until IS NULL OR rate_limits.blocked_until <= :now "
        "RETURNING key"
    )
