"""The fields of a user and their rules, pure (unit-tested without I/O): what a client
may set on a user of each kind, what it reads back, the name lists sort by, and which
roles a caller may hand out. The use cases are in services/users.py.

- Kinds: HUMAN needs ``email`` (names optional); EXTERNAL needs ``external_id`` (email and
  names optional); MACHINE has no email and no external_id (its optional names label
  it). ``external_id`` is only for EXTERNAL users. Populated output-only fields are
  INVALID_ARGUMENT on create too, never silently ignored.
- Roles: stored sorted; an empty list is stored as ``["member"]``. A caller grants only
  roles from ``roles.grantable_roles`` (PERMISSION_DENIED ``ROLE_NOT_GRANTABLE``).
- An e-mail or external id another user of the account has is ALREADY_EXISTS
  ``EMAIL_TAKEN`` / ``EXTERNAL_ID_TAKEN``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from accounts_grpc.domain import roles as R
from accounts_grpc.domain.errors import AlreadyExists, PermissionDenied
from accounts_grpc.domain.principal import Principal
from accounts_grpc.domain.validate import Validator
from accounts_grpc.services.user_access import EXTERNAL, HUMAN, KINDS, MACHINE

#: User fields a client may set, and those only the server sets.
USER_UPDATABLE = frozenset({"email", "first_name", "last_name", "external_id", "roles"})
USER_OUTPUT_ONLY = frozenset({"id", "account_id", "client_id", "create_time", "update_time"})
#: what a kind that is none of ``KINDS`` is told
KIND_CHOICES = f"must be one of {', '.join('USER_KIND_' + k for k in KINDS)}"
#: the identity fields ``check_user_fields`` cleans
IDENTITY_FIELDS = ("first_name", "last_name", "email", "external_id")


@dataclass(frozen=True)
class UserInput:
    """A User as the client sent it; ``populated`` names the fields it set."""

    kind: str = ""  # HUMAN | EXTERNAL | MACHINE, "" when unspecified
    account_id: str = ""
    email: str = ""
    first_name: str = ""
    last_name: str = ""
    external_id: str = ""
    roles: tuple[str, ...] = ()
    etag: str = ""
    populated: tuple[str, ...] = ()
    # output-only fields, as sent back by a client that read the user (never written)
    client_id: str = ""
    create_time: int | None = None
    update_time: int | None = None


@dataclass(frozen=True)
class CreatedUser:
    row: Any
    client_secret: str  # only for a MACHINE user just created; "" otherwise


@dataclass(frozen=True)
class RotatedSecret:
    client_id: str
    client_secret: str


def display_name(
    first_name: str, last_name: str, email: str, external_id: str, client_id: str
) -> str:
    """What lists sort and filter users by: "first last", else email, external id, client id."""
    full = " ".join(x for x in (first_name.strip(), last_name.strip()) if x)
    return full or email or external_id or client_id or ""


def unchanged_fields(u: UserInput, row: Any) -> set[str]:
    """Populated fields whose value equals the stored one: no change is asked of them."""
    stored: dict[str, Any] = {
        "kind": row.kind,
        "account_id": row.account_id,
        "email": row.email or "",
        "first_name": row.first_name,
        "last_name": row.last_name,
        "external_id": row.external_id or "",
        "client_id": row.client_id or "",
        "roles": sorted(set(row.roles or ())),
        "create_time": row.create_time,
        "update_time": row.update_time,
    }
    sent: dict[str, Any] = {
        "kind": u.kind,
        "account_id": u.account_id,
        "email": u.email,
        "first_name": u.first_name,
        "last_name": u.last_name,
        "external_id": u.external_id,
        "client_id": u.client_id,
        "roles": sorted(set(u.roles)),
        "create_time": u.create_time,
        "update_time": u.update_time,
    }
    return {f for f in u.populated if f in stored and stored[f] == sent[f]}


def check_user_fields(
    v: Validator,
    kind: str,
    *,
    email: str,
    first_name: str,
    last_name: str,
    external_id: str,
    prefix: str = "user",
) -> dict[str, str]:
    """The identity fields of a user of ``kind``, cleaned; violations go to ``v``."""
    out = {
        "first_name": v.name(f"{prefix}.first_name", first_name, required=False),
        "last_name": v.name(f"{prefix}.last_name", last_name, required=False),
        "email": v.email(f"{prefix}.email", email, required=kind == HUMAN),
        "external_id": v.external_id(
            f"{prefix}.external_id", external_id, required=kind == EXTERNAL
        ),
    }
    if kind == HUMAN and out["external_id"]:
        v.add(f"{prefix}.external_id", "only EXTERNAL users have an external_id")
    if kind == MACHINE:
        for f in ("email", "external_id"):
            if out[f]:
                v.add(f"{prefix}.{f}", f"MACHINE users have no {f.replace('_', ' ')}")
    return out


def check_new_user(account_id: str, u: UserInput) -> dict[str, str]:
    """The cleaned identity fields of ``u``, to be created in ``account_id``;
    INVALID_ARGUMENT naming every bad field."""
    v = Validator()
    v.id("account_id", account_id)
    if u.kind not in KINDS:
        v.add("user.kind", KIND_CHOICES)
    for f in sorted(set(u.populated) & USER_OUTPUT_ONLY):
        if f == "account_id" and u.account_id == account_id:
            continue  # the same account as the request's: harmless
        v.add(f"user.{f}", "is output-only and cannot be set")
    if u.etag:
        v.add("user.etag", "must be empty when creating a user")
    fields = check_user_fields(
        v,
        u.kind,
        email=u.email,
        first_name=u.first_name,
        last_name=u.last_name,
        external_id=u.external_id,
    )
    v.raise_if_any()
    return fields


def identity_values(
    fields: dict[str, str], paths: Collection[str] = IDENTITY_FIELDS
) -> dict[str, Any]:
    """The stored values of the cleaned identity ``fields`` named in ``paths``: an empty
    e-mail or external id is NULL, the e-mail is also kept lower-cased (its unique key)."""
    values: dict[str, Any] = {}
    for f in ("first_name", "last_name"):
        if f in paths:
            values[f] = fields[f]
    if "email" in paths:
        values["email"] = fields["email"] or None
        values["email_lower"] = fields["email"].lower() or None
    if "external_id" in paths:
        values["external_id"] = fields["external_id"] or None
    return values


def new_user(
    uid: str,
    account_id: str,
    kind: str,
    fields: dict[str, str],
    roles: list[str],
    *,
    client_id: str | None,
    secret_hash: str | None,
    now: int,
    etag: str,
) -> dict[str, Any]:
    """The stored values of a new user with these cleaned ``fields``."""
    return dict(
        id=uid,
        account_id=account_id,
        kind=kind,
        **identity_values(fields),
        name=display_name(
            fields["first_name"],
            fields["last_name"],
            fields["email"],
            fields["external_id"],
            client_id or "",
        ),
        client_id=client_id,
        secret_hash=secret_hash,
        roles=roles,
        create_time=now,
        update_time=now,
        etag=etag,
    )


def check_grantable(p: Principal, roles: Sequence[str], field: str) -> list[str]:
    """Validated roles the caller may hand out (``["member"]`` when none are given)."""
    clean = R.validate_roles(roles, R.USER_ROLES, field)
    denied = [r for r in clean if r not in R.grantable_roles(p.roles)]
    if denied:
        raise PermissionDenied(
            f"the caller may not grant the role(s) {', '.join(denied)}",
            reason="ROLE_NOT_GRANTABLE",
            metadata={"roles": ",".join(denied)},
        )
    return clean or [R.MEMBER]


def taken(field: str, value: str) -> AlreadyExists:
    """ALREADY_EXISTS: another user of the account has this ``email`` / ``external_id``."""
    return AlreadyExists(
        f"another user of the account already has this {field.replace('_', ' ')}",
        reason=f"{field.upper()}_TAKEN",
        metadata={field: value},
    )
