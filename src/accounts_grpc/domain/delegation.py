"""Delegated tokens (RFC 8693 token exchange): who may delegate what, written once.

The same rule decides twice: when a token is exchanged (services/exchange.py) and on
every call made with the delegated token (auth/authenticate.py), so a delegation that
would no longer be granted stops working at once, as a deleted user's token does.

- **Consultancy.** A user with the ``consultant`` role whose own account is the target
  account's ``consultancy_account_id`` acts itself in the target with ``consultant``
  only: the read rights API.md gives a consultant, confined to that one account.
- **Installer.** An ``admin`` delegates any user roles but ``admin`` and
  ``admin-reader`` (those reach every account, and the token is confined to one), in any
  open account, to any user (the installer; itself by default).

A delegated token is never exchanged again (RFC 8693 leaves chains to policy; here a
delegation is always one step from a real credential).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from accounts_grpc.domain import roles as R
from accounts_grpc.domain.errors import DomainError, FailedPrecondition, PermissionDenied, not_found

#: roles an admin may delegate: every user role but the platform-wide ones
DELEGABLE_ROLES = R.USER_ROLES - {R.ADMIN, R.ADMIN_READER}
#: what a consultancy token carries
CONSULTANCY_ROLES = frozenset({R.CONSULTANT})


@dataclass(frozen=True)
class Delegation:
    """What a delegated token says beyond a plain one: who acts on whose authority."""

    #: the token's ``sub``: the user whose token was exchanged for it
    subject_user_id: str
    #: ``act.sub``: the user who acts with it (the Principal's ``user_id``)
    actor_user_id: str
    #: the roles it carries, as delegated (the ``roles`` claim)
    roles: frozenset[str]


@dataclass(frozen=True)
class Grantor:
    """The subject as the database says it is now."""

    user_id: str
    account_id: str
    roles: frozenset[str]  # effective roles


@dataclass(frozen=True)
class TargetAccount:
    id: str
    consultancy_account_id: str | None
    closed: bool


def default_roles(subject_roles: Iterable[str]) -> frozenset[str]:
    """The roles of an exchange that asks for none: ``member`` for an admin's token,
    ``consultant`` for a consultant's."""
    return frozenset({R.MEMBER}) if R.ADMIN in subject_roles else CONSULTANCY_ROLES


def refusal(subject: Grantor, account_id: str, target: TargetAccount | None,
            actor_user_id: str, roles: frozenset[str]) -> DomainError | None:
    """Why ``subject`` may not delegate ``roles`` in account ``account_id`` (``target``
    as read now; None: there is none) to ``actor_user_id``, or None if it may. To a
    consultant a missing account is refused as a stranger's is, so that the refusal
    does not tell whether the account exists."""
    if R.ADMIN in subject.roles:
        extra = sorted(roles - DELEGABLE_ROLES)
        if extra:
            return PermissionDenied(
                f"roles {extra} cannot be delegated; delegable: {sorted(DELEGABLE_ROLES)}",
                reason="ROLE_NOT_DELEGABLE", metadata={"roles": ",".join(extra)})
    else:
        if actor_user_id != subject.user_id:
            return PermissionDenied(
                "only an admin may issue a delegated token for another user",
                reason="ACTOR_NOT_ALLOWED")
        if R.CONSULTANT not in subject.roles:
            return PermissionDenied(
                "only a consultant (or an admin) may exchange its token for one that acts "
                "in another account", reason="NOT_CONSULTANT")
        if target is None or target.consultancy_account_id != subject.account_id:
            return PermissionDenied(
                "the account is not a client of the caller's consultancy "
                "(its consultancy_account_id is not the caller's account)",
                reason="NOT_CONSULTANT_OF_ACCOUNT")
        extra = sorted(roles - CONSULTANCY_ROLES)
        if extra:
            return PermissionDenied(
                f"a consultancy token carries the consultant role only, not {extra}",
                reason="ROLE_NOT_DELEGABLE", metadata={"roles": ",".join(extra)})
    if target is None:  # only an admin gets here: it may know
        return not_found("account", "id", account_id)
    if target.closed:
        return FailedPrecondition("the account is closed", reason="ACCOUNT_CLOSED")
    return None
