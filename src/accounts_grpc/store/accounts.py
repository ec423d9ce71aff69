"""The accounts repository (``uow.accounts``): every SQL statement about accounts, in Core.

No rules here (who may read, list, change or close an account, validation, idempotency,
audit: services/accounts.py and services/account_fields.py), only the statements, on the
connection of the unit of work:

- Reads are single indexed statements (the primary key, or the partial unique index of
  open accounts' emails), built once with bind parameters.
- ``list_page``: one page of ``ACCOUNTS_LIST`` over the accounts a ``ListScope`` names
  (the use case decides which scope the caller may see). Its base statements are made
  once, so ``run_list`` keeps and reuses the statements it builds on them.
- ``insert``, ``update_if_etag`` (the etag-conditional UPDATE that
  services/writes.conditional_update runs), ``update_guarded`` (a lost race on the email
  index is ALREADY_EXISTS); both take values as the domain has them (``email``,
  ``consultancy_account_id`` "" for none) and write ``email_lower`` beside ``email``.
- ``insert_user`` and ``user_by_id``: the user an account is made with (CreateAccount's
  first user, bootstrap's admin machine user).
- ``purge_contents`` removes everything an account owns, children before parents,
  inside the unit of work's transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from accounts_grpc.domain.errors import AlreadyExists
from accounts_grpc.domain.listing import ListQuery, Page
from accounts_grpc.domain.ports import ListScope
from accounts_grpc.store import conflicts
from accounts_grpc.store.listing import IndexScope, ListSpec, SearchIndex, run_list
from accounts_grpc.store.rows import Repository, new_etag
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

__all__ = ["ACCOUNTS_LIST", "EVERY_ACCOUNT", "OPEN_ACCOUNTS", "Accounts", "email_key"]

T = TypeVar("T")

_BY_ID = sa.select(accounts).where(accounts.c.id == sa.bindparam("aid"))
_BY_ID_LOCKED = _BY_ID.with_for_update()
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
_KEPT_COUNTS = sa.select(account_counts.c.all_accounts, account_counts.c.open_accounts).where(
    account_counts.c.id == 1
)
_BY_IDS = sa.select(accounts).where(accounts.c.id.in_(sa.bindparam("ids", expanding=True)))
_INSERT_USER = users.insert()
_USER_BY_ID = sa.select(users).where(users.c.id == sa.bindparam("uid"))


def email_key(email: str) -> str:
    """What uniqueness and lookups compare: the address, case-folded."""
    return email.strip().lower()


# -- ListAccounts ------------------------------------------------------------------------------

ACCOUNTS_LIST = ListSpec(
    resource="accounts",
    id_column=accounts.c.id,
    orderable={
        "name": accounts.c.name,
        "email": accounts.c.email_lower,  # case-insensitive, and indexed
        "create_time": accounts.c.create_time,
        "update_time": accounts.c.update_time,
    },
    searchable=(accounts.c.name, accounts.c.email_lower),
    default_order=(("create_time", False),),
    # migrations 0002 and 0003: the index marks the closed accounts
    search=SearchIndex("accounts_search", ("name", "email_lower"), accounts,
                       marked=accounts.c.closed == sa.true()),
    # migration 0007: triggers keep these exact, so a platform reader's unfiltered list
    # reads its total_size with its page instead of counting every account
    kept_counts={
        "all": sa.select(account_counts.c.all_accounts).where(account_counts.c.id == 1),
        "unmarked": sa.select(account_counts.c.open_accounts).where(account_counts.c.id == 1),
    },
)

# ListAccounts' base statements, made once (``run_list`` then reuses what it builds on them)
EVERY_ACCOUNT = sa.select(accounts)
OPEN_ACCOUNTS = sa.select(accounts).where(accounts.c.closed == sa.false())
_OWN_ACCOUNT = OPEN_ACCOUNTS.where(accounts.c.id == sa.bindparam("own"))
_OWN_AND_CLIENTS = OPEN_ACCOUNTS.where(
    sa.or_(accounts.c.id == sa.bindparam("own"),
           accounts.c.consultancy_account_id == sa.bindparam("own"))
)

# each ``ListScope``'s base statement and, for a whole of the table and of its search index
# (every account, or every open one), its ``IndexScope``: the index alone then counts a
# filtered list (SQLite), and an unfiltered one reads its size in ``account_counts``
_LIST_SCOPES: dict[ListScope, tuple[sa.Select[Any], IndexScope | None]] = {
    "every": (EVERY_ACCOUNT, "all"),
    "open": (OPEN_ACCOUNTS, "unmarked"),
    "own": (_OWN_ACCOUNT, None),
    "own_and_clients": (_OWN_AND_CLIENTS, None),
}


def _column_values(changes: Mapping[str, Any]) -> dict[str, Any]:
    """Account values as the domain has them (``email``, ``consultancy_account_id`` "" for
    none ...) to column values: ``email_lower`` beside ``email``, NULL for no consultancy."""
    out = dict(changes)
    if "email" in out:
        out["email_lower"] = email_key(out["email"])
    if "consultancy_account_id" in out:
        out["consultancy_account_id"] = out["consultancy_account_id"] or None
    return out


def _email_taken(email: str) -> AlreadyExists:
    return AlreadyExists(
        f"an open account already uses the email {email!r}",
        reason="ACCOUNT_EMAIL_TAKEN",
        metadata={"email": email},
    )


class Accounts(Repository):
    """The accounts, and the user an account is made with (see the module docstring)."""

    __slots__ = ()

    #: what ListAccounts may be ordered by and searched in
    list_shape = ACCOUNTS_LIST

    # -- reads ---------------------------------------------------------------------------

    def get(self, account_id: str, *, lock: bool = False) -> sa.Row[Any] | None:
        """One primary-key read. ``lock``: ``SELECT ... FOR UPDATE`` (PostgreSQL; SQLite's
        write transactions hold the database lock already), so that concurrent writers of
        one account queue instead of failing each other's etag check."""
        return self.conn.execute(_BY_ID_LOCKED if lock else _BY_ID, {"aid": account_id}).first()

    def find_by_email(self, email: str, *, include_closed: bool = False) -> sa.Row[Any] | None:
        """The open account with this email; else, if asked, the most recently closed one."""
        key = email_key(email)
        row = self.conn.execute(_OPEN_BY_EMAIL, {"email": key}).first()
        if row is None and include_closed:
            row = self.conn.execute(_CLOSED_BY_EMAIL, {"email": key}).first()
        return row

    def email_holder(self, email: str) -> str | None:
        """Id of the open account using this email, if any."""
        return self.conn.execute(_EMAIL_HOLDER, {"email": email_key(email)}).scalar()

    def open_clients(self, account_id: str) -> list[sa.Row[Any]]:
        """Open accounts whose consultancy is ``account_id`` (indexed)."""
        return list(self.conn.execute(_OPEN_CLIENTS, {"aid": account_id}))

    def kept_counts(self) -> tuple[int, int] | None:
        """(every account, the open ones) as ``account_counts`` holds them: kept exact by
        triggers in the transaction of every write (migration 0007), so this is one
        primary-key read, never a count. None if the row is missing."""
        row = self.conn.execute(_KEPT_COUNTS).first()
        return None if row is None else (int(row[0]), int(row[1]))

    def by_ids(self, account_ids: Iterable[str]) -> list[Any]:
        """Account rows (every column), once each, in the order first named; missing ones
        skipped: the accounts a list includes beside its page (ListPartitions with
        ``include: ["account"]``, ListMyUserGroups' ``included_accounts``)."""
        ids = list(dict.fromkeys(account_ids))
        if not ids:
            return []
        by_id = {r.id: r for r in self.conn.execute(_BY_IDS, {"ids": ids})}
        return [by_id[i] for i in ids if i in by_id]

    def list_page(self, query: ListQuery, *, scope: ListScope, own: str) -> Page:
        """One page (``query``, parsed against ``ACCOUNTS_LIST``) of the accounts ``scope``
        names; ``own`` is the caller's account (``"own"``, ``"own_and_clients"``)."""
        base, index_scope = _LIST_SCOPES[scope]
        return run_list(self.conn, ACCOUNTS_LIST, query, base, params={"own": own},
                        index_scope=index_scope)

    # -- writes --------------------------------------------------------------------------

    def require_email_free(self, email: str, *, except_id: str | None = None) -> None:
        """ALREADY_EXISTS (ACCOUNT_EMAIL_TAKEN) if another open account uses ``email``."""
        holder = self.email_holder(email)
        if holder is not None and holder != except_id:
            raise _email_taken(email)

    def insert(self, values: Mapping[str, Any]) -> None:
        """Insert an account; a lost race on the email index is ALREADY_EXISTS."""
        try:
            with self.conn.begin_nested():
                self.conn.execute(accounts.insert().values(**_column_values(values)))
        except IntegrityError:
            if self.email_holder(values["email"]) is not None:
                raise _email_taken(values["email"]) from None
            raise

    def update_if_etag(self, account_id: str, old_etag: str, values: Mapping[str, Any]) -> bool:
        """Write ``values`` to the account ``account_id`` if its etag is still ``old_etag``;
        False (nothing written) if a concurrent writer changed it first, or it is gone
        (store/conflicts.update_if_etag, run by services/writes.conditional_update)."""
        return conflicts.update_if_etag(self.conn, accounts, account_id, old_etag,
                                        _column_values(values))

    def update_guarded(self, fn: Callable[[], T], email: str | None) -> T:
        """Run ``fn()`` (an UPDATE) in a savepoint; a lost race on the email is
        ALREADY_EXISTS."""
        try:
            with self.conn.begin_nested():
                return fn()
        except IntegrityError:
            if email is not None:
                raise _email_taken(email) from None
            raise

    # -- the user an account is made with ------------------------------------------------

    def insert_user(
        self,
        *,
        user_id: str,
        account_id: str,
        kind: str,
        email: str | None,
        first_name: str,
        last_name: str,
        name: str,
        roles: Sequence[str],
        now: int,
        client_id: str | None = None,
        secret_hash: str | None = None,
    ) -> None:
        """Insert a user (no external id) created and updated at ``now``, with a new etag:
        CreateAccount's first user, bootstrap's admin machine user (``client_id``,
        ``secret_hash``); any other user is ``uow.users``'."""
        self.conn.execute(
            _INSERT_USER.values(
                id=user_id,
                account_id=account_id,
                kind=kind,
                email=email,
                email_lower=email.lower() if email is not None else None,
                first_name=first_name,
                last_name=last_name,
                name=name,
                external_id=None,
                client_id=client_id,
                secret_hash=secret_hash,
                roles=roles,
                create_time=now,
                update_time=now,
                etag=new_etag(),
            )
        )

    def user_by_id(self, user_id: str) -> sa.Row[Any] | None:
        """The user row (every column), or None."""
        return self.conn.execute(_USER_BY_ID, {"uid": user_id}).first()

    # -- CloseAccount --------------------------------------------------------------------

    def purge_contents(self, account_id: str) -> dict[str, int]:
        """Delete everything the account owns, children first; returns rows deleted per
        table.

        Rows of other accounts that point into this one (a membership of a foreign user in
        one of its groups, a permission on one of its devices) go too, so no foreign key
        is left dangling. Audit events are kept: they have no foreign key and outlive the
        data.
        """
        counts: dict[str, int] = {}
        for name, stmt in _purge_steps(account_id):
            counts[name] = self.conn.execute(stmt).rowcount or 0
        return counts


def _purge_steps(account_id: str) -> list[tuple[str, sa.Delete]]:
    """``purge_contents``' deletes, children before parents."""
    acct_users = sa.select(users.c.id).where(users.c.account_id == account_id)
    acct_groups = sa.select(user_groups.c.id).where(user_groups.c.account_id == account_id)
    acct_parts = sa.select(partitions.c.id).where(partitions.c.account_id == account_id)
    acct_devices = sa.select(devices.c.id).where(devices.c.account_id == account_id)
    return [
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
