"""Repository for devices (``uow.devices``): which ids are taken, inserts, reads, lists.

SQLAlchemy Core on the connection of the unit of work; no rules here (who may register or
list devices, validation, all-or-nothing batches, audit: services/devices.py), only the
statements. A device's ``device_id`` and ``meter_id`` are each unique per account
(migration 0006); both may be NULL, so the list orders and searches them as ``''``.

- ``registered``: which of some ids a device of the account already has.
- ``in_account``: an account's devices by ``device_id`` or ``meter_id`` (the
  use cases on a user's devices: permissions, orders), in one indexed read.
- ``insert``, ``load``, ``ids_in_partition``.
- ``DEVICES_LIST`` with ``list_in_partition`` and ``list_in_account`` (all of an
  account's devices, or those in the partitions the groups of a user reach).
- The facts of CheckAccess and ListAccessibleDevices (domain/access.py), each device
  with its account's scope (``consultancy_account_id``, ``account_closed``) and the
  user's permission for it (``p_held``, ``p_charging``): ``access_facts`` (any number of
  devices by account and id, and of partitions, in two statements) and
  ``list_accessible`` (the devices of a ``DeviceScope``).

Statements are module constants with bind parameters, built and compiled once.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from accounts_grpc.domain.access import DeviceScope
from accounts_grpc.domain.listing import ListQuery, Page
from accounts_grpc.store.groups import REACHABLE_PARTITION_IDS
from accounts_grpc.store.listing import ListSpec, run_list
from accounts_grpc.store.partitions import PARTITION_WITH_ACCOUNT
from accounts_grpc.store.rows import Repository
from accounts_grpc.store.tables import accounts, device_permissions, devices, partitions

__all__ = ["DEVICES_LIST", "Devices"]

_DEVICE_ID = sa.func.coalesce(devices.c.device_id, "")
_METER_ID = sa.func.coalesce(devices.c.meter_id, "")

#: ListDevices: by name, device_id, meter_id or times; ``filter`` searches the name and
#: both ids.
DEVICES_LIST = ListSpec(
    resource="devices",
    id_column=devices.c.id,
    orderable={
        "name": devices.c.name,
        "device_id": _DEVICE_ID,
        "meter_id": _METER_ID,
        "create_time": devices.c.create_time,
        "update_time": devices.c.update_time,
    },
    searchable=(devices.c.name, _DEVICE_ID, _METER_ID),
)
_IN_PARTITION = sa.select(devices).where(devices.c.partition_id == sa.bindparam("pid"))
_IN_ACCOUNT = sa.select(devices).where(devices.c.account_id == sa.bindparam("aid"))
_IN_ACCOUNT_REACHED = _IN_ACCOUNT.where(devices.c.partition_id.in_(REACHABLE_PARTITION_IDS))

_IDS_IN_PARTITION = (
    sa.select(devices.c.id)
    .where(devices.c.partition_id == sa.bindparam("pid"))
    .order_by(devices.c.id)
)
_TAKEN_DEVICE_IDS = sa.select(devices.c.device_id).where(
    devices.c.account_id == sa.bindparam("aid"),
    devices.c.device_id.in_(sa.bindparam("ids", expanding=True)),
)
_TAKEN_METER_IDS = sa.select(devices.c.meter_id).where(
    devices.c.account_id == sa.bindparam("aid"),
    devices.c.meter_id.in_(sa.bindparam("ids", expanding=True)),
)
_BY_IDS = sa.select(devices).where(devices.c.id.in_(sa.bindparam("ids", expanding=True)))


_BY_DEVICE_ID = devices.c.device_id.in_(sa.bindparam("dids", expanding=True))
_BY_METER_ID = devices.c.meter_id.in_(sa.bindparam("mids", expanding=True))

#: (any device ids?, any meter ids?) -> the read
_DEVICES = {
    (True, False): _IN_ACCOUNT.where(_BY_DEVICE_ID),
    (False, True): _IN_ACCOUNT.where(_BY_METER_ID),
    (True, True): _IN_ACCOUNT.where(sa.or_(_BY_DEVICE_ID, _BY_METER_ID)),
}


_dp = device_permissions
#: a device with its account's scope and user ``uid``'s permission for it
_WITH_FACTS = sa.select(
    devices,
    accounts.c.consultancy_account_id,
    accounts.c.closed.label("account_closed"),
    _dp.c.user_id.is_not(None).label("p_held"),
    sa.func.coalesce(_dp.c.charging, sa.false()).label("p_charging"),
).select_from(
    devices.join(accounts, accounts.c.id == devices.c.account_id).outerjoin(
        _dp, sa.and_(_dp.c.device_pk == devices.c.id, _dp.c.user_id == sa.bindparam("uid"))
    )
)
_FACTS = _WITH_FACTS.where(
    sa.or_(
        sa.tuple_(devices.c.account_id, devices.c.device_id).in_(
            sa.bindparam("dkeys", expanding=True)),
        sa.tuple_(devices.c.account_id, devices.c.meter_id).in_(
            sa.bindparam("mkeys", expanding=True)),
    )
)
_PARTITION_FACTS = PARTITION_WITH_ACCOUNT.where(
    partitions.c.id.in_(sa.bindparam("pids", expanding=True)))


class Devices(Repository):
    """The devices of every account (see the module docstring)."""

    __slots__ = ()

    #: what ListDevices may be ordered by and searched in
    list_shape = DEVICES_LIST

    def ids_in_partition(self, partition_id: str) -> list[str]:
        """Primary keys of the partition's devices, sorted."""
        return [r.id for r in self.conn.execute(_IDS_IN_PARTITION, {"pid": partition_id})]

    def registered(
        self, account_id: str, device_ids: Sequence[str], meter_ids: Sequence[str]
    ) -> tuple[set[str], set[str]]:
        """Which of these device ids and meter ids a device of ``account_id`` already has.

        Only the account's own devices count: ids are unique per account (migration
        0006), so whether another tenant holds an id never shows in any answer."""
        taken_devices: set[str] = set()
        taken_meters: set[str] = set()
        if device_ids:
            params = {"aid": account_id, "ids": list(device_ids)}
            taken_devices = {r.device_id for r in self.conn.execute(_TAKEN_DEVICE_IDS, params)}
        if meter_ids:
            params = {"aid": account_id, "ids": list(meter_ids)}
            taken_meters = {r.meter_id for r in self.conn.execute(_TAKEN_METER_IDS, params)}
        return taken_devices, taken_meters

    def insert(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            self.conn.execute(devices.insert(), [dict(r) for r in rows])

    def load(self, device_pks: Sequence[str]) -> list[Any]:
        """Devices by primary key, in the order given (missing ones skipped)."""
        if not device_pks:
            return []
        by_id = {r.id: r for r in self.conn.execute(_BY_IDS, {"ids": list(device_pks)})}
        return [by_id[i] for i in device_pks if i in by_id]

    def in_account(
        self, account_id: str, device_ids: Iterable[str], meter_ids: Iterable[str]
    ) -> list[sa.Row[Any]]:
        """The account's devices (every column) with any of the given device ids or meter
        ids; none when neither is given."""
        dids, mids = list(device_ids), list(meter_ids)
        if not dids and not mids:
            return []
        params: dict[str, Any] = {"aid": account_id}
        if dids:
            params["dids"] = dids
        if mids:
            params["mids"] = mids
        return list(self.conn.execute(_DEVICES[bool(dids), bool(mids)], params))

    def list_in_partition(self, partition_id: str, query: ListQuery) -> Page:
        """One page (``query``, parsed against ``DEVICES_LIST``) of the partition's
        devices."""
        return run_list(self.conn, DEVICES_LIST, query, _IN_PARTITION,
                        params={"pid": partition_id})

    def list_in_account(
        self, account_id: str, query: ListQuery, *, reachable_by: str | None = None
    ) -> Page:
        """One page (``query``, parsed against ``DEVICES_LIST``) of the account's devices;
        with ``reachable_by`` (a user id) only those in partitions the user's groups
        reach."""
        if reachable_by is None:
            return run_list(self.conn, DEVICES_LIST, query, _IN_ACCOUNT,
                            params={"aid": account_id})
        return run_list(self.conn, DEVICES_LIST, query, _IN_ACCOUNT_REACHED,
                        params={"aid": account_id, "uid": reachable_by})

    def access_facts(
        self,
        user_id: str,
        device_keys: Collection[tuple[str, str]],
        meter_keys: Collection[tuple[str, str]],
        partition_ids: Collection[str],
    ) -> tuple[list[Any], list[Any]]:
        """The devices named by (account id, device id) or (account id, meter id), with
        their account's scope and ``user_id``'s permission (``p_held``, ``p_charging``),
        and the partitions by id with their account's scope: at most two statements."""
        devs: list[Any] = []
        parts: list[Any] = []
        if device_keys or meter_keys:
            params = {"uid": user_id, "dkeys": [tuple(k) for k in device_keys],
                      "mkeys": [tuple(k) for k in meter_keys]}
            devs = list(self.conn.execute(_FACTS, params))
        if partition_ids:
            parts = list(self.conn.execute(_PARTITION_FACTS, {"pids": list(partition_ids)}))
        return devs, parts

    def list_accessible(self, scope: DeviceScope, query: ListQuery) -> Page:
        """One page (``query``, parsed against ``DEVICES_LIST``) of the devices in
        ``scope``, each as ``access_facts`` reads it."""
        held = devices.c.id.in_(sa.select(_dp.c.device_pk).where(_dp.c.user_id == scope.user_id))
        parts: list[sa.ColumnElement[bool]] = [held]
        if scope.every:
            parts.append(sa.true())
        if scope.own_account:
            parts.append(devices.c.account_id == scope.own_account)
        if scope.clients_of:
            parts.append(accounts.c.consultancy_account_id == scope.clients_of)
        if scope.partition_ids:
            parts.append(devices.c.partition_id.in_(sorted(scope.partition_ids)))
        base = _WITH_FACTS.where(sa.or_(*parts)).params(uid=scope.user_id)
        if scope.visible_account is not None:
            seen = devices.c.account_id == scope.visible_account
            if scope.visible_clients:
                seen = sa.or_(seen, sa.and_(
                    accounts.c.consultancy_account_id == scope.visible_account,
                    sa.not_(accounts.c.closed)))
            base = base.where(seen)
        return run_list(self.conn, DEVICES_LIST, query, base)
