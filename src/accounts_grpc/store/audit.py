"""The audit log: one AuditEvent per change, written in the change's own transaction."""

from __future__ import annotations

from collections.abc import Iterable

from accounts_grpc.store.db import UnitOfWork, new_id, now_us
from accounts_grpc.store.tables import audit_events

#: Paths that never appear in an event, whatever a caller sends.
SECRET_FIELDS = frozenset({"client_secret", "secret_hash", "access_token", "token_hash", "token"})


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
