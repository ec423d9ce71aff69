"""Engines and the units of work: ``db.write()``, one transaction rolled back unless
committed, and ``db.read()``; each carries every repository (``uow.accounts``,
``uow.users`` ...: domain/ports.py), made on its connection when first used.

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
import functools
import importlib.util
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, overload

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from accounts_grpc import tracing
from accounts_grpc.config import StartupError, hide_password
from accounts_grpc.domain.errors import AlreadyExists
from accounts_grpc.store.accounts import Accounts
from accounts_grpc.store.audit import AuditLog
from accounts_grpc.store.authority import Authority
from accounts_grpc.store.bootstrap import Bootstrap
from accounts_grpc.store.conflicts import Conflicts
from accounts_grpc.store.device_permissions import DevicePermissions
from accounts_grpc.store.devices import Devices
from accounts_grpc.store.errors import is_unique_violation
from accounts_grpc.store.groups import Groups
from accounts_grpc.store.idempotency import IdempotencyKeys
from accounts_grpc.store.orders import Orders
from accounts_grpc.store.partitions import Partitions
from accounts_grpc.store.pool import PoolState, WatchedPool
from accounts_grpc.store.principals import Principals
from accounts_grpc.store.rate_limits import RateLimits
from accounts_grpc.store.rows import Repository
from accounts_grpc.store.rows import new_etag as new_etag  # the use cases' ids and times
from accounts_grpc.store.rows import new_id as new_id
from accounts_grpc.store.rows import now_us as now_us
from accounts_grpc.store.sessions import Sessions
from accounts_grpc.store.signing_keys import SigningKeys
from accounts_grpc.store.users import Users

_WRITE = "accounts_write"
_SINGLE = "accounts_single_statement"


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
            poolclass=WatchedPool if path and path != ":memory:" else None,
            connect_args={"check_same_thread": False, "timeout": 30},
        )
        _sqlite_setup(engine)
        return engine
    # PostgreSQL: at most pool_size + max_overflow connections per process (overflow ones
    # are closed on return, so a burst past the pool reconnects each time); a caller waits
    # up to pool_timeout for one, then sqlalchemy.exc.TimeoutError (DATABASE_BUSY)
    return sa.create_engine(
        url, echo=echo, hide_parameters=True, pool_size=pool_size, max_overflow=max_overflow,
        pool_timeout=pool_timeout, pool_pre_ping=True, poolclass=WatchedPool,
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
    then stay on, which is only slower (the generic twin: elsewhere, and on PostgreSQL,
    nothing is called). Gain: none measurable on a shared 2-core machine (2 threads of
    GROUP BY reads, 32-48 ms on and off alike); the mutex costs only when reads truly run
    in parallel, on more cores.
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


R = TypeVar("R", bound=Repository)


class _Repository(Generic[R]):
    """A unit of work's repository ``cls``, made on its connection when first used and
    kept on the unit of work: one that uses one repository pays for one."""

    def __init__(self, cls: type[R]) -> None:
        self._cls = cls

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, uow: None, owner: type) -> Self: ...
    @overload
    def __get__(self, uow: _Repositories, owner: type) -> R: ...
    def __get__(self, uow: _Repositories | None, owner: type) -> R | Self:
        if uow is None:
            return self
        repo = uow.__dict__[self._name] = self._cls(uow.conn)
        return repo


class _Repositories:
    """The repositories every unit of work carries, on its connection ``conn``
    (domain/ports.py: ``ReadUnitOfWork``)."""

    conn: Connection

    accounts = _Repository(Accounts)
    audit = _Repository(AuditLog)
    authority = _Repository(Authority)
    bootstrap = _Repository(Bootstrap)
    conflicts = _Repository(Conflicts)
    device_permissions = _Repository(DevicePermissions)
    devices = _Repository(Devices)
    groups = _Repository(Groups)
    idempotency = _Repository(IdempotencyKeys)
    orders = _Repository(Orders)
    partitions = _Repository(Partitions)
    rate_limits = _Repository(RateLimits)
    sessions = _Repository(Sessions)
    signing_keys = _Repository(SigningKeys)
    users = _Repository(Users)

    @functools.cached_property
    def principals(self) -> Principals:
        """Authentication's reads, and the activity times they record."""
        return Principals(self.conn, self._activity_write)

    def _activity_write(self) -> AbstractContextManager[bool]:
        """Where ``principals`` writes an activity time: in this transaction."""
        return contextlib.nullcontext(True)


