"""The rules of delegated tokens (domain/delegation.py) and their ``act`` claim
(auth/jwt_tokens.py), without a server."""

from __future__ import annotations

import pytest

from accounts_grpc.auth.jwt_tokens import actor_claim
from accounts_grpc.domain import delegation as D
from accounts_grpc.domain import policy
from accounts_grpc.domain.errors import DomainError, Unauthenticated
from accounts_grpc.domain.principal import Principal

C, D_ID, OTHER = "c" * 8, "d" * 8, "o" * 8
CLIENT = D.TargetAccount(D_ID, C, False)
CONSULTANT = D.Grantor("u1", C, frozenset({"consultant", "member"}))
ADMIN = D.Grantor("a1", "platform", frozenset({"admin", "member"}))


def reason(err: DomainError | None) -> str | None:
    return None if err is None else err.reason


def test_a_consultant_reads_its_client_as_itself() -> None:
    assert D.refusal(CONSULTANT, D_ID, CLIENT, "u1", D.CONSULTANCY_ROLES) is None
    assert D.default_roles(CONSULTANT.roles) == {"consultant"}


@pytest.mark.parametrize(("subject", "target", "actor", "roles", "why"), [
    (CONSULTANT, D.TargetAccount(D_ID, OTHER, False), "u1", {"consultant"},
     "NOT_CONSULTANT_OF_ACCOUNT"),
    (CONSULTANT, None, "u1", {"consultant"}, "NOT_CONSULTANT_OF_ACCOUNT"),
    (CONSULTANT, CLIENT, "u1", {"consultant", "member"}, "ROLE_NOT_DELEGABLE"),
    (CONSULTANT, CLIENT, "u2", {"consultant"}, "ACTOR_NOT_ALLOWED"),
    (CONSULTANT, D.TargetAccount(D_ID, C, True), "u1", {"consultant"}, "ACCOUNT_CLOSED"),
    (D.Grantor("u1", C, frozenset({"member"})), CLIENT, "u1", {"consultant"},
     "NOT_CONSULTANT"),
    (ADMIN, CLIENT, "x", {"admin"}, "ROLE_NOT_DELEGABLE"),
    (ADMIN, CLIENT, "x", {"admin-reader"}, "ROLE_NOT_DELEGABLE"),
    (ADMIN, None, "x", {"member"}, "ACCOUNT_NOT_FOUND"),
    (ADMIN, D.TargetAccount(D_ID, None, True), "x", {"member"}, "ACCOUNT_CLOSED"),
])
def test_refusals(subject: D.Grantor, target: D.TargetAccount | None, actor: str,
                  roles: set[str], why: str) -> None:
    assert reason(D.refusal(subject, D_ID, target, actor, frozenset(roles))) == why


def test_an_admin_delegates_writing_roles_to_anyone_anywhere() -> None:
    roles = frozenset({"account-admin", "consultant", "member"})
    assert D.refusal(ADMIN, D_ID, D.TargetAccount(D_ID, None, False), "x", roles) is None
    assert D.default_roles(ADMIN.roles) == {"member"}


def test_actor_claim() -> None:
    assert actor_claim({"sub": "s"}) is None
    assert actor_claim({"act": {"sub": "a", "account_id": "b", "gen": 2}}) == ("a", "b", 2)
    assert actor_claim({"act": {"sub": "a", "account_id": "b"}}) == ("a", "b", 0)
    for bad in ("a", {"account_id": "b"}, {"sub": 1, "account_id": "b"},
                {"sub": "a", "account_id": "b", "act": {"sub": "z"}},
                {"sub": "a", "account_id": "b", "gen": "2"}):
        with pytest.raises(Unauthenticated):
            actor_claim({"act": bad})


def _delegated(roles: set[str], kind: str = "MACHINE") -> Principal:
    return Principal(user_id="u1", account_id=D_ID, kind=kind, roles=frozenset(roles),
                     account_roles=frozenset({"intermediary"}),
                     delegation=D.Delegation("s", "u1", frozenset(roles)))


def test_policy_confines_a_delegated_principal_to_its_account() -> None:
    p = _delegated({"account-admin", "member"})
    own = policy.Target(account_id=D_ID)
    client_of_d = policy.Target(account_id=OTHER, consultancy_account_id=D_ID)
    assert policy.allows(p, policy.Action.USER_MANAGE, own)
    assert not policy.allows(p, policy.Action.ACCOUNT_READ, policy.Target(account_id=OTHER))
    reader = _delegated({"consultant", "member"})
    assert policy.allows(reader, policy.Action.USER_READ, own)
    assert not policy.allows(reader, policy.Action.ACCOUNT_READ, client_of_d)
    assert policy.account_filter(reader) == (False, D_ID, False)


def test_a_delegated_machine_actor_is_no_intermediary_machine_user() -> None:
    reader = _delegated({"consultant", "member"})
    external = policy.Target(account_id=D_ID, user_kind="EXTERNAL", user_id="e1")
    assert not policy.allows(reader, policy.Action.USER_MANAGE, external)
