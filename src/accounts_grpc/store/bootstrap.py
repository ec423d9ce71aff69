"""The statements of ``accounts-grpc bootstrap`` (services/bootstrap.py): the platform
account, found by its email or made, and whether the database has any user yet.

The admin machine user it adds is inserted by ``store/accounts.insert_user``, as
CreateAccount's first user is. A concurrent first bootstrap that made the platform
account first makes ``insert_platform_account`` raise ``errors.ConstraintViolation``
(the use case then runs again and finds that account).
"""

from __future__ import annotations

import sqlalchemy as sa

from accounts_grpc.store.db import Connection, new_etag
from accounts_grpc.store.tables import accounts, users

__all__ = ["any_user", "insert_platform_account", "platform_account_id"]

_ANY_USER = sa.select(users.c.id).limit(1)
_OPEN_BY_EMAIL = sa.select(accounts.c.id).where(
    accounts.c.email_lower == sa.bindparam("email"), accounts.c.closed.is_(False)
)
_INSERT_ACCOUNT = accounts.insert()


def any_user(conn: Connection) -> bool:
    """Whether any user exists."""
    return conn.execute(_ANY_USER).first() is not None


def platform_account_id(conn: Connection, email: str) -> str | None:
    """The id of the open account with this email (compared case-insensitively), if any."""
    row = conn.execute(_OPEN_BY_EMAIL, {"email": email.lower()}).first()
    return None if row is None else str(row.id)


def insert_platform_account(
    conn: Connection, *, account_id: str, name: str, email: str, now: int
) -> None:
    """Insert the platform account: no roles, no consultancy, no branding, created and
    updated at ``now``, with a new etag. A concurrent bootstrap that inserted it first
    makes this raise ``errors.ConstraintViolation`` (the partial unique index of open emails)."""
    conn.execute(
        _INSERT_ACCOUNT.values(
            id=account_id,
            name=name,
            email=email,
            email_lower=email.lower(),
            roles=[],
            consultancy_account_id=None,
            primary_color="",
            secondary_color="",
            logo_url="",
            closed=False,
            create_time=now,
            update_time=now,
            activity_time=None,
            etag=new_etag(),
        )
    )
