"""The request_id keys of idempotent creates (table ``idempotency_keys``) in the store:
``uow.idempotency``.

The rule (what a key is, how long it is remembered, what a retry gets) lives in
services/writes.py; here are the statements, each in the unit of work's transaction:

- ``find`` reads a key; ``forget`` deletes one (an expired key, before a new request
  takes its place).
- ``claim`` inserts a key, in a savepoint, with an empty result: it is inserted *first*
  in the creating transaction, so that a concurrent call with the same key blocks on the
  row (PostgreSQL) or on the write lock (SQLite). A key that a concurrent call committed
  first is reported (False), not raised, so the caller can read that call's result.
- ``record_result`` stores the ids the create made, in the same transaction.
- ``prune`` deletes a bounded batch of expired keys, oldest first (the index of
  migration 0004 finds them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from accounts_grpc.store.rows import Repository
from accounts_grpc.store.tables import idempotency_keys

__all__ = ["IdempotencyKeys", "StoredKey"]

_t = idempotency_keys

_FIND = sa.select(_t.c.fingerprint, _t.c.result, _t.c.create_time).where(
    _t.c.key == sa.bindparam("k")
)
_FORGET = _t.delete().where(_t.c.key == sa.bindparam("k"))
_CLAIM = _t.insert()
_RECORD = (
    _t.update()
    .where(_t.c.key == sa.bindparam("k"))
    .values(result=sa.bindparam("r", type_=_t.c.result.type))
)


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A remembered request: the request's fingerprint, the ids its create returned
    (empty until that create commits), and when it was first seen (microseconds)."""

    fingerprint: str
    result: Mapping[str, Any]
    create_time: int


class IdempotencyKeys(Repository):
    """The request_id keys (see the module docstring)."""

    __slots__ = ()

    def find(self, key: str) -> StoredKey | None:
        """The key's row, or None (an expired row too: the caller judges its age)."""
        row = self.conn.execute(_FIND, {"k": key}).first()
        if row is None:
            return None
        return StoredKey(row.fingerprint, row.result, row.create_time)

    def forget(self, key: str) -> None:
        """Delete the key (it has expired: a new request takes it)."""
        self.conn.execute(_FORGET, {"k": key})

    def claim(
        self,
        key: str,
        *,
        method: str,
        fingerprint: str,
        now: int,
        raise_if_taken: bool = False,
    ) -> bool:
        """Insert the key with an empty result, in a savepoint; True if this call has it.

        False if a concurrent call with the same key committed it first (its transaction
        is over, so reading the key again finds its result). With ``raise_if_taken`` that
        ``IntegrityError`` propagates instead: a caller that has read again once already
        gives up rather than loop.
        """
        try:
            with self.conn.begin_nested():
                self.conn.execute(
                    _CLAIM,
                    {"key": key, "method": method, "fingerprint": fingerprint, "result": {},
                     "create_time": now},
                )
        except IntegrityError:
            if raise_if_taken:
                raise
            return False
        return True

    def record_result(self, key: str, result: Mapping[str, Any]) -> None:
        """Store the ids the create returned (what a retry will load)."""
        self.conn.execute(_RECORD, {"k": key, "r": dict(result)})

    def prune(self, *, older_than: int, limit: int) -> int:
        """Delete up to ``limit`` keys created before ``older_than`` (microseconds), oldest
        first; returns how many went."""
        expired = (
            sa.select(_t.c.key)
            .where(_t.c.create_time < older_than)
            .order_by(_t.c.create_time)
            .limit(limit)
        )
        gone = self.conn.execute(_t.delete().where(_t.c.key.in_(expired))).rowcount
        return int(gone or 0)
