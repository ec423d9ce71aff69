"""Migration 0006 on SQLite and PostgreSQL: device_id and meter_id go from unique on the
platform to unique per account, with the data in place; the schema then matches
tables.py; a downgrade refuses (changing nothing) while two accounts share an id."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.exc import IntegrityError

from accounts_grpc.store import migrate
from accounts_grpc.store.db import create_engine
from accounts_grpc.store.tables import accounts, devices, include_name, metadata, partitions

BEFORE = "0005"
PER_ACCOUNT = {"uq_devices_account_id_device_id", "uq_devices_account_id_meter_id"}
GLOBAL = {"uq_devices_device_id", "uq_devices_meter_id"}


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = create_engine(db_url)
    yield eng
    eng.dispose()


def downgrade(engine: sa.Engine, revision: str) -> None:
    cfg = migrate.alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def tenant(conn: sa.Connection, name: str) -> tuple[str, str]:
    """An account and a partition of it; returns their ids."""
    aid, pid = str(uuid.uuid4()), str(uuid.uuid4())
    conn.execute(
        accounts.insert().values(
            id=aid,
            name=name,
            email=f"{aid}@example.com",
            email_lower=f"{aid}@example.com",
            roles=[],
            consultancy_account_id=None,
            closed=False,
            create_time=1,
            update_time=1,
            etag="e",
        )
    )
    conn.execute(
        partitions.insert().values(
            id=pid, account_id=aid, name="p", description="", create_time=1, update_time=1, etag="e"
        )
    )
    return aid, pid


def add_device(
    engine: sa.Engine,
    where: tuple[str, str],
    device_id: str | None = None,
    meter_id: str | None = None,
) -> str:
    pk = str(uuid.uuid4())
    with engine.begin() as conn:
        conn.execute(
            devices.insert().values(
                id=pk,
                account_id=where[0],
                partition_id=where[1],
                device_id=device_id,
                meter_id=meter_id,
                name="",
                create_time=1,
                update_time=1,
                etag="e",
            )
        )
    return pk


def device_indexes(engine: sa.Engine) -> dict[str, tuple[list[str], bool]]:
    with engine.connect() as conn:
        return {
            ix["name"]: ([str(c) for c in ix["column_names"]], bool(ix["unique"]))
            for ix in sa.inspect(conn).get_indexes("devices")
            if ix["name"] is not None
        }


def test_device_ids_become_unique_per_account(engine: sa.Engine) -> None:
    migrate.upgrade(engine, BEFORE)
    with engine.begin() as conn:
        a, b = tenant(conn, "A"), tenant(conn, "B")
    add_device(engine, a, "DEV00001", "MTR-1")
    add_device(engine, a, None, "MTR-2")
    add_device(engine, a, "DEV00002", None)
    # before: platform-wide, so B cannot have A's ids
    with pytest.raises(IntegrityError):
        add_device(engine, b, "DEV00001")
    with pytest.raises(IntegrityError):
        add_device(engine, b, None, "MTR-1")
    assert set(device_indexes(engine)) >= GLOBAL

    migrate.upgrade(engine)
    assert migrate.is_current(engine)
    ix = device_indexes(engine)
    assert not GLOBAL & set(ix)
    assert ix["uq_devices_account_id_device_id"] == (["account_id", "device_id"], True)
    assert ix["uq_devices_account_id_meter_id"] == (["account_id", "meter_id"], True)
    with engine.connect() as conn:  # the rows are all there
        assert conn.execute(sa.select(sa.func.count()).select_from(devices)).scalar_one() == 3
    # after: B may register A's ids; inside one account they stay unique
    add_device(engine, b, "DEV00001", "MTR-1")
    with pytest.raises(IntegrityError):
        add_device(engine, a, "DEV00001")
    with pytest.raises(IntegrityError):
        add_device(engine, b, None, "MTR-1")
    # a missing id is no id: any number of devices lack one
    add_device(engine, a, None, "MTR-3")
    add_device(engine, b, "DEV00003", None)
    add_device(engine, b, "DEV00004", None)


def test_the_schema_matches_the_tables(engine: sa.Engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    migrate.upgrade(engine)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"include_name": include_name})
        diff = compare_metadata(ctx, metadata)
    assert [d for d in diff if "devices" in str(d)] == []
    assert {ix.name for ix in devices.indexes} >= PER_ACCOUNT


def test_downgrade_refuses_while_accounts_share_an_id(engine: sa.Engine) -> None:
    migrate.upgrade(engine)
    with engine.begin() as conn:
        a, b = tenant(conn, "A"), tenant(conn, "B")
    add_device(engine, a, "SHARED01", "MTR-A")
    shared = add_device(engine, b, "SHARED01", "MTR-SHARED")
    add_device(engine, a, None, "MTR-SHARED")
    with pytest.raises(RuntimeError) as e:
        downgrade(engine, BEFORE)
    assert "device_id 'SHARED01'" in str(e.value) and "meter_id 'MTR-SHARED'" in str(e.value)
    assert migrate.current(engine) == migrate.head()  # nothing changed
    assert set(device_indexes(engine)) >= PER_ACCOUNT

    with engine.begin() as conn:
        conn.execute(devices.delete().where(devices.c.id == shared))
    downgrade(engine, BEFORE)
    assert migrate.current(engine) == BEFORE
    ix = device_indexes(engine)
    assert not PER_ACCOUNT & set(ix)
    assert ix["uq_devices_device_id"] == (["device_id"], True)
    assert ix["uq_devices_meter_id"] == (["meter_id"], True)
    migrate.upgrade(engine)  # and up again
    assert set(device_indexes(engine)) >= PER_ACCOUNT
