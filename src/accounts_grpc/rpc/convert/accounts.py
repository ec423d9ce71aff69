"""Account rows ⇄ protos."""

from __future__ import annotations

from typing import Any

from accounts.v1 import account_pb2
from accounts_grpc.rpc.convert import ts


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
