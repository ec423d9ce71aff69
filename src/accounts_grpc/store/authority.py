"""What deciding on an account or a user reads (``uow.authority``): their scope, and a
user's group roles.

The rules (NOT_FOUND, the policy, who outranks whom) live in services/common.py; here
are the statements. Each is one indexed read, built once with bind parameters (these
run on hot paths: every authorization of an act on a user, CreateToken). Rows of users
carry the owning account's ``consultancy_account_id`` and ``account_closed`` so that
the policy can be asked about them without another query.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from accounts_grpc.store.rows import Repository
from accounts_grpc.store.tables import accounts, group_members, user_groups, users

__all__ = ["Authority"]

_ACCOUNT_SCOPE: sa.Select[Any] = sa.select(
    accounts.c.id, accounts.c.consultancy_account_id, accounts.c.closed
).where(accounts.c.id == sa.bindparam("aid"))

_USER_WITH_ACCOUNT = sa.select(
    users, accounts.c.consultancy_account_id, accounts.c.closed.label("account_closed")
).select_from(users.join(accounts, accounts.c.id == users.c.account_id))

_USER_BY_ID = _USER_WITH_ACCOUNT.where(users.c.id == sa.bindparam("uid"))

_USER_BY_EXTERNAL_ID = _USER_WITH_ACCOUNT.where(
    users.c.account_id == sa.bindparam("aid"), users.c.external_id == sa.bindparam("xid")
)

_GROUP_ROLES = (
    sa.select(user_groups.c.roles)
    .select_from(group_members.join(user_groups, user_groups.c.id == group_members.c.group_id))
    .where(group_members.c.user_id == sa.bindparam("uid"))
)


class Authority(Repository):
    """The reads behind every decision on an account or a user (see the module
    docstring)."""

    __slots__ = ()

    def account_scope(self, account_id: str) -> sa.Row[Any] | None:
        """The account's ``id``, ``consultancy_account_id`` and ``closed``, or None."""
        return self.conn.execute(_ACCOUNT_SCOPE, {"aid": account_id}).first()

    def user_by_id(self, user_id: str) -> sa.Row[Any] | None:
        """The user's row (all columns) with its account's scope, or None."""
        return self.conn.execute(_USER_BY_ID, {"uid": user_id}).first()

    def user_by_external_id(self, account_id: str, external_id: str) -> sa.Row[Any] | None:
        """The account's user with this ``external_id`` (all columns, with the account's
        scope), or None."""
        params = {"aid": account_id, "xid": external_id}
        return self.conn.execute(_USER_BY_EXTERNAL_ID, params).first()

    def group_roles(self, user_id: str) -> list[Any]:
        """The ``roles`` of every group ``user_id`` is a member of, one list (or None) per
        group."""
        return [r[0] for r in self.conn.execute(_GROUP_ROLES, {"uid": user_id})]
