"""Repository for sessions (``uow.sessions``), and the client lookup of the
client-credentials grant.

SQLAlchemy Core on the connection of the unit of work (a write transaction, or a read);
no rules here (who may open, list or revoke a session, how long one lives, idempotency,
audit: services/sessions.py), only the statements:

- ``client_by_client_id``: the user a ``client_id`` names, with its secret hash,
  credential generation and whether its account is closed (CreateToken).
- ``insert``, ``by_id``, ``scope`` (a session with what the policy needs of its user
  and account), ``revoke`` and ``list_for_user`` (the sessions that still work, as one
  page of ``SESSIONS_LIST``).

Point reads are module constants with bind parameters, built and compiled once.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import sqlalchemy as sa

from accounts_grpc.domain.listing import ListQuery, Page
from accounts_grpc.store.listing import ListSpec, run_list
from accounts_grpc.store.rows import Repository, new_etag
from accounts_grpc.store.tables import accounts, sessions, users

#: a row of any width (the point reads select different columns)
_Row: TypeAlias = "sa.Row[*tuple[Any, ...]]"

__all__ = ["SESSIONS_LIST", "Sessions"]

_CLIENT = (
    sa.select(
        users.c.id,
        users.c.account_id,
        users.c.kind,
        users.c.roles,
        users.c.secret_hash,
        users.c.credential_generation,
        accounts.c.closed,
    )
    .select_from(users.join(accounts, accounts.c.id == users.c.account_id))
    .where(users.c.client_id == sa.bindparam("cid"))
)
_SESSION = sa.select(sessions).where(sessions.c.id == sa.bindparam("sid"))
_SESSION_SCOPE = (
    sa.select(
        sessions.c.id,
        sessions.c.account_id,
        sessions.c.user_id,
        sessions.c.revoke_time,
        users.c.kind,
        users.c.roles,
        accounts.c.consultancy_account_id,
        accounts.c.closed,
    )
    .select_from(
        sessions.join(users, users.c.id == sessions.c.user_id).join(
            accounts, accounts.c.id == sessions.c.account_id
        )
    )
    .where(sessions.c.id == sa.bindparam("sid"))
)

#: ListSessions: ordered by its times, newest first by default; no ``filter`` search.
SESSIONS_LIST = ListSpec(
    resource="sessions",
    id_column=sessions.c.id,
    orderable={
        "create_time": sessions.c.create_time,
        "last_activity_time": sessions.c.last_activity_time,
        "expire_time": sessions.c.expire_time,
    },
    searchable=(),
    default_order=(("create_time", True),),
)


class Sessions(Repository):
    """Sessions, and the clients of the client-credentials grant (see the module
    docstring)."""

    __slots__ = ()

    #: what ListSessions may be ordered by
    list_shape = SESSIONS_LIST

    def client_by_client_id(self, client_id: str) -> _Row | None:
        """The user with this ``client_id``: ``id``, ``account_id``, ``kind``, ``roles``,
        ``secret_hash``, ``credential_generation`` and its account's ``closed``; or
        None."""
        return self.conn.execute(_CLIENT, {"cid": client_id}).first()

    def by_id(self, session_id: str) -> _Row | None:
        """The session row (every column), or None."""
        return self.conn.execute(_SESSION, {"sid": session_id}).first()

    def scope(self, session_id: str) -> _Row | None:
        """What authorizing an action on a session needs, or None: the session's ``id``,
        ``account_id``, ``user_id`` and ``revoke_time``, its user's ``kind`` and
        ``roles``, its account's ``consultancy_account_id`` and ``closed``."""
        return self.conn.execute(_SESSION_SCOPE, {"sid": session_id}).first()

    def insert(
        self,
        *,
        session_id: str,
        user_id: str,
        account_id: str,
        token_hash: str,
        user_agent: str,
        now: int,
        expire_time: int,
    ) -> None:
        """Insert a working session created, updated and last used at ``now`` (a new
        etag)."""
        self.conn.execute(
            sessions.insert().values(
                id=session_id,
                user_id=user_id,
                account_id=account_id,
                token_hash=token_hash,
                user_agent=user_agent,
                create_time=now,
                update_time=now,
                last_activity_time=now,
                expire_time=expire_time,
                revoke_time=None,
                etag=new_etag(),
            )
        )

    def revoke(self, session_id: str, *, now: int) -> None:
        """Mark the session revoked at ``now`` (a new etag), unless it is revoked already:
        a revoked session keeps the time it was first revoked."""
        self.conn.execute(
            sessions.update()
            .where(sessions.c.id == session_id, sessions.c.revoke_time.is_(None))
            .values(revoke_time=now, update_time=now, etag=new_etag())
        )

    def list_for_user(self, user_id: str, query: ListQuery, *, now: int) -> Page:
        """One page (``query``, parsed against ``SESSIONS_LIST``) of the user's sessions
        that still work at ``now``: not revoked, not expired."""
        base = sa.select(sessions).where(
            sessions.c.user_id == user_id,
            sessions.c.revoke_time.is_(None),
            sessions.c.expire_time > now,
        )
        return run_list(self.conn, SESSIONS_LIST, query, base)
