"""Repository for partitions (``uow.partitions``): rows with their account's scope,
names, the list, deletion.

SQLAlchemy Core on the connection of the unit of work; no rules here (who may read or
manage a partition, what deleting one takes with it, audit: services/partitions.py),
only the statements. The devices in partitions are in store/devices.py.

- ``load`` (a partition with what the policy needs of its account), ``load_many``,
  ``name_taken``, ``insert``, ``update_if_etag`` (the etag-conditional UPDATE),
  ``delete`` (with its devices, their permissions and the groups' links to it).
- ``PARTITIONS_LIST`` and ``list_in_account``: ListPartitions, all of an account's
  partitions or those the groups of a user reach.

Statements are module constants with bind parameters, built and compiled once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from accounts_grpc.domain.listing import ListQuery, Page
from accounts_grpc.store import conflicts
from accounts_grpc.store.groups import REACHABLE_PARTITION_IDS
from accounts_grpc.store.listing import ListSpec, run_list
from accounts_grpc.store.rows import Repository
from accounts_grpc.store.tables import (
    accounts,
    device_permissions,
    devices,
    group_partitions,
    partitions,
)

__all__ = ["PARTITIONS_LIST", "PARTITION_WITH_ACCOUNT", "Partitions"]

#: a partition with what the policy needs to know about its account
PARTITION_WITH_ACCOUNT = sa.select(
    partitions,
    accounts.c.consultancy_account_id,
    accounts.c.closed.label("account_closed"),
).select_from(partitions.join(accounts, accounts.c.id == partitions.c.account_id))

_BY_ID = PARTITION_WITH_ACCOUNT.where(partitions.c.id == sa.bindparam("pid"))
_BY_ID_LOCKED = _BY_ID.with_for_update(of=partitions)

_MANY = (
    sa.select(partitions)
    .where(partitions.c.id.in_(sa.bindparam("ids", expanding=True)))
    .order_by(partitions.c.id)
)

_NAMED = sa.select(partitions.c.id).where(
    partitions.c.account_id == sa.bindparam("aid"), partitions.c.name == sa.bindparam("pname")
)
_NAME_TAKEN = _NAMED.limit(1)
_NAME_TAKEN_BY_OTHER = _NAMED.where(partitions.c.id != sa.bindparam("other")).limit(1)

#: ListPartitions: by name or times; ``filter`` searches the name and the description.
PARTITIONS_LIST = ListSpec(
    resource="partitions",
    id_column=partitions.c.id,
    orderable={
        "name": partitions.c.name,
        "create_time": partitions.c.create_time,
        "update_time": partitions.c.update_time,
    },
    searchable=(partitions.c.name, partitions.c.description),
)
_IN_ACCOUNT = sa.select(partitions).where(partitions.c.account_id == sa.bindparam("aid"))
_IN_ACCOUNT_REACHED = _IN_ACCOUNT.where(partitions.c.id.in_(REACHABLE_PARTITION_IDS))


class Partitions(Repository):
    """The partitions of every account (see the module docstring)."""

    __slots__ = ()

    #: what ListPartitions may be ordered by and searched in
    list_shape = PARTITIONS_LIST

    def load(self, partition_id: str, *, for_update: bool = False) -> Any | None:
        """The partition row with its account's ``consultancy_account_id`` and
        ``account_closed``, or None. ``for_update`` locks the partition row (PostgreSQL;
        SQLite writers hold the database lock anyway)."""
        stmt = _BY_ID_LOCKED if for_update else _BY_ID
        return self.conn.execute(stmt, {"pid": partition_id}).first()

    def load_many(self, partition_ids: Iterable[str]) -> list[Any]:
        """Partition rows (every column) by id, ordered by id; missing ones skipped."""
        ids = list(dict.fromkeys(partition_ids))
        if not ids:
            return []
        return list(self.conn.execute(_MANY, {"ids": ids}))

    def name_taken(self, account_id: str, name: str, *, other_than: str = "") -> bool:
        """Whether a partition of the account (other than ``other_than``) is named
        ``name``."""
        if other_than:
            params = {"aid": account_id, "pname": name, "other": other_than}
            return self.conn.execute(_NAME_TAKEN_BY_OTHER, params).first() is not None
        params = {"aid": account_id, "pname": name}
        return self.conn.execute(_NAME_TAKEN, params).first() is not None

    def insert(self, values: Mapping[str, Any]) -> None:
        self.conn.execute(partitions.insert().values(**values))

    def update_if_etag(
        self, partition_id: str, old_etag: str, values: Mapping[str, Any]
    ) -> bool:
        """Write ``values`` to the partition ``partition_id`` if its etag is still
        ``old_etag``; False (nothing written) if a concurrent writer changed it first, or
        it is gone (store/conflicts.update_if_etag, run by
        services/writes.conditional_update)."""
        return conflicts.update_if_etag(self.conn, partitions, partition_id, old_etag, values)

    def delete(self, partition_id: str) -> None:
        """The partition with its devices, their permissions and the groups' links to it."""
        device_pks = sa.select(devices.c.id).where(devices.c.partition_id == partition_id)
        for stmt in (
            device_permissions.delete().where(device_permissions.c.device_pk.in_(device_pks)),
            devices.delete().where(devices.c.partition_id == partition_id),
            group_partitions.delete().where(group_partitions.c.partition_id == partition_id),
            partitions.delete().where(partitions.c.id == partition_id),
        ):
            self.conn.execute(stmt)

    def list_in_account(
        self, account_id: str, query: ListQuery, *, reachable_by: str | None = None
    ) -> Page:
        """One page (``query``, parsed against ``PARTITIONS_LIST``) of the account's
        partitions; with ``reachable_by`` (a user id) only those the user's groups reach."""
        if reachable_by is None:
            return run_list(self.conn, PARTITIONS_LIST, query, _IN_ACCOUNT,
                            params={"aid": account_id})
        return run_list(self.conn, PARTITIONS_LIST, query, _IN_ACCOUNT_REACHED,
                        params={"aid": account_id, "uid": reachable_by})
