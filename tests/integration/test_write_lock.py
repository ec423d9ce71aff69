"""SQLite writers of every process queue on one lock (store/db.py ``WriteLock``): a
thread lock, then an exclusive flock of ``<db>.write-lock``. Here another real process
holds that flock: a write waits for it (in the kernel, no polling) and an opportunistic
write is skipped."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from accounts_grpc.store.db import Database, sqlite_file

HOLD = """
import fcntl, sys
f = open(sys.argv[1], "a")
fcntl.flock(f, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()  # until the test closes our stdin
"""


@contextmanager
def held_by_another_process(lock_file: Path) -> Iterator[None]:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(lock_file)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "locked"
        yield
    finally:
        assert p.stdin is not None
        p.stdin.close()
        p.wait(10)


def test_the_lock_file_is_beside_the_database(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'accounts.db'}")
    try:
        assert (tmp_path / "accounts.db.write-lock").exists()
    finally:
        db.dispose()
    assert sqlite_file("sqlite:///:memory:") is None
    assert sqlite_file("postgresql://u@h/db") is None


def test_a_write_waits_for_a_writer_of_another_process(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'accounts.db'}")
    done = threading.Event()
    waited: list[float] = []

    def write() -> None:
        start = time.monotonic()
        with db.write() as uow:
            uow.conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
            uow.commit()
        waited.append(time.monotonic() - start)
        done.set()

    try:
        with held_by_another_process(tmp_path / "accounts.db.write-lock"):
            t = threading.Thread(target=write)
            t.start()
            assert not done.wait(1.0), "the write went ahead of the other process's writer"
            released = time.monotonic()
        assert done.wait(10)
        assert time.monotonic() - released < 0.5, "woken as soon as the lock was free"
        assert waited[0] >= 1.0
        t.join()
        with db.write() as uow:  # and the lock is free again once the write is over
            uow.conn.execute(sa.text("INSERT INTO t VALUES (1)"))
            uow.commit()
    finally:
        db.dispose()


def test_an_opportunistic_write_is_skipped_while_another_process_writes(
    tmp_path: Path,
) -> None:
    db = Database(f"sqlite:///{tmp_path / 'accounts.db'}")
    try:
        with db.write() as uow:
            uow.conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
            uow.commit()
        with (held_by_another_process(tmp_path / "accounts.db.write-lock"),
              db.read(single_statement=True) as uow, db.opportunistic_write(uow.conn) as ok):
            assert ok is False
        with db.read(single_statement=True) as uow, db.opportunistic_write(uow.conn) as ok:
            assert ok is True
            uow.conn.execute(sa.text("INSERT INTO t VALUES (1)"))
        with db.read() as uow:
            assert uow.conn.execute(sa.text("SELECT count(*) FROM t")).scalar() == 1
    finally:
        db.dispose()
