"""Use cases for the devices in partitions: RegisterDevices and ListDevices (RPCs of the
PartitionService). The partitions themselves are services/partitions.py; loading a
partition under the policy is services/tenancy.py.

- A device has a ``device_id`` (exactly 8 characters) and/or a ``meter_id``; each is
  unique inside its account, not on the platform: a tenant's registry is its own (the
  same physical device may be registered by two customers, e.g. after a resale), and
  no answer to one tenant depends on another tenant's devices (no existence oracle).
- ``RegisterDevices`` is all or nothing: every bad item of the batch is named in one
  INVALID_ARGUMENT (``devices[3].device_id``, duplicates inside the batch too), and ids
  a device of the same account already has are one ALREADY_EXISTS naming all of them.
- Who reads: readers of the account see all its devices; a member sees those in the
  partitions its groups reach; who registers: admin, and account-admin in its account.
  Both are domain/access.py's READ and CONTROL of a partition (``PARTITION_ACTIONS``,
  ``reads_whole_account``), the rules CheckAccess answers by.
- Writes into a closed account are FAILED_PRECONDITION (ACCOUNT_CLOSED).

The statements are ``uow.devices``' (store/devices.py).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from accounts_grpc.domain import access, policy
from accounts_grpc.domain.access import PARTITION_ACTIONS, AssetAction
from accounts_grpc.domain.errors import AlreadyExists, InvalidArgument
from accounts_grpc.domain.listing import parse_list_request
from accounts_grpc.domain.ports import UnitOfWork
from accounts_grpc.domain.principal import Principal
from accounts_grpc.domain.validate import Validator, check_id
from accounts_grpc.services import common
from accounts_grpc.services.deps import Deps
from accounts_grpc.services.tenancy import load_partition, partition_target, require_open
from accounts_grpc.services.writes import constraint_guard, create_once, fingerprint
from accounts_grpc.store.db import new_etag, new_id, now_us

MAX_DEVICES_PER_CALL = 1000
MAX_METER_ID = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: registering devices into a partition is CONTROL of it (CheckAccess's rule)
_CONTROL_ACTION = PARTITION_ACTIONS[AssetAction.CONTROL]


@dataclass(frozen=True)
class DeviceInput:
    device_id: str = ""
    meter_id: str = ""
    name: str = ""
    partition_id: str = ""  # output-only; if sent it must be the request's partition


@dataclass(frozen=True)
class DevicePage:
    devices: list[Any]
    next_page_token: str
    previous_page_token: str
    total_size: int


# -- pure rules (unit-tested) -----------------------------------------------------------


def _meter_id(v: Validator, field_name: str, value: str) -> str:
    if not value.strip():
        v.add(field_name, "must not be blank")
    elif value != value.strip():
        v.add(field_name, "must not start or end with spaces")
    elif len(value) > MAX_METER_ID:
        v.add(field_name, f"must be at most {MAX_METER_ID} characters (got {len(value)})")
    elif _CONTROL.search(value):
        v.add(field_name, "must not contain control characters")
    return value


def validate_devices(batch: Sequence[DeviceInput], partition_id: str) -> list[dict[str, Any]]:
    """Check a whole batch; INVALID_ARGUMENT naming every bad item, else the clean rows."""
    v = Validator()
    if not batch:
        v.add("devices", "name at least one device")
    elif len(batch) > MAX_DEVICES_PER_CALL:
        v.add("devices", f"must hold at most {MAX_DEVICES_PER_CALL} devices (got {len(batch)})")
        v.raise_if_any()
    seen_device: dict[str, int] = {}
    seen_meter: dict[str, int] = {}
    out: list[dict[str, Any]] = []
    for i, d in enumerate(batch):
        at = f"devices[{i}]"
        if not d.device_id and not d.meter_id:
            v.add(at, "needs a device_id or a meter_id (or both)")
        if d.device_id:
            v.device_id(f"{at}.device_id", d.device_id)
            j = seen_device.setdefault(d.device_id, i)
            if j != i:
                v.add(f"{at}.device_id", f"{d.device_id!r} is also devices[{j}].device_id")
        if d.meter_id:
            _meter_id(v, f"{at}.meter_id", d.meter_id)
            j = seen_meter.setdefault(d.meter_id, i)
            if j != i:
                v.add(f"{at}.meter_id", f"{d.meter_id!r} is also devices[{j}].meter_id")
        name = v.name(f"{at}.name", d.name, required=False)
        if d.partition_id and d.partition_id != partition_id:
            v.add(f"{at}.partition_id", "must be empty or the request's partition_id")
        out.append({"device_id": d.device_id or None, "meter_id": d.meter_id or None, "name": name})
    v.raise_if_any(
        f"{len(v.violations)} problem(s) in the batch; nothing was registered: "
        + "; ".join(f"{x.field}: {x.description}" for x in v.violations[:5])
        + (" ..." if len(v.violations) > 5 else "")
    )
    return out


def taken_error(
    batch: Sequence[dict[str, Any]], taken_devices: set[str], taken_meters: set[str]
) -> AlreadyExists | None:
    """One ALREADY_EXISTS naming every id of the batch a device of the account already
    has (``taken_*`` come from ``uow.devices.registered``, which sees that account only)."""
    fields: list[str] = []
    dev: list[str] = []
    met: list[str] = []
    for i, d in enumerate(batch):
        if d["device_id"] and d["device_id"] in taken_devices:
            fields.append(f"devices[{i}].device_id")
            dev.append(d["device_id"])
        if d["meter_id"] and d["meter_id"] in taken_meters:
            fields.append(f"devices[{i}].meter_id")
            met.append(d["meter_id"])
    if not fields:
        return None
    named = [f"device_id {x!r}" for x in dev] + [f"meter_id {x!r}" for x in met]
    return AlreadyExists(
        f"already registered in this account, nothing was registered: {', '.join(named)} "
        f"({', '.join(fields)})",
        reason="DEVICE_ALREADY_EXISTS",
        metadata={
            "device_ids": ",".join(dev),
            "meter_ids": ",".join(met),
            "fields": ",".join(fields),
        },
    )


# -- use cases --------------------------------------------------------------------------


class DevicesService:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def register_devices(
        self,
        p: Principal,
        partition_id: str,
        batch: Sequence[DeviceInput],
        *,
        request_id: str = "",
    ) -> list[Any]:
        check_id("partition_id", partition_id)
        with self.deps.db.read() as uow:
            row = load_partition(uow.partitions, p, _CONTROL_ACTION, partition_id)
        require_open(partition_target(row))
        clean = validate_devices(batch, partition_id)

        def create(uow: UnitOfWork) -> dict[str, Any]:
            part = load_partition(
                uow.partitions, p, _CONTROL_ACTION, partition_id, for_update=True
            )
            ids = [d["device_id"] for d in clean if d["device_id"]]
            meters = [d["meter_id"] for d in clean if d["meter_id"]]
            account_id = part.account_id
            if err := taken_error(clean, *uow.devices.registered(account_id, ids, meters)):
                raise err
            # one microsecond apart, so that lists (create_time, then id) keep the batch's order
            now = now_us()
            rows = [
                dict(
                    d,
                    id=new_id(),
                    account_id=part.account_id,
                    partition_id=partition_id,
                    create_time=now + i,
                    update_time=now + i,
                    etag=new_etag(),
                )
                for i, d in enumerate(clean)
            ]
            with constraint_guard(
                uow,
                lambda: taken_error(clean, *uow.devices.registered(account_id, ids, meters)),
            ):
                uow.devices.insert(rows)
            for r in rows:
                uow.audit.record(
                    account_id=part.account_id,
                    actor_user_id=p.user_id,
                    action="device.register",
                    resource_type="Device",
                    resource_id=r["id"],
                    changed_fields=[k for k in ("device_id", "meter_id", "name") if r[k]],
                    request_id=request_id,
                )
            return {"ids": [r["id"] for r in rows]}

        def load(uow: UnitOfWork, ids: Any) -> list[Any]:
            return uow.devices.load(ids["ids"])

        out, _ = create_once(
            self.deps.db,
            p,
            "accounts.v1.PartitionService/RegisterDevices",
            request_id,
            fingerprint(partition_id, clean),
            create,
            load,
            keep=self.deps.settings.request_id_ttl,
        )
        return out

    def list_devices(
        self,
        p: Principal,
        *,
        partition_id: str = "",
        account_id: str = "",
        page_size: int = 0,
        page_token: str = "",
        filter: str = "",
        order_by: str = "",
    ) -> DevicePage:
        """One partition's devices, or (``account_id``) every device of an account the
        caller may reach."""
        with self.deps.db.read() as uow:
            scope: dict[str, Any]
            reachable_by: str | None = None
            if partition_id:
                check_id("partition_id", partition_id)
                row = load_partition(uow.partitions, p, PARTITION_ACTIONS[AssetAction.READ],
                                     partition_id)
                if account_id and account_id != row.account_id:
                    raise InvalidArgument.field(
                        "account_id", "is not the account of the partition; leave it empty"
                    )
                scope = {"partition_id": partition_id}
            elif account_id:
                t = common.require_account(uow.authority, p, policy.Action.ACCOUNT_READ,
                                           account_id)
                scope = {"account_id": account_id}
                if not access.reads_whole_account(p, t):
                    scope["reach"] = reachable_by = p.user_id
            else:
                raise InvalidArgument.field(
                    "partition_id",
                    "set partition_id (one partition) or account_id (a whole account)",
                    reason="PARENT_REQUIRED",
                )
            q = parse_list_request(
                uow.devices.list_shape,
                secret=self.deps.page_secret,
                page_size=page_size,
                page_token=page_token,
                filter=filter,
                order_by=order_by,
                scope=scope,
            )
            if partition_id:
                page = uow.devices.list_in_partition(partition_id, q)
            else:
                page = uow.devices.list_in_account(account_id, q, reachable_by=reachable_by)
        return DevicePage(
            list(page.rows), page.next_page_token, page.previous_page_token, page.total_size
        )
