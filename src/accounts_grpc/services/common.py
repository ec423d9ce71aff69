"""Loading helpers every use case shares: account scopes and user references, and the
one rule about acting on a user.

They load what the policy needs and raise NOT_FOUND for what does not exist; the caller
then asks ``policy.require`` (which hides other tenants' resources as NOT_FOUND too).

Acting on a user (changing it, deleting it, rotating its secret, opening, listing or
revoking its sessions, granting it devices, writing its orders) goes through
``authorize_user``: on top of the policy, the caller must be able to grant every role
the user holds *effectively* (its direct roles, the roles of all its groups, and the
implicit ``member``). Otherwise an account-admin could act through, or as, a user a
platform admin put in a group granting ``admin-reader``.

The rules are here; the reads they make are ``uow.authority``'s (store/authority.py),
handed in by the caller.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from accounts_grpc.domain import policy
from accounts_grpc.domain import roles as R
from accounts_grpc.domain.errors import InvalidArgument, PermissionDenied, not_found
from accounts_grpc.domain.ports import Authority
from accounts_grpc.domain.principal import Principal
from accounts_grpc.domain.validate import Validator, is_uuid


def account_target(
    authority: Authority, account_id: str, *, field: str = "account_id"
) -> policy.Target:
    """The policy target of an account; NOT_FOUND (ACCOUNT_NOT_FOUND) if there is none."""
    if not is_uuid(account_id):
        v = Validator()
        v.id(field, account_id)
        v.raise_if_any(reason="INVALID_ID" if account_id else "INVALID_ARGUMENT")
    row = authority.account_scope(account_id)
    if row is None:
        raise not_found("account", "id", account_id)
    return policy.Target(
        account_id=row.id,
        consultancy_account_id=row.consultancy_account_id,
        account_closed=bool(row.closed),
    )


def require_account(
    authority: Authority,
    p: Principal,
    action: policy.Action,
    account_id: str,
    *,
    field: str = "account_id",
) -> policy.Target:
    """Load an account's scope and check ``action`` on it (NOT_FOUND for strangers)."""
    t = account_target(authority, account_id, field=field)
    policy.require(p, action, t, what="account", key=account_id)
    return t


@dataclass(frozen=True)
class ResolvedUser:
    row: Any  # the users row (all columns)
    target: policy.Target  # for policy checks on the user


def user_target(row: Any) -> policy.Target:
    return policy.Target(
        account_id=row.account_id,
        consultancy_account_id=row.consultancy_account_id,
        account_closed=bool(row.account_closed),
        user_id=row.id,
        user_kind=row.kind,
    )


def load_user(authority: Authority, user_id: str, *, field: str = "id") -> ResolvedUser:
    """A user by id, NOT_FOUND if there is none (no policy check)."""
    if not is_uuid(user_id):
        v = Validator()
        v.id(field, user_id)
        v.raise_if_any(reason="INVALID_ID" if user_id else "INVALID_ARGUMENT")
    row = authority.user_by_id(user_id)
    if row is None:
        raise not_found("user", "id", user_id)
    return ResolvedUser(row, user_target(row))


def resolve_user_ref(
    authority: Authority,
    p: Principal,
    *,
    user_id: str = "",
    external_id: str = "",
    account_id: str = "",
    field: str = "user",
) -> ResolvedUser:
    """A ``UserRef``: by ``user_id``, or by ``external_id`` inside an account.

    The account is the caller's own unless ``account_id`` names another (only callers
    that may act there get past the policy check that follows). No policy check here.
    """
    if user_id:
        return load_user(authority, user_id, field=f"{field}.user_id")
    if not external_id:
        raise InvalidArgument.field(
            field, "name the user by user_id or external_id", reason="USER_REF_REQUIRED"
        )
    acct = account_id or p.account_id
    if account_id and not is_uuid(account_id):
        v = Validator()
        v.id(f"{field}.account_id", account_id)
        v.raise_if_any(reason="INVALID_ID")
    row = authority.user_by_external_id(acct, external_id)
    if row is None:
        raise not_found("user", "external_id", external_id)
    return ResolvedUser(row, user_target(row))


# -- acting on a user --------------------------------------------------------------------------


def effective_roles(
    authority: Authority, user_id: str, direct: Iterable[str] | None
) -> set[str]:
    """A user's direct roles, its groups' roles and the implicit ``member``."""
    out = set(direct or ()) | {R.MEMBER}
    for group_roles in authority.group_roles(user_id):
        out.update(group_roles or ())
    return out


def outranking_roles(p: Principal, user_id: str | None, roles: Iterable[str]) -> list[str]:
    """The roles of user ``user_id`` (its effective ``roles``) that the caller could not
    grant, sorted; none when the caller is the user itself (it holds them already)."""
    if user_id is not None and user_id == p.user_id:
        return []
    return sorted(set(roles) - R.grantable_roles(p.roles))


def check_not_outranked(p: Principal, user_id: str | None, roles: Iterable[str]) -> None:
    """PERMISSION_DENIED (``USER_OUTRANKS_CALLER``, metadata ``roles``) unless the caller
    could grant every one of the user's effective ``roles`` (or is the user itself)."""
    above = outranking_roles(p, user_id, roles)
    if above:
        raise PermissionDenied(
            "the user holds role(s), directly or through its user groups, that the caller "
            f"cannot grant: {', '.join(above)}",
            reason="USER_OUTRANKS_CALLER",
            metadata={"roles": ",".join(above)},
        )


def require_not_outranked(
    authority: Authority, p: Principal, user_id: str, direct_roles: Iterable[str] | None
) -> None:
    """``check_not_outranked`` against the user's effective roles, read by ``authority``
    (no read for an ``admin``, who may grant every role, or for the user itself)."""
    if user_id == p.user_id or R.ADMIN in p.roles:
        return
    check_not_outranked(p, user_id, effective_roles(authority, user_id, direct_roles))


def authorize_user(
    authority: Authority,
    p: Principal,
    action: policy.Action,
    target: policy.Target,
    direct_roles: Iterable[str] | None,
    *,
    what: str = "user",
    key_field: str = "id",
    key: str = "",
) -> None:
    """May the caller do ``action`` on the user ``target`` names (or on its ``what``)?

    NOT_FOUND (``<WHAT>_NOT_FOUND``) unless the caller may read the user: whether a user
    exists is not for everyone to learn. Then, for anything but reading: PERMISSION_DENIED
    unless the policy admits ``action``, and PERMISSION_DENIED ``USER_OUTRANKS_CALLER``
    unless the caller could grant every role the user holds effectively.
    """
    if not policy.allows(p, policy.Action.USER_READ, target):
        raise not_found(what, key_field, key)
    if action is policy.Action.USER_READ:
        return
    policy.require(p, action, target, what=what, key=key)
    assert target.user_id is not None  # a user target always names its user
    require_not_outranked(authority, p, target.user_id, direct_roles)
