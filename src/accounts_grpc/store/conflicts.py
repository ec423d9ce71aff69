"""Writes that may meet a concurrent writer, for every repository and use case.

The rules (which domain error a lost race becomes) live in services/writes.py; here is
what reaches into the database and its driver:

- ``update_if_etag``: ``UPDATE ... WHERE id = :id AND etag = :old`` on any resource
  table; False when a concurrent writer changed the row first. Each repository wraps it
  for its own table (``uow.accounts.update_if_etag`` ...), so no table leaves the store.
- ``Conflicts`` (``uow.conflicts``), for the use cases: ``savepoint``, statements that may
  lose a unique key to a concurrent writer, in a savepoint: on a constraint violation it
  is rolled back (the transaction goes on) and the caller's error is raised instead;
  ``unique_violations_as``, a unique-key violation anywhere in a block (the transaction
  is lost) becomes the caller's error; any other integrity error stays what it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Table
from sqlalchemy.exc import IntegrityError

from accounts_grpc.store.errors import is_unique_violation
from accounts_grpc.store.rows import Repository

__all__ = ["Conflicts", "update_if_etag"]


def update_if_etag(
    conn: sa.Connection, table: Table, row_id: str, old_etag: str, values: Mapping[str, Any]
) -> bool:
    """Write ``values`` to the row ``row_id`` of ``table`` if its etag is still
    ``old_etag``; False (nothing written) if it is not, or the row is gone."""
    res = conn.execute(
        table.update().where(table.c.id == row_id, table.c.etag == old_etag).values(**values)
    )
    return res.rowcount == 1


class Conflicts(Repository):
    """A unit of work's guards against concurrent writers (see the module docstring)."""

    __slots__ = ()

    @contextmanager
    def savepoint(self, on_conflict: Callable[[], BaseException]) -> Iterator[None]:
        """Run the block in a savepoint; on a constraint violation roll the savepoint back
        and raise ``on_conflict()`` (called after the rollback, so it may read)."""
        try:
            with self.conn.begin_nested():
                yield
        except IntegrityError:
            raise on_conflict() from None

    @contextmanager
    def unique_violations_as(self, error: Callable[[], BaseException]) -> Iterator[None]:
        """A unique-key violation raised in the block becomes ``error()``; other integrity
        errors (foreign key, NOT NULL, CHECK) propagate as they are."""
        try:
            yield
        except IntegrityError as e:
            if is_unique_violation(e):
                raise error() from None
            raise
