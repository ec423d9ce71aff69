"""Use cases for user groups: CreateUserGroup, GetUserGroup, ListUserGroups,
UpdateUserGroup, DeleteUserGroup, ListMyUserGroups. Their members are
services/memberships.py; what both share (loading a group, its view, the rule on
changing who holds a role) is services/tenancy.py.

A group belongs to one account. Its ``roles`` are granted to its members and its
``partition_ids`` (partitions of the same account) are what they may reach; the
authenticator reloads both on every call, so a change takes effect on the members'
next call.

Rules beyond API.md's role matrix (policy.py):
- Nobody hands out a role above its own, and only ``admin`` hands out ``admin`` /
  ``admin-reader`` (roles.grantable_roles). The rule is symmetric: changing who holds
  a role -- adding or removing it on a group, adding or removing members of a group
  that grants it, deleting such a group -- needs the right to grant that role.
- Partitions must belong to the group's account; ids that are not there are
  INVALID_ARGUMENT with one field violation each (whether the id exists in another
  account is not revealed).
- A call that changes nothing writes nothing (no audit event, same etag).
- Writes into a closed account are FAILED_PRECONDITION (ACCOUNT_CLOSED).

The statements are ``uow.groups``' (store/groups.py).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from accounts_grpc.domain import policy
from accounts_grpc.domain import roles as R
from accounts_grpc.domain.errors import AlreadyExists, InvalidArgument
from accounts_grpc.domain.listing import parse_list_request
from accounts_grpc.domain.masks import resolve_mask
from accounts_grpc.domain.ports import ReadUnitOfWork, UnitOfWork
from accounts_grpc.domain.principal import Principal
from accounts_grpc.domain.validate import Validator, check_id
from accounts_grpc.services import common, events
from accounts_grpc.services.deps import Deps

# the members' rule, still importable from here as the UserGroupService's (memberships.py
# imports nothing from this module)
from accounts_grpc.services.tenancy import (
    GROUP,
    GROUP_WHAT,
    GroupView,
    check_role_change,
    group_target,
    group_view,
    group_views,
    ids_into,
    load_group,
    require_in_account,
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

RESOURCE = GROUP
WHAT = GROUP_WHAT
MAX_PARTITIONS = 1000

UPDATABLE = frozenset({"name", "description", "roles", "partition_ids"})
OUTPUT_ONLY = frozenset({"account_id", "member_ids", "create_time", "update_time"})


@dataclass(frozen=True)
class GroupInput:
    """A UserGroup as sent: the settable fields, plus the output-only ones a client may
    send back unchanged (times in microseconds, None when unset)."""

    name: str = ""
    description: str = ""
    roles: Sequence[str] = ()
    partition_ids: Sequence[str] = ()
    etag: str = ""
    account_id: str = ""
    member_ids: Sequence[str] = ()
    create_time: int | None = None
    update_time: int | None = None


@dataclass(frozen=True)
class GroupPage:
    groups: list[GroupView]
    next_page_token: str
    previous_page_token: str
    total_size: int
    included_partitions: list[Any] = field(default_factory=list)  # partitions rows
    included_accounts: list[Any] = field(default_factory=list)  # accounts rows


# -- pure rules (unit-tested) -----------------------------------------------------------


def _roles_into(v: Validator, roles: Sequence[str], field_name: str) -> list[str]:
    try:
        return R.validate_roles(roles, R.USER_ROLES, field_name)
    except InvalidArgument as e:
        v.violations.extend(e.violations)
        return []


def validate_group(g: GroupInput, paths: Collection[str]) -> tuple[dict[str, Any], list[str]]:
    """Validate the fields in ``paths``; returns (column values, partition ids)."""
    v = Validator()
    values: dict[str, Any] = {}
    pids: list[str] = []
    if "name" in paths:
        values["name"] = v.name(f"{RESOURCE}.name", g.name)
    if "description" in paths:
        values["description"] = v.text(f"{RESOURCE}.description", g.description)
    if "roles" in paths:
        values["roles"] = _roles_into(v, g.roles, f"{RESOURCE}.roles")
    if "partition_ids" in paths:
        pids = ids_into(v, g.partition_ids, f"{RESOURCE}.partition_ids", MAX_PARTITIONS)
    reasons = {"UNKNOWN_ROLE" if ".roles[" in x.field else "INVALID_ARGUMENT" for x in v.violations}
    v.raise_if_any(reason=reasons.pop() if len(reasons) == 1 else "INVALID_ARGUMENT")
    return values, sorted(pids)


def unchanged_fields(g: GroupInput, current: GroupView) -> list[str]:
    """Fields whose sent value equals the stored one: no change is asked of them, so a
    client may send back the group it read with a few fields edited (masks.py)."""
    row = current.row
    stored: dict[str, Any] = {
        "name": row.name,
        "description": row.description,
        "roles": sorted(set(row.roles or ())),
        "partition_ids": sorted(current.partition_ids),
        "member_ids": sorted(current.member_ids),
        "account_id": row.account_id,
        "create_time": row.create_time,
        "update_time": row.update_time,
    }
    out = []
    for f, want in stored.items():
        given = getattr(g, f)
        if isinstance(want, list):
            given = sorted(set(given))
        if given == want:
            out.append(f)
    return out


# -- use cases --------------------------------------------------------------------------


class GroupsService:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    # reads -----------------------------------------------------------------------------
    def get(self, p: Principal, group_id: str) -> GroupView:
        check_id("id", group_id)
        with self.deps.db.read() as uow:
            row = load_group(uow.groups, p, policy.Action.GROUP_READ, group_id)
            return group_view(uow.groups, row)

    def list_groups(
        self,
        p: Principal,
        account_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        filter: str = "",
        order_by: str = "",
    ) -> GroupPage:
        """The account's groups the caller may read: all of them for readers of the
        account, else (a member) only the groups it is in."""
        with self.deps.db.read() as uow:
            t = common.require_account(uow.authority, p, policy.Action.ACCOUNT_READ, account_id)
            everything = policy.allows(p, policy.Action.GROUP_READ, t)
            scope: dict[str, Any] = {"account_id": account_id}
            if not everything:
                scope["member"] = p.user_id
            q = parse_list_request(
                uow.groups.list_shape,
                secret=self.deps.page_secret,
                page_size=page_size,
                page_token=page_token,
                filter=filter,
                order_by=order_by,
                scope=scope,
            )
            page = uow.groups.list_in_account(
                account_id, q, member=None if everything else p.user_id
            )
            return GroupPage(
                group_views(uow.groups, page.rows),
                page.next_page_token,
                page.previous_page_token,
                page.total_size,
            )

    def list_mine(self, p: Principal, *, page_size: int = 0, page_token: str = "") -> GroupPage:
        """The caller's groups, with the partitions they reach and the accounts owning them."""
        with self.deps.db.read() as uow:
            q = parse_list_request(
                uow.groups.mine_list_shape,
                secret=self.deps.page_secret,
                page_size=page_size,
                page_token=page_token,
                scope={"user": p.user_id},
            )
            page = uow.groups.list_of_member(p.user_id, q)
            views = group_views(uow.groups, page.rows)
            partitions = uow.partitions.load_many(
                pid for v in views for pid in v.partition_ids
            )
            account_ids = [v.row.account_id for v in views] + [x.account_id for x in partitions]
            accounts = uow.accounts.by_ids(account_ids)
        return GroupPage(
            views,
            page.next_page_token,
            page.previous_page_token,
            page.total_size,
            included_partitions=partitions,
            included_accounts=accounts,
        )

    # writes ----------------------------------------------------------------------------
    @staticmethod
    def _check_partitions(uow: ReadUnitOfWork, account_id: str, pids: Sequence[str]) -> None:
        """``pids`` as the request sent them, so that violations name its positions."""
        found = uow.groups.partitions_in_account(account_id, pids)
        require_in_account(
            pids,
            found,
            f"{RESOURCE}.partition_ids",
            account_id,
            "partition",
            reason="PARTITION_NOT_IN_ACCOUNT",
        )

    @staticmethod
    def _taken(
        uow: ReadUnitOfWork, account_id: str, name: str | None, other_than: str = ""
    ) -> AlreadyExists | None:
        if name and uow.groups.name_taken(account_id, name, other_than=other_than):
            return _name_taken(name)
        return None

    def create(
        self, p: Principal, account_id: str, g: GroupInput, *, request_id: str = ""
    ) -> GroupView:
        check_id("account_id", account_id)
        with self.deps.db.read() as uow:
            t = common.require_account(uow.authority, p, policy.Action.GROUP_MANAGE, account_id)
        require_open(t)
        values, pids = validate_group(g, UPDATABLE)
        check_role_change(p.roles, (), values["roles"], what="the group's roles")
        fields = sorted(
            f
            for f, set_ in (
                ("name", True),
                ("description", bool(values["description"])),
                ("roles", bool(values["roles"])),
                ("partition_ids", bool(pids)),
            )
            if set_
        )

        def create(uow: UnitOfWork) -> dict[str, Any]:
            self._check_partitions(uow, account_id, list(g.partition_ids))
            if err := self._taken(uow, account_id, values["name"]):
                raise err
            row = new_row(account_id=account_id, **values)
            gid = row["id"]
            with constraint_guard(uow, lambda: self._taken(uow, account_id, values["name"])):
                uow.groups.insert(row)
                uow.groups.set_partitions(gid, pids)
            uow.audit.record(
                account_id=account_id,
                actor_user_id=p.user_id,
                action="user_group.create",
                resource_type="UserGroup",
                resource_id=gid,
                changed_fields=fields,
                request_id=request_id,
            )
            return {"id": gid}

        def load(uow: UnitOfWork, ids: Any) -> GroupView:
            row = load_group(uow.groups, p, policy.Action.GROUP_READ, ids["id"])
            return group_view(uow.groups, row)

        view, _ = create_once(
            self.deps.db,
            p,
            "accounts.v1.UserGroupService/CreateUserGroup",
            request_id,
            fingerprint(account_id, values, pids),
            create,
            load,
            keep=self.deps.settings.request_id_ttl,
        )
        return view

    def update(
        self,
        p: Principal,
        group_id: str,
        g: GroupInput,
        *,
        mask_paths: Sequence[str] = (),
        populated: Iterable[str] = (),
    ) -> GroupView:
        check_id(f"{RESOURCE}.id", group_id)
        with self.deps.db.write() as uow:
            row = load_group(uow.groups, p, policy.Action.GROUP_MANAGE, group_id,
                             for_update=True)
            require_open(group_target(row))
            check_etag(g.etag, row.etag, WHAT)
            paths = resolve_mask(
                RESOURCE,
                mask_paths,
                populated,
                updatable=UPDATABLE,
                output_only=OUTPUT_ONLY,
                unchanged=unchanged_fields(g, group_view(uow.groups, row)),
            )
            values, pids = validate_group(g, paths)
            if not paths:
                return group_view(uow.groups, row)
            if "roles" in values:
                check_role_change(
                    p.roles, row.roles or (), values["roles"], what="the group's roles"
                )
            if "partition_ids" in paths:
                self._check_partitions(uow, row.account_id, list(g.partition_ids))
            name = values.get("name")
            if err := self._taken(uow, row.account_id, name, group_id):
                raise err
            with constraint_guard(uow, lambda: self._taken(uow, row.account_id, name, group_id)):
                conditional_update(uow.groups.update_if_etag, group_id, row.etag, values, WHAT)
                if "partition_ids" in paths:
                    uow.groups.set_partitions(group_id, pids)
            uow.audit.record(
                account_id=row.account_id,
                actor_user_id=p.user_id,
                action="user_group.update",
                resource_type="UserGroup",
                resource_id=group_id,
                changed_fields=paths,
                revocation=(events.revocation(  # what the members may do has changed
                    events.ROLES_CHANGED,
                    subjects=uow.groups.members_of([group_id]).get(group_id, []),
                ) if {"roles", "partition_ids"} & set(paths) else None),
            )
            view = group_view(uow.groups, uow.groups.load(group_id))
            uow.commit()
        return view

    def delete(self, p: Principal, group_id: str, *, etag: str = "") -> None:
        check_id("id", group_id)
        with self.deps.db.write() as uow:
            row = load_group(uow.groups, p, policy.Action.GROUP_MANAGE, group_id,
                             for_update=True)
            check_etag(etag, row.etag, WHAT)
            check_role_change(p.roles, row.roles or (), (), what="deleting a group that grants it")
            members = uow.groups.members_of([group_id]).get(group_id, [])
            uow.groups.delete(group_id)
            uow.audit.record(
                account_id=row.account_id,
                actor_user_id=p.user_id,
                action="user_group.delete",
                resource_type="UserGroup",
                resource_id=group_id,
                revocation=(events.revocation(events.GROUP_MEMBERSHIP_CHANGED, subjects=members)
                            if members else None),
            )
            uow.commit()


def _name_taken(name: str) -> AlreadyExists:
    return AlreadyExists(
        f"the account already has a user group named {name!r}",
        reason="USER_GROUP_ALREADY_EXISTS",
        metadata={"name": name},
    )
