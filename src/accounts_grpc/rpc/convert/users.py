"""User rows ⇄ protos."""

from __future__ import annotations

from typing import Any

from accounts.v1 import user_pb2
from accounts_grpc.rpc.convert import ts

KIND_TO_PROTO = {
    "HUMAN": user_pb2.USER_KIND_HUMAN,
    "EXTERNAL": user_pb2.USER_KIND_EXTERNAL,
    "MACHINE": user_pb2.USER_KIND_MACHINE,
}
KIND_FROM_PROTO = {v: k for k, v in KIND_TO_PROTO.items()}


def user_to_proto(row: Any) -> user_pb2.User:
    return user_pb2.User(
        id=row.id,
        account_id=row.account_id,
        kind=KIND_TO_PROTO[row.kind],
        email=row.email or "",
        first_name=row.first_name,
        last_name=row.last_name,
        external_id=row.external_id or "",
        client_id=row.client_id or "",
        roles=list(row.roles or ()),
        create_time=ts(row.create_time),
        update_time=ts(row.update_time),
        etag=row.etag,
    )
