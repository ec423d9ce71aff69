"""Loading helpers every use case shares: account scopes and user references.

They load what the policy needs and raise NOT_FOUND for what does not exist; the caller
then asks ``policy.require`` (which hides other tenants' resources as NOT_FOUND too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from accounts_grpc.domain import policy
from accounts_grpc.domain.errors import InvalidArgument, not_found
from accounts_grpc.domain.principal import Principal
from accounts_grpc.domain.validate import Validator, is_uuid
from accounts_grpc.store.tables import accounts, users

_ACCOUNT_SCOPE = sa.select(
    accounts.c.id, accounts.c.consultancy_account_id, accounts.c.closed
).where(accounts.c.id == sa.bindparam("aid"))

_USER_WITH_ACCOUNT = sa.select(
    users, accounts.c.consultancy_account_id, accounts.c.closed.label("account_closed")
).select_from(users.join(accounts, accounts.c.id == users.c.account_id))


def account_target(
    conn: sa.Connection, account_id: str, *, field: str = "account_id"
) -> policy.Target:
    """The policy target of an account; NOT_FOUND (ACCOUNT_NOT_FOUND) if there is none."""
    if not is_uuid(account_id):
        v = Validator()
        v.id(field, account_id)
        v.raise_if_any(reason="INVALID_ID" if account_id else "INVALID_ARGUMENT")
    row = conn.execute(_ACCOUNT_SCOPE, {"aid": account_id}).first()
    if row is None:
        raise not_found("account", "id", account_id)
    return policy.Target(
        account_id=row.id,
        consultancy_account_id=row.consultancy_account_id,
        account_closed=bool(row.closed),
    )


def require_account(
    conn: sa.Connection,
    p: Principal,
    action: policy.Action,
    account_id: str,
    *,
    field: str = "account_id",
) -> policy.Target:
    """Load an account's scope and check ``action`` on it (NOT_FOUND for strangers)."""
    t = account_target(conn, account_id, field=field)
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


def load_user(conn: sa.Connection, user_id: str, *, field: str = "id") -> ResolvedUser:
    """A user by id, NOT_FOUND if there is none (no policy check)."""
    if not is_uuid(user_id):
        v = Validator()
        v.id(field, user_id)
        v.raise_if_any(reason="INVALID_ID" if user_id else "INVALID_ARGUMENT")
    row = conn.execute(_USER_WITH_ACCOUNT.where(users.c.id == user_id)).first()
    if row is None:
        raise not_found("user", "id", user_id)
    return ResolvedUser(row, user_target(row))


def resolve_user_ref(
    conn: sa.Connection,
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
        return load_user(conn, user_id, field=f"{field}.user_id")
    if not external_id:
        raise InvalidArgument.field(
            field, "name the user by user_id or external_id", reason="USER_REF_REQUIRED"
        )
    acct = account_id or p.account_id
    if account_id and not is_uuid(account_id):
        v = Validator()
        v.id(f"{field}.account_id", account_id)
        v.raise_if_any(reason="INVALID_ID")
    row = conn.execute(
        _USER_WITH_ACCOUNT.where(users.c.account_id == acct, users.c.external_id == external_id)
    ).first()
    if row is None:
        raise not_found("user", "external_id", external_id)
    return ResolvedUser(row, user_target(row))
