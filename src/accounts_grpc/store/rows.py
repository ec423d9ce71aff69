"""What every repository is made of: the base class bound to a unit of work's connection,
the values a new row carries (ids, etags, times), and the rows handed up (``Record``,
read by ``FastSelect`` on the hottest paths).

Below store/db.py, which makes the units of work that carry the repositories, so that
no repository imports it (the store's modules import each other without a cycle).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from accounts_grpc import tracing


def now_us() -> int:
    """Now, in microseconds since the epoch: the unit of every time column."""
    return time.time_ns() // 1000


def new_id() -> str:
    return str(uuid.uuid4())


def new_etag() -> str:
    return uuid.uuid4().hex


class Repository:
    """The statements of one aggregate, run on the connection of the unit of work that
    made it (``uow.accounts``, ``uow.users`` ...): inside its transaction, or its read."""

    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn


class Record:
    """A row's values as attributes, detached from any result (what converters read)."""

    __slots__ = ("__dict__",)

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)

    if TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any: ...


class FastSelect:
    """A fixed SELECT for the hottest read paths, returning ``Record``s.

    SQLite fast path: the statement, compiled once, runs straight on the DBAPI cursor and
    JSON and Boolean columns are decoded by the statement's own column types, skipping
    SQLAlchemy's per-execution work (cache key, parameter and result processing: about
    200 us of a 250 us point read). Generic twin, on every other database: an ordinary
    ``conn.execute``.
    """

    def __init__(self, stmt: sa.Select[Any]) -> None:
        self.stmt = stmt
        self._names = [str(c.key) for c in stmt.selected_columns]
        self._decoders: list[tuple[int, Any]] = []
        for i, c in enumerate(stmt.selected_columns):
            if isinstance(c.type, sa.JSON):
                self._decoders.append((i, _json_or_none))
            elif isinstance(c.type, sa.Boolean):
                self._decoders.append((i, _bool_or_none))
        self._sqlite: tuple[str, list[str]] | None = None

    def rows(self, conn: Connection, params: dict[str, Any]) -> list[Record]:
        if conn.dialect.name != "sqlite":
            return [Record(dict(r._mapping)) for r in conn.execute(self.stmt, params)]
        if self._sqlite is None:
            compiled = self.stmt.compile(dialect=conn.dialect)
            self._sqlite = (str(compiled), list(compiled.positiontup or ()))
        sql, order = self._sqlite
        raw = conn.connection.driver_connection
        assert raw is not None
        args = [params[k] for k in order]
        if tracing.enabled():  # SQLAlchemy's instrumentation does not see the driver's cursor
            with tracing.db_span(sql, "sqlite", conn.engine.url.database):
                fetched = raw.execute(sql, args).fetchall()
        else:
            fetched = raw.execute(sql, args).fetchall()
        out = []
        for values in fetched:
            values = list(values)
            for i, decode in self._decoders:
                values[i] = decode(values[i])
            out.append(Record(dict(zip(self._names, values, strict=True))))
        return out


def _json_or_none(v: Any) -> Any:
    return json.loads(v) if isinstance(v, str) else v


def _bool_or_none(v: Any) -> Any:
    return None if v is None else bool(v)
