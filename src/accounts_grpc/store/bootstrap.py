"""The statements of ``accounts-grpc bootstrap`` (services/bootstrap.py), as
``uow.bootstrap``: the platform account, found by its email or made, and whether the
database has any user yet.

The admin machine user it adds is inserted by ``uow.accounts.insert_user``, as
CreateAccount's first user is. A concurrent first bootstrap that made the platform
account first makes ``insert_platform_account`` raise ``errors.ConstraintViolation``
(the use case then runs again and finds that account).
"""

from __future__ import annotations

import sqlalchemy as sa

from accounts_grpc.store.rows import Repository, new_etag
from accounts_grpc.store.tables import accounts, users

__all__ = ["Bootstrap"]

_ANY_USER = sa.select(users.c.id).limit(1)
_OPEN_BY_EMAIL = sa.select(accounts.c.id).where(
    accounts.c.email_lower == sa.bindparam("email"), accounts.c.closed.is_(False)
)
_INSERT_ACCOUNT = accounts.insert()


class Bootstrap(Repository):
    """The platform account and the first users (see the module docstring)."""

    __slots__ = ()

    def any_user(self) -> bool:
        """Whether any user exists."""
        return self.conn.execute(_ANY_USER).first() is not None

    def platform_account_id(self, email: str) -> str | None:
        """The id of the open account with this email (compared case-insensitively), if
        any."""
        row = self.conn.execute(_OPEN_BY_EMAIL, {"email": email.lower()}).first()
        return None if row is None else str(row.id)

    def insert_platform_account(self, *, account_id: str, name: str, email: str,
                                now: int) -> None:
        """Insert the platform account: no roles, no consultancy, no branding, created and
        updated at ``now``, with a new etag. A concurrent bootstrap that inserted it first
        makes this raise ``errors.ConstraintViolation`` (the partial unique index of open
        emails)."""
        self.conn.execute(
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
