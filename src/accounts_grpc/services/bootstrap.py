"""`accounts-grpc bootstrap`: the platform account and a new `admin` machine user.

Run twice, it makes another machine user and leaves the earlier ones working.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from accounts_grpc.auth.secrets import hash_secret, new_client_id, new_client_secret
from accounts_grpc.store import audit
from accounts_grpc.store.db import Database, new_etag, new_id, now_us
from accounts_grpc.store.tables import accounts, users

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
    with db.connect() as conn:
        return conn.execute(sa.select(users.c.id).limit(1)).first() is not None


def bootstrap(
    db: Database, *, name: str = PLATFORM_NAME, email: str = PLATFORM_EMAIL
) -> BootstrapResult:
    """The platform account (made once) and a new ``admin`` machine user in it."""
    try:
        return _bootstrap(db, name, email)
    except IntegrityError:  # a concurrent first bootstrap made the platform account
        return _bootstrap(db, name, email)


def _bootstrap(db: Database, name: str, email: str) -> BootstrapResult:
    now = now_us()
    with db.write() as uow:
        row = uow.conn.execute(
            sa.select(accounts.c.id).where(
                accounts.c.email_lower == email.lower(), accounts.c.closed.is_(False)
            )
        ).first()
        created = row is None
        if row is None:
            account_id = new_id()
            uow.conn.execute(
                accounts.insert().values(
                    id=account_id,
                    name=name,
                    email=email,
                    email_lower=email.lower(),
                    roles=[],
                    consultancy_account_id=None,
                    primary_color="",
                    secondary_color="",
                    logo_url="",
                    closed=False,
                    create_time=now,
                    update_time=now,
                    activity_time=None,
                    etag=new_etag(),
                )
            )
            audit.record(
                uow,
                account_id=account_id,
                actor_user_id=None,
                action="account.create",
                resource_type="Account",
                resource_id=account_id,
                changed_fields=["name", "email"],
                request_id="bootstrap",
            )
        else:
            account_id = row.id
        user_id = new_id()
        client_id, secret = new_client_id(), new_client_secret()
        uow.conn.execute(
            users.insert().values(
                id=user_id,
                account_id=account_id,
                kind="MACHINE",
                email=None,
                email_lower=None,
                first_name="",
                last_name="",
                name=f"bootstrap admin {client_id}",
                external_id=None,
                client_id=client_id,
                secret_hash=hash_secret(secret),
                roles=["admin"],
                create_time=now,
                update_time=now,
                etag=new_etag(),
            )
        )
        audit.record(
            uow,
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
