"""Use cases for partitions and their devices: every rule about them lives here.

- A partition is a named scope inside an account (names unique per account).
- A device has a ``device_id`` (exactly 8 characters) and/or a ``meter_id``; each is
  unique inside its account, not on the platform: a tenant's registry is its own (the
  same physical device may be registered by two customers, e.g. after a resale), and
  no answer to one tenant depends on another tenant's devices (no existence oracle).
  ``RegisterDevices`` is all or nothing: every bad item of the batch is named in one
  INVALID_ARGUMENT (``devices[3].device_id``, duplicates inside the batch too), and ids
  a device of the same account already has are one ALREADY_EXISTS naming all of them.
- Deleting a partition that holds devices is FAILED_PRECONDITION unless ``force``,
  which deletes the devices and their permissions too; groups stop reaching it.
- Who reads: readers of the account see all partitions and devices; a member sees
  those in the partitions its groups reach (policy.PARTITION_READ).
- Writes into a closed account are FAILED_PRECONDITION (ACCOUNT_CLOSED).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from accounts_grpc.domain import policy
from accounts_grpc.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    not_found,
)
from accounts_grpc.domain.listing import ListSpec, parse_list_request, run_list
from accounts_grpc.domain.masks import resolve_mask
from accounts_grpc.domain.principal import Principal
from accounts_grpc.domain.validate import Validator, check_id, shorten
from accounts_grpc.services import common
from accounts_grpc.services.deps import Deps
from accounts_grpc.services.writes import (
    check_etag,
    conditional_update,
    constraint_guard,
    create_once,
    fingerprint,
    new_row,
)
from accounts_grpc.store import audit
from accounts_grpc.store import groups as group_repo
from accounts_grpc.store import partitions as repo
from accounts_grpc.store.db import UnitOfWork, new_etag, new_id, now_us
from accounts_grpc.store.tables import accounts, devices, partitions, user_groups

RESOURCE = "partition"
MAX_DEVICES_PER_CALL = 1000
MAX_METER_ID = 200
INCLUDES = ("account",)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

UPDATABLE = frozenset({"name", "description"})
OUTPUT_ONLY = frozenset({"account_id", "create_time", "update_time"})

PARTITIONS = ListSpec(
    resource="partitions",
    id_column=partitions.c.id,
    orderable={
        "name": partitions.c.name,
        "create_time": partitions.c.create_time,
        "update_time": partitions.c.update_time,
    },
    searchable=(partitions.c.name, partitions.c.description),
)
_DEVICE_ID = sa.func.coalesce(devices.c.device_id, "")
_METER_ID = sa.func.coalesce(devices.c.meter_id, "")
DEVICES = ListSpec(
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


@dataclass(frozen=True)
class PartitionInput:
    """A Partition as sent: the settable fields, plus the output-only ones a client may
    send back unchanged (times in microseconds, None when unset)."""

    name: str = ""
    description: str = ""
    etag: str = ""
    account_id: str = ""
    create_time: int | None = None
    update_time: int | None = None


@dataclass(frozen=True)
class DeviceInput:
    device_id: str = ""
    meter_id: str = ""
    name: str = ""
    partition_id: str = ""  # output-only; if sent it must be the request's partition


@dataclass(frozen=True)
class PartitionPage:
    partitions: list[Any]
    next_page_token: str
    previous_page_token: str
    total_size: int
    included_accounts: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class DevicePage:
    devices: list[Any]
    next_page_token: str
    previous_page_token: str
    total_size: int


# -- helpers shared with services/groups.py ----------------------------------------------


def require_open(t: policy.Target) -> None:
    """Writes into a closed account (a tombstone) are FAILED_PRECONDITION."""
    if t.account_closed:
        raise FailedPrecondition(
            "the account is closed", reason="ACCOUNT_CLOSED", metadata={"account_id": t.account_id}
        )


def load_accounts(conn: sa.Connection, account_ids: Iterable[str]) -> list[Any]:
    """Account rows, once each, in the order first named."""
    ids = list(dict.fromkeys(account_ids))
    if not ids:
        return []
    by_id = {r.id: r for r in conn.execute(sa.select(accounts).where(accounts.c.id.in_(ids)))}
    return [by_id[i] for i in ids if i in by_id]


def partition_target(row: Any) -> policy.Target:
    return policy.Target(
        account_id=row.account_id,
        consultancy_account_id=row.consultancy_account_id,
        account_closed=bool(row.account_closed),
        partition_id=row.id,
    )


# -- pure rules (unit-tested) -----------------------------------------------------------


def validate_partition(p: PartitionInput, paths: Iterable[str]) -> dict[str, Any]:
    v = Validator()
    values: dict[str, Any] = {}
    paths = set(paths)
    if "name" in paths:
        values["name"] = v.name(f"{RESOURCE}.name", p.name)
    if "description" in paths:
        values["description"] = v.text(f"{RESOURCE}.description", p.description)
    v.raise_if_any()
    return values


def unchanged_fields(inp: PartitionInput, row: Any) -> list[str]:
    """Fields whose sent value equals the stored one: no change is asked of them, so a
    client may send back the partition it read with a few fields edited (masks.py)."""
    return [
        f
        for f in ("name", "description", "account_id", "create_time", "update_time")
        if getattr(inp, f) == getattr(row, f)
    ]


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
    has (``taken_*`` come from ``repo.registered``, which sees that account only)."""
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


