"""The store on SQLite and PostgreSQL (each test in a fresh database or schema):
migrations make the schema, one transaction per unit of work, writers queue on SQLite,
unique-key violations become AlreadyExists; and `accounts-grpc migrate`."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError

from accounts_grpc.domain.errors import AlreadyExists
from accounts_grpc.store import migrate
from accounts_grpc.store.db import Database, now_us
from accounts_grpc.store.tables import include_name, metadata, rate_limits


def row_count(d: Database, key: str) -> int:
    with d.read() as uow:
        return int(uow.conn.execute(sa.select(sa.func.count()).where(rate_limits.c.key == key)
                             ).scalar_one())


def insert(uow: object, key: str, failures: int = 0) -> None:
    uow.conn.execute(rate_limits.insert().values(  # type: ignore[attr-defined]
        key=key, window_start=now_us(), failures=failures, blocked_until=None))


# -- migrations --------------------------------------------------------------------------------


def test_migrations_make_the_schema_from_empty(db_url: str) -> None:
    d = Database(db_url)
    try:
        assert migrate.current(d.engine) is None
        with d.read() as uow:
            assert not set(sa.inspect(uow.conn).get_table_names()) & set(metadata.tables)
        migrate.upgrade(d.engine)
        assert migrate.current(d.engine) == migrate.head() and migrate.is_current(d.engine)
        with d.read() as uow:
            insp = sa.inspect(uow.conn)
            made = {t for t in insp.get_table_names() if include_name(t, "table", None)}
            assert made == set(metadata.tables) | {"alembic_version"}  # + 0002's search tables
            for name, table in metadata.tables.items():
                cols = {col["name"] for col in insp.get_columns(name)}
                assert cols == {col.name for col in table.columns}, name
                indexes = {ix["name"] for ix in insp.get_indexes(name)}
                assert {ix.name for ix in table.indexes} <= indexes, name
        migrate.upgrade(d.engine)  # again: nothing to do
        assert migrate.current(d.engine) == migrate.head()
    finally:
        d.dispose()


def test_migrate_command(db_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCOUNTS_")}
    cmd = [sys.executable, "-m", "accounts_grpc.cli", "migrate", "--database-url", db_url]
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"schema: empty -> {migrate.head()}"
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert again.stdout.strip() == f"schema: {migrate.head()} -> {migrate.head()}"
    d = Database(db_url)
    try:
        assert migrate.is_current(d.engine)
    finally:
        d.dispose()


def test_serve_refuses_an_unmigrated_postgresql(backend: str, db_url: str, tmp_path: Path
                                                ) -> None:
    if backend != "postgres":
        pytest.skip("an empty SQLite database is migrated by `serve` itself")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCOUNTS_")}
    p = subprocess.run(
        [sys.executable, "-m", "accounts_grpc.cli", "serve", "--database-url", db_url,
         "--grpc-port", "0", "--http-port", "-1",
         "--key-encryption-key-file", str(tmp_path / "kek")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert p.returncode != 0
    assert "run `accounts-grpc migrate` first" in p.stderr and "Traceback" not in p.stderr


# -- the unit of work --------------------------------------------------------------------------


def test_unit_of_work_rolls_back_unless_committed(db: Database) -> None:
    with db.write() as uow:
        insert(uow, "not-committed")
    assert row_count(db, "not-committed") == 0

    with pytest.raises(RuntimeError), db.write() as uow:
        insert(uow, "failed-half-way")
        raise RuntimeError("boom")
    assert row_count(db, "failed-half-way") == 0

    with db.write() as uow:
        insert(uow, "committed")
        uow.commit()
        assert uow.committed
    assert row_count(db, "committed") == 1

    ran: list[str] = []
    with db.write() as uow:
        uow.on_commit(lambda: ran.append("after"))
        insert(uow, "hooked")
        assert ran == []
        uow.commit()
    assert ran == ["after"]


def test_concurrent_writers_queue_on_sqlite(backend: str, db: Database) -> None:
    """Read-modify-write transactions on SQLite: BEGIN IMMEDIATE makes writers queue on
    the lock (busy_timeout), so none fails with 'database is locked' and none is lost."""
    if backend != "sqlite":
        pytest.skip("PostgreSQL writers use row locks and conditional updates")
    with db.write() as uow:
        insert(uow, "counter")
        uow.commit()
    errors: list[BaseException] = []
    threads, rounds = 6, 25

    def work() -> None:
        try:
            for _ in range(rounds):
                with db.write() as uow:
                    n = uow.conn.execute(sa.select(rate_limits.c.failures).where(
                        rate_limits.c.key == "counter")).scalar_one()
                    uow.conn.execute(rate_limits.update().where(
                        rate_limits.c.key == "counter").values(failures=n + 1))
                    uow.commit()
        except BaseException as e:  # pragma: no cover - the failure being tested for
            errors.append(e)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(120)
    assert errors == []
    with db.read() as uow:
        total = uow.conn.execute(sa.select(rate_limits.c.failures).where(
            rate_limits.c.key == "counter")).scalar_one()
    assert total == threads * rounds, "no update was lost"


def test_why_writes_begin_immediate_on_sqlite(backend: str, db: Database) -> None:
    """The control: a deferred (read) transaction that writes after another writer
    committed fails at once with 'database is locked'; busy_timeout cannot help it."""
    if backend != "sqlite":
        pytest.skip("SQLite only")
    with db.write() as uow:
        insert(uow, "row")
        uow.commit()
    with db.read() as uow:
        uow.conn.execute(sa.select(rate_limits)).all()  # the read snapshot starts here
        with db.write() as writer:
            writer.conn.execute(rate_limits.update().values(failures=1))
            writer.commit()
        with pytest.raises(OperationalError, match="database is locked"):
            uow.conn.execute(rate_limits.update().values(failures=2))


# -- unique keys -------------------------------------------------------------------------------


def test_a_unique_key_violation_becomes_already_exists(db: Database) -> None:
    """What every create does: the insert in a savepoint; a duplicate key is
    IntegrityError, turned into AlreadyExists, and the transaction goes on."""
    with db.write() as uow:
        insert(uow, "taken")
        uow.commit()

    def create(key: str) -> None:
        try:
            with uow.conn.begin_nested():
                insert(uow, key)
        except IntegrityError as e:
            raise AlreadyExists(f"{key!r} already exists", reason="KEY_TAKEN") from e

    with db.write() as uow:
        with pytest.raises(AlreadyExists) as e:
            create("taken")
        assert e.value.code == "ALREADY_EXISTS" and e.value.reason == "KEY_TAKEN"
        create("fresh")  # the transaction is still usable
        uow.commit()
    assert row_count(db, "fresh") == 1 and row_count(db, "taken") == 1


def test_a_violation_found_at_commit_is_already_exists(backend: str, db: Database) -> None:
    """A deferred unique constraint is checked at COMMIT: UnitOfWork.commit maps it."""
    if backend != "postgres":
        pytest.skip("SQLite has no deferrable unique constraints")
    table = f"t_{uuid.uuid4().hex[:8]}"
    with db.engine.begin() as c:
        c.exec_driver_sql(
            f"CREATE TABLE {table} (k text, CONSTRAINT {table}_uq UNIQUE (k) "
            "DEFERRABLE INITIALLY DEFERRED)")
    with db.write() as uow:
        uow.conn.exec_driver_sql(f"INSERT INTO {table} VALUES ('a'), ('a')")  # fine so far
        with pytest.raises(AlreadyExists):
            uow.commit()
        assert not uow.committed


# -- SQLite's memory statistics ----------------------------------------------------------------
_MEMORY_PROBE = """
import ctypes, importlib.util, sys
if sys.argv[1] == "sqlite3-first":
    import sqlite3
import accounts_grpc.app, accounts_grpc.cli  # what `serve` imports before the database
loaded_early = "_sqlite3" in sys.modules
from accounts_grpc.store.db import Database, sqlite_tuning
db = Database(sys.argv[2])
with db.read() as uow:
    uow.conn.exec_driver_sql("CREATE TABLE t(x)")
    uow.conn.exec_driver_sql("INSERT INTO t VALUES (randomblob(100000))")
used = ctypes.CDLL(importlib.util.find_spec("_sqlite3").origin).sqlite3_memory_used
used.restype = ctypes.c_int64
print(loaded_early, sqlite_tuning(), used() > 0)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="switched off on Linux only")
@pytest.mark.parametrize("first", ["engine-first", "sqlite3-first"])
def test_sqlite_memory_statistics_are_off_when_the_engine_comes_first(
    tmp_path: Path, first: str
) -> None:
    """`serve` imports nothing that loads SQLite before its engine, so the statistics (a
    process-wide mutex on every allocation) are off; once the module is loaded earlier,
    the switch is refused and they stay on."""
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, first, f"sqlite:///{tmp_path / 'm.db'}"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.split()
    if first == "engine-first":
        assert out == ["False", "True", "False"]
    else:
        assert out == ["True", "False", "True"]
