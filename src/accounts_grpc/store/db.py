"""Engines and the unit of work: one transaction per call, rolled back unless committed.

SQLite: WAL journal, foreign keys on, a busy timeout, and write transactions opened
with ``BEGIN IMMEDIATE`` so that two writers queue on the lock instead of failing
half-way with "database is locked". Writers queue before that, on ``WriteLock``: a
thread lock within the process, then an exclusive ``flock`` on ``<db>.write-lock``
across processes (``serve --processes N``), so they wait in the kernel, woken at once,
rather than in SQLite's busy handler, which sleeps and polls. PostgreSQL: psycopg 3,
READ COMMITTED; writes that must not lose an update use a conditional
``UPDATE ... WHERE etag = :old``.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import importlib.util
import json
import os
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from accounts_grpc.config import StartupError, hide_password
from accounts_grpc.domain.errors import AlreadyExists

_WRITE = "accounts_write"
_SINGLE = "accounts_single_statement"


def is_unique_violation(e: IntegrityError) -> bool:
    """True if ``e`` is a unique-key violation (not a foreign key, NOT NULL or CHECK)."""
    state = getattr(e.orig, "sqlstate", None)  # psycopg 3
    if state:
        return bool(state == "23505")
    return "UNIQUE constraint failed" in str(e.orig)  # sqlite3


def db_error(e: sa.exc.DBAPIError) -> str:
    """A database error for the log: its class, SQLSTATE and statement, never its
    message (a server's DETAIL names key values: emails, token hashes) nor its
    parameters."""
    orig = e.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "sqlite_errorname", None)
    statement = " ".join((e.statement or "").split())[:300]
    return f"{type(orig).__name__} ({sqlstate or 'no SQLSTATE'}) in: {statement}"


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
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def startup_reason(e: BaseException, *, first_line: bool = False) -> str:
    """Why the database could not be used, on one line: the driver's message, never the
    statement or its parameters. A connection error's lines all go in (refused, no such
    database, authentication failed, and the driver's hint); ``first_line``: only the
    first, for a statement's error, whose DETAIL may name key values (as db_error)."""
    orig = getattr(e, "orig", None) or e
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    return " ".join(lines[:1] if first_line else lines) or type(orig).__name__


def unreachable(engine: Engine, e: BaseException) -> StartupError:
    """The database behind ``engine`` cannot be connected to: a one-line startup error
    naming --database-url."""
    url = engine.url.render_as_string(hide_password=True)
    return StartupError("database_url", f"cannot connect to {url}: {startup_reason(e)}")


def create_engine(
    url: str, *, pool_size: int = 8, max_overflow: int = 0, pool_timeout: float = 5.0,
    echo: bool = False,
) -> Engine:
    """An engine for ``url``; a URL it cannot use (no such driver, an unparsable URL, a
    SQLite directory that cannot be made) is a StartupError naming --database-url."""
    try:
        return _create_engine(url, pool_size=pool_size, max_overflow=max_overflow,
                              pool_timeout=pool_timeout, echo=echo)
    except OSError as e:  # the SQLite file's directory
        raise StartupError("database_url", f"cannot create the directory {e.filename} for "
                           f"{hide_password(url)}: {e.strerror or e}") from None
    except (sa.exc.ArgumentError, ImportError, ValueError) as e:
        # ArgumentError: unparsable, or no such dialect (NoSuchModuleError); ImportError:
        # its driver is not installed; ValueError: a port that is not a number
        raise StartupError("database_url", f"{hide_password(url)} is not a database URL "
                           f"this server can use ({e})") from None


def _create_engine(
    url: str, *, pool_size: int, max_overflow: int, pool_timeout: float, echo: bool,
) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        sqlite_tuning()
        path = url.split(":///", 1)[1].split("?", 1)[0] if ":///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # SQLite connections are cheap and local, and each worker thread keeps one for
        # hot reads (Database.read(single_statement=True)), so the pool does not cap them.
        engine = sa.create_engine(
            url,
            echo=echo,
            hide_parameters=True,  # errors and logs never carry emails, hashes, payloads
            pool_size=pool_size,
            max_overflow=-1,
            connect_args={"check_same_thread": False, "timeout": 30},
        )
        _sqlite_setup(engine)
        return engine
    # PostgreSQL: at most pool_size + max_overflow connections per process (overflow ones
    # are closed on return, so a burst past the pool reconnects each time); a caller waits
    # up to pool_timeout for one, then sqlalchemy.exc.TimeoutError (DATABASE_BUSY)
    return sa.create_engine(
        url, echo=echo, hide_parameters=True, pool_size=pool_size, max_overflow=max_overflow,
        pool_timeout=pool_timeout, pool_pre_ping=True,
    )


_tuned: bool | None = None


def sqlite_tuning() -> bool:
    """Switch off SQLite's memory statistics for this process, once, before the library
    is first used; True if they are off.

    With them on (the library's default), every ``sqlite3_malloc`` and ``free`` of every
    connection takes one process-wide mutex, so the worker threads' reads, which run in
    parallel outside the GIL, queue on it (futex calls). SQLite lists
    ``SQLITE_DEFAULT_MEMSTATUS=0`` first among its recommended compile-time options; the
    Python module does not expose ``sqlite3_config``, so it is called through ctypes on
    the library the module is linked with. After the library has been initialized (a
    module was imported earlier in this process) nothing is changed: the statistics
    then stay on, which is only slower.
    """
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    if sys.platform != "linux" or "_sqlite3" in sys.modules:
        # variadic ctypes calls are only portable here; once the module is imported the
        # library is initialized (CPython's module init does it) and the call is refused
        return False
    spec = importlib.util.find_spec("_sqlite3")
    if spec is None or not spec.origin or not spec.origin.endswith(".so"):
        return False  # built into the interpreter: no library to reach
    try:
        # loading the extension's file runs nothing of it (the import later reuses the
        # same handle); its symbols include the SQLite library it is linked with
        config = ctypes.CDLL(spec.origin).sqlite3_config
        config.restype = ctypes.c_int
        _tuned = config(ctypes.c_int(_SQLITE_CONFIG_MEMSTATUS), ctypes.c_int(0)) == 0
    except (OSError, AttributeError):
        pass
    return _tuned


_SQLITE_CONFIG_MEMSTATUS = 9


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (SQLAlchemy's recipe)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA synchronous=NORMAL")
        # reads through the OS page cache, shared by every connection (a per-connection
        # cache_size would multiply by the number of worker threads)
        cur.execute("PRAGMA mmap_size=268435456")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        opts = conn.get_execution_options()
        if opts.get(_SINGLE, False):
            return  # one statement: SQLite gives it a consistent snapshot without BEGIN
        conn.exec_driver_sql("BEGIN IMMEDIATE" if opts.get(_WRITE, False) else "BEGIN")


class WriteLock:
    """SQLite's one-writer-at-a-time, as a queue: writers of this process wait on a
    thread lock, then (for a database file) on an exclusive ``flock`` of
    ``<db>.write-lock`` beside it, which writers of every other process take too.

    Both waits block in the kernel and wake as soon as the holder lets go; SQLite's own
    busy handler, which writers of other processes met before, sleeps in steps of up to
    100 ms. The thread lock comes first because ``flock`` locks belong to the open file,
    which the threads of a process share: it would not keep them apart. Another program
    writing the database without this lock still meets the busy timeout, as before.
    """

    def __init__(self, path: Path | None) -> None:
        self._thread = threading.Lock()
        self._fd: int | None = None
        if path is not None:
            lock_path = path.with_name(path.name + ".write-lock")
            self._fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            # open for the lock's whole life (a Database may be used after dispose())
            weakref.finalize(self, os.close, self._fd)

    def acquire(self, blocking: bool = True) -> bool:
        if not self._thread.acquire(blocking):
            return False
        if self._fd is None:
            return True
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._thread.release()
            return False
        except BaseException:
            self._thread.release()
            raise
        return True

    def release(self) -> None:
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread.release()


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL (None for ``:memory:`` or another database)."""
    url = normalize_url(url)
    if not url.startswith("sqlite"):
        return None
    path = url.split(":///", 1)[1].split("?", 1)[0] if ":///" in url else ""
    return Path(path) if path and path != ":memory:" else None


class UnitOfWork:
    """One database transaction. Use as ``with db.write() as uow: ...; uow.commit()``.

    Leaving the block without ``commit()`` rolls everything back, so an error half-way
    through a use case never leaves half a change behind. ``uow.conn`` is the
    SQLAlchemy Core connection the repositories use.
    """

    def __init__(
        self, engine: Engine, *, write: bool, write_lock: WriteLock | None = None
    ) -> None:
        self._engine = engine
        self._write = write
        self._lock = write_lock if write else None
        self.committed = False
        self.conn: Connection
        self._after_commit: list[Any] = []

    def __enter__(self) -> UnitOfWork:
        if self._lock is not None:
            self._lock.acquire()
        try:
            conn = self._engine.connect()
            if self._write:
                conn = conn.execution_options(**{_WRITE: True})
            self.conn = conn
            self._tx = conn.begin()
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            raise
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
            if self._lock is not None:
                self._lock.release()


class Database:
    """The engine plus factories for units of work."""

    def __init__(self, url: str, *, pool_size: int = 8, max_overflow: int = 0,
                 pool_timeout: float = 5.0) -> None:
        self.url = normalize_url(url)
        self.engine = create_engine(self.url, pool_size=pool_size, max_overflow=max_overflow,
                                    pool_timeout=pool_timeout)
        self._sticky = self.engine.dialect.name == "sqlite"
        # SQLite has one writer at a time. Writers of every serving process queue on
        # this lock (woken at once) rather than in SQLite's busy handler, which sleeps
        # in steps of up to 100 ms.
        try:
            self._write_lock = WriteLock(sqlite_file(self.url)) if self._sticky else None
        except OSError as e:  # beside the database file, so the database cannot be written
            self.engine.dispose()
            raise StartupError("database_url", f"cannot open {hide_password(url)}: "
                               f"{e.strerror or e} ({e.filename})") from None
        self._local = threading.local()
        self._sticky_conns: list[Connection] = []

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def write(self) -> UnitOfWork:
        return UnitOfWork(self.engine, write=True, write_lock=self._write_lock)

    @contextmanager
    def read(self, *, single_statement: bool = False) -> Iterator[Connection]:
        """The one way to read: a connection whose statements share one snapshot (one
        transaction, rolled back at the end), for the repositories to run on. Writes go
        through ``write()``.

        ``single_statement=True``, for the hot paths (authentication, point reads) whose
        statements need not agree with each other to the row: on SQLite no BEGIN/COMMIT
        round trip, so each statement is its own consistent snapshot, and each thread
        keeps its connection (SQLite connections are cheap and local; checking one out of
        the pool and back costs more than the read). Anything written on it afterwards
        must go through ``Database.opportunistic_write(conn)``.
        """
        if not single_statement:
            with self.engine.connect() as conn:
                yield conn
            return
        if not self._sticky:
            with self.engine.connect() as conn:
                conn.execution_options(**{_SINGLE: True})
                yield conn
            return
        sticky: Connection | None = getattr(self._local, "conn", None)
        if sticky is None or sticky.closed or sticky.invalidated:
            sticky = self.engine.connect()
            self._local.conn = sticky
            self._sticky_conns.append(sticky)
        conn = sticky
        conn.execution_options(**{_SINGLE: True, _WRITE: False})
        try:
            yield conn
        except BaseException:
            if conn.in_transaction():
                conn.rollback()
            raise
        finally:
            if conn.in_transaction():
                conn.commit()

    @contextmanager
    def opportunistic_write(self, conn: Connection) -> Iterator[bool]:
        """A short best-effort write on a ``read(single_statement=True)`` connection
        (activity times).

        Yields False, and writes nothing, when the SQLite writer lock is taken, by a
        thread of this process or by another process: a caller that only records
        activity skips it rather than wait behind a writer (a later call records it).
        Otherwise yields True inside a transaction.
        """
        lock = self._write_lock
        if lock is not None and not lock.acquire(blocking=False):
            yield False
            return
        try:
            if conn.in_transaction():
                conn.commit()  # end the read's (autobegun) transaction first
            conn.execution_options(**{_SINGLE: False, _WRITE: True})
            with conn.begin():
                yield True
        finally:
            if lock is not None:
                lock.release()

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return True
        except Exception:
            return False

    def dispose(self) -> None:
        for conn in self._sticky_conns:
            with contextlib.suppress(Exception):
                conn.close()
        self._sticky_conns.clear()
        self.engine.dispose()


class Record:
    """A row's values as attributes, detached from any result (what converters read)."""

    __slots__ = ("__dict__",)

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)

    if TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any: ...


class FastSelect:
    """A fixed SELECT for the hottest read paths, returning ``Record``s.

    On SQLite it runs the statement, compiled once, straight on the DBAPI cursor and
    decodes JSON and Boolean columns by the statement's own column types, skipping
    SQLAlchemy's per-execution work (cache key, parameter and result processing: about
    200 us of a 250 us point read). Elsewhere it is an ordinary ``conn.execute``.
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
        out = []
        for values in raw.execute(sql, [params[k] for k in order]).fetchall():
            values = list(values)
            for i, decode in self._decoders:
                values[i] = decode(values[i])
            out.append(Record(dict(zip(self._names, values, strict=True))))
        return out


def _json_or_none(v: Any) -> Any:
    return json.loads(v) if isinstance(v, str) else v


def _bool_or_none(v: Any) -> Any:
    return None if v is None else bool(v)