def validate_include(include: Sequence[str]) -> frozenset[str]:
    v = Validator()
    for i, x in enumerate(include):
        if x not in INCLUDES:
            v.add(f"include[{i}]", f"unknown value {shorten(x)!r}; the only value is 'account'")
    v.raise_if_any(reason="INVALID_INCLUDE")
    return frozenset(include)


# -- use cases --------------------------------------------------------------------------


class PartitionsService:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def _load(
        self,
        conn: sa.Connection,
        p: Principal,
        action: policy.Action,
        partition_id: str,
        *,
        for_update: bool = False,
    ) -> Any:
        row = repo.load(conn, partition_id, for_update=for_update)
        if row is None:
            raise not_found(RESOURCE, "id", partition_id)
        policy.require(p, action, partition_target(row), what=RESOURCE, key=partition_id)
        return row

    @staticmethod
    def _taken(
        uow: UnitOfWork, account_id: str, name: str, other_than: str = ""
    ) -> AlreadyExists | None:
        if repo.name_taken(uow.conn, account_id, name, other_than=other_than):
            return _name_taken(name)
        return None

    # partitions ------------------------------------------------------------------------
    def create(
        self, p: Principal, account_id: str, inp: PartitionInput, *, request_id: str = ""
    ) -> Any:
        check_id("account_id", account_id)
        with self.deps.db.connect() as conn:
            t = common.require_account(conn, p, policy.Action.PARTITION_MANAGE, account_id)
        require_open(t)
        values = validate_partition(inp, UPDATABLE)
        fields = ["name"] + (["description"] if values["description"] else [])

        def create(uow: UnitOfWork) -> dict[str, Any]:
            if err := self._taken(uow, account_id, values["name"]):
                raise err
            row = new_row(account_id=account_id, **values)
            pid = row["id"]
            with constraint_guard(uow, lambda: self._taken(uow, account_id, values["name"])):
                repo.insert(uow.conn, row)
            audit.record(
                uow,
                account_id=account_id,
                actor_user_id=p.user_id,
                action="partition.create",
                resource_type="Partition",
                resource_id=pid,
                changed_fields=fields,
                request_id=request_id,
            )
            return {"id": pid}

        def load(uow: UnitOfWork, ids: Any) -> Any:
            return self._load(uow.conn, p, policy.Action.PARTITION_READ, ids["id"])

        row, _ = create_once(
            self.deps.db,
            p,
            "accounts.v1.PartitionService/CreatePartition",
            request_id,
            fingerprint(account_id, values),
            create,
            load,
            keep=self.deps.settings.request_id_ttl,
        )
        return row

    def get(self, p: Principal, partition_id: str) -> Any:
        check_id("id", partition_id)
        with self.deps.db.connect() as conn:
            return self._load(conn, p, policy.Action.PARTITION_READ, partition_id)

    def list_partitions(
        self,
        p: Principal,
        account_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        filter: str = "",
        order_by: str = "",
        include: Sequence[str] = (),
    ) -> PartitionPage:
        """The account's partitions the caller may reach; ``include: ["account"]`` adds the
        owning account to ``included_accounts``."""
        includes = validate_include(include)
        with self.deps.db.connect() as conn:
            t = common.require_account(conn, p, policy.Action.ACCOUNT_READ, account_id)
            everything = policy.allows(p, policy.Action.PARTITION_READ, t)
            scope: dict[str, Any] = {"account_id": account_id}
            base = sa.select(partitions).where(partitions.c.account_id == account_id)
            if not everything:
                scope["reach"] = p.user_id
                base = base.where(
                    partitions.c.id.in_(group_repo.reachable_partition_ids(p.user_id))
                )
            q = parse_list_request(
                PARTITIONS,
                secret=self.deps.page_secret,
                page_size=page_size,
                page_token=page_token,
                filter=filter,
                order_by=order_by,
                scope=scope,
            )
            page = run_list(conn, PARTITIONS, q, base)
            included = load_accounts(conn, [account_id]) if "account" in includes else []
        return PartitionPage(
            list(page.rows),
            page.next_page_token,
            page.previous_page_token,
            page.total_size,
            included_accounts=included,
        )

    def update(
        self,
        p: Principal,
        partition_id: str,
        inp: PartitionInput,
        *,
        mask_paths: Sequence[str] = (),
        populated: Iterable[str] = (),
    ) -> Any:
        check_id(f"{RESOURCE}.id", partition_id)
        with self.deps.db.write() as uow:
            row = self._load(
                uow.conn, p, policy.Action.PARTITION_MANAGE, partition_id, for_update=True
            )
            require_open(partition_target(row))
            check_etag(inp.etag, row.etag, RESOURCE)
            paths = resolve_mask(
                RESOURCE,
                mask_paths,
                populated,
                updatable=UPDATABLE,
                output_only=OUTPUT_ONLY,
                unchanged=unchanged_fields(inp, row),
            )
            values = validate_partition(inp, paths)
            if not paths:
                return row
            name = values.get("name")
            if name and (err := self._taken(uow, row.account_id, name, partition_id)):
                raise err
            with constraint_guard(
                uow, lambda: self._taken(uow, row.account_id, name, partition_id) if name else None
            ):
                conditional_update(uow, partitions, partition_id, row.etag, values, RESOURCE)
            audit.record(
                uow,
                account_id=row.account_id,
                actor_user_id=p.user_id,
                action="partition.update",
                resource_type="Partition",
                resource_id=partition_id,
                changed_fields=paths,
            )
            out = repo.load(uow.conn, partition_id)
            uow.commit()
        return out

    def delete(
        self, p: Principal, partition_id: str, *, etag: str = "", force: bool = False
    ) -> None:
        check_id("id", partition_id)
        with self.deps.db.write() as uow:
            row = self._load(
                uow.conn, p, policy.Action.PARTITION_MANAGE, partition_id, for_update=True
            )
            check_etag(etag, row.etag, RESOURCE)
            device_pks = repo.device_ids_in(uow.conn, partition_id)
            if device_pks and not force:
                raise FailedPrecondition(
                    f"the partition still holds {len(device_pks)} device(s); delete with "
                    "force to delete them and their permissions too",
                    reason="PARTITION_HAS_DEVICES",
                    metadata={"device_count": str(len(device_pks))},
                )
            groups = group_repo.groups_reaching(uow.conn, partition_id)
            repo.delete(uow.conn, partition_id)
            now = now_us()
            for g in groups:  # the groups' partition_ids changed: new etag, and the log says so
                uow.conn.execute(
                    user_groups.update()
                    .where(user_groups.c.id == g.id)
                    .values(update_time=now, etag=new_etag())
                )
                audit.record(
                    uow,
                    account_id=g.account_id,
                    actor_user_id=p.user_id,
                    action="user_group.update",
                    resource_type="UserGroup",
                    resource_id=g.id,
                    changed_fields=["partition_ids"],
                )
            for pk in device_pks:
                audit.record(
                    uow,
                    account_id=row.account_id,
                    actor_user_id=p.user_id,
                    action="device.delete",
                    resource_type="Device",
                    resource_id=pk,
                )
            audit.record(
                uow,
                account_id=row.account_id,
                actor_user_id=p.user_id,
                action="partition.delete",
                resource_type="Partition",
                resource_id=partition_id,
                changed_fields=["devices"] if device_pks else [],
            )
            uow.commit()

    # devices ---------------------------------------------------------------------------
    def register_devices(
        self,
        p: Principal,
        partition_id: str,
        batch: Sequence[DeviceInput],
        *,
        request_id: str = "",
    ) -> list[Any]:
        check_id("partition_id", partition_id)
        with self.deps.db.connect() as conn:
            row = self._load(conn, p, policy.Action.PARTITION_MANAGE, partition_id)
        require_open(partition_target(row))
        clean = validate_devices(batch, partition_id)

        def create(uow: UnitOfWork) -> dict[str, Any]:
            part = self._load(
                uow.conn, p, policy.Action.PARTITION_MANAGE, partition_id, for_update=True
            )
            ids = [d["device_id"] for d in clean if d["device_id"]]
            meters = [d["meter_id"] for d in clean if d["meter_id"]]
            account_id = part.account_id
            if err := taken_error(clean, *repo.registered(uow.conn, account_id, ids, meters)):
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
                lambda: taken_error(clean, *repo.registered(uow.conn, account_id, ids, meters)),
            ):
                repo.insert_devices(uow.conn, rows)
            for r in rows:
                audit.record(
                    uow,
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
            return repo.load_devices(uow.conn, ids["ids"])

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
        with self.deps.db.connect() as conn:
            scope: dict[str, Any]
            if partition_id:
                check_id("partition_id", partition_id)
                row = self._load(conn, p, policy.Action.PARTITION_READ, partition_id)
                if account_id and account_id != row.account_id:
                    raise InvalidArgument.field(
                        "account_id", "is not the account of the partition; leave it empty"
                    )
                scope = {"partition_id": partition_id}
                base = sa.select(devices).where(devices.c.partition_id == partition_id)
            elif account_id:
                t = common.require_account(conn, p, policy.Action.ACCOUNT_READ, account_id)
                scope = {"account_id": account_id}
                base = sa.select(devices).where(devices.c.account_id == account_id)
                if not policy.allows(p, policy.Action.PARTITION_READ, t):
                    scope["reach"] = p.user_id
                    base = base.where(
                        devices.c.partition_id.in_(group_repo.reachable_partition_ids(p.user_id))
                    )
            else:
                raise InvalidArgument.field(
                    "partition_id",
                    "set partition_id (one partition) or account_id (a whole account)",
                    reason="PARENT_REQUIRED",
                )
            q = parse_list_request(
                DEVICES,
                secret=self.deps.page_secret,
                page_size=page_size,
                page_token=page_token,
                filter=filter,
                order_by=order_by,
                scope=scope,
            )
            page = run_list(conn, DEVICES, q, base)
        return DevicePage(
            list(page.rows), page.next_page_token, page.previous_page_token, page.total_size
        )


def _name_taken(name: str) -> AlreadyExists:
    return AlreadyExists(
        f"the account already has a partition named {name!r}",
        reason="PARTITION_ALREADY_EXISTS",
        metadata={"name": name},
    )
