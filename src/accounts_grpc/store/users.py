"""Repository for users and what hangs off a user: device permissions and orders.

SQLAlchemy Core on the connection of the caller's unit of work; no rules here (they
live in ``services/users.py``), only the statements. Rows of users carry the owning
account's ``consultancy_account_id`` and ``account_closed`` so that the policy can be
asked about them without another query.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from accounts_grpc.store.tables import (
    accounts,
    device_permissions,
    devices,
    group_members,
    orders,
    sessions,
    users,
)

USER_WITH_ACCOUNT = sa.select(
    users, accounts.c.consultancy_account_id, accounts.c.closed.label("account_closed")
).select_from(users.join(accounts, accounts.c.id == users.c.account_id))


# -- users ------------------------------------------------------------------------------------


def user_by_email(conn: sa.Connection, account_id: str, email: str) -> sa.Row[Any] | None:
    return conn.execute(
        USER_WITH_ACCOUNT.where(
            users.c.account_id == account_id, users.c.email_lower == email.strip().lower()
        )
    ).first()


def taken_fields(
    conn: sa.Connection,
    account_id: str,
    *,
    email: str | None = None,
    external_id: str | None = None,
    exclude_user_id: str | None = None,
) -> list[str]:
    """Which of ``email`` / ``external_id`` another user of the account already has."""
    out: list[str] = []
    checks = (
        ("email", users.c.email_lower, email.lower() if email else None),
        ("external_id", users.c.external_id, external_id),
    )
    for name, column, value in checks:
        if not value:
            continue
        stmt = sa.select(users.c.id).where(users.c.account_id == account_id, column == value)
        if exclude_user_id:
            stmt = stmt.where(users.c.id != exclude_user_id)
        if conn.execute(stmt.limit(1)).first() is not None:
            out.append(name)
    return out


def insert_user(conn: sa.Connection, values: Mapping[str, Any]) -> None:
    conn.execute(users.insert().values(**values))


def delete_user_cascade(conn: sa.Connection, user_id: str) -> dict[str, int]:
    """Delete a user with its memberships, permissions, sessions and orders."""
    counts = {}
    for name, table in (
        ("memberships", group_members),
        ("device_permissions", device_permissions),
        ("sessions", sessions),
        ("orders", orders),
    ):
        counts[name] = conn.execute(table.delete().where(table.c.user_id == user_id)).rowcount
    conn.execute(users.delete().where(users.c.id == user_id))
    return counts


# -- devices ----------------------------------------------------------------------------------


def devices_in_account(
    conn: sa.Connection, account_id: str, device_ids: Iterable[str], meter_ids: Iterable[str]
) -> list[sa.Row[Any]]:
    """The account's devices with any of the given device ids or meter ids."""
    device_ids, meter_ids = list(device_ids), list(meter_ids)
    conds = []
    if device_ids:
        conds.append(devices.c.device_id.in_(device_ids))
    if meter_ids:
        conds.append(devices.c.meter_id.in_(meter_ids))
    if not conds:
        return []
    return list(
        conn.execute(sa.select(devices).where(devices.c.account_id == account_id, sa.or_(*conds)))
    )


# -- device permissions -----------------------------------------------------------------------

dp = device_permissions

#: A permission with its device; device columns are prefixed ``d_``.
PERMISSION_WITH_DEVICE = sa.select(
    dp.c.id,
    dp.c.user_id,
    dp.c.account_id,
    dp.c.charging,
    dp.c.create_time,
    dp.c.update_time,
    dp.c.etag,
    dp.c.device_pk,
    devices.c.account_id.label("d_account_id"),
    devices.c.partition_id.label("d_partition_id"),
    devices.c.device_id.label("d_device_id"),
    devices.c.meter_id.label("d_meter_id"),
    devices.c.name.label("d_name"),
    devices.c.create_time.label("d_create_time"),
    devices.c.update_time.label("d_update_time"),
    devices.c.etag.label("d_etag"),
).select_from(dp.join(devices, devices.c.id == dp.c.device_pk))


def permissions_of(
    conn: sa.Connection, user_id: str, device_pks: Sequence[str]
) -> dict[str, sa.Row[Any]]:
    """The user's permissions for these devices, by device pk."""
    if not device_pks:
        return {}
    rows = conn.execute(
        PERMISSION_WITH_DEVICE.where(dp.c.user_id == user_id, dp.c.device_pk.in_(list(device_pks)))
    )
    return {r.device_pk: r for r in rows}  # type: ignore[misc]


def insert_permissions(conn: sa.Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    if rows:
        conn.execute(dp.insert(), [dict(r) for r in rows])


def delete_permissions(conn: sa.Connection, user_id: str, device_pks: Sequence[str]) -> None:
    if device_pks:
        conn.execute(dp.delete().where(dp.c.user_id == user_id, dp.c.device_pk.in_(device_pks)))


# -- orders -----------------------------------------------------------------------------------


def order_by_order_id(conn: sa.Connection, account_id: str, order_id: str) -> sa.Row[Any] | None:
    return conn.execute(
        sa.select(orders).where(orders.c.account_id == account_id, orders.c.order_id == order_id)
    ).first()


def order_by_pk(conn: sa.Connection, pk: str) -> sa.Row[Any] | None:
    return conn.execute(sa.select(orders).where(orders.c.id == pk)).first()


def insert_order(conn: sa.Connection, values: Mapping[str, Any]) -> None:
    conn.execute(orders.insert().values(**values))
