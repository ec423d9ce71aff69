"""What the use cases of groups, memberships, partitions and devices share.

- Writes into a closed account (a tombstone) are FAILED_PRECONDITION (ACCOUNT_CLOSED):
  ``require_open``.
- A partition or a group is loaded with what the policy needs of its account and checked
  against the action at once: NOT_FOUND if there is none, and for a caller the policy
  hides it from (``load_partition``, ``load_group``).
- A group is shown with its members and the partitions it reaches (``GroupView``).
- Changing who holds a role needs the right to grant that role (``check_role_change``):
  adding or removing it on a group, adding or removing members of a group that grants
  it, deleting such a group.
- Ids a request names inside an account (a group's partitions, its new members) that are
  not there are INVALID_ARGUMENT with one field violation each; whether the id exists in
  another account is not revealed (``require_in_account``).

The statements are ``uow.groups``' and ``uow.partitions``' (store/groups.py,
store/partitions.py), handed in by the caller.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from accounts_grpc.domain import policy
from accounts_grpc.domain import roles as R
from accounts_grpc.domain.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    PermissionDenied,
    not_found,
)
from accounts_grpc.domain.ports import Groups, Partitions
from accounts_grpc.domain.principal import Principal
from accounts_grpc.domain.validate import Validator

PARTITION = "partition"  # the resources, as errors name them
GROUP = "user_group"
GROUP_WHAT = "user group"  # as the messages of etag conflicts name it


def require_open(t: policy.Target) -> None:
    """Writes into a closed account (a tombstone) are FAILED_PRECONDITION."""
    if t.account_closed:
        raise FailedPrecondition(
            "the account is closed", reason="ACCOUNT_CLOSED", metadata={"account_id": t.account_id}
        )


# -- partitions ---------------------------------------------------------------------------


def partition_target(row: Any) -> policy.Target:
    return policy.Target(
        account_id=row.account_id,
        consultancy_account_id=row.consultancy_account_id,
        account_closed=bool(row.account_closed),
        partition_id=row.id,
    )


def load_partition(
    partitions: Partitions,
    p: Principal,
    action: policy.Action,
    partition_id: str,
    *,
    for_update: bool = False,
) -> Any:
    """The partition row (with its account's scope) if ``p`` may do ``action`` on it."""
    row = partitions.load(partition_id, for_update=for_update)
    if row is None:
        raise not_found(PARTITION, "id", partition_id)
    policy.require(p, action, partition_target(row), what=PARTITION, key=partition_id)
    return row


# -- groups -------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupView:
    row: Any  # user_groups row
    member_ids: list[str]
    partition_ids: list[str]


def group_target(row: Any) -> policy.Target:
    return policy.Target(
        account_id=row.account_id,
        consultancy_account_id=row.consultancy_account_id,
        account_closed=bool(row.account_closed),
        group_id=row.id,
    )


def load_group(
    groups: Groups,
    p: Principal,
    action: policy.Action,
    group_id: str,
    *,
    for_update: bool = False,
) -> Any:
    """The group row (with its account's scope) if ``p`` may do ``action`` on it."""
    row = groups.load(group_id, for_update=for_update)
    if row is None:
        raise not_found(GROUP, "id", group_id)
    policy.require(p, action, group_target(row), what=GROUP, key=group_id)
    return row


def group_views(groups: Groups, rows: Sequence[Any]) -> list[GroupView]:
    """The groups with their members and partitions (two statements for all of them)."""
    ids = [r.id for r in rows]
    members = groups.members_of(ids)
    parts = groups.partitions_of(ids)
    return [GroupView(r, members[r.id], parts[r.id]) for r in rows]


def group_view(groups: Groups, row: Any) -> GroupView:
    return group_views(groups, [row])[0]


def check_role_change(
    caller_roles: Collection[str], old: Iterable[str], new: Iterable[str], *, what: str
) -> None:
    """PERMISSION_DENIED (ROLE_NOT_GRANTABLE) unless the caller may grant every role
    that is gained or lost between ``old`` and ``new``."""
    changed = set(old) ^ set(new)
    denied = sorted(changed - R.grantable_roles(frozenset(caller_roles)))
    if denied:
        raise PermissionDenied(
            f"the caller may not grant or revoke {', '.join(map(repr, denied))} ({what}): "
            "nobody hands out a role above its own, and only admin hands out admin and "
            "admin-reader",
            reason="ROLE_NOT_GRANTABLE",
            metadata={"roles": ",".join(denied)},
        )


# -- ids named in a request ---------------------------------------------------------------


def ids_into(v: Validator, ids: Sequence[str], field_name: str, limit: int) -> list[str]:
    """Check each id; return them de-duplicated in order."""
    if len(ids) > limit:
        v.add(field_name, f"must name at most {limit} ids (got {len(ids)})")
        return []
    for i, x in enumerate(ids):
        v.id(f"{field_name}[{i}]", x)
    return list(dict.fromkeys(ids))


def require_in_account(
    wanted: Sequence[str],
    found: Collection[str],
    field_name: str,
    account_id: str,
    kind: str,
    *,
    reason: str,
) -> None:
    """INVALID_ARGUMENT (``reason``) naming each of ``wanted`` (as the request sent them,
    so that violations name its positions) that is not in ``found``."""
    bad = [
        FieldViolation(f"{field_name}[{i}]", f"no {kind} {x!r} in account {account_id}")
        for i, x in enumerate(wanted)
        if x not in found
    ]
    if bad:
        raise InvalidArgument(
            f"{bad[0].field}: {bad[0].description}"
            + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""),
            bad,
            reason=reason,
        )
