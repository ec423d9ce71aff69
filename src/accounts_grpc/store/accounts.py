"""The accounts repository: every SQL statement about accounts, in Core.

Reads are single indexed statements (the primary key, or the partial unique index of
open accounts' emails). ``purge_contents`` removes everything an account owns, children
before parents, inside the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from accounts_grpc.domain.errors import AlreadyExists
from accounts_grpc.store.tables import (
    account_counts,
    accounts,
    device_permissions,
    devices,
    group_members,
    group_partitions,
    orders,
    partitions,
    sessions,
    user_groups,
    users,
)

_BY_ID = sa.select(accounts).where(accounts.c.id == sa.bindparam("aid"))
# ``closed = false`` spelled out so the planner uses the partial unique index
_OPEN_BY_EMAIL = sa.select(accounts).where(
    accounts.c.email_lower == sa.bindparam("email"), accounts.c.closed == sa.false()
)
_CLOSED_BY_EMAIL = (
    sa.select(accounts)
    .where(accounts.c.email_lower == sa.bindparam("email"), accounts.c.closed == sa.true())
    .order_by(accounts.c.update_time.desc(), accounts.c.id.desc())
    .limit(1)
)
_EMAIL_HOLDER = sa.select(accounts.c.id).where(
    accounts.c.email_lower == sa.bindparam("email"), accounts.c.closed == sa.false()
)
_OPEN_CLIENTS = sa.select(accounts.c.id, accounts.c.etag).where(
    accounts.c.consultancy_account_id == sa.bindparam("aid"), accounts.c.closed == sa.false()
)


def email_key(email: str) -> str:
    """What uniqueness and lookups compare: the address, case-folded."""
    return email.strip().lower()


_BY_ID_LOCKED = _BY_ID.with_for_update()


def get(conn: sa.Connection, account_id: str, *, lock: bool = False) -> sa.Row[Any] | None:
    """One primary-key read. ``lock``: ``SELECT ... FOR UPDATE`` (PostgreSQL; SQLite's
    write transactions hold the database lock already), so that concurrent writers of
    one account queue instead of failing each other's etag check."""
    return conn.execute(_BY_ID_LOCKED if lock else _BY_ID, {"aid": account_id}).first()


def find_by_email(
    conn: sa.Connection, email: str, *, include_closed: bool = False
) -> sa.Row[Any] | None:
    """The open account with this email; else, if asked, the most recently closed one."""
    key = email_key(email)
    row = conn.execute(_OPEN_BY_EMAIL, {"email": key}).first()
    if row is None and include_closed:
        row = conn.execute(_CLOSED_BY_EMAIL, {"email": key}).first()
    return row


def email_holder(conn: sa.Connection, email: str) -> str | None:
    """Id of the open account using this email, if any."""
    return conn.execute(_EMAIL_HOLDER, {"email": email_key(email)}).scalar()


def open_clients(conn: sa.Connection, account_id: str) -> list[sa.Row[Any]]:
    """Open accounts whose consultancy is ``account_id`` (indexed)."""
    return list(conn.execute(_OPEN_CLIENTS, {"aid": account_id}))


_KEPT_COUNTS = sa.select(account_counts.c.all_accounts, account_counts.c.open_accounts).where(
    account_counts.c.id == 1
)


def kept_counts(conn: sa.Connection) -> tuple[int, int] | None:
    """(every account, the open ones) as ``account_counts`` holds them: kept exact by
    triggers in the transaction of every write (migration 0007), so this is one primary-key
    read, never a count. None if the row is missing."""
    row = conn.execute(_KEPT_COUNTS).first()
    return None if row is None else (int(row[0]), int(row[1]))


def _email_taken(email: str) -> AlreadyExists:
    return AlreadyExists(
        f"an open account already uses the email {email!r}",
        reason="ACCOUNT_EMAIL_TAKEN",
        metadata={"email": email},
    )


def require_email_free(conn: sa.Connection, email: str, *, except_id: str | None = None) -> None:
    """ALREADY_EXISTS (ACCOUNT_EMAIL_TAKEN) if another open account uses ``email``."""
    holder = email_holder(conn, email)
    if holder is not None and holder != except_id:
        raise _email_taken(email)


def insert(conn: sa.Connection, values: Mapping[str, Any]) -> None:
    """Insert an account; a lost race on the email index is ALREADY_EXISTS."""
    try:
        with conn.begin_nested():
            conn.execute(accounts.insert().values(**values))
    except IntegrityError:
        if email_holder(conn, values["email"]) is not None:
            raise _email_taken(values["email"]) from None
        raise


def update_guarded(conn: sa.Connection, fn: Any, email: str | None) -> Any:
    """Run ``fn()`` (an UPDATE) in a savepoint; a lost race on the email is ALREADY_EXISTS."""
    try:
        with conn.begin_nested():
            return fn()
    except IntegrityError:
        if email is not None:
            raise _email_taken(email) from None
        raise


def purge_contents(conn: sa.Connection, account_id: str) -> dict[str, int]:
    """Delete everything the account owns, children first; returns rows deleted per table.

    Rows of other accounts that point into this one (a membership of a foreign user in
    one of its groups, a permission on one of its devices) go too, so no foreign key is
    left dangling. Audit events are kept: they have no foreign key and outlive the data.
    """
    acct_users = sa.select(users.c.id).where(users.c.account_id == account_id)
    acct_groups = sa.select(user_groups.c.id).where(user_groups.c.account_id == account_id)
    acct_parts = sa.select(partitions.c.id).where(partitions.c.account_id == account_id)
    acct_devices = sa.select(devices.c.id).where(devices.c.account_id == account_id)
    steps: list[tuple[str, sa.Delete]] = [
        ("sessions", sessions.delete().where(sessions.c.user_id.in_(acct_users))),
        (
            "device_permissions",
            device_permissions.delete().where(
                sa.or_(
                    device_permissions.c.user_id.in_(acct_users),
                    device_permissions.c.device_pk.in_(acct_devices),
                )
            ),
        ),
        (
            "orders",
            orders.delete().where(
                sa.or_(orders.c.account_id == account_id, orders.c.user_id.in_(acct_users))
            ),
        ),
        (
            "group_members",
            group_members.delete().where(
                sa.or_(
                    group_members.c.group_id.in_(acct_groups),
                    group_members.c.user_id.in_(acct_users),
                )
            ),
        ),
        (
            "group_partitions",
            group_partitions.delete().where(
                sa.or_(
                    group_partitions.c.group_id.in_(acct_groups),
                    group_partitions.c.partition_id.in_(acct_parts),
                )
            ),
        ),
        ("user_groups", user_groups.delete().where(user_groups.c.account_id == account_id)),
        (
            "devices",
            devices.delete().where(
                sa.or_(devices.c.account_id == account_id, devices.c.partition_id.in_(acct_parts))
            ),
        ),
        ("partitions", partitions.delete().where(partitions.c.account_id == account_id)),
        ("users", users.delete().where(users.c.account_id == account_id)),
    ]
    counts: dict[str, int] = {}
    for name, stmt in steps:
        counts[name] = conn.execute(stmt).rowcount or 0
    return counts
