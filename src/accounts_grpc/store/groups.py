"""User groups in the store: rows, their members and the partitions they reach.

Plain SQLAlchemy Core; the rules about who may do what live in services/groups.py.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from accounts_grpc.store.db import now_us
from accounts_grpc.store.tables import (
    accounts,
    group_members,
    group_partitions,
    partitions,
    user_groups,
    users,
)

#: a group with what the policy needs to know about its account
GROUP_WITH_ACCOUNT = sa.select(
    user_groups,
    accounts.c.consultancy_account_id,
    accounts.c.closed.label("account_closed"),
).select_from(user_groups.join(accounts, accounts.c.id == user_groups.c.account_id))


def load(conn: sa.Connection, group_id: str, *, for_update: bool = False) -> Any | None:
    """The group row joined with its account's scope, or None.

    ``for_update`` locks the group row (PostgreSQL; SQLite writers hold the database
    lock anyway) so that membership changes of one group are serialized.
    """
    stmt = GROUP_WITH_ACCOUNT.where(user_groups.c.id == group_id)
    if for_update:
        stmt = stmt.with_for_update(of=user_groups)
    return conn.execute(stmt).first()


def name_taken(conn: sa.Connection, account_id: str, name: str, *, other_than: str = "") -> bool:
    stmt = sa.select(user_groups.c.id).where(
        user_groups.c.account_id == account_id, user_groups.c.name == name
    )
    if other_than:
        stmt = stmt.where(user_groups.c.id != other_than)
    return conn.execute(stmt.limit(1)).first() is not None


def members_of(conn: sa.Connection, group_ids: Collection[str]) -> dict[str, list[str]]:
    """group id → member user ids, in the order they joined (ties by id)."""
    out: dict[str, list[str]] = {g: [] for g in group_ids}
    if not group_ids:
        return out
    rows = conn.execute(
        sa.select(group_members.c.group_id, group_members.c.user_id)
        .where(group_members.c.group_id.in_(list(group_ids)))
        .order_by(group_members.c.create_time, group_members.c.user_id)
    )
    for r in rows:
        out[r.group_id].append(r.user_id)
    return out


def partitions_of(conn: sa.Connection, group_ids: Collection[str]) -> dict[str, list[str]]:
    """group id → ids of the partitions it reaches, sorted."""
    out: dict[str, list[str]] = {g: [] for g in group_ids}
    if not group_ids:
        return out
    rows = conn.execute(
        sa.select(group_partitions.c.group_id, group_partitions.c.partition_id)
        .where(group_partitions.c.group_id.in_(list(group_ids)))
        .order_by(group_partitions.c.partition_id)
    )
    for r in rows:
        out[r.group_id].append(r.partition_id)
    return out


def partitions_in_account(
    conn: sa.Connection, account_id: str, partition_ids: Iterable[str]
) -> set[str]:
    """Which of ``partition_ids`` are partitions of ``account_id``."""
    ids = list(dict.fromkeys(partition_ids))
    if not ids:
        return set()
    rows = conn.execute(
        sa.select(partitions.c.id).where(
            partitions.c.account_id == account_id, partitions.c.id.in_(ids)
        )
    )
    return {r.id for r in rows}


def users_in_account(conn: sa.Connection, account_id: str, user_ids: Iterable[str]) -> set[str]:
    """Which of ``user_ids`` are users of ``account_id``."""
    ids = list(dict.fromkeys(user_ids))
    if not ids:
        return set()
    rows = conn.execute(
        sa.select(users.c.id).where(users.c.account_id == account_id, users.c.id.in_(ids))
    )
    return {r.id for r in rows}


def insert(conn: sa.Connection, values: dict[str, Any]) -> None:
    conn.execute(user_groups.insert().values(**values))


def set_partitions(conn: sa.Connection, group_id: str, partition_ids: Sequence[str]) -> None:
    """Replace the group's partitions with ``partition_ids``."""
    conn.execute(group_partitions.delete().where(group_partitions.c.group_id == group_id))
    if partition_ids:
        conn.execute(
            group_partitions.insert(),
            [{"group_id": group_id, "partition_id": pid} for pid in partition_ids],
        )


def add_members(conn: sa.Connection, group_id: str, user_ids: Sequence[str]) -> list[str]:
    """Add the users that are not members yet; returns those added."""
    if not user_ids:
        return []
    present = {
        r.user_id
        for r in conn.execute(
            sa.select(group_members.c.user_id).where(
                group_members.c.group_id == group_id, group_members.c.user_id.in_(list(user_ids))
            )
        )
    }
    new = [u for u in user_ids if u not in present]
    if new:
        now = now_us()
        conn.execute(
            group_members.insert(),
            [{"group_id": group_id, "user_id": u, "create_time": now} for u in new],
        )
    return new


def remove_members(conn: sa.Connection, group_id: str, user_ids: Sequence[str]) -> list[str]:
    """Remove the users that are members; returns those removed."""
    if not user_ids:
        return []
    present = {
        r.user_id
        for r in conn.execute(
            sa.select(group_members.c.user_id).where(
                group_members.c.group_id == group_id, group_members.c.user_id.in_(list(user_ids))
            )
        )
    }
    if present:
        conn.execute(
            group_members.delete().where(
                group_members.c.group_id == group_id, group_members.c.user_id.in_(list(present))
            )
        )
    return [u for u in user_ids if u in present]


def delete(conn: sa.Connection, group_id: str) -> None:
    """The group and its memberships and partition links."""
    conn.execute(group_members.delete().where(group_members.c.group_id == group_id))
    conn.execute(group_partitions.delete().where(group_partitions.c.group_id == group_id))
    conn.execute(user_groups.delete().where(user_groups.c.id == group_id))


def groups_reaching(conn: sa.Connection, partition_id: str) -> list[Any]:
    """(id, account_id) of the groups that reach a partition."""
    return list(
        conn.execute(
            sa.select(user_groups.c.id, user_groups.c.account_id)
            .select_from(
                group_partitions.join(user_groups, user_groups.c.id == group_partitions.c.group_id)
            )
            .where(group_partitions.c.partition_id == partition_id)
            .order_by(user_groups.c.id)
        )
    )


def member_group_ids(user_id: str) -> sa.Select[Any]:
    """Subquery: ids of the groups ``user_id`` is a member of."""
    return sa.select(group_members.c.group_id).where(group_members.c.user_id == user_id)


def reachable_partition_ids(user_id: str) -> sa.Select[Any]:
    """Subquery: ids of the partitions the groups of ``user_id`` reach."""
    return (
        sa.select(group_partitions.c.partition_id)
        .select_from(
            group_partitions.join(
                group_members, group_members.c.group_id == group_partitions.c.group_id
            )
        )
        .where(group_members.c.user_id == user_id)
    )
