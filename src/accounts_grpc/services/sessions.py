"""Use cases for tokens and sessions."""

from __future__ import annotations

import sqlalchemy as sa

from accounts_grpc.auth.jwt_tokens import IssuedToken
from accounts_grpc.auth.secrets import verify_secret
from accounts_grpc.domain.errors import InvalidArgument, Unauthenticated
from accounts_grpc.services.deps import Deps
from accounts_grpc.store.tables import accounts, group_members, user_groups, users


class SessionsService:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def create_token(self, client_id: str, client_secret: str, grant_type: str = "") -> IssuedToken:
        """Client credentials → a signed JWT (RFC 6749 §4.4)."""
        if grant_type and grant_type != "client_credentials":
            raise InvalidArgument.field(
                "grant_type", "only client_credentials is supported", reason="UNSUPPORTED_GRANT_TYPE"
            )
        if not client_id or not client_secret:
            raise Unauthenticated("client_id and client_secret are required", reason="INVALID_CLIENT")
        with self.deps.db.connect() as conn:
            row = conn.execute(
                sa.select(users.c.id, users.c.account_id, users.c.kind, users.c.roles,
                          users.c.secret_hash, accounts.c.closed)
                .select_from(users.join(accounts, accounts.c.id == users.c.account_id))
                .where(users.c.client_id == client_id)
            ).first()
            ok = verify_secret(client_secret, row.secret_hash if row else None)
            if row is None or not ok or row.closed:
                raise Unauthenticated("invalid client credentials", reason="INVALID_CLIENT")
            roles = set(row.roles or ()) | {"member"}
            for (group_roles,) in conn.execute(
                sa.select(user_groups.c.roles)
                .select_from(group_members.join(user_groups, user_groups.c.id == group_members.c.group_id))
                .where(group_members.c.user_id == row.id)
            ):
                roles.update(group_roles or ())
        return self.deps.jwts.issue(
            user_id=row.id, account_id=row.account_id, roles=sorted(roles), kind=row.kind,
            client_id=client_id,
        )
