"""The role vocabulary of API.md, as data."""

from __future__ import annotations

from collections.abc import Iterable

from accounts_grpc.domain.errors import FieldViolation, InvalidArgument

ADMIN = "admin"
ADMIN_READER = "admin-reader"
ACCOUNT_ADMIN = "account-admin"
CONSULTANT = "consultant"
MEMBER = "member"

INTERMEDIARY = "intermediary"
CONSULTANCY = "consultancy"

#: User roles, weakest first. A caller may grant only roles at or below its own
#: highest rank; ``admin-reader`` and ``admin`` are granted by ``admin`` alone.
USER_ROLE_RANK: dict[str, int] = {
    MEMBER: 0,
    CONSULTANT: 1,
    ACCOUNT_ADMIN: 2,
    ADMIN_READER: 3,
    ADMIN: 4,
}
USER_ROLES = frozenset(USER_ROLE_RANK)
ACCOUNT_ROLES = frozenset({INTERMEDIARY, CONSULTANCY})


def validate_roles(roles: Iterable[str], allowed: frozenset[str], field: str) -> list[str]:
    """Check every word against the vocabulary; return them sorted and de-duplicated."""
    roles = list(roles)
    bad = [
        FieldViolation(f"{field}[{i}]", f"unknown role {r!r}; expected one of {sorted(allowed)}")
        for i, r in enumerate(roles)
        if r not in allowed
    ]
    if bad:
        raise InvalidArgument(f"{field}: unknown role", bad, reason="UNKNOWN_ROLE")
    return sorted(set(roles))


def max_rank(roles: Iterable[str]) -> int:
    return max((USER_ROLE_RANK.get(r, -1) for r in roles), default=-1)


#: Roles that only read: holding one lets a caller grant nothing (it cannot write at all).
READ_ONLY_ROLES = frozenset({ADMIN_READER, CONSULTANT})


def grantable_roles(caller_roles: frozenset[str]) -> frozenset[str]:
    """Roles a caller may hand out: admin any; otherwise none above its own writing role,
    never admin or admin-reader; the read-only roles grant nothing beyond ``member``."""
    if ADMIN in caller_roles:
        return USER_ROLES
    top = max_rank(caller_roles - READ_ONLY_ROLES)
    return frozenset(
        r for r, rank in USER_ROLE_RANK.items() if rank <= top and r not in (ADMIN, ADMIN_READER)
    )
