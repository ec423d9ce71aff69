"""UserGroup protos ⇄ the groups use cases' inputs and views."""

from __future__ import annotations

from accounts.v1 import user_group_pb2

from accounts_grpc.rpc.convert import ts, us_of
from accounts_grpc.services.groups import GroupInput, GroupView


def group_to_proto(v: GroupView) -> user_group_pb2.UserGroup:
    row = v.row
    return user_group_pb2.UserGroup(
        id=row.id,
        account_id=row.account_id,
        name=row.name,
        description=row.description,
        roles=list(row.roles or ()),
        partition_ids=v.partition_ids,
        member_ids=v.member_ids,
        create_time=ts(row.create_time),
        update_time=ts(row.update_time),
        etag=row.etag,
    )


def group_input(msg: user_group_pb2.UserGroup) -> GroupInput:
    return GroupInput(
        name=msg.name,
        description=msg.description,
        roles=list(msg.roles),
        partition_ids=list(msg.partition_ids),
        etag=msg.etag,
        account_id=msg.account_id,
        member_ids=list(msg.member_ids),
        create_time=us_of(msg.create_time) if msg.HasField("create_time") else None,
        update_time=us_of(msg.update_time) if msg.HasField("update_time") else None,
    )


def populated(msg: user_group_pb2.UserGroup) -> list[str]:
    """Names of the fields the client set (non-default values)."""
    return [f.name for f, _ in msg.ListFields()]
