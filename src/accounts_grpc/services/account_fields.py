"""The fields of an account and their rules: what CreateAccount and UpdateAccount may
set, what they read back, and how each value is checked. The use cases are in
services/accounts.py.

- CreateAccount: ``name`` and ``email`` are required, colours and ``logo_url`` checked
  when set, ``roles`` only account roles (UNKNOWN_ROLE when only roles are wrong).
  Output-only fields (and ``etag``) sent on create are INVALID_ARGUMENT, never silently
  dropped (``check_new_account``).
- The first user must be HUMAN (UNSPECIFIED is taken as HUMAN): a MACHINE first user
  would need its secret shown, and CreateAccountResponse has no place for it. It has an
  email, no ``external_id``, no output-only field set, and ``account-admin`` among its
  roles, which are user roles.
- UpdateAccount checks the values of the fields its mask names (``check_account_update``);
  a field whose value does not change is not written (``unchanged_fields``,
  ``changed_values``: roles compare as sorted sets).
- ``consultancy_account_id`` must be an account id (a UUID), and must name another open
  account holding the ``consultancy`` role (INVALID_ARGUMENT CONSULTANCY_ACCOUNT_INVALID,
  ``check_consultancy``: the one rule here that reads, the named account through
  ``uow.accounts``).
- ``target_of``: what the policy needs to know of an account row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from accounts_grpc.domain import policy
from accounts_grpc.domain import roles as R
from accounts_grpc.domain.errors import InvalidArgument
from accounts_grpc.domain.ports import Accounts
from accounts_grpc.domain.validate import MAX_NAME, Validator, is_uuid
from accounts_grpc.services.user_fields import USER_OUTPUT_ONLY

#: Account fields a request may set, and those only the server sets.
UPDATABLE = frozenset(
    {
        "name",
        "email",
        "roles",
        "consultancy_account_id",
        "primary_color",
        "secondary_color",
        "logo_url",
    }
)
OUTPUT_ONLY = frozenset({"id", "closed", "create_time", "update_time", "activity_time"})


@dataclass(frozen=True)
class AccountInput:
    """An ``Account`` message as plain values: every field (proto defaults included, an
    unset timestamp as None), and the names of the fields the request populated."""

    values: Mapping[str, Any]
    populated: Sequence[str] = ()

    def get(self, name: str, default: Any = "") -> Any:
        return self.values.get(name, default)


@dataclass(frozen=True)
class FirstUserInput:
    """The ``first_user`` of CreateAccount as plain values."""

    kind: str = ""  # "HUMAN" | "EXTERNAL" | "MACHINE" | "" (unspecified)
    email: str = ""
    first_name: str = ""
    last_name: str = ""
    roles: Sequence[str] = ()
    external_id: str = ""
    etag: str = ""
    populated: Sequence[str] = field(default=())


def target_of(row: Any) -> policy.Target:
    """The policy target of an account row."""
    return policy.Target(
        account_id=row.id,
        consultancy_account_id=row.consultancy_account_id,
        account_closed=bool(row.closed),
    )


def _raise(v: Validator) -> None:
    """Raise the collected violations: UNKNOWN_ROLE when only roles are wrong."""
    if not v.violations:
        return
    only_roles = all(".roles" in x.field or x.field.startswith("roles") for x in v.violations)
    v.raise_if_any(reason="UNKNOWN_ROLE" if only_roles else "INVALID_ARGUMENT")


def _roles(v: Validator, fld: str, given: Sequence[str], allowed: frozenset[str]) -> list[str]:
    for i, r in enumerate(given):
        if r not in allowed:
            v.add(f"{fld}[{i}]", f"unknown role {r!r}; expected one of {sorted(allowed)}")
    return sorted(set(given))


def _consultancy_shape(v: Validator, fld: str, value: str) -> None:
    if value and not is_uuid(value):
        v.add(fld, f"{value[:60]!r} is not an account id (a UUID)")


def check_consultancy(accounts: Accounts, cid: str, self_id: str, fld: str) -> None:
    """``cid`` must name another open account that has the ``consultancy`` role."""
    if cid == self_id:
        raise InvalidArgument.field(
            fld, "an account cannot be its own consultancy", reason="CONSULTANCY_ACCOUNT_INVALID"
        )
    row = accounts.get(cid)
    if row is None or row.closed:
        raise InvalidArgument.field(
            fld, f"names no open account ({cid!r})", reason="CONSULTANCY_ACCOUNT_INVALID"
        )
    if R.CONSULTANCY not in (row.roles or ()):
        raise InvalidArgument.field(
            fld,
            f"account {cid!r} does not have the {R.CONSULTANCY!r} account role",
            reason="CONSULTANCY_ACCOUNT_INVALID",
        )


def stored_values(row: Any) -> dict[str, Any]:
    """An account row's values in the shape of ``AccountInput.values``."""
    return {
        "id": row.id,
        "name": row.name,
        "email": row.email,
        "roles": sorted(row.roles or ()),
        "consultancy_account_id": row.consultancy_account_id or "",
        "primary_color": row.primary_color,
        "secondary_color": row.secondary_color,
        "logo_url": row.logo_url,
        "closed": bool(row.closed),
        "create_time": row.create_time,
        "update_time": row.update_time,
        "activity_time": row.activity_time,
        "etag": row.etag,
    }


