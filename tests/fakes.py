"""An in-memory unit of work for testing the rules of the use cases without a database
(cosmicpython's FakeUnitOfWork). Helpers only, no tests here.

``FakeDatabase`` stands where store/db.py's ``Database`` does (``Deps.db``):
``write()`` works on a copy of its tables that ``commit()`` keeps, so a use case that
raises half-way leaves nothing behind, as a rolled-back transaction; ``read()`` works on
the tables themselves and refuses any write (a write through a read unit of work is a
bug). The repositories implement domain/ports.py's protocols, only those the unit tests
need, and only the methods those use cases call. Rows are ``Row`` (attributes, like the
store's rows); those the store joins with their account's scope carry
``consultancy_account_id`` and ``account_closed`` here too.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace as Row
from types import TracebackType
from typing import Any

from accounts_grpc.store.db import new_etag, new_id, now_us

_ids = itertools.count(1)


@dataclass
class Tables:
    """Every row the fakes hold, by primary key (``members`` and ``reach``: group id to
    user ids in the order they joined, to partition ids)."""

    accounts: dict[str, Row] = field(default_factory=dict)
    users: dict[str, Row] = field(default_factory=dict)
    groups: dict[str, Row] = field(default_factory=dict)
    members: dict[str, list[str]] = field(default_factory=dict)
    reach: dict[str, list[str]] = field(default_factory=dict)
    partitions: dict[str, Row] = field(default_factory=dict)
    devices: dict[str, Row] = field(default_factory=dict)
    permissions: dict[str, Row] = field(default_factory=dict)
    request_ids: dict[str, Row] = field(default_factory=dict)
    audit: list[Row] = field(default_factory=list)


class _Repository:
    def __init__(self, t: Tables, writable: bool) -> None:
        self.t = t
        self._writable = writable

    def _write(self) -> None:
        assert self._writable, "a write through a read unit of work"

    def _scoped(self, row: Row) -> Row:
        """``row`` with its account's scope, as the store joins it."""
        account = self.t.accounts[row.account_id]
        return Row(**vars(row), consultancy_account_id=account.consultancy_account_id,
                   account_closed=account.closed)

    def _update(self, rows: Mapping[str, Row], row_id: str, old_etag: str,
                values: Mapping[str, Any]) -> bool:
        self._write()
        row = rows.get(row_id)
        if row is None or row.etag != old_etag:
            return False
        vars(row).update(values)
        return True


class FakeAuthority(_Repository):
    def account_scope(self, account_id: str) -> Row | None:
        return self.t.accounts.get(account_id)

    def user_by_id(self, user_id: str) -> Row | None:
        user = self.t.users.get(user_id)
        return None if user is None else self._scoped(user)

    def group_roles(self, user_id: str) -> list[Any]:
        return [g.roles for gid, g in self.t.groups.items()
                if user_id in self.t.members.get(gid, [])]


class FakeUsers(_Repository):
    def delete_cascade(self, user_id: str) -> dict[str, int]:
        self._write()
        counts = {"memberships": 0, "device_permissions": 0, "sessions": 0, "orders": 0}
        for members in self.t.members.values():
            if user_id in members:
                members.remove(user_id)
                counts["memberships"] += 1
        for pid, perm in list(self.t.permissions.items()):
            if perm.user_id == user_id:
                del self.t.permissions[pid]
                counts["device_permissions"] += 1
        del self.t.users[user_id]
        return counts


class FakeGroups(_Repository):
    def load(self, group_id: str, *, for_update: bool = False) -> Row | None:
        group = self.t.groups.get(group_id)
        return None if group is None else self._scoped(group)

    def members_of(self, group_ids: Collection[str]) -> dict[str, list[str]]:
        return {g: list(self.t.members.get(g, [])) for g in group_ids}

    def partitions_of(self, group_ids: Collection[str]) -> dict[str, list[str]]:
        return {g: sorted(self.t.reach.get(g, [])) for g in group_ids}

    def users_in_account(self, account_id: str, user_ids: Iterable[str]) -> set[str]:
        return {u for u in user_ids if u in self.t.users
                and self.t.users[u].account_id == account_id}

    def update_if_etag(self, group_id: str, old_etag: str, values: Mapping[str, Any]) -> bool:
        return self._update(self.t.groups, group_id, old_etag, values)

    def add_members(self, group_id: str, user_ids: Sequence[str]) -> list[str]:
        self._write()
        members = self.t.members.setdefault(group_id, [])
        new = [u for u in user_ids if u not in members]
        members.extend(new)
        return new


class FakePartitions(_Repository):
    def load(self, partition_id: str, *, for_update: bool = False) -> Row | None:
        part = self.t.partitions.get(partition_id)
        return None if part is None else self._scoped(part)

    def name_taken(self, account_id: str, name: str, *, other_than: str = "") -> bool:
        return any(p.account_id == account_id and p.name == name and p.id != other_than
                   for p in self.t.partitions.values())

    def insert(self, values: Mapping[str, Any]) -> None:
        self._write()
        self.t.partitions[values["id"]] = Row(**values)


