"""The reads behind authentication, and the activity times they record:
``uow.principals``.

Authentication (auth/authenticate.py) runs on every authenticated call, so each lookup
is one statement in a ``Database.read(single_statement=True)`` unit of work, run through
``FastSelect`` (on SQLite straight on the DBAPI cursor): the user, its account, and
(outer-joined, one row each) its groups with the partitions they reach. A user without
groups gives one row. Every row carries the user's columns under their own names, the
account's under ``a_<name>``, and ``g_id``, ``g_roles``, ``g_partition_id``; a session
lookup adds ``s_id``, ``s_expire_time``, ``s_revoke_time``, ``s_last_activity_time``.

The activity writes (an account's ``activity_time``, a session's sliding expiry) are
best effort: made on the read's connection through ``Database.opportunistic_write`` (the
one write a read unit of work makes), skipped when the SQLite writer lock is taken, and
a database error is logged, not raised; a later call records them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager

import sqlalchemy as sa

from accounts_grpc.store.rows import FastSelect, Record, Repository
from accounts_grpc.store.tables import (
    accounts,
    group_members,
    group_partitions,
    sessions,
    user_groups,
    users,
)

__all__ = ["Principals"]

log = logging.getLogger(__name__)

_ACCOUNT_COLS = [c.label(f"a_{c.name}") for c in accounts.c]
_GROUP_COLS = [
    user_groups.c.id.label("g_id"),
    user_groups.c.roles.label("g_roles"),
    group_partitions.c.partition_id.label("g_partition_id"),
]
_WITH_GROUPS = (
    users.join(accounts, accounts.c.id == users.c.account_id)
    .outerjoin(group_members, group_members.c.user_id == users.c.id)
    .outerjoin(user_groups, user_groups.c.id == group_members.c.group_id)
    .outerjoin(group_partitions, group_partitions.c.group_id == user_groups.c.id)
)
_USER = (
    sa.select(users, *_ACCOUNT_COLS, *_GROUP_COLS)
    .select_from(_WITH_GROUPS)
    .where(users.c.id == sa.bindparam("uid"))
)
_SESSION = (
    sa.select(
        users,
        *_ACCOUNT_COLS,
        *_GROUP_COLS,
        sessions.c.id.label("s_id"),
        sessions.c.expire_time.label("s_expire_time"),
        sessions.c.revoke_time.label("s_revoke_time"),
        sessions.c.last_activity_time.label("s_last_activity_time"),
    )
    .select_from(sessions.join(_WITH_GROUPS, users.c.id == sessions.c.user_id))
    .where(sessions.c.token_hash == sa.bindparam("h"))
)
_USER_KEYS = tuple(c.name for c in users.c)
_ACCOUNT_KEYS = tuple(c.name for c in accounts.c)
_FAST_USER = FastSelect(_USER)
_FAST_SESSION = FastSelect(_SESSION)

_TOUCH_ACCOUNT = (
    accounts.update()
    .where(accounts.c.id == sa.bindparam("aid"))
    .where(
        sa.or_(accounts.c.activity_time.is_(None), accounts.c.activity_time < sa.bindparam("old"))
    )
    .values(activity_time=sa.bindparam("now"))
)
_TOUCH_SESSION = (
    sessions.update()
    .where(sessions.c.id == sa.bindparam("sid"))
    .where(sessions.c.revoke_time.is_(None))
    .values(
        last_activity_time=sa.bindparam("now"),
        expire_time=sa.bindparam("exp"),
        update_time=sa.bindparam("now"),
        etag=sa.bindparam("etag"),
    )
)


class Principals(Repository):
    """Who a token stands for, and when it was last used (see the module docstring).

    ``activity_write()`` opens the best-effort write of an activity time: it yields
    whether to write (a read unit of work's ``Database.opportunistic_write``)."""

    __slots__ = ("_activity_write",)

    def __init__(self, conn: sa.Connection,
                 activity_write: Callable[[], AbstractContextManager[bool]]) -> None:
        super().__init__(conn)
        self._activity_write = activity_write

    def by_user_id(self, user_id: str) -> list[Record]:
        """The user ``user_id`` with its account and groups (no rows: no such user)."""
        return _FAST_USER.rows(self.conn, {"uid": user_id})

    def by_session_token(self, token_hash: str) -> list[Record]:
        """The session whose token hashes to ``token_hash``, with its user, account and
        groups (no rows: no such session)."""
        return _FAST_SESSION.rows(self.conn, {"h": token_hash})

    @staticmethod
    def user_and_account(row: Record) -> tuple[Record, Record]:
        """The user's and the account's columns of a row of the lookups above, apart."""
        m = row.__dict__
        return (Record({k: m[k] for k in _USER_KEYS}),
                Record({k: m["a_" + k] for k in _ACCOUNT_KEYS}))

    def touch_account(self, account_id: str, *, now: int, older_than: int) -> None:
        """Best effort: set the account's ``activity_time`` to ``now`` unless it is
        already at or after ``older_than``."""
        self._best_effort(_TOUCH_ACCOUNT, {"aid": account_id, "old": older_than, "now": now})

    def touch_session(self, session_id: str, *, now: int, expire_time: int,
                      etag: str) -> None:
        """Best effort: a session still not revoked was used at ``now``; it now expires at
        ``expire_time`` (the sliding expiry)."""
        self._best_effort(_TOUCH_SESSION,
                          {"sid": session_id, "now": now, "exp": expire_time, "etag": etag})

    def _best_effort(self, stmt: sa.Update, params: dict[str, object]) -> None:
        """An activity time that misses one write is written on a later call."""
        try:
            with self._activity_write() as writing:
                if writing:
                    self.conn.execute(stmt, params)
        except sa.exc.DBAPIError:
            log.warning("could not record activity (%s); will retry on a later call",
                        stmt.table)
