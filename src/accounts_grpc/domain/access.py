"""What a user may do with a physical asset (a device or a partition): the actions of
CheckAccess and ListAccessibleDevices, decided in one place, ``decide``, over facts the
store gathers. The RPCs that act on assets decide through the same pieces, so a check
and the real call cannot disagree:

- ``READ`` a partition: ``policy.Action.PARTITION_READ`` (GetPartition, ListDevices;
  rules ``account_role:<role>``, ``group_partition``, ``intermediary_machine_user``).
  A device: its device permission (``device_permission``; ListDevicePermissions shows
  it), else ``PARTITION_READ`` on the partition it is registered in.
- ``CONTROL``: ``policy.Action.PARTITION_MANAGE`` on the partition (of the device):
  UpdatePartition, DeletePartition, RegisterDevices. No RPC acts on one device alone.
- ``CHARGE`` (devices only): the device permission with ``charging`` on
  (``charging_permission``); no role grants it. Charging needs the device permission
  (``require_device_permission``, which AddChargingPermission raises through).

Every allowed action implies ``READ``; an asset the user may not read answers
``NOT_VISIBLE`` whatever the action, exactly as one that does not exist (``decide(...,
None)``), so that an answer never tells an asset's existence apart from the user's
rights.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from accounts_grpc.domain import policy
from accounts_grpc.domain.errors import FailedPrecondition
from accounts_grpc.domain.principal import Principal

T = TypeVar("T")


class AssetAction(Enum):
    READ = "read"
    CONTROL = "control"
    CHARGE = "charge"


#: the policy action behind READ and CONTROL of a partition (and of a device through it)
PARTITION_ACTIONS = {
    AssetAction.READ: policy.Action.PARTITION_READ,
    AssetAction.CONTROL: policy.Action.PARTITION_MANAGE,
}

DEVICE_PERMISSION = "device_permission"
CHARGING_PERMISSION = "charging_permission"
NO_RULE = "no_rule"


@dataclass(frozen=True)
class Asset:
    """What the policy needs of one asset, for one user."""

    target: policy.Target  # the account's scope; ``partition_id``: the (device's) partition
    is_device: bool = False
    permission: bool = False  # the user holds the device's permission
    charging: bool = False  # ... with charging on


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule: str
    reason: str = ""  # UPPER_SNAKE when denied
    message: str = ""


def _allow(rule: str) -> Decision:
    return Decision(True, rule)


NOT_VISIBLE = Decision(
    False, NO_RULE, "NOT_VISIBLE",
    "no rule lets the user see this asset (or there is none)",
)
CONTROL_NOT_GRANTED = Decision(
    False, NO_RULE, "CONTROL_NOT_GRANTED",
    "the user may see the asset but not manage it: that takes admin, or account-admin of "
    "its account",
)
DEVICE_PERMISSION_REQUIRED = Decision(
    False, NO_RULE, "DEVICE_PERMISSION_REQUIRED",
    "charging needs the device permission with charging on; the user holds no device "
    "permission for this device",
)
CHARGING_NOT_GRANTED = Decision(
    False, NO_RULE, "CHARGING_NOT_GRANTED",
    "the user may see the device but not charge: its device permission has charging off",
)


def partition_rule(p: Principal, action: AssetAction, t: policy.Target) -> str | None:
    """The rule that lets ``p`` do ``action`` (READ or CONTROL) on the partition ``t``."""
    g = policy.deciding_grant(p, PARTITION_ACTIONS[action], t)
    return None if g is None else policy.rule_name(g, p)


def permission_rule(action: AssetAction, asset: Asset) -> str | None:
    """The rule the user's own permission for the device gives it for ``action``."""
    if action is AssetAction.READ and asset.permission:
        return DEVICE_PERMISSION
    if action is AssetAction.CHARGE and asset.charging:
        return CHARGING_PERMISSION
    return None


def decide(p: Principal, action: AssetAction, asset: Asset | None) -> Decision:
    """May the user ``p`` (its facts: roles, account, groups' partitions) do ``action``
    with ``asset`` (None: there is no such asset for this question)?"""
    if asset is None:
        return NOT_VISIBLE
    read = permission_rule(AssetAction.READ, asset) if asset.is_device else None
    read = read or partition_rule(p, AssetAction.READ, asset.target)
    if read is None:
        return NOT_VISIBLE
    if action is AssetAction.READ:
        return _allow(read)
    if action is AssetAction.CONTROL:
        rule = partition_rule(p, action, asset.target)
        return CONTROL_NOT_GRANTED if rule is None else _allow(rule)
    rule = permission_rule(action, asset)
    if rule is not None:
        return _allow(rule)
    return CHARGING_NOT_GRANTED if asset.permission else DEVICE_PERMISSION_REQUIRED


def grants(p: Principal, asset: Asset) -> list[tuple[AssetAction, str]]:
    """Every action ``p`` may do with the device, with its rule (READ first; none if it
    may not see it)."""
    out = []
    for action in AssetAction:
        d = decide(p, action, asset)
        if d.allowed:
            out.append((action, d.rule))
    return out


def require_device_permission(permission: T | None, key: str, value: str) -> T:
    """The user's permission for the device (charging is set on it); FAILED_PRECONDITION
    (DEVICE_PERMISSION_REQUIRED, CheckAccess's reason too) without one."""
    if permission is None:
        raise FailedPrecondition(
            f"the user may not see device {value!r}: add the device permission first",
            reason=DEVICE_PERMISSION_REQUIRED.reason,
            metadata={key: value},
        )
    return permission


def reads_whole_account(p: Principal, t: policy.Target) -> bool:
    """Whether ``p`` may read every partition of the account ``t`` (else only those its
    groups reach): ``partition_rule`` asked of the account itself (no partition named;
    with one named: of that partition)."""
    return partition_rule(p, AssetAction.READ, t) is not None


@dataclass(frozen=True)
class DeviceScope:
    """The devices user ``p`` may read and caller ``asker`` may see, in the shape a SQL
    filter needs (ListAccessibleDevices). Each part of what ``p`` reads is
    ``partition_rule`` asked of a kind of account, so the list follows the matrix as
    ``decide`` does; what the asker sees is ``policy.account_filter``."""

    user_id: str  # devices it holds a permission for
    every: bool  # every account's (admin, admin-reader)
    own_account: str | None  # every device of this account
    clients_of: str | None  # every device of the open accounts whose consultancy this is
    partition_ids: frozenset[str]  # the partitions its groups reach
    visible_account: str | None  # the asker sees this account's devices (None: all)
    visible_clients: bool  # ... and those of its open client accounts


def device_scope(p: Principal, asker: Principal) -> DeviceScope:
    def whole(t: policy.Target) -> bool:
        return reads_whole_account(p, t)

    see_all, own, clients = policy.account_filter(asker)
    return DeviceScope(
        user_id=p.user_id,
        every=whole(policy.Target(account_id="")),
        own_account=p.account_id if whole(policy.Target(account_id=p.account_id)) else None,
        clients_of=p.account_id if whole(
            policy.Target(account_id="", consultancy_account_id=p.account_id)) else None,
        partition_ids=frozenset(
            x for x in p.partition_ids
            if whole(policy.Target(account_id=p.account_id, partition_id=x))
        ),
        visible_account=None if see_all else own,
        visible_clients=clients,
    )
