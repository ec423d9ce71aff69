"""Use cases for a user's charging permissions: may the user charge a device it may see.

- Charging needs the device permission (FAILED_PRECONDITION
  ``DEVICE_PERMISSION_REQUIRED``, metadata naming the device), for adding and for
  removing it; the device is named and looked up as for device permissions
  (services/device_permissions.py: NOT_FOUND ``DEVICE_NOT_FOUND`` outside the user's
  account).
- Both are acts on the user (USER_MANAGE, through ``user_access.target``).
- Audit: ``device_permission.update`` (changed field ``charging``). Charging already on
  (or off) writes nothing and records nothing; the permission is returned as it is.

The statements are in store/device_permissions.py.
"""

from __future__ import annotations

from typing import Any

from accounts_grpc.domain.errors import FailedPrecondition
from accounts_grpc.domain.policy import Action
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
from accounts_grpc.store import audit
from accounts_grpc.store import device_permissions as repo
from accounts_grpc.store.db import UnitOfWork


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
            r = target(uow.conn, p, ref, Action.USER_MANAGE)
            user = r.row
            (dev,) = resolve_devices(uow.conn, user.account_id, [dref])
            perm = repo.permissions_of(uow.conn, user.id, [dev.id]).get(dev.id)
            if perm is None:
                key, value = device_key(dref)
                raise FailedPrecondition(
                    f"the user may not see device {value!r}: add the device permission first",
                    reason="DEVICE_PERMISSION_REQUIRED",
                    metadata={key: value},
                )
            if bool(perm.charging) == on:
                return perm
            conditional_update(
                uow, repo.update_if_etag, perm.id, perm.etag, {"charging": on}, "device permission"
            )
            audit.record(
                uow,
                account_id=user.account_id,
                actor_user_id=p.user_id,
                action="device_permission.update",
                resource_type="DevicePermission",
                resource_id=perm.id,
                changed_fields=["charging"],
            )
            return repo.permissions_of(uow.conn, user.id, [dev.id])[dev.id]

        return write(self.deps.db, tx)
