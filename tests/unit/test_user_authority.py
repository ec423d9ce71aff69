"""The one rule about acting on another user (services/common.py), without I/O: the
caller must be able to grant every role the user holds effectively."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accounts_grpc.domain import roles as R
from accounts_grpc.domain.errors import PermissionDenied
from accounts_grpc.domain.principal import Principal
from accounts_grpc.services import user_fields as UF
from accounts_grpc.services.common import check_not_outranked, outranking_roles

ME, OTHER = "u-me", "u-other"


def caller(*roles: str, kind: str = "HUMAN") -> Principal:
    return Principal(ME, "a1", kind, frozenset({"member", *roles}), frozenset())


@pytest.mark.parametrize(
    "caller_roles,target,above",
    [
        (("account-admin",), {"member"}, []),
        (("account-admin",), {"member", "consultant", "account-admin"}, []),
        (("account-admin",), {"member", "admin-reader"}, ["admin-reader"]),
        (("account-admin",), {"member", "admin", "admin-reader"}, ["admin", "admin-reader"]),
        (("admin",), set(R.USER_ROLES), []),
        (("admin-reader",), {"member"}, []),
        (("admin-reader",), {"member", "consultant"}, ["consultant"]),  # readers grant nothing
        (("account-admin", "admin-reader"), {"admin-reader"}, ["admin-reader"]),
        ((), {"member"}, []),  # an intermediary's machine user and its EXTERNAL members
        ((), {"member", "account-admin"}, ["account-admin"]),
    ],
)
def test_roles_above_the_caller(caller_roles: tuple[str, ...], target: set[str],
                                above: list[str]) -> None:
    assert outranking_roles(caller(*caller_roles), OTHER, target) == above


def test_acting_on_oneself_is_never_outranked() -> None:
    assert outranking_roles(caller("account-admin"), ME, {"admin-reader", "admin"}) == []
    check_not_outranked(caller(), ME, set(R.USER_ROLES))


def test_the_denial_names_the_roles() -> None:
    with pytest.raises(PermissionDenied) as e:
        check_not_outranked(caller("account-admin"), OTHER, {"member", "admin", "admin-reader"})
    assert e.value.reason == "USER_OUTRANKS_CALLER"
    assert e.value.metadata == {"roles": "admin,admin-reader"}
    assert "admin, admin-reader" in str(e.value) and "group" in str(e.value)
    with pytest.raises(PermissionDenied):
        check_not_outranked(caller(kind="MACHINE"), OTHER, {"account-admin"})
    check_not_outranked(caller("account-admin"), OTHER, {"member", "account-admin"})
    check_not_outranked(caller("admin"), OTHER, {"admin"})


roles_st = st.frozensets(st.sampled_from(sorted(R.USER_ROLES)))


@given(mine=roles_st, theirs=roles_st)
def test_outranked_exactly_when_the_caller_could_not_have_granted_the_roles(
    mine: frozenset[str], theirs: frozenset[str]
) -> None:
    p = caller(*mine)
    above = outranking_roles(p, OTHER, theirs | {"member"})
    could_create = True
    try:
        UF.check_grantable(p, sorted(theirs), "roles")  # what CreateUser would allow
    except PermissionDenied:
        could_create = False
    assert (above == []) == could_create
    assert set(above) <= theirs and above == sorted(above)
