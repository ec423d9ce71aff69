"""Use cases for a user's charging permissions: may the user charge a device it may see.

- Charging needs the device permission (FAILED_PRECONDITION
  ``DEVICE_PERMISSION_REQUIRED``, metadata naming the device), for adding and for
  removing it: ``access.require_device_permission``, the rule CheckAccess's ``charge``
  answers by (domain/access.py); the device is named and looked up as for device permissions
  (services/device_permissions.py: NOT_FOUND ``DEVICE_NOT_FOUND`` outside the user's
  account).
- Both are acts on the user (USER_MANAGE, through ``user_access.target``).
- Audit: ``device_permission.update`` (changed field ``charging``). Charging already on
  (or off) writes nothing and records nothing; the permission is returned as it is.

The statements are ``uow.device_permissions``' (store/device_permissions.py).
"""

from __future__ import annotations

from typing import Any

from accounts_grpc.domain import access
from accounts_grpc.domain.policy import Action
from accounts_grpc.domain.ports import UnitOfWork
from accounts_grpc.domain.principal import Principal
from accounts_grpc.services.deps import Deps
from accounts_grpc.services.device_permissions import (
    DeviceRef,
    check_device_refs,
    device_key,
    resolve_devices,
)
from accounts_grpc.services.user_access import UserRef, check_user_ref, target, write
from accounts_grpc.services.writes import conditional_update


class ChargingService:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def add_charging_permission(self, p: Principal, ref: UserRef, dref: DeviceRef) -> Any:
        return self._set_charging(p, ref, dref, True)

    def remove_charging_permission(self, p: Principal, ref: UserRef, dref: DeviceRef) -> Any:
        return self._set_charging(p, ref, dref, False)

    def _set_charging(self, p: Principal, ref: UserRef, dref: DeviceRef, on: bool) -> Any:
        check_user_ref(ref)
        check_device_refs([dref], "device", single=True)

        def tx(uow: UnitOfWork) -> Any:
            r = target(uow.authority, p, ref, Action.USER_MANAGE)
            user = r.row
            (dev,) = resolve_devices(uow.devices, user.account_id, [dref])
            perm = access.require_device_permission(
                uow.device_permissions.of_user(user.id, [dev.id]).get(dev.id), *device_key(dref)
            )
            if bool(perm.charging) == on:
                return perm
            conditional_update(
                uow.device_permissions.update_if_etag, perm.id, perm.etag, {"charging": on},
                "device permission",
            )
            uow.audit.record(
                account_id=user.account_id,
                actor_user_id=p.user_id,
                action="device_permission.update",
                resource_type="DevicePermission",
                resource_id=perm.id,
                changed_fields=["charging"],
            )
            return uow.device_permissions.of_user(user.id, [dev.id])[dev.id]

        return write(self.deps.db, tx)
