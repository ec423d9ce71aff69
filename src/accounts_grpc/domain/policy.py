"""The access policy: API.md's role matrix written once, as data plus a few functions.

Coarse checks ("which roles may call this RPC at all") live in the proto option and
run in the authorization interceptor. Everything that depends on *which* resource is
touched runs here, called by the use cases right where the resource is loaded:

    policy.require(principal, Action.USER_MANAGE, target)

A caller that may not even see the target's account gets NOT_FOUND (existence must
not leak to strangers); a caller that may see it but not do the action gets
PERMISSION_DENIED, except for reads of things inside it (``HIDDEN_WHEN_DENIED``: a
member may not learn which other users exist) which are NOT_FOUND too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from accounts_grpc.domain import roles as R
from accounts_grpc.domain.errors import NotFound, PermissionDenied
from accounts_grpc.domain.principal import Principal


class Rel(Enum):
    """How the caller relates to the account that owns a resource."""

    OWN = "own"  # the caller's own account
    CLIENT = "client"  # the account's consultancy is the caller's account
    OTHER = "other"


@dataclass(frozen=True)
class Target:
    """What the policy needs to know about a loaded resource."""

    account_id: str
    consultancy_account_id: str | None = None
    account_closed: bool = False
    user_id: str | None = None  # the user the resource is, or belongs to
    user_kind: str | None = None  # that user's kind
    group_id: str | None = None  # a user group
    partition_id: str | None = None  # a partition, or the partition a device is in


class Action(Enum):
    ACCOUNT_READ = "account.read"
    ACCOUNT_UPDATE = "account.update"
    ACCOUNT_ADMIN_FIELDS = "account.admin_fields"  # roles, consultancy_account_id
    ACCOUNT_CREATE = "account.create"
    ACCOUNT_CLOSE = "account.close"
    AUDIT_READ = "audit.read"
    USER_READ = "user.read"
    USER_MANAGE = "user.manage"  # create/update/delete; permissions, orders, sessions
    USER_SELF = "user.self"  # things a user does to itself (read sessions, revoke own)
    GROUP_READ = "group.read"
    GROUP_MANAGE = "group.manage"
    PARTITION_READ = "partition.read"
    PARTITION_MANAGE = "partition.manage"  # partitions and their devices
    ACCESS_CHECK = "access.check"  # ask what a user may do with assets (CheckAccess)


Cond = Callable[[Principal, Target], bool]


@dataclass(frozen=True)
class Grant:
    """``roles`` (any of) at the given relations admit the action, if ``when`` holds."""

    roles: frozenset[str]
    rels: frozenset[Rel]
    when: Cond | None = None
    note: str = ""
    #: the name CheckAccess gives this grant when it decides (domain/access.py);
    #: empty: ``account_role:<the caller's role it admits>``
    rule: str = ""


def _g(
    roles: set[str] | str, rels: set[Rel] | Rel, when: Cond | None = None, note: str = "",
    rule: str = "",
) -> Grant:
    rs = frozenset({roles} if isinstance(roles, str) else roles)
    ls = frozenset({rels} if isinstance(rels, Rel) else rels)
    return Grant(rs, ls, when, note, rule)


ANY = {Rel.OWN, Rel.CLIENT, Rel.OTHER}
READERS = {R.ADMIN, R.ADMIN_READER}


def _is_self(p: Principal, t: Target) -> bool:
    return t.user_id is not None and t.user_id == p.user_id


def _intermediary_manager(p: Principal, t: Target) -> bool:
    """Machine users of an intermediary account manage its EXTERNAL users (a delegated
    token's actor is no user of the account it acts in)."""
    return (
        p.delegation is None
        and R.INTERMEDIARY in p.account_roles
        and p.kind == "MACHINE"
        and (t.user_kind == "EXTERNAL" or (t.user_kind is None and t.user_id is None))
    )


def _in_my_groups(p: Principal, t: Target) -> bool:
    return t.group_id is not None and t.group_id in p.group_ids


def _reachable_partition(p: Principal, t: Target) -> bool:
    return t.partition_id is not None and t.partition_id in p.partition_ids


#: The matrix. Admin may do everything; admin-reader and consultant only read;
#: account-admin manages its own account; member reads itself, its groups and the
#: partitions those groups reach.
RULES: dict[Action, tuple[Grant, ...]] = {
    Action.ACCOUNT_READ: (
        _g(READERS, ANY),
        _g(R.MEMBER, Rel.OWN),
        _g(R.CONSULTANT, Rel.CLIENT),
    ),
    Action.ACCOUNT_UPDATE: (_g(R.ADMIN, ANY), _g(R.ACCOUNT_ADMIN, Rel.OWN)),
    Action.ACCOUNT_ADMIN_FIELDS: (_g(R.ADMIN, ANY),),
    Action.ACCOUNT_CREATE: (_g(R.ADMIN, ANY),),
    Action.ACCOUNT_CLOSE: (_g(R.ADMIN, ANY),),
    Action.AUDIT_READ: (_g(READERS, ANY), _g(R.ACCOUNT_ADMIN, Rel.OWN)),
    Action.USER_READ: (
        _g(READERS, ANY),
        _g({R.ACCOUNT_ADMIN, R.CONSULTANT}, Rel.OWN),
        _g(R.CONSULTANT, Rel.CLIENT),
        _g(R.MEMBER, Rel.OWN, _is_self, "a user reads itself"),
        _g(R.MEMBER, Rel.OWN, _intermediary_manager, "intermediary machine users"),
    ),
    Action.USER_MANAGE: (
        _g(R.ADMIN, ANY),
        _g(R.ACCOUNT_ADMIN, Rel.OWN),
        _g(R.MEMBER, Rel.OWN, _intermediary_manager, "intermediary machine users"),
    ),
    Action.USER_SELF: (
        _g(R.ADMIN, ANY),
        _g(R.ACCOUNT_ADMIN, Rel.OWN),
        _g(R.MEMBER, Rel.OWN, _is_self),
        _g(R.MEMBER, Rel.OWN, _intermediary_manager),
    ),
    Action.GROUP_READ: (
        _g(READERS, ANY),
        _g({R.ACCOUNT_ADMIN, R.CONSULTANT}, Rel.OWN),
        _g(R.CONSULTANT, Rel.CLIENT),
        _g(R.MEMBER, Rel.OWN, _in_my_groups, "groups the caller is in"),
    ),
    Action.GROUP_MANAGE: (_g(R.ADMIN, ANY), _g(R.ACCOUNT_ADMIN, Rel.OWN)),
    Action.PARTITION_READ: (
        _g(READERS, ANY),
        _g({R.ACCOUNT_ADMIN, R.CONSULTANT}, Rel.OWN),
        _g(R.CONSULTANT, Rel.CLIENT),
        _g(R.MEMBER, Rel.OWN, _reachable_partition, "partitions the caller's groups reach",
           "group_partition"),
        _g(R.MEMBER, Rel.OWN, _intermediary_manager, "intermediary machine users",
           "intermediary_machine_user"),
    ),
    Action.PARTITION_MANAGE: (_g(R.ADMIN, ANY), _g(R.ACCOUNT_ADMIN, Rel.OWN)),
    # the target is the user asked about; its readers with read rights, or itself
    Action.ACCESS_CHECK: (
        _g(READERS, ANY),
        _g({R.ACCOUNT_ADMIN, R.CONSULTANT}, Rel.OWN),
        _g(R.CONSULTANT, Rel.CLIENT),
        _g(R.MEMBER, Rel.OWN, _is_self, "a user asks about itself"),
    ),
}


#: Actions whose denial hides the resource itself (NOT_FOUND even when the caller can see
#: the account): a caller may not learn that a user, group or partition it may not read
#: exists. Every other denial on a visible account is PERMISSION_DENIED.
HIDDEN_WHEN_DENIED = frozenset(
    {Action.ACCOUNT_READ, Action.USER_READ, Action.GROUP_READ, Action.PARTITION_READ}
)

#: Account fields an account-admin may change on its own account (UpdateAccount).
ACCOUNT_SELF_SERVICE_FIELDS = frozenset(
    {"name", "email", "primary_color", "secondary_color", "logo_url"}
)
#: Account fields only an admin may change (and set on CreateAccount).
ACCOUNT_ADMIN_ONLY_FIELDS = frozenset({"roles", "consultancy_account_id"})


def relation(p: Principal, t: Target) -> Rel:
    if t.account_id == p.account_id:
        return Rel.OWN
    if t.consultancy_account_id and t.consultancy_account_id == p.account_id:
        return Rel.CLIENT
    return Rel.OTHER


def deciding_grant(p: Principal, action: Action, t: Target) -> Grant | None:
    """The first grant of ``action`` that admits the caller for this target, if any: the
    one evaluation of the matrix, behind ``allows`` and CheckAccess (domain/access.py)."""
    if t.account_closed and not p.is_platform_reader:
        return None
    if p.delegation is not None and t.account_id != p.account_id:
        return None  # a delegated token acts in its one account (domain/delegation.py)
    rel = relation(p, t)
    for g in RULES[action]:
        if rel in g.rels and not g.roles.isdisjoint(p.roles) and (g.when is None or g.when(p, t)):
            return g
    return None


def allows(p: Principal, action: Action, t: Target) -> bool:
    """True if any grant of ``action`` admits the caller for this target."""
    return deciding_grant(p, action, t) is not None


def rule_name(g: Grant, p: Principal) -> str:
    """How CheckAccess names a grant that admitted ``p``: its ``rule``, or the caller's
    strongest role the grant admits (``account_role:account-admin``)."""
    if g.rule:
        return g.rule
    return "account_role:" + max(g.roles & p.roles, key=lambda r: R.USER_ROLE_RANK.get(r, -1))


def can_see_account(p: Principal, t: Target) -> bool:
    return allows(p, Action.ACCOUNT_READ, t)


def require(
    p: Principal, action: Action, t: Target, *, what: str = "resource", key: str = ""
) -> None:
    """Raise unless allowed: NOT_FOUND if the caller cannot see the account at all."""
    if allows(p, action, t):
        return
    if action in HIDDEN_WHEN_DENIED or not can_see_account(p, t):
        reason = f"{what.upper()}_NOT_FOUND"
        raise NotFound(
            f"{what.replace('_', ' ')} {key!r} not found",
            reason=reason,
            metadata={"id": key} if key else None,
        )
    verb = action.value.split(".")[1].replace("_", " ")
    raise PermissionDenied(
        f"the caller may not {verb} this {what.replace('_', ' ')}",
        reason="PERMISSION_DENIED",
        metadata={"action": action.value},
    )


def account_filter(p: Principal) -> tuple[bool, str, bool]:
    """For lists of accounts: (see_all, own_account_id, include_clients).

    The same matrix as ``Action.ACCOUNT_READ``, in the shape a SQL filter needs: platform
    readers see every account (closed ones too, on request); a consultant its own account
    and the open accounts whose consultancy is its account; everyone else its own.
    """
    if p.is_platform_reader:
        return True, p.account_id, False
    return False, p.account_id, R.CONSULTANT in p.roles and p.delegation is None


def account_update_fields(p: Principal, t: Target) -> frozenset[str]:
    """The account fields the caller may change on ``t`` (it may update ``t`` at all)."""
    fields = ACCOUNT_SELF_SERVICE_FIELDS
    if allows(p, Action.ACCOUNT_ADMIN_FIELDS, t):
        fields = fields | ACCOUNT_ADMIN_ONLY_FIELDS
    return fields