def _same(name: str, given: Any, stored: Any) -> bool:
    if name == "roles":
        return sorted(set(given)) == stored
    return bool(given == stored)


def unchanged_fields(account: AccountInput, stored: Mapping[str, Any]) -> list[str]:
    """The populated fields of ``account`` whose value is the stored one."""
    return [
        f for f in account.populated if f in stored and _same(f, account.get(f), stored[f])
    ]


def changed_values(wanted: Mapping[str, Any], stored: Mapping[str, Any]) -> dict[str, Any]:
    """The values of ``wanted`` that differ from the stored ones."""
    return {k: v for k, v in wanted.items() if not _same(k, v, stored[k])}


def check_new_account(
    account: AccountInput, first_user: FirstUserInput
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The cleaned values of a new account and of its first user; INVALID_ARGUMENT
    naming every bad field (UNKNOWN_ROLE when only roles are wrong)."""
    v = Validator()
    for f in sorted(set(account.populated) & (OUTPUT_ONLY | {"etag"})):
        v.add(f"account.{f}", "is output-only; leave it unset when creating an account")
    new = {
        "name": v.name("account.name", account.get("name")),
        "email": v.email("account.email", account.get("email")),
        "roles": _roles(v, "account.roles", account.get("roles", ()), R.ACCOUNT_ROLES),
        "consultancy_account_id": account.get("consultancy_account_id"),
        "primary_color": v.color("account.primary_color", account.get("primary_color")),
        "secondary_color": v.color("account.secondary_color", account.get("secondary_color")),
        "logo_url": v.url("account.logo_url", account.get("logo_url")),
    }
    _consultancy_shape(v, "account.consultancy_account_id", new["consultancy_account_id"])
    if first_user.kind not in ("", "HUMAN"):
        v.add(
            "first_user.kind",
            "the first user must be a HUMAN user (a person with an email); create "
            "MACHINE and EXTERNAL users with CreateUser",
        )
    for f in sorted(set(first_user.populated) & (USER_OUTPUT_ONLY | {"etag"})):
        v.add(f"first_user.{f}", "is output-only; leave it unset when creating a user")
    if first_user.external_id:
        v.add("first_user.external_id", "only EXTERNAL users have an external_id")
    user = {
        "email": v.email("first_user.email", first_user.email),
        "first_name": v.name("first_user.first_name", first_user.first_name, required=False),
        "last_name": v.name("first_user.last_name", first_user.last_name, required=False),
        "roles": _roles(
            v, "first_user.roles", [*first_user.roles, R.ACCOUNT_ADMIN], R.USER_ROLES
        ),
    }
    _raise(v)
    return new, user


def check_account_update(paths: Sequence[str], account: AccountInput) -> dict[str, Any]:
    """The cleaned values of the fields ``paths`` names; INVALID_ARGUMENT naming every
    bad field (UNKNOWN_ROLE when only roles are wrong)."""
    v = Validator()
    out: dict[str, Any] = {}
    for f in paths:
        value = account.get(f)
        fld = f"account.{f}"
        if f == "name":
            out[f] = v.name(fld, value, max_len=MAX_NAME)
        elif f == "email":
            out[f] = v.email(fld, value)
        elif f in ("primary_color", "secondary_color"):
            out[f] = v.color(fld, value)
        elif f == "logo_url":
            out[f] = v.url(fld, value)
        elif f == "roles":
            out[f] = _roles(v, fld, value or (), R.ACCOUNT_ROLES)
        elif f == "consultancy_account_id":
            _consultancy_shape(v, fld, value)
            out[f] = value
    _raise(v)
    return out
