"""Use cases for a user's device permissions (which devices the user may see), and the
rules of naming devices, which the charging permissions and orders share.

- Devices are looked up inside the user's account; a device of another account is as
  unknown as a missing one (NOT_FOUND ``DEVICE_NOT_FOUND`` whose metadata names every
  unknown ``device_id`` / ``meter_id``, comma-separated). A call names at most
  ``MAX_DEVICES_PER_CALL`` devices, each by ``device_id`` or ``meter_id``.
- Granting and taking a permission are acts on the user (USER_MANAGE, through
  ``user_access.target``); listing them is reading it (USER_READ).
- Audit: one ``device_permission.add`` / ``.remove`` per permission granted or taken. A
  call that changes nothing (a permission already held, or not held) writes nothing
  and records nothing.

The statements are ``uow.devices``' and ``uow.device_permissions``' (store/devices.py,
store/device_permissions.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from accounts_grpc.domain.errors import NotFound
from accounts_grpc.domain.listing import Page, parse_list_request
from accounts_grpc.domain.policy import Action
from accounts_grpc.domain.ports import Devices, UnitOfWork
from accounts_grpc.domain.principal import Principal
from accounts_grpc.domain.validate import Validator
from accounts_grpc.services import events
from accounts_grpc.services.deps import Deps
from accounts_grpc.services.user_access import UserRef, check_user_ref, target, write
from accounts_grpc.store.db import new_etag, new_id, now_us

MAX_DEVICES_PER_CALL = 1000
MAX_METER_ID = 200


@dataclass(frozen=True)
class DeviceRef:
    device_id: str = ""
    meter_id: str = ""


def check_device_refs(refs: Sequence[DeviceRef], field: str, *, single: bool = False) -> None:
    v = Validator()
    if not refs and not single:
        v.add(field, "is required: name at least one device")
    if len(refs) > MAX_DEVICES_PER_CALL:
        v.add(field, f"must name at most {MAX_DEVICES_PER_CALL} devices (got {len(refs)})")
    for i, ref in enumerate(refs):
        at = field if single else f"{field}[{i}]"
        if ref.device_id:
            v.device_id(f"{at}.device_id", ref.device_id)
        elif ref.meter_id:
            v.name(f"{at}.meter_id", ref.meter_id, max_len=MAX_METER_ID)
        else:
            v.add(at, "name the device by device_id or meter_id")
    v.raise_if_any()


def device_key(ref: DeviceRef) -> tuple[str, str]:
    """The key a device is named by (``device_id`` first, else ``meter_id``) and its value."""
    return ("device_id", ref.device_id) if ref.device_id else ("meter_id", ref.meter_id)


def resolve_devices(devices: Devices, account_id: str, refs: Sequence[DeviceRef]) -> list[Any]:
    """The devices named, in request order without repeats; NOT_FOUND naming every
    device that is not registered in ``account_id``."""
    rows = devices.in_account(
        account_id,
        {r.device_id for r in refs if r.device_id},
        {r.meter_id for r in refs if r.meter_id and not r.device_id},
    )
    by_device = {d.device_id: d for d in rows if d.device_id}
    by_meter = {d.meter_id: d for d in rows if d.meter_id}
    found: dict[str, Any] = {}
    missing: dict[str, list[str]] = {"device_id": [], "meter_id": []}
    for ref in refs:
        key, value = device_key(ref)
        d = (by_device if key == "device_id" else by_meter).get(value)
        if d is None:
            if value not in missing[key]:
                missing[key].append(value)
        else:
            found.setdefault(d.id, d)
    if missing["device_id"] or missing["meter_id"]:
        names = [f"{k} {v!r}" for k, vs in missing.items() for v in vs]
        raise NotFound(
            f"device{'s' if len(names) > 1 else ''} not found: {', '.join(names)}",
            reason="DEVICE_NOT_FOUND",
            metadata={k: ",".join(vs) for k, vs in missing.items() if vs},
        )
    return list(found.values())


class DevicePermissionsService:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def add_device_permissions(
        self, p: Principal, ref: UserRef, refs: Sequence[DeviceRef]
    ) -> list[Any]:
        check_user_ref(ref)
        check_device_refs(refs, "devices")

        def tx(uow: UnitOfWork) -> list[Any]:
            r = target(uow.authority, p, ref, Action.USER_MANAGE)
            user = r.row
            devs = resolve_devices(uow.devices, user.account_id, refs)
            pks = [d.id for d in devs]
            held = uow.device_permissions.of_user(user.id, pks)
            now = now_us()
            new = [
                {
                    "id": new_id(),
                    "user_id": user.id,
                    "device_pk": pk,
                    "account_id": user.account_id,
                    "charging": False,
                    "create_time": now,
                    "update_time": now,
                    "etag": new_etag(),
                }
                for pk in pks
                if pk not in held
            ]
            uow.device_permissions.insert(new)
            for perm in new:
                uow.audit.record(
                    account_id=user.account_id,
                    actor_user_id=p.user_id,
                    action="device_permission.add",
                    resource_type="DevicePermission",
                    resource_id=perm["id"],
                    changed_fields=["user_id", "device"],
                )
            now_held = uow.device_permissions.of_user(user.id, pks)
            return [now_held[pk] for pk in pks]

        return write(self.deps.db, tx)

    def remove_device_permissions(
        self, p: Principal, ref: UserRef, refs: Sequence[DeviceRef]
    ) -> None:
        check_user_ref(ref)
        check_device_refs(refs, "devices")

        def tx(uow: UnitOfWork) -> None:
            r = target(uow.authority, p, ref, Action.USER_MANAGE)
            user = r.row
            devs = resolve_devices(uow.devices, user.account_id, refs)
            held = uow.device_permissions.of_user(user.id, [d.id for d in devs])
            uow.device_permissions.delete(user.id, list(held))
            for perm in held.values():
                uow.audit.record(
                    account_id=user.account_id,
                    actor_user_id=p.user_id,
                    action="device_permission.remove",
                    resource_type="DevicePermission",
                    resource_id=perm.id,
                    changed_fields=["user_id", "device"],
                    revocation=events.revocation(events.DEVICE_PERMISSION_REMOVED,
                                                 subjects=[user.id]),
                )

        write(self.deps.db, tx)

    def list_device_permissions(
        self,
        p: Principal,
        ref: UserRef,
        *,
        page_size: int = 0,
        page_token: str = "",
        filter: str = "",
    ) -> Page:
        check_user_ref(ref)
        with self.deps.db.read() as uow:
            q = parse_list_request(
                uow.device_permissions.list_shape,
                secret=self.deps.page_secret,
                page_size=page_size,
                page_token=page_token,
                filter=filter,
                scope=ref.list_scope(),
            )
            r = target(uow.authority, p, ref, Action.USER_READ)
            return uow.device_permissions.list_for_user(r.row.id, q)
