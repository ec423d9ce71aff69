"""`accounts-grpc bootstrap`: the platform account and a new `admin` machine user.

Run twice, it makes another machine user and leaves the earlier ones working.

The rules are here; the statements are ``uow.bootstrap``'s (store/bootstrap.py: the
platform account, whether any user exists) and ``uow.accounts``' (the machine user).
"""

from __future__ import annotations

from dataclasses import dataclass

from accounts_grpc.auth.secrets import hash_secret, new_client_id, new_client_secret
from accounts_grpc.domain.ports import Database
from accounts_grpc.store import errors
from accounts_grpc.store.db import new_id, now_us

PLATFORM_NAME = "Platform"
PLATFORM_EMAIL = "platform@accounts.local"


@dataclass(frozen=True)
class BootstrapResult:
    account_id: str
    account_created: bool
    user_id: str
    client_id: str
    client_secret: str


def has_users(db: Database) -> bool:
    """Whether any user exists (``serve --print-bootstrap`` bootstraps only when none does)."""
    with db.read() as uow:
        return uow.bootstrap.any_user()


def bootstrap(
    db: Database, *, name: str = PLATFORM_NAME, email: str = PLATFORM_EMAIL
) -> BootstrapResult:
    """The platform account (made once) and a new ``admin`` machine user in it."""
    try:
        return _bootstrap(db, name, email)
    except errors.ConstraintViolation:  # a concurrent first bootstrap made the account
        return _bootstrap(db, name, email)


def _bootstrap(db: Database, name: str, email: str) -> BootstrapResult:
    now = now_us()
    with db.write() as uow:
        found = uow.bootstrap.platform_account_id(email)
        created = found is None
        if found is None:
            account_id = new_id()
            uow.bootstrap.insert_platform_account(
                account_id=account_id, name=name, email=email, now=now
            )
            uow.audit.record(
                account_id=account_id,
                actor_user_id=None,
                action="account.create",
                resource_type="Account",
                resource_id=account_id,
                changed_fields=["name", "email"],
                request_id="bootstrap",
            )
        else:
            account_id = found
        user_id = new_id()
        client_id, secret = new_client_id(), new_client_secret()
        uow.accounts.insert_user(
            user_id=user_id,
            account_id=account_id,
            kind="MACHINE",
            email=None,
            first_name="",
            last_name="",
            name=f"bootstrap admin {client_id}",
            client_id=client_id,
            secret_hash=hash_secret(secret),
            roles=["admin"],
            now=now,
        )
        uow.audit.record(
            account_id=account_id,
            actor_user_id=None,
            action="user.create",
            resource_type="User",
            resource_id=user_id,
            changed_fields=["kind", "roles"],
            request_id="bootstrap",
        )
        uow.commit()
    return BootstrapResult(account_id, created, user_id, client_id, secret)
