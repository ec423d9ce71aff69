"""Repository for user groups (``uow.groups``): rows with their account's scope, their
members and the partitions they reach, and their lists.

SQLAlchemy Core on the connection of the unit of work; no rules here (who may read or
change a group, who may grant which role, audit: services/groups.py and
services/memberships.py), only the statements:

- ``load`` (a group with what the policy needs of its account), ``name_taken``,
  ``insert``, ``update_if_etag`` (the etag-conditional UPDATE), ``touch``, ``delete``;
  ``members_of`` and ``partitions_of`` (what a group's view shows), ``set_partitions``,
  ``add_members``, ``remove_members``;
  ``partitions_in_account`` and ``users_in_account`` (which ids a group may name).
- ``reaching`` a partition; ``MEMBER_GROUP_IDS`` and ``REACHABLE_PARTITION_IDS``,
  subqueries (bind parameter ``uid``) of a user's groups and of the partitions they
  reach, which scope the lists of a member that is not a reader of its account.
- ``GROUPS_LIST`` with ``list_in_account`` (ListUserGroups), ``MY_GROUPS_LIST`` with
  ``list_of_member`` (ListMyUserGroups).

Point reads and list bases are module constants with bind parameters, built and
compiled once.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from accounts_grpc.domain.listing import ListQuery, Page
from accounts_grpc.store import conflicts
from accounts_grpc.store.listing import ListSpec, run_list
from accounts_grpc.store.rows import Repository, new_etag, now_us
from accounts_grpc.store.tables import (
    accounts,
    group_members,
    group_partitions,
    partitions,
    user_groups,
    users,
)

__all__ = [
    "GROUPS_LIST",
    "GROUP_WITH_ACCOUNT",
    "MEMBER_GROUP_IDS",
    "MY_GROUPS_LIST",
    "REACHABLE_PARTITION_IDS",
    "Groups",
]

#: a group with what the policy needs to know about its account
GROUP_WITH_ACCOUNT = sa.select(
    user_groups,
    accounts.c.consultancy_account_id,
    accounts.c.closed.label("account_closed"),
).select_from(user_groups.join(accounts, accounts.c.id == user_groups.c.account_id))

_BY_ID = GROUP_WITH_ACCOUNT.where(user_groups.c.id == sa.bindparam("gid"))
_BY_ID_LOCKED = _BY_ID.with_for_update(of=user_groups)

_NAMED = sa.select(user_groups.c.id).where(
    user_groups.c.account_id == sa.bindparam("aid"), user_groups.c.name == sa.bindparam("gname")
)
_NAME_TAKEN = _NAMED.limit(1)
_NAME_TAKEN_BY_OTHER = _NAMED.where(user_groups.c.id != sa.bindparam("other")).limit(1)

_MEMBERS_OF = (
    sa.select(group_members.c.group_id, group_members.c.user_id)
    .where(group_members.c.group_id.in_(sa.bindparam("ids", expanding=True)))
    .order_by(group_members.c.create_time, group_members.c.user_id)
)
_PARTITIONS_OF = (
    sa.select(group_partitions.c.group_id, group_partitions.c.partition_id)
    .where(group_partitions.c.group_id.in_(sa.bindparam("ids", expanding=True)))
    .order_by(group_partitions.c.partition_id)
)
_MEMBERS_AMONG = sa.select(group_members.c.user_id).where(
    group_members.c.group_id == sa.bindparam("gid"),
    group_members.c.user_id.in_(sa.bindparam("ids", expanding=True)),
)
_PARTITIONS_IN_ACCOUNT = sa.select(partitions.c.id).where(
    partitions.c.account_id == sa.bindparam("aid"),
    partitions.c.id.in_(sa.bindparam("ids", expanding=True)),
)
_USERS_IN_ACCOUNT = sa.select(users.c.id).where(
    users.c.account_id == sa.bindparam("aid"),
    users.c.id.in_(sa.bindparam("ids", expanding=True)),
)
_TOUCH = (
    user_groups.update()
    .where(user_groups.c.id == sa.bindparam("gid"))
    .values(update_time=sa.bindparam("now"), etag=sa.bindparam("new_etag"))
)
_REACHING = (
    sa.select(user_groups.c.id, user_groups.c.account_id)
    .select_from(
        group_partitions.join(user_groups, user_groups.c.id == group_partitions.c.group_id)
    )
    .where(group_partitions.c.partition_id == sa.bindparam("pid"))
    .order_by(user_groups.c.id)
)

#: subquery: ids of the groups the user ``uid`` is a member of
MEMBER_GROUP_IDS = sa.select(group_members.c.group_id).where(
    group_members.c.user_id == sa.bindparam("uid")
)

#: subquery: ids of the partitions the groups of the user ``uid`` reach
REACHABLE_PARTITION_IDS = (
    sa.select(group_partitions.c.partition_id)
    .select_from(
        group_partitions.join(
            group_members, group_members.c.group_id == group_partitions.c.group_id
        )
    )
    .where(group_members.c.user_id == sa.bindparam("uid"))
)

#: ListUserGroups: by name or times; ``filter`` searches the name and the description.
GROUPS_LIST = ListSpec(
    resource="user_groups",
    id_column=user_groups.c.id,
    orderable={
        "name": user_groups.c.name,
        "create_time": user_groups.c.create_time,
        "update_time": user_groups.c.update_time,
    },
    searchable=(user_groups.c.name, user_groups.c.description),
)
_IN_ACCOUNT = sa.select(user_groups).where(user_groups.c.account_id == sa.bindparam("aid"))
_IN_ACCOUNT_OF_MEMBER = _IN_ACCOUNT.where(user_groups.c.id.in_(MEMBER_GROUP_IDS))

#: ListMyUserGroups: in the order the groups were created; no ``filter``.
MY_GROUPS_LIST = ListSpec(
    resource="my_user_groups",
    id_column=user_groups.c.id,
    orderable={"create_time": user_groups.c.create_time},
    searchable=(),
)
_OF_MEMBER = sa.select(user_groups).where(user_groups.c.id.in_(MEMBER_GROUP_IDS))


class Groups(Repository):
    """User groups, their memberships and the partitions they reach (see the module
    docstring)."""

    __slots__ = ()

    #: ListUserGroups' and ListMyUserGroups' shapes
    list_shape = GROUPS_LIST
    mine_list_shape = MY_GROUPS_LIST

    def load(self, group_id: str, *, for_update: bool = False) -> Any | None:
        """The group row joined with its account's scope, or None.

        ``for_update`` locks the group row (PostgreSQL; SQLite writers hold the database
        lock anyway) so that membership changes of one group are serialized.
        """
        stmt = _BY_ID_LOCKED if for_update else _BY_ID
        return self.conn.execute(stmt, {"gid": group_id}).first()

    def name_taken(self, account_id: str, name: str, *, other_than: str = "") -> bool:
        """Whether a group of the account (other than ``other_than``) is named ``name``."""
        if other_than:
            params = {"aid": account_id, "gname": name, "other": other_than}
            return self.conn.execute(_NAME_TAKEN_BY_OTHER, params).first() is not None
        params = {"aid": account_id, "gname": name}
        return self.conn.execute(_NAME_TAKEN, params).first() is not None

    def members_of(self, group_ids: Collection[str]) -> dict[str, list[str]]:
        """group id → member user ids, in the order they joined (ties by id)."""
        return self._by_group(_MEMBERS_OF, group_ids)

    def partitions_of(self, group_ids: Collection[str]) -> dict[str, list[str]]:
        """group id → ids of the partitions it reaches, sorted."""
        return self._by_group(_PARTITIONS_OF, group_ids)

    def _by_group(self, stmt: sa.Select[Any], group_ids: Collection[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {g: [] for g in group_ids}
        if group_ids:
            for gid, value in self.conn.execute(stmt, {"ids": list(group_ids)}):
                out[gid].append(value)
        return out

    def partitions_in_account(self, account_id: str, partition_ids: Iterable[str]) -> set[str]:
        """Which of ``partition_ids`` are partitions of ``account_id``."""
        return self._in_account(_PARTITIONS_IN_ACCOUNT, account_id, partition_ids)

    def users_in_account(self, account_id: str, user_ids: Iterable[str]) -> set[str]:
        """Which of ``user_ids`` are users of ``account_id``."""
        return self._in_account(_USERS_IN_ACCOUNT, account_id, user_ids)

    def _in_account(self, stmt: sa.Select[Any], account_id: str, ids: Iterable[str]) -> set[str]:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return set()
        return {r.id for r in self.conn.execute(stmt, {"aid": account_id, "ids": wanted})}

    def insert(self, values: Mapping[str, Any]) -> None:
        self.conn.execute(user_groups.insert().values(**values))

    def update_if_etag(self, group_id: str, old_etag: str, values: Mapping[str, Any]) -> bool:
        """Write ``values`` to the group ``group_id`` if its etag is still ``old_etag``;
        False (nothing written) if a concurrent writer changed it first, or it is gone
        (store/conflicts.update_if_etag, run by services/writes.conditional_update)."""
        return conflicts.update_if_etag(self.conn, user_groups, group_id, old_etag, values)

    def touch(self, group_id: str, *, now: int) -> None:
        """A new ``update_time`` (``now``) and a fresh etag, nothing else changed (the
        group's partitions changed under it: a partition was deleted)."""
        self.conn.execute(_TOUCH, {"gid": group_id, "now": now, "new_etag": new_etag()})

    def set_partitions(self, group_id: str, partition_ids: Sequence[str]) -> None:
        """Replace the group's partitions with ``partition_ids``."""
        self.conn.execute(
            group_partitions.delete().where(group_partitions.c.group_id == group_id)
        )
        if partition_ids:
            self.conn.execute(
                group_partitions.insert(),
                [{"group_id": group_id, "partition_id": pid} for pid in partition_ids],
            )

    def _members_among(self, group_id: str, user_ids: Sequence[str]) -> set[str]:
        params = {"gid": group_id, "ids": list(user_ids)}
        return {r.user_id for r in self.conn.execute(_MEMBERS_AMONG, params)}

    def add_members(self, group_id: str, user_ids: Sequence[str]) -> list[str]:
        """Add the users that are not members yet; returns those added."""
        if not user_ids:
            return []
        present = self._members_among(group_id, user_ids)
        new = [u for u in user_ids if u not in present]
        if new:
            now = now_us()
            self.conn.execute(
                group_members.insert(),
                [{"group_id": group_id, "user_id": u, "create_time": now} for u in new],
            )
        return new

    def remove_members(self, group_id: str, user_ids: Sequence[str]) -> list[str]:
        """Remove the users that are members; returns those removed."""
        if not user_ids:
            return []
        present = self._members_among(group_id, user_ids)
        if present:
            self.conn.execute(
                group_members.delete().where(
                    group_members.c.group_id == group_id,
                    group_members.c.user_id.in_(list(present)),
                )
            )
        return [u for u in user_ids if u in present]

    def delete(self, group_id: str) -> None:
        """The group and its memberships and partition links."""
        self.conn.execute(group_members.delete().where(group_members.c.group_id == group_id))
        self.conn.execute(
            group_partitions.delete().where(group_partitions.c.group_id == group_id)
        )
        self.conn.execute(user_groups.delete().where(user_groups.c.id == group_id))

    def reaching(self, partition_id: str) -> list[Any]:
        """(id, account_id) of the groups that reach a partition, by id."""
        return list(self.conn.execute(_REACHING, {"pid": partition_id}))

    def list_in_account(
        self, account_id: str, query: ListQuery, *, member: str | None = None
    ) -> Page:
        """One page (``query``, parsed against ``GROUPS_LIST``) of the account's groups;
        with ``member`` (a user id) only the groups that user is in."""
        if member is None:
            return run_list(self.conn, GROUPS_LIST, query, _IN_ACCOUNT,
                            params={"aid": account_id})
        return run_list(self.conn, GROUPS_LIST, query, _IN_ACCOUNT_OF_MEMBER,
                        params={"aid": account_id, "uid": member})

    def list_of_member(self, user_id: str, query: ListQuery) -> Page:
        """One page (``query``, parsed against ``MY_GROUPS_LIST``) of the groups
        ``user_id`` is a member of, in any account."""
        return run_list(self.conn, MY_GROUPS_LIST, query, _OF_MEMBER, params={"uid": user_id})
