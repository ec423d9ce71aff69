"""The access policy as a table: who may do what to which account's resources."""

from __future__ import annotations

import pytest

from accounts_grpc.domain import policy
from accounts_grpc.domain.errors import NotFound, PermissionDenied
from accounts_grpc.domain.policy import Action, Rel, Target, allows, relation, require
from accounts_grpc.domain.principal import Principal

OWN, CONSULTANCY, CLIENT, OTHER = "acct-own", "acct-consultancy", "acct-client", "acct-other"


def who(*roles: str, account: str = OWN, kind: str = "HUMAN",
        account_roles: tuple[str, ...] = ()) -> Principal:
    return Principal(user_id="u-" + "-".join(roles or ("none",)), account_id=account,
                     kind=kind, roles=frozenset({"member", *roles}),
                     account_roles=frozenset(account_roles))


MEMBER = who()
ACCOUNT_ADMIN = who("account-admin")
CONSULTANT = who("consultant", account=CONSULTANCY, account_roles=("consultancy",))
ADMIN_READER = who("admin-reader", account="platform")
ADMIN = who("admin", account="platform")
INTERMEDIARY_MACHINE = who(kind="MACHINE", account_roles=("intermediary",))

# targets relative to each caller: own account, a client of the caller's account, another
def targets(p: Principal) -> dict[str, Target]:
    return {
        "own": Target(account_id=p.account_id),
        "client": Target(account_id=CLIENT, consultancy_account_id=p.account_id),
        "other": Target(account_id=OTHER, consultancy_account_id="someone-else"),
    }


Y, N = True, False
# (caller, action) → allowed on (own, client, other)
MATRIX = [
    (MEMBER, Action.ACCOUNT_READ, (Y, N, N)),
    (MEMBER, Action.ACCOUNT_UPDATE, (N, N, N)),
    (MEMBER, Action.ACCOUNT_ADMIN_FIELDS, (N, N, N)),
    (MEMBER, Action.ACCOUNT_CLOSE, (N, N, N)),
    (MEMBER, Action.AUDIT_READ, (N, N, N)),
    (ACCOUNT_ADMIN, Action.ACCOUNT_READ, (Y, N, N)),
    (ACCOUNT_ADMIN, Action.ACCOUNT_UPDATE, (Y, N, N)),
    (ACCOUNT_ADMIN, Action.ACCOUNT_ADMIN_FIELDS, (N, N, N)),
    (ACCOUNT_ADMIN, Action.ACCOUNT_CLOSE, (N, N, N)),
    (ACCOUNT_ADMIN, Action.AUDIT_READ, (Y, N, N)),
    (CONSULTANT, Action.ACCOUNT_READ, (Y, Y, N)),
    (CONSULTANT, Action.ACCOUNT_UPDATE, (N, N, N)),
    (CONSULTANT, Action.AUDIT_READ, (N, N, N)),
    (CONSULTANT, Action.USER_READ, (Y, Y, N)),
    (CONSULTANT, Action.USER_MANAGE, (N, N, N)),
    (ADMIN_READER, Action.ACCOUNT_READ, (Y, Y, Y)),
    (ADMIN_READER, Action.ACCOUNT_UPDATE, (N, N, N)),
    (ADMIN_READER, Action.AUDIT_READ, (Y, Y, Y)),
    (ADMIN_READER, Action.ACCOUNT_CLOSE, (N, N, N)),
    (ADMIN, Action.ACCOUNT_READ, (Y, Y, Y)),
    (ADMIN, Action.ACCOUNT_UPDATE, (Y, Y, Y)),
    (ADMIN, Action.ACCOUNT_ADMIN_FIELDS, (Y, Y, Y)),
    (ADMIN, Action.ACCOUNT_CLOSE, (Y, Y, Y)),
    (ADMIN, Action.ACCOUNT_CREATE, (Y, Y, Y)),
    (ADMIN, Action.AUDIT_READ, (Y, Y, Y)),
    (INTERMEDIARY_MACHINE, Action.ACCOUNT_READ, (Y, N, N)),
    (INTERMEDIARY_MACHINE, Action.ACCOUNT_UPDATE, (N, N, N)),
    (INTERMEDIARY_MACHINE, Action.AUDIT_READ, (N, N, N)),
]


