"""CheckAccess never disagrees with the real call: a property over generated worlds.

Hypothesis draws users (roles, kind), user groups (roles, the partitions they reach,
members), partitions, devices (device ids shared across tenants on purpose) and device
and charging permissions in an account A, whose consultancy C has a consultant, beside
another tenant B; the world is made through the use cases (in process, on the real
database). Then, for every subject (each user of A, C's consultant, the platform admin)
and every asset of A and B, CheckAccess (asked by admin, and by the subject itself)
must match the outcome of the real call for that action, made as the subject:

- read a partition: GetPartition; read a device: it is in ListDevices of its account
  or in the subject's own ListDevicePermissions;
- control (a partition, or a device through its partition): RegisterDevices into the
  partition passes the policy (an empty batch: INVALID_ARGUMENT, nothing written) or
  is refused (NOT_FOUND / PERMISSION_DENIED);
- charge: no RPC charges a device. CheckAccess is compared with the stored fact the
  rule reads (the subject's ListDevicePermissions shows ``charging``) and with its
  refactored consumer: AddChargingPermission fails DEVICE_PERMISSION_REQUIRED exactly
  when CheckAccess denies charge with that reason.

ListAccessibleDevices of each subject lists exactly the devices CheckAccess lets it
read, each with the actions and rules CheckAccess answers.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts_grpc.domain.access import AssetAction
from accounts_grpc.domain.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from accounts_grpc.domain.principal import Principal
from accounts_grpc.services import Services
from accounts_grpc.services.access import CheckInput
from accounts_grpc.services.device_permissions import DeviceRef
from accounts_grpc.services.user_access import UserRef
from tests.usecases.helpers import HUMAN, MACHINE, UseCases, uniq

ROLES = ("account-admin", "consultant", "admin-reader")


@dataclass(frozen=True)
class Plan:
    intermediary: bool
    parts_a: int
    devices_per_part: list[int]  # per partition of A
    devices_b: int
    users: list[tuple[bool, frozenset[str]]]  # (machine?, direct roles)
    groups: list[tuple[frozenset[str], frozenset[int], frozenset[int]]]  # roles, parts, members
    perms: list[tuple[int, int, bool]]  # (user, device of A, charging)


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    parts = draw(st.integers(1, 3))
    users = draw(st.lists(st.tuples(st.booleans(), st.frozensets(st.sampled_from(ROLES[:2]),
                                                                 max_size=1)),
                          min_size=1, max_size=3))
    per_part = draw(st.lists(st.integers(0, 2), min_size=parts, max_size=parts))
    n_dev = sum(per_part)
    groups = draw(st.lists(st.tuples(
        st.frozensets(st.sampled_from(ROLES), max_size=1),
        st.frozensets(st.integers(0, parts - 1)),
        st.frozensets(st.integers(0, len(users) - 1))), max_size=2))
    perms = draw(st.lists(st.tuples(st.integers(0, len(users) - 1), st.integers(0, n_dev - 1),
                                    st.booleans()), max_size=4)) if n_dev else []
    return Plan(draw(st.booleans()), parts, per_part, draw(st.integers(0, 2)), users, groups,
                perms)


@dataclass
class World:
    subjects: list[Principal]
    partitions: list[Any]  # rows, of A then of B
    devices: list[Any]  # rows, of A then of B


def build(uc: UseCases, plan: Plan) -> World:
    s = uc.services
    consultancy, _ = uc.new_account("C", roles=["consultancy"])
    a, _ = uc.new_account("A", roles=["intermediary"] if plan.intermediary else [],
                          consultancy_account_id=consultancy.id)
    b, _ = uc.new_account("B")
    parts = [uc.new_partition(a.id) for _ in range(plan.parts_a)]
    devices: list[Any] = []
    for part, n in zip(parts, plan.devices_per_part, strict=True):
        # the same device ids in A and in B: ids are unique per account only
        if n:
            devices += uc.register(part.id, *(dict(device_id=f"D{len(devices) + i:07d}",
                                                   meter_id=uniq("M-")) for i in range(n)))
    part_b = uc.new_partition(b.id)
    devices_b = uc.register(part_b.id, *(dict(device_id=f"D{i:07d}")
                                         for i in range(plan.devices_b))) if plan.devices_b else []
    users = [uc.new_user(a.id, MACHINE if machine else HUMAN, roles=sorted(roles)).row
             for machine, roles in plan.users]
    for roles, pidx, members in plan.groups:
        uc.new_group(a.id, roles=sorted(roles), partition_ids=[parts[i].id for i in sorted(pidx)],
                     members=[users[i].id for i in sorted(members)])
    held: dict[tuple[int, int], bool] = {}
    for u, d, charging in plan.perms:
        held[u, d] = held.get((u, d), False) or charging
    for (u, d), charging in held.items():
        ref, dev = UserRef(user_id=users[u].id), DeviceRef(device_id=devices[d].device_id)
        s.device_permissions.add_device_permissions(uc.admin, ref, [dev])
        if charging:
            s.charging.add_charging_permission(uc.admin, ref, dev)
    consultant = uc.new_user(consultancy.id, roles=["consultant"]).row
    subjects = [uc.principal(u) for u in [*users, consultant]] + [uc.admin]
    return World(subjects, [*parts, part_b], [*devices, *devices_b])


def outcome(call: Any) -> bool:
    """True if the call passed the policy, False if the policy refused it."""
    try:
        call()
    except (NotFound, PermissionDenied):
        return False
    except InvalidArgument:
        return True
    return True


def real(s: Services, sp: Principal, w: World) -> dict[tuple[str, str, str], bool]:
    """What the real calls answer, made as ``sp``: (action, kind, asset id) -> allowed."""
    seen: set[str] = set()
    for acct in {d.account_id for d in w.devices}:
        with contextlib.suppress(NotFound):
            seen |= {r.id for r in s.devices.list_devices(sp, account_id=acct,
                                                          page_size=1000).devices}
    mine = {r.device_pk: bool(r.charging) for r in s.device_permissions.list_device_permissions(
        sp, UserRef(user_id=sp.user_id), page_size=1000).rows}
    out: dict[tuple[str, str, str], bool] = {}
    for part in w.partitions:
        out["read", "p", part.id] = outcome(lambda p=part: s.partitions.get(sp, p.id))
        out["control", "p", part.id] = outcome(
            lambda p=part: s.devices.register_devices(sp, p.id, []))
    for d in w.devices:
        out["read", "d", d.id] = d.id in seen or d.id in mine
        out["control", "d", d.id] = outcome(
            lambda d=d: s.devices.register_devices(sp, d.partition_id, []))
        out["charge", "d", d.id] = mine.get(d.id, False)
    return out


def checks_of(w: World) -> list[tuple[tuple[str, str, str], CheckInput]]:
    out = []
    for part in w.partitions:
        for action in ("read", "control"):
            out.append(((action, "p", part.id), CheckInput(action, partition_id=part.id)))
    for d in w.devices:
        for action in ("read", "control", "charge"):
            out.append(((action, "d", d.id), CheckInput(action, device_id=d.device_id,
                                                        account_id=d.account_id)))
    return out


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(plan=plans())
def test_check_access_agrees_with_the_real_calls(uc: UseCases, plan: Plan) -> None:
    s = uc.services
    w = build(uc, plan)
    asked = checks_of(w)
    for sp in w.subjects:
        truth = real(s, sp, w)
        inputs = [c for _, c in asked]
        _, by_admin = s.access.check_access(uc.admin, inputs, user_id=sp.user_id)
        _, by_self = s.access.check_access(sp, inputs)
        # what a user may do is the same whoever asks (a user reads no asset of an
        # account it may not read)
        assert by_self == by_admin
        expected: dict[str, list[tuple[AssetAction, str]]] = {}
        for (key, c), d in zip(asked, by_admin, strict=True):
            assert d.allowed == truth[key], (sorted(sp.roles), key, d, plan)
            if key[1] == "d" and d.allowed:
                expected.setdefault(key[2], []).append((AssetAction(key[0]), d.rule))
            if d.reason == "DEVICE_PERMISSION_REQUIRED" and sp in w.subjects[:-2] \
                    and c.account_id == sp.account_id:
                # the consumer of the same rule refuses to set charging, writing nothing
                uc.rejects(lambda c=c, sp=sp: s.charging.add_charging_permission(
                    uc.admin, UserRef(user_id=sp.user_id), DeviceRef(device_id=c.device_id)),
                    FailedPrecondition, "DEVICE_PERMISSION_REQUIRED")
        ours = {d.id for d in w.devices}
        listed = {a.row.id: a.grants for a in s.access.list_accessible_devices(
            uc.admin, sp.user_id, page_size=1000).devices if a.row.id in ours}
        assert listed == expected, (sorted(sp.roles), plan)


def test_a_denied_call_and_a_denied_check_say_the_same(uc: UseCases) -> None:
    """A fixed case the property covers too, spelled out: a member of A with no group
    and no permission may neither see nor control A's partition."""
    account, _ = uc.new_account("Fixed")
    part = uc.new_partition(account.id)
    member = uc.principal(uc.new_user(account.id).row)
    with pytest.raises(NotFound):
        uc.services.partitions.get(member, part.id)
    _, (d,) = uc.services.access.check_access(member, [CheckInput("read", partition_id=part.id)])
    assert (d.allowed, d.rule, d.reason) == (False, "no_rule", "NOT_VISIBLE")
