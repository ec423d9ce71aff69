"""The role vocabulary."""

from __future__ import annotations

import pytest

from accounts_grpc.domain import roles as R
from accounts_grpc.domain.errors import InvalidArgument


def test_vocabulary_matches_api_md() -> None:
    assert {"admin", "admin-reader", "account-admin", "consultant", "member"} == R.USER_ROLES
    assert {"intermediary", "consultancy"} == R.ACCOUNT_ROLES


def test_validate_roles_sorts_and_dedupes() -> None:
    assert R.validate_roles(["consultancy", "intermediary", "consultancy"], R.ACCOUNT_ROLES,
                            "account.roles") == ["consultancy", "intermediary"]


def test_unknown_roles_are_named_by_index() -> None:
    with pytest.raises(InvalidArgument) as info:
        R.validate_roles(["consultancy", "Admin", "admin"], R.ACCOUNT_ROLES, "account.roles")
    e = info.value
    assert e.reason == "UNKNOWN_ROLE"
    assert [v.field for v in e.violations] == ["account.roles[1]", "account.roles[2]"]


def test_grantable_roles() -> None:
    assert R.grantable_roles(frozenset({"admin", "member"})) == R.USER_ROLES
    assert R.grantable_roles(frozenset({"account-admin", "member"})) == {
        "member", "consultant", "account-admin"}
    # read-only roles grant nothing beyond member
    assert R.grantable_roles(frozenset({"admin-reader", "member"})) == {"member"}
    assert R.grantable_roles(frozenset({"consultant", "member"})) == {"member"}
    assert R.grantable_roles(frozenset({"member"})) == {"member"}
