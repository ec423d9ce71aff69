"""Account and audit-event rows ⇄ protos, and requests → use-case inputs."""

from __future__ import annotations

import hashlib
from typing import Any

from accounts.v1 import account_pb2, audit_event_pb2, user_pb2

from accounts_grpc.rpc.convert import ts, us_of
from accounts_grpc.services.account_fields import AccountInput, FirstUserInput

_TIMES = ("create_time", "update_time", "activity_time")
_KIND = {
    user_pb2.USER_KIND_UNSPECIFIED: "",
    user_pb2.USER_KIND_HUMAN: "HUMAN",
    user_pb2.USER_KIND_EXTERNAL: "EXTERNAL",
    user_pb2.USER_KIND_MACHINE: "MACHINE",
}


def account_to_proto(row: Any) -> account_pb2.Account:
    return account_pb2.Account(
        id=row.id,
        name=row.name,
        email=row.email,
        roles=list(row.roles or ()),
        consultancy_account_id=row.consultancy_account_id or "",
        primary_color=row.primary_color,
        secondary_color=row.secondary_color,
        logo_url=row.logo_url,
        closed=bool(row.closed),
        create_time=ts(row.create_time),
        update_time=ts(row.update_time),
        activity_time=ts(row.activity_time),
        etag=row.etag,
    )


def account_input(msg: account_pb2.Account) -> AccountInput:
    """Every field of the message as a plain value, and which ones the request set."""
    values: dict[str, Any] = {
        "id": msg.id,
        "name": msg.name,
        "email": msg.email,
        "roles": list(msg.roles),
        "consultancy_account_id": msg.consultancy_account_id,
        "primary_color": msg.primary_color,
        "secondary_color": msg.secondary_color,
        "logo_url": msg.logo_url,
        "closed": msg.closed,
        "etag": msg.etag,
    }
    for name in _TIMES:
        values[name] = us_of(getattr(msg, name)) if msg.HasField(name) else None
    return AccountInput(values, tuple(f.name for f, _ in msg.ListFields()))


def first_user_input(msg: user_pb2.User) -> FirstUserInput:
    return FirstUserInput(
        kind=_KIND.get(msg.kind, "?"),
        email=msg.email,
        first_name=msg.first_name,
        last_name=msg.last_name,
        roles=tuple(msg.roles),
        external_id=msg.external_id,
        etag=msg.etag,
        populated=tuple(f.name for f, _ in msg.ListFields()),
    )


def audit_event_to_proto(row: Any) -> audit_event_pb2.AuditEvent:
    created = ts(row.create_time)
    return audit_event_pb2.AuditEvent(
        id=row.id,
        account_id=row.account_id,
        actor_user_id=row.actor_user_id or "",
        action=row.action,
        resource_type=row.resource_type,
        resource_id=row.resource_id,
        changed_fields=list(row.changed_fields or ()),
        request_id=row.request_id or "",
        delegation_actor_user_id=row.delegation_actor_user_id or "",
        delegation_subject_user_id=row.delegation_subject_user_id or "",
        create_time=created,
        update_time=created,
        # events never change, so neither does their etag
        etag=hashlib.sha256(f"{row.id}:{row.create_time}".encode()).hexdigest()[:32],
    )
