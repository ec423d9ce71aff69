"""Use cases CheckAccess and ListAccessibleDevices (UserService): what a user may do with
devices, meters and partitions, answered by domain/access.py's ``decide``, the function
the RPCs that act on those assets decide through.

- The user asked about (the subject) is ``user_id``, or the bearer of ``token`` (verified
  as authentication verifies a credential; a bad one is INVALID_ARGUMENT with the
  verification's reason), or else the caller. Its facts (effective roles, account,
  the partitions its groups reach) are read as authentication reads a caller's.
- Who may ask (``policy.Action.ACCESS_CHECK``): a user about itself; readers of the
  user with read rights (account-admin and consultant of its account, consultant of
  its consultancy, admin-reader) and admin about anyone. A caller that may not read the
  user gets NOT_FOUND (``USER_NOT_FOUND``), one that may read it but not ask
  PERMISSION_DENIED.
- Assets: a ``device_id`` / ``meter_id`` is looked up among the devices of
  ``account_id`` (default: the subject's account), a ``partition_id`` anywhere; an
  asset of an account the *caller* may not read is treated as absent, and an absent
  asset answers as one the subject may not see (``NOT_VISIBLE``): no existence oracle.
- The batch (up to ``MAX_CHECKS`` checks) reads its facts in at most two statements
  (``uow.devices.access_facts``), whatever the number of assets.
- ListAccessibleDevices pages through the devices the subject may read (and the caller
  may see), each with every action ``decide`` allows and its rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from accounts_grpc.auth.authenticate import principal_of
from accounts_grpc.domain import access, policy
from accounts_grpc.domain.access import AssetAction, Decision
from accounts_grpc.domain.errors import InvalidArgument, Unauthenticated, not_found
from accounts_grpc.domain.listing import parse_list_request
from accounts_grpc.domain.ports import ReadUnitOfWork
from accounts_grpc.domain.principal import Principal
from accounts_grpc.domain.validate import Validator, check_id
from accounts_grpc.services.deps import Deps
from accounts_grpc.services.device_permissions import MAX_METER_ID

MAX_CHECKS = 1000
ACTIONS = {a.value: a for a in AssetAction}


@dataclass(frozen=True)
class CheckInput:
    action: str = ""  # an AssetAction's value; "" when unspecified
    device_id: str = ""
    meter_id: str = ""
    partition_id: str = ""
    account_id: str = ""


@dataclass(frozen=True)
class AccessibleDevice:
    row: Any  # the devices row
    grants: list[tuple[AssetAction, str]]


@dataclass(frozen=True)
class AccessiblePage:
    devices: list[AccessibleDevice]
    next_page_token: str
    previous_page_token: str
    total_size: int


def validate_checks(checks: Sequence[CheckInput]) -> None:
    """INVALID_ARGUMENT naming every bad check (``checks[i].<field>``) at once."""
    v = Validator()
    if not checks:
        v.add("checks", "name at least one check")
    elif len(checks) > MAX_CHECKS:
        v.add("checks", f"must hold at most {MAX_CHECKS} checks (got {len(checks)})")
        v.raise_if_any()
    for i, c in enumerate(checks):
        at = f"checks[{i}]"
        if c.action not in ACTIONS:
            v.add(f"{at}.action", f"must be one of {', '.join(ACTIONS)} (ACCESS_ACTION_*)")
        if c.device_id:
            v.device_id(f"{at}.device_id", c.device_id)
        elif c.meter_id:
            v.name(f"{at}.meter_id", c.meter_id, max_len=MAX_METER_ID)
        elif c.partition_id:
            v.id(f"{at}.partition_id", c.partition_id)
            if c.action == AssetAction.CHARGE.value:
                v.add(f"{at}.action", "charge applies to a device: name a device_id or meter_id")
        else:
            v.add(at, "name the asset: device_id, meter_id or partition_id")
        if c.account_id:
            v.id(f"{at}.account_id", c.account_id)
    v.raise_if_any()


def subject_of(uow: ReadUnitOfWork, user_id: str) -> Principal:
    """The facts of user ``user_id`` as authentication reads a caller's (one statement)."""
    rows = uow.principals.by_user_id(user_id)
    if not rows:
        raise not_found("user", "id", user_id)
    return principal_of(uow, rows)


