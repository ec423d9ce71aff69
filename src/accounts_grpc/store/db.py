"""Engines and the unit of work: one transaction per call, rolled back unless committed.

SQLite: WAL journal, foreign keys on, a busy timeout, and write transactions opened
with ``BEGIN IMMEDIATE`` so that two writers queue on the lock instead of failing
half-way with "database is locked". PostgreSQL: psycopg 3, READ COMMITTED; writes
that must not lose an update use a conditional ``UPDATE ... WHERE etag = :old``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from accounts_grpc.domain.errors import AlreadyExists

_WRITE = "accounts_write"


def is_unique_violation(e: IntegrityError) -> bool:
    """True if ``e`` is a unique-key violation (not a foreign key, NOT NULL or CHECK)."""
    state = getattr(e.orig, "sqlstate", None)  # psycopg 3
    if state:
        return bool(state == "23505")
    return "UNIQUE constraint failed" in str(e.orig)  # sqlite3


def now_us() -> int:
    """Now, in microseconds since the epoch: the unit of every time column."""
    return time.time_ns() // 1000


def new_id() -> str:
    return str(uuid.uuid4())


def new_etag() -> str:
    return uuid.uuid4().hex


def normalize_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` and use psycopg 3 for them."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def create_engine(
    url: str, *, pool_size: int = 8, max_overflow: int = 64, echo: bool = False
) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1].split("?", 1)[0] if ":///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url,
            echo=echo,
            pool_size=pool_size,
            max_overflow=max_overflow,
            connect_args={"check_same_thread": False, "timeout": 30},
        )
        _sqlite_setup(engine)
        return engine
    return sa.create_engine(
        url, echo=echo, pool_size=pool_size, max_overflow=max_overflow, pool_pre_ping=True
    )


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (SQLAlchemy's recipe)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


class UnitOfWork:
    """One database transaction. Use as ``with db.write() as uow: ...; uow.commit()``.

    Leaving the block without ``commit()`` rolls everything back, so an error half-way
    through a use case never leaves half a change behind. ``uow.conn`` is the
    SQLAlchemy Core connection the repositories use.
    """

    def __init__(self, engine: Engine, *, write: bool) -> None:
        self._engine = engine
        self._write = write
        self.committed = False
        self.conn: Connection
        self._after_commit: list[Any] = []

    def __enter__(self) -> UnitOfWork:
        conn = self._engine.connect()
        if self._write:
            conn = conn.execution_options(**{_WRITE: True})
        self.conn = conn
        self._tx = conn.begin()
        return self

    def commit(self) -> None:
        try:
            self._tx.commit()
        except IntegrityError as e:  # a unique key raced at commit; anything else is a bug
            if is_unique_violation(e):
                raise AlreadyExists("the resource already exists", reason="ALREADY_EXISTS") from e
            raise
        self.committed = True
        for fn in self._after_commit:
            fn()

    def on_commit(self, fn: Any) -> None:
        """Run ``fn`` after a successful commit (cache invalidation and the like)."""
        self._after_commit.append(fn)

    def rollback(self) -> None:
        if self._tx.is_active:
            self._tx.rollback()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if not self.committed:
                self.rollback()
        finally:
            self.conn.close()

    # small helpers every repository uses
    def execute(self, stmt: Any, params: Any = None) -> sa.CursorResult[Any]:
        return self.conn.execute(stmt, params) if params is not None else self.conn.execute(stmt)

    def one_or_none(self, stmt: Any) -> sa.Row[Any] | None:
        return self.conn.execute(stmt).first()


class Database:
    """The engine plus factories for units of work."""

    def __init__(self, url: str, *, pool_size: int = 8, max_overflow: int = 64) -> None:
        self.url = normalize_url(url)
        self.engine = create_engine(self.url, pool_size=pool_size, max_overflow=max_overflow)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def read(self) -> UnitOfWork:
        return UnitOfWork(self.engine, write=False)

    def write(self) -> UnitOfWork:
        return UnitOfWork(self.engine, write=True)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A plain connection for single-statement reads on hot paths."""
        with self.engine.connect() as conn:
            yield conn

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return True
        except Exception:
            return False

    def dispose(self) -> None:
        self.engine.dispose()
