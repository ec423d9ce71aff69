"""Use cases for users."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from accounts_grpc.domain.errors import Unauthenticated
from accounts_grpc.domain.principal import Principal
from accounts_grpc.services.deps import Deps
from accounts_grpc.store.tables import accounts, users

_ME = sa.select(users).where(users.c.id == sa.bindparam("uid"))
_ACCOUNT = sa.select(accounts).where(accounts.c.id == sa.bindparam("aid"))


class UsersService:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def get_me(self, p: Principal) -> tuple[Any, Any]:
        """The caller's own user and account."""
        with self.deps.db.connect() as conn:
            user = conn.execute(_ME, {"uid": p.user_id}).first()
            account = conn.execute(_ACCOUNT, {"aid": p.account_id}).first()
        if user is None or account is None:
            raise Unauthenticated("the token's user no longer exists", reason="USER_DELETED")
        return user, account
