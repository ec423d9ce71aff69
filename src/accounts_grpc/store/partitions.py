"""Partitions and their devices in the store.

Plain SQLAlchemy Core; the rules live in services/partitions.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from accounts_grpc.store.tables import (
    accounts,
    device_permissions,
    devices,
    group_partitions,
    partitions,
)

#: a partition with what the policy needs to know about its account
PARTITION_WITH_ACCOUNT = sa.select(
    partitions,
    accounts.c.consultancy_account_id,
    accounts.c.closed.label("account_closed"),
).select_from(partitions.join(accounts, accounts.c.id == partitions.c.account_id))


def load(conn: sa.Connection, partition_id: str, *, for_update: bool = False) -> Any | None:
    stmt = PARTITION_WITH_ACCOUNT.where(partitions.c.id == partition_id)
    if for_update:
        stmt = stmt.with_for_update(of=partitions)
    return conn.execute(stmt).first()


def load_many(conn: sa.Connection, partition_ids: Iterable[str]) -> list[Any]:
    ids = list(dict.fromkeys(partition_ids))
    if not ids:
        return []
    return list(
        conn.execute(
            sa.select(partitions).where(partitions.c.id.in_(ids)).order_by(partitions.c.id)
        )
    )


def name_taken(conn: sa.Connection, account_id: str, name: str, *, other_than: str = "") -> bool:
    stmt = sa.select(partitions.c.id).where(
        partitions.c.account_id == account_id, partitions.c.name == name
    )
    if other_than:
        stmt = stmt.where(partitions.c.id != other_than)
    return conn.execute(stmt.limit(1)).first() is not None


def insert(conn: sa.Connection, values: dict[str, Any]) -> None:
    conn.execute(partitions.insert().values(**values))


def device_count(conn: sa.Connection, partition_id: str) -> int:
    return int(
        conn.execute(
            sa.select(sa.func.count())
            .select_from(devices)
            .where(devices.c.partition_id == partition_id)
        ).scalar_one()
    )


def device_ids_in(conn: sa.Connection, partition_id: str) -> list[str]:
    """Primary keys of the partition's devices."""
    return [
        r.id
        for r in conn.execute(
            sa.select(devices.c.id)
            .where(devices.c.partition_id == partition_id)
            .order_by(devices.c.id)
        )
    ]


def delete(conn: sa.Connection, partition_id: str) -> None:
    """The partition with its devices, their permissions and the groups' links to it."""
    device_pks = sa.select(devices.c.id).where(devices.c.partition_id == partition_id)
    conn.execute(device_permissions.delete().where(device_permissions.c.device_pk.in_(device_pks)))
    conn.execute(devices.delete().where(devices.c.partition_id == partition_id))
    conn.execute(group_partitions.delete().where(group_partitions.c.partition_id == partition_id))
    conn.execute(partitions.delete().where(partitions.c.id == partition_id))


def registered(
    conn: sa.Connection, account_id: str, device_ids: Sequence[str], meter_ids: Sequence[str]
) -> tuple[set[str], set[str]]:
    """Which of these device ids and meter ids a device of ``account_id`` already has.

    Only the account's own devices count: ids are unique per account (migration 0006), so
    whether another tenant holds an id never shows in any answer."""
    taken_devices: set[str] = set()
    taken_meters: set[str] = set()
    if device_ids:
        taken_devices = {
            r.device_id
            for r in conn.execute(
                sa.select(devices.c.device_id).where(
                    devices.c.account_id == account_id,
                    devices.c.device_id.in_(list(device_ids)),
                )
            )
        }
    if meter_ids:
        taken_meters = {
            r.meter_id
            for r in conn.execute(
                sa.select(devices.c.meter_id).where(
                    devices.c.account_id == account_id,
                    devices.c.meter_id.in_(list(meter_ids)),
                )
            )
        }
    return taken_devices, taken_meters


def insert_devices(conn: sa.Connection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        conn.execute(devices.insert(), list(rows))


def load_devices(conn: sa.Connection, device_pks: Sequence[str]) -> list[Any]:
    """Devices by primary key, in the order given (missing ones skipped)."""
    if not device_pks:
        return []
    by_id = {
        r.id: r for r in conn.execute(sa.select(devices).where(devices.c.id.in_(list(device_pks))))
    }
    return [by_id[i] for i in device_pks if i in by_id]
