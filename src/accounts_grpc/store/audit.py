"""The audit log (``uow.audit``): one AuditEvent per change, written in the change's own
transaction.

- ``record`` inserts an event in the unit of work (what an event says is the use case's:
  services/*).
- ``list_page``: one page of ``AUDIT_LIST``, an account's events (who may read them:
  services/audit_log.py). Its base statement is made once, with the account as a bind
  parameter, so ``run_list`` keeps and reuses the statements it builds on it.
- ``newest_position`` and ``after``: the change feed (services/events.py), by ``seq``.

The feed position ``seq`` increases in commit order, so that a reader that has seen
position N never later sees a smaller one (migration 0009):

- SQLite: writers are serialized (``BEGIN IMMEDIATE`` behind the write lock), so an
  event is numbered at insert, one past the largest position.
- PostgreSQL: writers commit concurrently, and out of order, so an event is inserted
  without a position and ``number_pending`` (``UnitOfWork.commit``, just before COMMIT)
  takes a transaction-scoped advisory lock and numbers the transaction's events from
  the sequence ``audit_events_seq``. The lock is released only after the commit is
  visible, so the next writer draws larger numbers only once these rows can be read.
  The cost: commits that audit serialize at their tail (the UPDATE and the COMMIT).
  A rolled-back transaction leaves a gap; readers never rely on gap-freedom.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from accounts_grpc.domain.listing import ListQuery, Page
from accounts_grpc.domain.principal import maybe_principal
from accounts_grpc.store.listing import ListSpec, run_list
from accounts_grpc.store.rows import Record, Repository, new_id, now_us
from accounts_grpc.store.tables import audit_events

__all__ = ["AUDIT_LIST", "SECRET_FIELDS", "AuditLog", "revocation"]

#: Paths that never appear in an event, whatever a caller sends.
SECRET_FIELDS = frozenset({"client_secret", "secret_hash", "access_token", "token_hash", "token"})

#: ListAuditEvents: newest first, always; ``filter`` on action and resource type.
AUDIT_LIST = ListSpec(
    resource="audit_events",
    id_column=audit_events.c.id,
    orderable={"create_time": audit_events.c.create_time},
    searchable=(audit_events.c.action, audit_events.c.resource_type),
    default_order=(("create_time", True),),  # newest first, always
)

_OF_ACCOUNT = sa.select(audit_events).where(audit_events.c.account_id == sa.bindparam("aid"))

#: the key of the PostgreSQL advisory lock that orders audit-writing commits
FEED_LOCK_KEY = 0x61756469745F6665  # "audit_fe"
_NEXT_SEQ = sa.select(sa.func.coalesce(sa.func.max(audit_events.c.seq), 0) + 1).scalar_subquery()
_NUMBER = sa.text("UPDATE audit_events SET seq = nextval('audit_events_seq') WHERE id = :id")
_LOCK = sa.text("SELECT pg_advisory_xact_lock(:key)")
_NEWEST = sa.select(sa.func.coalesce(sa.func.max(audit_events.c.seq), 0))


#: the kinds of a revocation (audit_event.proto's RevocationKind, without its prefix)
SESSION_REVOKED = "SESSION_REVOKED"
USER_DELETED = "USER_DELETED"
ACCOUNT_CLOSED = "ACCOUNT_CLOSED"
ROLES_CHANGED = "ROLES_CHANGED"
GROUP_MEMBERSHIP_CHANGED = "GROUP_MEMBERSHIP_CHANGED"
DEVICE_PERMISSION_REMOVED = "DEVICE_PERMISSION_REMOVED"
SIGNING_KEY_RETIRED = "SIGNING_KEY_RETIRED"
CREDENTIALS_ROTATED = "CREDENTIALS_ROTATED"


def revocation(kind: str, *, subjects: Iterable[str] = (), session_ids: Iterable[str] = (),
               key_ids: Iterable[str] = (), account_ids: Iterable[str] = ()) -> dict[str, Any]:
    """What an event that kills tokens stores (``record(revocation=...)``): which ones."""
    return {"kind": kind, "subjects": sorted(set(subjects)),
            "session_ids": sorted(set(session_ids)), "key_ids": sorted(set(key_ids)),
            "account_ids": sorted(set(account_ids))}


class AuditLog(Repository):
    """Every account's audit events (see the module docstring)."""

    __slots__ = ("_pending", "_serial")

    #: what ListAuditEvents may be ordered by and searched in
    list_shape = AUDIT_LIST

    def __init__(self, conn: Connection) -> None:
        super().__init__(conn)
        self._serial = conn.dialect.name == "sqlite"  # writers serialized: number at insert
        self._pending: list[str] = []  # PostgreSQL: this transaction's events, unnumbered

    def record(
        self,
        *,
        account_id: str,
        actor_user_id: str | None,
        action: str,
        resource_type: str,
        resource_id: str,
        changed_fields: Iterable[str] = (),
        request_id: str = "",
        revocation: Mapping[str, Any] | None = None,
        delegation: tuple[str, str] | None = None,
    ) -> str:
        """Insert one event (``action`` like ``"account.update"``); returns its id.
        ``revocation``: which tokens it kills (services/events.py ``revocation``).
        ``delegation``: (actor, subject) of a delegated token (RFC 8693); by default
        those of the caller's token, when the caller made this change with one."""
        event_id = new_id()
        if delegation is None:
            p = maybe_principal()
            if p is not None and p.delegation is not None and actor_user_id == p.user_id:
                delegation = (p.delegation.actor_user_id, p.delegation.subject_user_id)
        if not self._serial:
            self._pending.append(event_id)
        self.conn.execute(
            audit_events.insert().values(
                id=event_id,
                account_id=account_id,
                actor_user_id=actor_user_id or "",
                action=action,
                resource_type=resource_type,
                resource_id=resource_id,
                changed_fields=sorted({f for f in changed_fields if f not in SECRET_FIELDS}),
                request_id=request_id or "",
                create_time=now_us(),
                seq=_NEXT_SEQ if self._serial else None,
                revocation=dict(revocation) if revocation else None,
                delegation_actor_user_id=delegation[0] if delegation else "",
                delegation_subject_user_id=delegation[1] if delegation else "",
            )
        )
        return event_id

    def number_pending(self) -> None:
        """PostgreSQL, just before COMMIT: number this transaction's events in commit
        order (see the module docstring); nothing to do on SQLite or without events."""
        if not self._pending:
            return
        self.conn.execute(_LOCK, {"key": FEED_LOCK_KEY})
        self.conn.execute(_NUMBER, [{"id": i} for i in self._pending])
        self._pending.clear()

    def newest_position(self) -> int:
        """The largest committed feed position (0 for an empty log)."""
        return int(self.conn.execute(_NEWEST).scalar_one())

    def after(self, position: int, *, limit: int,
              account_id: str | None = None) -> list[Any]:
        """Up to ``limit`` events past ``position`` in feed order; of one account, or
        of every account and the platform (``account_id`` None)."""
        q = (sa.select(audit_events).where(audit_events.c.seq > position)
             .order_by(audit_events.c.seq).limit(limit))
        if account_id is not None:
            q = q.where(audit_events.c.account_id == account_id)
        return [Record(dict(r)) for r in self.conn.execute(q).mappings()]

    def list_page(self, account_id: str, query: ListQuery) -> Page:
        """One page (``query``, parsed against ``AUDIT_LIST``) of the account's events."""
        return run_list(self.conn, AUDIT_LIST, query, _OF_ACCOUNT, params={"aid": account_id})
