"""Use cases for partitions: CreatePartition, GetPartition, ListPartitions,
UpdatePartition, DeletePartition. The devices in partitions (RegisterDevices,
ListDevices) are services/devices.py; loading a partition under the policy is
services/tenancy.py.

- A partition is a named scope inside an account (names unique per account).
- Deleting a partition that holds devices is FAILED_PRECONDITION unless ``force``,
  which deletes the devices and their permissions too; groups stop reaching it.
- Who reads: readers of the account see all partitions; a member sees those its groups
  reach (policy.PARTITION_READ).
- Writes into a closed account are FAILED_PRECONDITION (ACCOUNT_CLOSED).

The statements are ``uow.partitions``' (store/partitions.py) and, for what deleting a
partition changes in them, ``uow.devices``' and ``uow.groups``'.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from accounts_grpc.domain import policy
from accounts_grpc.domain.errors import AlreadyExists, FailedPrecondition
from accounts_grpc.domain.listing import parse_list_request
from accounts_grpc.domain.masks import resolve_mask
from accounts_grpc.domain.ports import ReadUnitOfWork, UnitOfWork
from accounts_grpc.domain.principal import Principal
from accounts_grpc.domain.validate import Validator, check_id, shorten
from accounts_grpc.services import common
from accounts_grpc.services.deps import Deps

# the PartitionService's inputs and rules, importable from here as before (rpc/convert,
# the unit tests); devices.py imports nothing from this module
from accounts_grpc.services.tenancy import (
    PARTITION,
    load_partition,
    partition_target,
    require_open,
)
from accounts_grpc.services.writes import (
    check_etag,
    conditional_update,
    constraint_guard,
    create_once,
    fingerprint,
    new_row,
)
from accounts_grpc.store.db import now_us

RESOURCE = PARTITION
INCLUDES = ("account",)

UPDATABLE = frozenset({"name", "description"})
OUTPUT_ONLY = frozenset({"account_id", "create_time", "update_time"})


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
class PartitionPage:
    partitions: list[Any]
    next_page_token: str
    previous_page_token: str
    total_size: int
    included_accounts: list[Any] = field(default_factory=list)


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

    @staticmethod
    def _taken(
        uow: ReadUnitOfWork, account_id: str, name: str, other_than: str = ""
    ) -> AlreadyExists | None:
        if uow.partitions.name_taken(account_id, name, other_than=other_than):
            return _name_taken(name)
        return None

    def create(
        self, p: Principal, account_id: str, inp: PartitionInput, *, request_id: str = ""
    ) -> Any:
        check_id("account_id", account_id)
        with self.deps.db.read() as uow:
            t = common.require_account(uow.authority, p, policy.Action.PARTITION_MANAGE,
                                       account_id)
        require_open(t)
        values = validate_partition(inp, UPDATABLE)
        fields = ["name"] + (["description"] if values["description"] else [])

        def create(uow: UnitOfWork) -> dict[str, Any]:
            if err := self._taken(uow, account_id, values["name"]):
                raise err
            row = new_row(account_id=account_id, **values)
            pid = row["id"]
            with constraint_guard(uow, lambda: self._taken(uow, account_id, values["name"])):
                uow.partitions.insert(row)
            uow.audit.record(
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
            return load_partition(uow.partitions, p, policy.Action.PARTITION_READ, ids["id"])

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
        with self.deps.db.read() as uow:
            return load_partition(uow.partitions, p, policy.Action.PARTITION_READ, partition_id)

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
        with self.deps.db.read() as uow:
            t = common.require_account(uow.authority, p, policy.Action.ACCOUNT_READ, account_id)
            everything = policy.allows(p, policy.Action.PARTITION_READ, t)
            scope: dict[str, Any] = {"account_id": account_id}
            if not everything:
                scope["reach"] = p.user_id
            q = parse_list_request(
                uow.partitions.list_shape,
                secret=self.deps.page_secret,
                page_size=page_size,
                page_token=page_token,
                filter=filter,
                order_by=order_by,
                scope=scope,
            )
            page = uow.partitions.list_in_account(
                account_id, q, reachable_by=None if everything else p.user_id
            )
            accounts = uow.accounts.by_ids([account_id]) if "account" in includes else []
        return PartitionPage(
            list(page.rows),
            page.next_page_token,
            page.previous_page_token,
            page.total_size,
            included_accounts=accounts,
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
            row = load_partition(
                uow.partitions, p, policy.Action.PARTITION_MANAGE, partition_id, for_update=True
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
                conditional_update(
                    uow.partitions.update_if_etag, partition_id, row.etag, values, RESOURCE
                )
            uow.audit.record(
                account_id=row.account_id,
                actor_user_id=p.user_id,
                action="partition.update",
                resource_type="Partition",
                resource_id=partition_id,
                changed_fields=paths,
            )
            out = uow.partitions.load(partition_id)
            uow.commit()
        return out

    def delete(
        self, p: Principal, partition_id: str, *, etag: str = "", force: bool = False
    ) -> None:
        check_id("id", partition_id)
        with self.deps.db.write() as uow:
            row = load_partition(
                uow.partitions, p, policy.Action.PARTITION_MANAGE, partition_id, for_update=True
            )
            check_etag(etag, row.etag, RESOURCE)
            device_pks = uow.devices.ids_in_partition(partition_id)
            if device_pks and not force:
                raise FailedPrecondition(
                    f"the partition still holds {len(device_pks)} device(s); delete with "
                    "force to delete them and their permissions too",
                    reason="PARTITION_HAS_DEVICES",
                    metadata={"device_count": str(len(device_pks))},
                )
            groups = uow.groups.reaching(partition_id)
            uow.partitions.delete(partition_id)
            now = now_us()
            for g in groups:  # the groups' partition_ids changed: new etag, and the log says so
                uow.groups.touch(g.id, now=now)
                uow.audit.record(
                    account_id=g.account_id,
                    actor_user_id=p.user_id,
                    action="user_group.update",
                    resource_type="UserGroup",
                    resource_id=g.id,
                    changed_fields=["partition_ids"],
                )
            for pk in device_pks:
                uow.audit.record(
                    account_id=row.account_id,
                    actor_user_id=p.user_id,
                    action="device.delete",
                    resource_type="Device",
                    resource_id=pk,
                )
            uow.audit.record(
                account_id=row.account_id,
                actor_user_id=p.user_id,
                action="partition.delete",
                resource_type="Partition",
                resource_id=partition_id,
                changed_fields=["devices"] if device_pks else [],
            )
            uow.commit()


def _name_taken(name: str) -> AlreadyExists:
    return AlreadyExists(
        f"the account already has a partition named {name!r}",
        reason="PARTITION_ALREADY_EXISTS",
        metadata={"name": name},
    )
