"""Migration 0005 (``users.credential_generation``) on SQLite and PostgreSQL: existing
users start at generation 0, the column is NOT NULL with a server default, and up/down
keep the users table in place (on SQLite its FTS search index and triggers, 0002, still
match every row)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.exc import IntegrityError

from accounts_grpc.store import migrate
from accounts_grpc.store.db import create_engine, new_etag, now_us
from accounts_grpc.store.tables import accounts, users

COLUMN = "credential_generation"


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = create_engine(db_url)
    yield eng
    eng.dispose()


def columns(engine: sa.Engine) -> dict[str, dict[str, object]]:
    with engine.connect() as conn:
        return {c["name"]: dict(c) for c in sa.inspect(conn).get_columns("users")}


def add_user(conn: sa.Connection, name: str) -> str:
    """An account and a MACHINE user, naming only the columns every revision has."""
    aid, uid, now = str(uuid.uuid4()), str(uuid.uuid4()), now_us()
    email = f"{aid[:8]}@example.com"
    conn.execute(accounts.insert().values(
        id=aid, name=f"acct {aid[:8]}", email=email, email_lower=email, roles=[],
        consultancy_account_id=None, closed=False, create_time=now, update_time=now,
        activity_time=None, etag=new_etag()))
    conn.execute(users.insert().values(
        id=uid, account_id=aid, kind="MACHINE", email=None, email_lower=None, first_name="",
        last_name="", name=name, external_id=None, client_id=uuid.uuid4().hex,
        secret_hash="0" * 64, roles=["member"], create_time=now, update_time=now,
        etag=new_etag()))
    return uid


def generation(conn: sa.Connection, uid: str) -> int:
    return int(conn.execute(
        sa.text(f"SELECT {COLUMN} FROM users WHERE id = :id"), {"id": uid}).scalar_one())


def check_search(engine: sa.Engine, names: list[str]) -> None:
    """SQLite: the users FTS index and its triggers survived, in step with the table."""
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as conn:
        triggers = {r[0] for r in conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'users'")}
        assert {"users_search_ai", "users_search_ad", "users_search_au"} <= triggers
        conn.exec_driver_sql("INSERT INTO users_search(users_search) VALUES ('integrity-check')")
        for name in names:
            hits = conn.exec_driver_sql(
                "SELECT count(*) FROM users_search WHERE users_search MATCH ?", (f'"{name}"',)
            ).scalar_one()
            assert hits == 1, name


def downgrade(engine: sa.Engine, revision: str) -> None:
    cfg = migrate.alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def test_existing_users_start_at_generation_zero(engine: sa.Engine) -> None:
    migrate.upgrade(engine, "0004")
    assert COLUMN not in columns(engine)
    with engine.begin() as conn:
        before = add_user(conn, "before-the-column")

    migrate.upgrade(engine, "0005")
    assert migrate.current(engine) == "0005"
    col = columns(engine)[COLUMN]
    assert col["nullable"] is False and "0" in str(col["default"])
    with engine.begin() as conn:
        assert generation(conn, before) == 0
        after = add_user(conn, "after-the-column")  # the server default fills it in
        assert generation(conn, after) == 0
        conn.execute(users.update().where(users.c.id == before)
                     .values(credential_generation=users.c.credential_generation + 1))
        assert generation(conn, before) == 1
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE users SET {COLUMN} = NULL WHERE id = :id"), {"id": after})
    check_search(engine, ["before-the-column", "after-the-column"])

    migrate.upgrade(engine)  # and on to head
    assert migrate.is_current(engine)


def test_downgrade_drops_the_column_and_keeps_the_users(engine: sa.Engine) -> None:
    migrate.upgrade(engine)
    with engine.begin() as conn:
        uid = add_user(conn, "round-trip")
    downgrade(engine, "0004")
    assert migrate.current(engine) == "0004"
    assert COLUMN not in columns(engine)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT name FROM users WHERE id = :id"),
                            {"id": uid}).scalar_one() == "round-trip"
    check_search(engine, ["round-trip"])
    migrate.upgrade(engine)
    with engine.connect() as conn:
        assert generation(conn, uid) == 0
    check_search(engine, ["round-trip"])