class FakeDevices(_Repository):
    def in_account(self, account_id: str, device_ids: Iterable[str],
                   meter_ids: Iterable[str]) -> list[Row]:
        dids, mids = set(device_ids), set(meter_ids)
        return [d for d in self.t.devices.values() if d.account_id == account_id
                and (d.device_id in dids or d.meter_id in mids)]


class FakeDevicePermissions(_Repository):
    def of_user(self, user_id: str, device_pks: Sequence[str]) -> dict[str, Row]:
        return {p.device_pk: p for p in self.t.permissions.values()
                if p.user_id == user_id and p.device_pk in device_pks}

    def insert(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self._write()
        for r in rows:
            self.t.permissions[r["id"]] = Row(**r)

    def update_if_etag(self, permission_id: str, old_etag: str,
                       values: Mapping[str, Any]) -> bool:
        return self._update(self.t.permissions, permission_id, old_etag, values)


class FakeIdempotencyKeys(_Repository):
    def find(self, key: str) -> Row | None:
        return self.t.request_ids.get(key)

    def forget(self, key: str) -> None:
        self._write()
        del self.t.request_ids[key]

    def claim(self, key: str, *, method: str, fingerprint: str, now: int,
              raise_if_taken: bool = False) -> bool:
        self._write()
        self.t.request_ids[key] = Row(fingerprint=fingerprint, result={}, create_time=now)
        return True

    def record_result(self, key: str, result: Mapping[str, Any]) -> None:
        self._write()
        self.t.request_ids[key].result = dict(result)

    def prune(self, *, older_than: int, limit: int) -> int:
        self._write()
        return 0


class FakeConflicts(_Repository):
    """No concurrent writer in memory: nothing is ever lost to one."""

    @contextmanager
    def savepoint(self, on_conflict: Callable[[], BaseException]) -> Iterator[None]:
        yield

    @contextmanager
    def unique_violations_as(self, error: Callable[[], BaseException]) -> Iterator[None]:
        yield


class FakeAuditLog(_Repository):
    def record(self, *, account_id: str, actor_user_id: str | None, action: str,
               resource_type: str, resource_id: str, changed_fields: Iterable[str] = (),
               request_id: str = "", revocation: Mapping[str, Any] | None = None,
               delegation: tuple[str, str] | None = None) -> str:
        self._write()
        event_id = new_id()
        self.t.audit.append(Row(id=event_id, account_id=account_id, action=action,
                                resource_id=resource_id, changed_fields=sorted(changed_fields)))
        return event_id


class FakeReadUnitOfWork:
    def __init__(self, tables: Tables, *, writable: bool = False) -> None:
        self.tables = tables
        self.authority = FakeAuthority(tables, writable)
        self.users = FakeUsers(tables, writable)
        self.groups = FakeGroups(tables, writable)
        self.partitions = FakePartitions(tables, writable)
        self.devices = FakeDevices(tables, writable)
        self.device_permissions = FakeDevicePermissions(tables, writable)
        self.idempotency = FakeIdempotencyKeys(tables, writable)
        self.conflicts = FakeConflicts(tables, writable)
        self.audit = FakeAuditLog(tables, writable)

    def __enter__(self) -> FakeReadUnitOfWork:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None


class FakeUnitOfWork(FakeReadUnitOfWork):
    def __init__(self, db: FakeDatabase) -> None:
        super().__init__(copy.deepcopy(db.tables), writable=True)
        self._db = db

    def __enter__(self) -> FakeUnitOfWork:
        return self

    def commit(self) -> None:
        self._db.tables = self.tables
        self._db.commits += 1


class FakeDatabase:
    """``Deps.db`` for the fakes: its ``tables`` are what has been committed."""

    def __init__(self) -> None:
        self.tables = Tables()
        self.commits = 0

    def write(self) -> FakeUnitOfWork:
        return FakeUnitOfWork(self)

    def read(self, *, single_statement: bool = False) -> FakeReadUnitOfWork:
        return FakeReadUnitOfWork(self.tables)

    # -- rows a test starts from ---------------------------------------------------------

    def _row(self, table: dict[str, Row], **values: Any) -> Row:
        now = now_us()
        row = Row(id=new_id(), create_time=now, update_time=now, etag=new_etag(), **values)
        table[row.id] = row
        return row

    def add_account(self, *, consultancy_account_id: str | None = None) -> Row:
        n = next(_ids)
        return self._row(self.tables.accounts, name=f"account {n}", roles=[], closed=False,
                         consultancy_account_id=consultancy_account_id)

    def add_user(self, account: Row, *, kind: str = "HUMAN",
                 roles: Sequence[str] = ("member",)) -> Row:
        return self._row(self.tables.users, account_id=account.id, kind=kind,
                         roles=list(roles), external_id=None, client_id=None)

    def add_group(self, account: Row, *, roles: Sequence[str] = (),
                  members: Sequence[Row] = ()) -> Row:
        n = next(_ids)
        group = self._row(self.tables.groups, account_id=account.id, name=f"group {n}",
                          description="", roles=list(roles))
        self.tables.members[group.id] = [u.id for u in members]
        return group

    def add_device(self, account: Row, device_id: str) -> Row:
        return self._row(self.tables.devices, account_id=account.id, partition_id=new_id(),
                         device_id=device_id, meter_id=None, name=device_id)
