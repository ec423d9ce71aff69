"""What the use cases on a user, and on what hangs off it, share: the kinds of user,
naming a user (``UserRef``), authorizing an act on it, and the write transaction they
all run in.

- A caller that may not *read* a user gets NOT_FOUND (``USER_NOT_FOUND``); one that may
  read it but not do the act gets PERMISSION_DENIED; acting on a user holding a role
  the caller could not grant, directly or through a user group, is PERMISSION_DENIED
  ``USER_OUTRANKS_CALLER``. Every check goes through ``authorize``, which asks
  ``common.authorize_user``.
- ``write``: one write transaction; one that a concurrent writer spoiled (a unique key
  taken, a row it referred to deleted meanwhile) runs once more, and ABORTED
  ``CONCURRENT_MODIFICATION`` if that is spoiled too.

Used by services/users.py, device_permissions.py, charging.py and orders.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from accounts_grpc.domain.errors import Aborted, InvalidArgument
from accounts_grpc.domain.policy import Action
from accounts_grpc.domain.ports import Authority, Database, UnitOfWork
from accounts_grpc.domain.principal import Principal
from accounts_grpc.domain.validate import Validator, check_id
from accounts_grpc.services.common import ResolvedUser, authorize_user, resolve_user_ref
from accounts_grpc.store import errors

T = TypeVar("T")

HUMAN, EXTERNAL, MACHINE = "HUMAN", "EXTERNAL", "MACHINE"
KINDS = (HUMAN, EXTERNAL, MACHINE)


@dataclass(frozen=True)
class UserRef:
    user_id: str = ""
    external_id: str = ""
    account_id: str = ""

    def list_scope(self) -> dict[str, str]:
        """What a page token of a list of what hangs off this user is bound to."""
        return {"user_id": self.user_id, "external_id": self.external_id,
                "account": self.account_id}


def check_user_ref(ref: UserRef, field: str = "user") -> None:
    if not ref.user_id and not ref.external_id:
        raise InvalidArgument.field(
            field, "name the user by user_id or external_id", reason="USER_REF_REQUIRED"
        )
    if ref.user_id:
        check_id(f"{field}.user_id", ref.user_id)
        return
    v = Validator()
    v.external_id(f"{field}.external_id", ref.external_id)
    v.raise_if_any()
    if ref.account_id:
        check_id(f"{field}.account_id", ref.account_id)


def authorize(
    authority: Authority, p: Principal, action: Action, r: ResolvedUser, key: str, value: str
) -> None:
    """NOT_FOUND unless the caller may read the user; then PERMISSION_DENIED unless
    it may do ``action`` on it, nor on a user holding roles it could not grant
    (``common.authorize_user``)."""
    authorize_user(authority, p, action, r.target, r.row.roles, what="user", key_field=key,
                   key=value)


def target(authority: Authority, p: Principal, ref: UserRef, action: Action) -> ResolvedUser:
    """The user ``ref`` names, once the caller may do ``action`` on it (``authorize``)."""
    r = resolve_user_ref(
        authority,
        p,
        user_id=ref.user_id,
        external_id=ref.external_id,
        account_id=ref.account_id,
    )
    key, value = ("id", ref.user_id) if ref.user_id else ("external_id", ref.external_id)
    authorize(authority, p, action, r, key, value)
    return r


def write(db: Database, fn: Callable[[UnitOfWork], T]) -> T:
    """Run ``fn`` in one write transaction; one a concurrent writer spoiled (any
    constraint violation: a unique key taken, a row it refers to deleted meanwhile) runs
    once more, then it is ABORTED ``CONCURRENT_MODIFICATION``."""
    for attempt in range(2):
        try:
            with db.write() as uow:
                out = fn(uow)
                uow.commit()
                return out
        except errors.ConstraintViolation:
            if attempt:
                raise Aborted(
                    "a concurrent call changed the same data; retry",
                    reason="CONCURRENT_MODIFICATION",
                ) from None
    raise AssertionError("unreachable")
