"""Repository for users (``uow.users``): point reads, the unique-key checks, insert,
cascade delete, the credential rotation's values, and the ListUsers page.

SQLAlchemy Core on the connection of the unit of work (a write transaction, or a read);
no rules here (they live in services/users.py), only the statements:

- ``me``: GetMe's two point reads when the principal did not carry its rows.
- ``user_by_email``: a user of an account by its e-mail, with what the policy needs of
  its account (``consultancy_account_id``, ``account_closed``).
- ``taken_fields``: which of an e-mail / external id another user of the account has.
- ``insert``: a lost unique key (e-mail or external id) becomes the caller's error.
- ``update_if_etag``: the etag-conditional UPDATE of a user.
- ``delete_cascade``: a user with its memberships, permissions, sessions, orders.
- ``secret_rotated``: the column values of a new client secret (a new generation).
- ``list_page``: one page of ``USER_LIST``, of one account or of all, narrowed to the
  users the caller may see (``Visible``, as the service decided it).

Point reads are module constants with bind parameters, built and compiled once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from accounts_grpc.domain.listing import ListQuery, Page
from accounts_grpc.domain.ports import Visible
from accounts_grpc.store import conflicts
from accounts_grpc.store.listing import ListSpec, SearchIndex, run_list
from accounts_grpc.store.rows import Repository
from accounts_grpc.store.tables import (
    accounts,
    device_permissions,
    group_members,
    orders,
    sessions,
    users,
)

__all__ = ["USER_LIST", "Users"]

_ME = sa.select(users).where(users.c.id == sa.bindparam("uid"))
_ACCOUNT = sa.select(accounts).where(accounts.c.id == sa.bindparam("aid"))

_USER_BY_EMAIL = (
    sa.select(users, accounts.c.consultancy_account_id, accounts.c.closed.label("account_closed"))
    .select_from(users.join(accounts, accounts.c.id == users.c.account_id))
    .where(users.c.account_id == sa.bindparam("aid"), users.c.email_lower == sa.bindparam("e"))
)


def _taken(column: sa.ColumnElement[Any], *, excluding: bool) -> sa.Select[Any]:
    stmt = sa.select(users.c.id).where(
        users.c.account_id == sa.bindparam("aid"), column == sa.bindparam("v")
    )
    if excluding:
        stmt = stmt.where(users.c.id != sa.bindparam("xuid"))
    return stmt.limit(1)


#: (field, another user than ``xuid`` only) -> "does a user of the account have it?"
_TAKEN = {
    (name, excluding): _taken(column, excluding=excluding)
    for name, column in (("email", users.c.email_lower), ("external_id", users.c.external_id))
    for excluding in (False, True)
}

_INSERT_USER = users.insert()

#: what a user's deletion takes with it, in this order, then the user
_CASCADE = tuple(
    (name, table.delete().where(table.c.user_id == sa.bindparam("uid")))
    for name, table in (
        ("memberships", group_members),
        ("device_permissions", device_permissions),
        ("sessions", sessions),
        ("orders", orders),
    )
)
_DELETE_USER = users.delete().where(users.c.id == sa.bindparam("uid"))

_NEXT_GENERATION = users.c.credential_generation + 1

_email_key = sa.func.coalesce(users.c.email_lower, "")
_external_key = sa.func.coalesce(users.c.external_id, "")

#: ListUsers: what it may be ordered by and searched in.
USER_LIST = ListSpec(
    resource="users",
    id_column=users.c.id,
    orderable={
        "name": users.c.name,
        "email": _email_key,
        "first_name": users.c.first_name,
        "last_name": users.c.last_name,
        "external_id": _external_key,
        "create_time": users.c.create_time,
        "update_time": users.c.update_time,
    },
    # NULL matches no term; plain columns, so that PostgreSQL's pg_trgm indexes serve them
    searchable=[users.c.name, users.c.email, users.c.external_id],
    search=SearchIndex("users_search", ("name", "email", "external_id"), users),  # 0002
)

_EVERY_USER = sa.select(users)


class Users(Repository):
    """The users of every account (see the module docstring)."""

    __slots__ = ()

    #: what ListUsers may be ordered by and searched in
    list_shape = USER_LIST

    # -- point reads ---------------------------------------------------------------------

    def me(self, user_id: str, account_id: str) -> tuple[Any, Any]:
        """The user row and its account row (every column of each); either may be None."""
        user = self.conn.execute(_ME, {"uid": user_id}).first()
        account = self.conn.execute(_ACCOUNT, {"aid": account_id}).first()
        return user, account

    def user_by_email(self, account_id: str, email: str) -> sa.Row[Any] | None:
        """The account's user with this e-mail (any case; all columns, with the account's
        ``consultancy_account_id`` and ``account_closed``), or None."""
        return self.conn.execute(
            _USER_BY_EMAIL, {"aid": account_id, "e": email.strip().lower()}
        ).first()

    def taken_fields(
        self,
        account_id: str,
        *,
        email: str | None = None,
        external_id: str | None = None,
        exclude_user_id: str | None = None,
    ) -> list[str]:
        """Which of ``email`` / ``external_id`` another user of the account already has."""
        out: list[str] = []
        for name, value in (("email", email.lower() if email else None),
                            ("external_id", external_id)):
            if not value:
                continue
            params = {"aid": account_id, "v": value}
            if exclude_user_id:
                params["xuid"] = exclude_user_id
            if self.conn.execute(_TAKEN[name, bool(exclude_user_id)], params).first() is not None:
                out.append(name)
        return out

    # -- writes --------------------------------------------------------------------------

    def insert(self, values: Mapping[str, Any], taken: Callable[[str], BaseException]) -> None:
        """Insert the user. A concurrent insert that won the user's e-mail or external id
        (after the caller's ``taken_fields`` check) raises ``taken("email")`` /
        ``taken("external_id")`` instead; one that won the ``client_id`` propagates as it
        is (the transaction is lost either way)."""
        try:
            self.conn.execute(_INSERT_USER, dict(values))
        except IntegrityError as e:
            text = str(e.orig).lower()
            if "client_id" in text:
                raise
            raise taken("email" if "email" in text else "external_id") from None

    def update_if_etag(self, user_id: str, old_etag: str, values: Mapping[str, Any]) -> bool:
        """Write ``values`` to the user ``user_id`` if its etag is still ``old_etag``;
        False (nothing written) if a concurrent writer changed it first, or it is gone
        (store/conflicts.update_if_etag, run by services/writes.conditional_update)."""
        return conflicts.update_if_etag(self.conn, users, user_id, old_etag, values)

    def delete_cascade(self, user_id: str) -> dict[str, int]:
        """Delete a user with its memberships, permissions, sessions and orders; how many
        rows of each went."""
        params = {"uid": user_id}
        counts = {name: self.conn.execute(stmt, params).rowcount for name, stmt in _CASCADE}
        self.conn.execute(_DELETE_USER, params)
        return counts

    @staticmethod
    def secret_rotated(secret_hash: str) -> dict[str, Any]:
        """The values that give a user a new client secret: its hash, and the next
        ``credential_generation`` (which revokes every JWT issued with the old secret)."""
        return {"secret_hash": secret_hash, "credential_generation": _NEXT_GENERATION}

    # -- ListUsers -----------------------------------------------------------------------

    def list_page(
        self,
        query: ListQuery,
        *,
        account_id: str | None,
        kind: str = "",
        visible: Visible | None = None,
    ) -> Page:
        """One page (``query``, parsed against ``USER_LIST``) of the users of
        ``account_id`` (of every account when None), of ``kind`` only when it is set, and
        of those only the ``visible`` ones (all of them when None)."""
        base = _EVERY_USER
        if kind:
            base = base.where(users.c.kind == kind)
        if account_id is not None:
            base = base.where(users.c.account_id == account_id)
        if visible is not None:
            conds: list[sa.ColumnElement[bool]] = []
            if visible.kinds:
                conds.append(users.c.kind.in_(visible.kinds))
            if visible.user_id is not None:
                conds.append(users.c.id == visible.user_id)
            base = base.where(sa.or_(*conds) if conds else sa.false())
        return run_list(self.conn, USER_LIST, query, base)
