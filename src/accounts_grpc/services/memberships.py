"""Use cases for the members of user groups: AddUserGroupMembers and
RemoveUserGroupMembers. The groups themselves are services/groups.py; what both share
(loading a group, its view, the rule on changing who holds a role) is
services/tenancy.py.

- Members must be users of the group's account; ids that are not there are
  INVALID_ARGUMENT (USER_NOT_IN_ACCOUNT) with one field violation each (whether the id
  exists in another account is not revealed).
- Adding or removing members of a group that grants a role needs the right to grant
  that role, as changing the group's roles does (``check_role_change``).
- Adding a member already in, or removing one not in, changes nothing and is not an
  error; a call that changes nothing writes nothing (no audit event, same etag).
- Writes into a closed account are FAILED_PRECONDITION (ACCOUNT_CLOSED).

The statements are ``uow.groups``' (store/groups.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from accounts_grpc.domain import policy
from accounts_grpc.domain.principal import Principal
from accounts_grpc.domain.validate import Validator, check_id
from accounts_grpc.services import events
from accounts_grpc.services.deps import Deps
from accounts_grpc.services.tenancy import (
    GROUP_WHAT,
    GroupView,
    check_role_change,
    group_target,
    group_view,
    ids_into,
    load_group,
    require_in_account,
    require_open,
)
from accounts_grpc.services.writes import conditional_update

MAX_MEMBERS_PER_CALL = 1000


def validate_user_ids(user_ids: Sequence[str]) -> list[str]:
    v = Validator()
    if not user_ids:
        v.add("user_ids", "name at least one user")
    ids = ids_into(v, user_ids, "user_ids", MAX_MEMBERS_PER_CALL)
    v.raise_if_any()
    return ids


class MembershipsService:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def add_members(self, p: Principal, group_id: str, user_ids: Sequence[str]) -> GroupView:
        return self._change_members(p, group_id, user_ids, add=True)

    def remove_members(self, p: Principal, group_id: str, user_ids: Sequence[str]) -> GroupView:
        return self._change_members(p, group_id, user_ids, add=False)

    def _change_members(
        self, p: Principal, group_id: str, user_ids: Sequence[str], *, add: bool
    ) -> GroupView:
        check_id("id", group_id)
        ids = validate_user_ids(user_ids)
        with self.deps.db.write() as uow:
            row = load_group(uow.groups, p, policy.Action.GROUP_MANAGE, group_id,
                             for_update=True)
            require_open(group_target(row))
            check_role_change(
                p.roles,
                row.roles or (),
                (),
                what=f"{'adding members to' if add else 'removing members from'} a group "
                "that grants it",
            )
            found = uow.groups.users_in_account(row.account_id, ids)
            require_in_account(
                list(user_ids),
                found,
                "user_ids",
                row.account_id,
                "user",
                reason="USER_NOT_IN_ACCOUNT",
            )
            if add:
                changed = uow.groups.add_members(group_id, ids)
            else:
                changed = uow.groups.remove_members(group_id, ids)
            if not changed:
                return group_view(uow.groups, row)
            conditional_update(uow.groups.update_if_etag, group_id, row.etag, {}, GROUP_WHAT)
            uow.audit.record(
                account_id=row.account_id,
                actor_user_id=p.user_id,
                action="user_group.add_members" if add else "user_group.remove_members",
                resource_type="UserGroup",
                resource_id=group_id,
                changed_fields=["member_ids"],
                revocation=events.revocation(events.GROUP_MEMBERSHIP_CHANGED, subjects=changed),
            )
            view = group_view(uow.groups, uow.groups.load(group_id))
            uow.commit()
        return view