@pytest.mark.parametrize(("p", "action", "want"), MATRIX,
                         ids=[f"{sorted(p.roles)}-{p.kind}-{a.value}" for p, a, _ in MATRIX])
def test_matrix(p: Principal, action: Action, want: tuple[bool, bool, bool]) -> None:
    got = tuple(allows(p, action, t) for t in targets(p).values())
    assert got == want


def test_every_action_has_rules() -> None:
    assert set(policy.RULES) == set(Action)


def test_relation() -> None:
    assert relation(CONSULTANT, Target(CONSULTANCY)) is Rel.OWN
    assert relation(CONSULTANT, Target(CLIENT, consultancy_account_id=CONSULTANCY)) is Rel.CLIENT
    assert relation(CONSULTANT, Target(CLIENT, consultancy_account_id=None)) is Rel.OTHER
    assert relation(CONSULTANT, Target(CLIENT, consultancy_account_id="")) is Rel.OTHER


def test_closed_accounts_are_for_platform_readers_only() -> None:
    closed = Target(account_id=CLIENT, consultancy_account_id=CONSULTANCY, account_closed=True)
    assert not allows(CONSULTANT, Action.ACCOUNT_READ, closed)
    assert allows(ADMIN_READER, Action.ACCOUNT_READ, closed)
    assert allows(ADMIN_READER, Action.AUDIT_READ, closed)
    assert allows(ADMIN, Action.ACCOUNT_CLOSE, closed)  # the use case answers ACCOUNT_CLOSED


def test_strangers_get_not_found() -> None:
    with pytest.raises(NotFound) as info:
        require(ACCOUNT_ADMIN, Action.ACCOUNT_UPDATE, Target(OTHER), what="account", key=OTHER)
    assert info.value.reason == "ACCOUNT_NOT_FOUND"
    assert info.value.metadata == {"id": OTHER}


def test_seen_but_not_allowed_is_permission_denied() -> None:
    client = Target(CLIENT, consultancy_account_id=CONSULTANCY)
    with pytest.raises(PermissionDenied):
        require(CONSULTANT, Action.ACCOUNT_UPDATE, client, what="account", key=CLIENT)
    # reading the audit log of an account one can see is a permission question, not existence
    both = who("consultant", "account-admin", account=CONSULTANCY)
    with pytest.raises(PermissionDenied):
        require(both, Action.AUDIT_READ, client, what="account", key=CLIENT)


def test_reads_of_hidden_resources_are_not_found_even_in_the_own_account() -> None:
    other_user = Target(OWN, user_id="u-other", user_kind="HUMAN")
    with pytest.raises(NotFound) as info:
        require(MEMBER, Action.USER_READ, other_user, what="user", key="u-other")
    assert info.value.reason == "USER_NOT_FOUND"
    require(MEMBER, Action.USER_READ, Target(OWN, user_id=MEMBER.user_id), what="user")


def test_account_update_fields() -> None:
    own = Target(OWN)
    assert policy.account_update_fields(ACCOUNT_ADMIN, own) == {
        "name", "email", "primary_color", "secondary_color", "logo_url"}
    assert policy.account_update_fields(ADMIN, own) >= {"roles", "consultancy_account_id"}


def test_account_filter() -> None:
    assert policy.account_filter(ADMIN) == (True, "platform", False)
    assert policy.account_filter(ADMIN_READER)[0] is True
    assert policy.account_filter(CONSULTANT) == (False, CONSULTANCY, True)
    assert policy.account_filter(ACCOUNT_ADMIN) == (False, OWN, False)
    assert policy.account_filter(MEMBER) == (False, OWN, False)


def test_intermediary_machine_users_manage_external_users_only() -> None:
    ext = Target(OWN, user_id="x", user_kind="EXTERNAL")
    human = Target(OWN, user_id="h", user_kind="HUMAN")
    assert allows(INTERMEDIARY_MACHINE, Action.USER_MANAGE, ext)
    assert not allows(INTERMEDIARY_MACHINE, Action.USER_MANAGE, human)
    plain_machine = who(kind="MACHINE")
    assert not allows(plain_machine, Action.USER_MANAGE, ext)
    intermediary_human = who(account_roles=("intermediary",))
    assert not allows(intermediary_human, Action.USER_MANAGE, ext)
