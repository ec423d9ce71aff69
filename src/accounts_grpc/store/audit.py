"""The audit log: one AuditEvent per change, written in the change's own transaction.

- ``record`` inserts an event on the unit of work's connection (what an event says is
  the use case's: services/*).
- ``list_events``: one page of ``AUDIT_LIST``, an account's events (who may read them:
  services/audit_log.py). Its base statement is made once, with the account as a bind
  parameter, so ``run_list`` keeps and reuses the statements it builds on it.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from accounts_grpc.domain.listing import ListQuery, Page
from accounts_grpc.store.db import Connection, UnitOfWork, new_id, now_us
from accounts_grpc.store.listing import ListSpec, run_list
from accounts_grpc.store.tables import audit_events

__all__ = ["AUDIT_LIST", "SECRET_FIELDS", "list_events", "record"]

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


def record(
    uow: UnitOfWork,
    *,
    account_id: str,
    actor_user_id: str | None,
    action: str,
    resource_type: str,
    resource_id: str,
    changed_fields: Iterable[str] = (),
    request_id: str = "",
) -> str:
    """Insert one event (``action`` like ``"account.update"``); returns its id."""
    event_id = new_id()
    uow.conn.execute(
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
        )
    )
    return event_id


def list_events(conn: Connection, account_id: str, query: ListQuery) -> Page:
    """One page (``query``, parsed against ``AUDIT_LIST``) of the account's events."""
    return run_list(conn, AUDIT_LIST, query, _OF_ACCOUNT, params={"aid": account_id})
