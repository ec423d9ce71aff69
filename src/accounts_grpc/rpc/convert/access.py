"""Access checks ⇄ protos: AccessCheck in, AccessDecision and AccessibleDevice out."""

from __future__ import annotations

from collections.abc import Iterable

from accounts.v1 import access_pb2

from accounts_grpc.domain.access import AssetAction, Decision
from accounts_grpc.rpc.convert.partitions import device_to_proto
from accounts_grpc.services.access import AccessibleDevice, CheckInput

ACTION_TO_PROTO = {
    AssetAction.READ: access_pb2.ACCESS_ACTION_READ,
    AssetAction.CONTROL: access_pb2.ACCESS_ACTION_CONTROL,
    AssetAction.CHARGE: access_pb2.ACCESS_ACTION_CHARGE,
}
ACTION_FROM_PROTO: dict[int, str] = {int(v): k.value for k, v in ACTION_TO_PROTO.items()}


def check_inputs(checks: Iterable[access_pb2.AccessCheck]) -> list[CheckInput]:
    """The checks as the use case takes them; an unknown action number is kept as
    ``UNKNOWN(n)`` for the use case to reject with its position."""
    return [
        CheckInput(
            action=ACTION_FROM_PROTO.get(c.action, f"UNKNOWN({c.action})" if c.action else ""),
            device_id=c.device_id,
            meter_id=c.meter_id,
            partition_id=c.partition_id,
            account_id=c.account_id,
        )
        for c in checks
    ]


def decision_to_proto(check: access_pb2.AccessCheck, d: Decision) -> access_pb2.AccessDecision:
    return access_pb2.AccessDecision(
        check=check, allowed=d.allowed, rule=d.rule, reason=d.reason, message=d.message
    )


def accessible_to_proto(a: AccessibleDevice) -> access_pb2.AccessibleDevice:
    return access_pb2.AccessibleDevice(
        device=device_to_proto(a.row),
        grants=[access_pb2.AccessGrant(action=ACTION_TO_PROTO[act], rule=rule)
                for act, rule in a.grants],
    )