class UnitOfWork(_Repositories):
    """One write transaction: ``with db.write() as uow: uow.accounts.get(id); ...;
    uow.commit()``.

    Leaving the block without ``commit()`` rolls everything back, so an error half-way
    through a use case never leaves half a change behind. The repositories run on
    ``uow.conn``, the SQLAlchemy Core connection of the transaction.
    """

    def __init__(self, engine: Engine, write_lock: WriteLock | None = None) -> None:
        self._engine = engine
        self._lock = write_lock
        self.committed = False
        self._after_commit: list[Callable[[], object]] = []

    def __enter__(self) -> Self:
        if self._lock is not None:
            self._lock.acquire()
        try:
            self.conn = self._engine.connect().execution_options(**{_WRITE: True})
            self._tx = self.conn.begin()
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            raise
        return self

    def commit(self) -> None:
        audit: AuditLog | None = self.__dict__.get("audit")
        if audit is not None:  # PostgreSQL: the feed positions, in commit order
            audit.number_pending()
        try:
            self._tx.commit()
        except IntegrityError as e:  # a unique key raced at commit; anything else is a bug
            if is_unique_violation(e):
                raise AlreadyExists("the resource already exists", reason="ALREADY_EXISTS") from e
            raise
        self.committed = True
        for fn in self._after_commit:
            fn()

    def on_commit(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` after a successful commit (cache invalidation and the like)."""
        self._after_commit.append(fn)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if not self.committed and self._tx.is_active:
                self._tx.rollback()
        finally:
            self.conn.close()
            if self._lock is not None:
                self._lock.release()


class ReadUnitOfWork(_Repositories):
    """One read: ``with db.read() as uow: uow.accounts.get(id)``. No ``commit``: its
    statements share one snapshot (one transaction, rolled back at the end), and a
    write statement through it is a bug; the one exception, the best-effort activity
    times of ``uow.principals``, goes through ``Database.opportunistic_write``.

    ``sticky``: the thread's own SQLite connection, kept open from read to read with
    this unit of work (and its repositories) on it (``Database.read``).
    """

    def __init__(self, db: Database, *, single_statement: bool,
                 sticky: Connection | None = None) -> None:
        self._db = db
        self._single = single_statement
        self._sticky = sticky is not None
        if sticky is not None:
            self.conn = sticky

    def __enter__(self) -> Self:
        if not self._sticky:
            self.conn = self._db.engine.connect()
            if self._single:
                self.conn.execution_options(**{_SINGLE: True})
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if not self._sticky:
            self.conn.close()  # rolls back
        elif self.conn.in_transaction():  # autobegun, without BEGIN (``_on_begin``)
            if exc_type is None:
                self.conn.commit()
            else:
                self.conn.rollback()

    def _activity_write(self) -> AbstractContextManager[bool]:
        return self._db.opportunistic_write(self.conn)


def _trace(engine: Engine) -> None:
    """OpenTelemetry's SQLAlchemy instrumentation on ``engine`` (tracing.py): a span for
    each statement SQLAlchemy runs. Its EngineTracer, which listens to this one engine:
    ``SQLAlchemyInstrumentor().instrument()`` would also wrap ``create_async_engine``,
    importing ``sqlalchemy.ext.asyncio``, which SQLAlchemy 2.1 refuses without greenlet
    (no dependency here), and its release declares SQLAlchemy < 2.1, though the engine
    events it uses are 2.1's too (tests/e2e/test_tracing.py sees the spans).

    What runs on the driver's own cursor is out of its sight: ``FastSelect``'s point reads
    get a span of their own (store/rows.py); the packed pages ``run_list(params=...)``
    reads that way on SQLite (store/listing/run.py) get none."""
    from opentelemetry import metrics, trace
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.instrumentation.sqlalchemy.version import __version__
    from opentelemetry.semconv.metrics import MetricInstruments

    name = "opentelemetry.instrumentation.sqlalchemy"
    tracer = trace.get_tracer(name, __version__, tracing.tracer_provider())
    usage = metrics.get_meter(name, __version__).create_up_down_counter(
        MetricInstruments.DB_CLIENT_CONNECTIONS_USAGE, unit="connections")  # no meter: no-op
    EngineTracer(tracer, engine, usage)


class Database:
    """The engine plus factories for units of work."""

    def __init__(self, url: str, *, pool_size: int = 8, max_overflow: int = 0,
                 pool_timeout: float = 5.0) -> None:
        self.url = normalize_url(url)
        self.engine = create_engine(self.url, pool_size=pool_size, max_overflow=max_overflow,
                                    pool_timeout=pool_timeout)
        if tracing.enabled():
            _trace(self.engine)
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

    def watch_pool(self, watcher: Callable[[PoolState], None]) -> None:
        """Report the connection pool's state to ``watcher`` now and on every change
        (store/pool.py; an in-memory SQLite database's pool is not watched)."""
        if isinstance(self.engine.pool, WatchedPool):
            self.engine.pool.watch(watcher)

    def write(self) -> UnitOfWork:
        """The one way to write: ``with db.write() as uow: ...; uow.commit()``."""
        return UnitOfWork(self.engine, self._write_lock)

    def read(self, *, single_statement: bool = False) -> ReadUnitOfWork:
        """The one way to read: ``with db.read() as uow: ...``, a unit of work whose
        statements share one snapshot (one transaction, rolled back at the end).

        ``single_statement=True``, for the hot paths (authentication, point reads) whose
        statements need not agree with each other to the row. SQLite fast path: no
        BEGIN/COMMIT round trip, so each statement is its own consistent snapshot, and
        each thread keeps its connection with its unit of work and repositories (SQLite
        connections are cheap and local; checking one out of the pool and back costs
        more than the read: a point read 60-95 us pooled, 27-46 us on the thread's own).
        Generic twin, on PostgreSQL: a pooled connection, as ``single_statement=False``.
        Anything written on it must go through ``Database.opportunistic_write(uow.conn)``.
        """
        if not (single_statement and self._sticky):
            return ReadUnitOfWork(self, single_statement=single_statement)
        uow: ReadUnitOfWork | None = getattr(self._local, "uow", None)
        if uow is None or uow.conn.closed or uow.conn.invalidated:
            conn = self.engine.connect().execution_options(**{_SINGLE: True, _WRITE: False})
            self._sticky_conns.append(conn)
            uow = self._local.uow = ReadUnitOfWork(self, single_statement=True, sticky=conn)
        return uow

    @contextmanager
    def opportunistic_write(self, conn: Connection) -> Iterator[bool]:
        """A short best-effort write on a ``read(single_statement=True)`` unit of work's
        connection (activity times).

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
            try:
                with conn.begin():
                    yield True
            finally:  # a read again (the sticky connection's next reads)
                conn.execution_options(**{_SINGLE: True, _WRITE: False})
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