def require_may_ask(p: Principal, s: Principal) -> None:
    """NOT_FOUND unless ``p`` may read the user ``s``; PERMISSION_DENIED unless it may
    ask what ``s`` may do (``policy.Action.ACCESS_CHECK``)."""
    t = policy.Target(
        account_id=s.account_id,
        consultancy_account_id=s.account_row.consultancy_account_id,
        user_id=s.user_id,
        user_kind=s.kind,
    )
    if not policy.allows(p, policy.Action.USER_READ, t):
        raise not_found("user", "id", s.user_id)
    policy.require(p, policy.Action.ACCESS_CHECK, t, what="user", key=s.user_id)


def asset_of(row: Any, *, is_device: bool) -> access.Asset:
    """A device row of ``access_facts`` / ``list_accessible``, or a partition row."""
    return access.Asset(
        policy.Target(
            account_id=row.account_id,
            consultancy_account_id=row.consultancy_account_id,
            account_closed=bool(row.account_closed),
            partition_id=row.partition_id if is_device else row.id,
        ),
        is_device=is_device,
        permission=is_device and bool(row.p_held),
        charging=is_device and bool(row.p_charging),
    )


class AccessService:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def _subject(self, uow: ReadUnitOfWork, p: Principal, user_id: str, token: str) -> Principal:
        if user_id and token:
            raise InvalidArgument.field("token", "set user_id or token, not both")
        if token:
            try:
                s = self.deps.authn.principal_for_token(token, touch=False)
            except Unauthenticated as e:
                raise InvalidArgument.field("token", e.message, reason=e.reason) from None
        elif user_id and user_id != p.user_id:
            s = subject_of(uow, check_id("user_id", user_id))
        else:
            return p
        require_may_ask(p, s)
        return s

    def check_access(
        self, p: Principal, checks: Sequence[CheckInput], *, user_id: str = "", token: str = ""
    ) -> tuple[str, list[Decision]]:
        """The subject's id and one decision per check, in order."""
        validate_checks(checks)
        with self.deps.db.read() as uow:
            s = self._subject(uow, p, user_id, token)
            where = [c.account_id or s.account_id for c in checks]
            devs, parts = uow.devices.access_facts(
                s.user_id,
                {(a, c.device_id) for a, c in zip(where, checks, strict=True) if c.device_id},
                {(a, c.meter_id) for a, c in zip(where, checks, strict=True)
                 if c.meter_id and not c.device_id},
                {c.partition_id for c in checks if c.partition_id},
            )
        found: dict[tuple[str, str, str], access.Asset] = {}
        for d in devs:
            asset = asset_of(d, is_device=True)
            if policy.can_see_account(p, asset.target):
                found["d", d.account_id, d.device_id or ""] = asset
                found["m", d.account_id, d.meter_id or ""] = asset
        for r in parts:
            asset = asset_of(r, is_device=False)
            if policy.can_see_account(p, asset.target):
                found["p", "", r.id] = asset
        out = []
        for a, c in zip(where, checks, strict=True):
            key = (("d", a, c.device_id) if c.device_id else ("m", a, c.meter_id)
                   if c.meter_id else ("p", "", c.partition_id))
            out.append(access.decide(s, ACTIONS[c.action], found.get(key)))
        return s.user_id, out

    def list_accessible_devices(
        self,
        p: Principal,
        user_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        filter: str = "",
        order_by: str = "",
    ) -> AccessiblePage:
        check_id("user_id", user_id)
        with self.deps.db.read() as uow:
            q = parse_list_request(
                uow.devices.list_shape,
                secret=self.deps.page_secret,
                page_size=page_size,
                page_token=page_token,
                filter=filter,
                order_by=order_by,
                scope={"accessible_to": user_id, "asker": p.user_id},
            )
            s = self._subject(uow, p, user_id, "")
            page = uow.devices.list_accessible(access.device_scope(s, p), q)
        return AccessiblePage(
            [AccessibleDevice(r, access.grants(s, asset_of(r, is_device=True)))
             for r in page.rows],
            page.next_page_token, page.previous_page_token, page.total_size,
        )
