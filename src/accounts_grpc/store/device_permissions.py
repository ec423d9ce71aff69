"""Repository for device permissions (``uow.device_permissions``; a user may see a
device; ``charging``: and charge it), read with the device they name.

No rules here (who may grant or take which permission, what a missing device is:
services/device_permissions.py and services/charging.py), only the statements:

- ``of_user``: a user's permissions for some devices, by device pk, each with its
  device (``PERMISSION_WITH_DEVICE``: device columns prefixed ``d_``).
- ``insert``, ``delete``; a permission's ``charging`` changes through
  ``update_if_etag`` (its etag-conditional UPDATE).
- ``list_for_user``: one page of ``PERMISSION_LIST``, searched in the devices' names
  and ids.

Statements are module constants with bind parameters, built and compiled once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from accounts_grpc.domain.listing import ListQuery, Page
from accounts_grpc.store import conflicts
from accounts_grpc.store.listing import ListSpec, run_list
from accounts_grpc.store.rows import Repository
from accounts_grpc.store.tables import device_permissions, devices

__all__ = ["PERMISSION_LIST", "PERMISSION_WITH_DEVICE", "DevicePermissions"]

dp = device_permissions

#: A permission with its device; device columns are prefixed ``d_``.
PERMISSION_WITH_DEVICE = sa.select(
    dp.c.id,
    dp.c.user_id,
    dp.c.account_id,
    dp.c.charging,
    dp.c.create_time,
    dp.c.update_time,
    dp.c.etag,
    dp.c.device_pk,
    devices.c.account_id.label("d_account_id"),
    devices.c.partition_id.label("d_partition_id"),
    devices.c.device_id.label("d_device_id"),
    devices.c.meter_id.label("d_meter_id"),
    devices.c.name.label("d_name"),
    devices.c.create_time.label("d_create_time"),
    devices.c.update_time.label("d_update_time"),
    devices.c.etag.label("d_etag"),
).select_from(dp.join(devices, devices.c.id == dp.c.device_pk))

_OF_USER = PERMISSION_WITH_DEVICE.where(
    dp.c.user_id == sa.bindparam("uid"), dp.c.device_pk.in_(sa.bindparam("pks", expanding=True))
)
_INSERT = dp.insert()
_DELETE = dp.delete().where(
    dp.c.user_id == sa.bindparam("uid"), dp.c.device_pk.in_(sa.bindparam("pks", expanding=True))
)

#: ListDevicePermissions: ordered by its times; searched in the devices' names and ids.
PERMISSION_LIST = ListSpec(
    resource="device_permissions",
    id_column=dp.c.id,
    orderable={
        "create_time": dp.c.create_time,
        "update_time": dp.c.update_time,
    },
    searchable=[
        devices.c.name,
        sa.func.coalesce(devices.c.device_id, ""),
        sa.func.coalesce(devices.c.meter_id, ""),
    ],
)


class DevicePermissions(Repository):
    """Which users may see, and charge, which devices (see the module docstring)."""

    __slots__ = ()

    #: what ListDevicePermissions may be ordered by and searched in
    list_shape = PERMISSION_LIST

    def of_user(self, user_id: str, device_pks: Sequence[str]) -> dict[str, Any]:
        """The user's permissions for these devices (with their devices), by device pk."""
        if not device_pks:
            return {}
        rows = self.conn.execute(_OF_USER, {"uid": user_id, "pks": list(device_pks)})
        return {r.device_pk: r for r in rows}

    def insert(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert these permission rows (every column), if any."""
        if rows:
            self.conn.execute(_INSERT, [dict(r) for r in rows])

    def delete(self, user_id: str, device_pks: Sequence[str]) -> None:
        """Delete the user's permissions for these devices, if any."""
        if device_pks:
            self.conn.execute(_DELETE, {"uid": user_id, "pks": list(device_pks)})

    def update_if_etag(
        self, permission_id: str, old_etag: str, values: Mapping[str, Any]
    ) -> bool:
        """Write ``values`` to the permission ``permission_id`` if its etag is still
        ``old_etag``; False (nothing written) if a concurrent writer changed it first, or
        it is gone (store/conflicts.update_if_etag, run by
        services/writes.conditional_update)."""
        return conflicts.update_if_etag(self.conn, dp, permission_id, old_etag, values)

    def list_for_user(self, user_id: str, query: ListQuery) -> Page:
        """One page (``query``, parsed against ``PERMISSION_LIST``) of the user's
        permissions, each with its device."""
        base = PERMISSION_WITH_DEVICE.where(dp.c.user_id == user_id)
        return run_list(self.conn, PERMISSION_LIST, query, base)
