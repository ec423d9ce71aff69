"""User rows ⇄ protos, and what hangs off a user: device permissions and orders."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from accounts.v1 import partition_pb2, user_pb2
from google.protobuf.message import Message

from accounts_grpc.rpc.convert import ts, us_of
from accounts_grpc.services.device_permissions import DeviceRef
from accounts_grpc.services.orders import OrderInput
from accounts_grpc.services.user_access import UserRef
from accounts_grpc.services.user_fields import UserInput

KIND_TO_PROTO = {
    "HUMAN": user_pb2.USER_KIND_HUMAN,
    "EXTERNAL": user_pb2.USER_KIND_EXTERNAL,
    "MACHINE": user_pb2.USER_KIND_MACHINE,
}
KIND_FROM_PROTO: dict[int, str] = {int(v): k for k, v in KIND_TO_PROTO.items()}

STATUS_TO_PROTO = {
    "RECEIVED": user_pb2.ORDER_STATUS_RECEIVED,
    "PROCESSING": user_pb2.ORDER_STATUS_PROCESSING,
    "SHIPPED": user_pb2.ORDER_STATUS_SHIPPED,
    "DELIVERED": user_pb2.ORDER_STATUS_DELIVERED,
    "CANCELLED": user_pb2.ORDER_STATUS_CANCELLED,
}
STATUS_FROM_PROTO: dict[int, str] = {int(v): k for k, v in STATUS_TO_PROTO.items()}


def populated(msg: Message) -> tuple[str, ...]:
    """Names of the fields the client set (proto3: non-default values)."""
    return tuple(fd.name for fd, _ in msg.ListFields())


def kind_of(value: int) -> str:
    """A UserKind as the domain spells it: "" for UNSPECIFIED, "UNKNOWN(n)" for a number
    this server does not know (the use case rejects it)."""
    return KIND_FROM_PROTO.get(value, f"UNKNOWN({value})" if value else "")


def status_of(value: int) -> str:
    """An OrderStatus as the domain spells it (like ``kind_of``)."""
    return STATUS_FROM_PROTO.get(value, f"UNKNOWN({value})" if value else "")


# -- users ------------------------------------------------------------------------------------


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


def user_input(u: user_pb2.User) -> UserInput:
    return UserInput(
        kind=kind_of(u.kind),
        account_id=u.account_id,
        email=u.email,
        first_name=u.first_name,
        last_name=u.last_name,
        external_id=u.external_id,
        roles=tuple(u.roles),
        etag=u.etag,
        populated=populated(u),
        client_id=u.client_id,
        create_time=us_of(u.create_time) if u.HasField("create_time") else None,
        update_time=us_of(u.update_time) if u.HasField("update_time") else None,
    )


def user_ref(ref: user_pb2.UserRef) -> UserRef:
    which = ref.WhichOneof("ref")
    return UserRef(
        user_id=ref.user_id if which == "user_id" else "",
        external_id=ref.external_id if which == "external_id" else "",
        account_id=ref.account_id,
    )


# -- devices and permissions ------------------------------------------------------------------


def device_ref(ref: user_pb2.DeviceRef) -> DeviceRef:
    which = ref.WhichOneof("ref")
    return DeviceRef(
        device_id=ref.device_id if which == "device_id" else "",
        meter_id=ref.meter_id if which == "meter_id" else "",
    )


def device_refs(refs: Iterable[user_pb2.DeviceRef]) -> list[DeviceRef]:
    return [device_ref(r) for r in refs]


def permission_to_proto(row: Any) -> user_pb2.DevicePermission:
    """A row of ``store.users.PERMISSION_WITH_DEVICE`` (device columns prefixed ``d_``)."""
    return user_pb2.DevicePermission(
        id=row.id,
        user_id=row.user_id,
        device=partition_pb2.Device(
            id=row.device_pk,
            account_id=row.d_account_id,
            partition_id=row.d_partition_id,
            device_id=row.d_device_id or "",
            meter_id=row.d_meter_id or "",
            name=row.d_name or "",
            create_time=ts(row.d_create_time),
            update_time=ts(row.d_update_time),
            etag=row.d_etag,
        ),
        charging=bool(row.charging),
        create_time=ts(row.create_time),
        update_time=ts(row.update_time),
        etag=row.etag,
    )


# -- orders -----------------------------------------------------------------------------------


def order_input(o: user_pb2.Order) -> OrderInput:
    return OrderInput(
        order_id=o.order_id,
        status=status_of(o.status),
        device_id=o.device_id,
        tracking_link=o.tracking_link,
        etag=o.etag,
        populated=populated(o),
    )


def order_to_proto(row: Any) -> user_pb2.Order:
    return user_pb2.Order(
        id=row.id,
        user_id=row.user_id,
        order_id=row.order_id,
        status=STATUS_TO_PROTO[row.status],
        device_id=row.device_id or "",
        tracking_link=row.tracking_link or "",
        create_time=ts(row.create_time),
        update_time=ts(row.update_time),
        etag=row.etag,
    )
