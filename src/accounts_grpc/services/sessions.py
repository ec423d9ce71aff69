"""Use cases for tokens and sessions: CreateToken, GetJwks, CreateSession, ListSessions,
RevokeSession, IntrospectToken.

- CreateToken is the OAuth2 client-credentials grant; failed attempts are rate limited
  per client id at an address, per address and per client id (services/ratelimit.py),
  for gRPC and the REST token endpoint alike, since both run this use case. The JWT
  carries the user's ``credential_generation`` as ``gen``: RotateClientSecret bumps it,
  which revokes every JWT issued with the old secret (auth/authenticate.py answers
  TOKEN_REVOKED).
- A session token (``st_...``) is 256 random bits, shown once by CreateSession and
  stored only as its SHA-256. A session expires ``session_ttl`` seconds after its last
  use (the authenticator slides ``expire_time`` forward as the token is used).
- CreateSession: by an ``admin``, the user's ``account-admin``, or a machine user of an
  ``intermediary`` account for its EXTERNAL users (policy USER_MANAGE); never for a
  user with roles, direct or through its groups, the caller could not grant (that
  would be a way to act with more rights than one's own: PERMISSION_DENIED
  ``USER_OUTRANKS_CALLER``, decided by ``common.authorize_user`` as for every RPC that
  acts on a user). A retry with the same ``request_id`` returns the first session,
  without its token: the token exists only as a hash (services/writes.py).
- ListSessions lists the sessions that still work (not revoked, not expired), newest
  first; revoked ones stay visible in the audit log. By the user itself too (USER_SELF).
  ListSessions and RevokeSession of *another* user follow the same rule as
  CreateSession: not for a user who outranks the caller.
- RevokeSession is idempotent: revoking a revoked session returns it unchanged
  (``revoke_time`` is when it was first revoked) and writes nothing.
- IntrospectToken (RFC 7662) answers ``active: false`` and nothing else for any token
  that would not authenticate a call right now, and for tokens of another account
  unless the caller is ``admin``/``admin-reader``; it never changes the token's state.
- The OAuth endpoints (rest/oauth_endpoints.py: RFC 7662 introspection, RFC 7009
  revocation) authenticate a *client* by its credentials rather than a bearer token:
  ``authenticate_client`` is CreateToken's check, through the same failed-attempt
  limiter, and the caller it yields is the one the client's JWT would stand for. Then
  introspection is IntrospectToken's rule, and ``revoke_token`` RevokeSession's: a
  session token is revoked if the client may revoke that session; an unknown, expired
  or revoked token needs nothing (RFC 7009 §2.2); a JWT that still works cannot be
  revoked on its own (UNSUPPORTED_TOKEN_TYPE: it lives until its ``exp``, unless the
  client secret is rotated, which revokes every JWT of that client).

The statements are ``uow.sessions``' (store/sessions.py); here are the rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from accounts_grpc.auth.jwt_tokens import IssuedToken
from accounts_grpc.auth.secrets import hash_secret, new_session_token, verify_secret
from accounts_grpc.domain import policy
from accounts_grpc.domain.call import current_call
from accounts_grpc.domain.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    not_found,
)
from accounts_grpc.domain.listing import Page, parse_list_request
from accounts_grpc.domain.ports import UnitOfWork
from accounts_grpc.domain.principal import Principal
from accounts_grpc.domain.validate import Validator
from accounts_grpc.services import events
from accounts_grpc.services.common import authorize_user, effective_roles, resolve_user_ref
from accounts_grpc.services.deps import Deps
from accounts_grpc.services.ratelimit import FailureLimiter
from accounts_grpc.services.writes import create_once, fingerprint
from accounts_grpc.store.db import new_id, now_us

MAX_USER_AGENT = 500
_US = 1_000_000


@dataclass(frozen=True)
class UserRefArgs:
    """A ``UserRef`` as plain values (the servicer unpacks the proto into this)."""

    user_id: str = ""
    external_id: str = ""
    account_id: str = ""

    @property
    def key(self) -> str:
        return self.user_id or self.external_id


@dataclass(frozen=True)
class TokenInfo:
    """RFC 7662 introspection: ``active`` and, only when active, what the token carries."""

    active: bool
    token_type: str = ""  # "jwt" | "session"
    sub: str = ""
    account_id: str = ""
    roles: tuple[str, ...] = ()
    kind: str = ""  # "HUMAN" | "EXTERNAL" | "MACHINE"
    iss: str = ""
    aud: str = ""
    jti: str = ""
    exp: int = 0
    iat: int = 0
    client_id: str = ""
    scope: str = ""


INACTIVE = TokenInfo(active=False)


@dataclass(frozen=True)
class Issuer:
    """What the authorization-server metadata (RFC 8414) says of the tokens."""

    #: the ``iss`` of every JWT this server signs, exactly
    issuer: str
    #: the ``alg`` of the keys that verify tokens now (the JWKS), newest key first
    signing_algs: tuple[str, ...]


class SessionsService:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.limiter = FailureLimiter(deps.db, deps.settings)

    # -- CreateToken -----------------------------------------------------------------------
    def create_token(self, client_id: str, client_secret: str, grant_type: str = "") -> IssuedToken:
        """Client credentials → a signed JWT (RFC 6749 §4.4), rate limited on failures."""
        if grant_type and grant_type != "client_credentials":
            raise InvalidArgument.field(
                "grant_type",
                "only client_credentials is supported",
                reason="UNSUPPORTED_GRANT_TYPE",
            )
        call = current_call()
        keys = self.limiter.keys(client_id, call.peer if call else None)
        # reserved before the secret is checked: a blocked client is refused first, and
        # concurrent guesses are checked one after another against the committed count
        with self.limiter.attempt(keys) as attempt:
            uow = attempt.uow
            row = uow.sessions.client_by_client_id(client_id) if client_id else None
            ok = verify_secret(client_secret, row.secret_hash if row else None)
            if row is not None and ok and not row.closed:
                attempt.succeeded()
                roles = effective_roles(uow.authority, row.id, row.roles)
                generation = int(row.credential_generation)
            else:
                row = None
        if row is None:
            if not client_id or not client_secret:
                raise Unauthenticated(
                    "client_id and client_secret are required", reason="INVALID_CLIENT"
                )
            raise Unauthenticated("invalid client credentials", reason="INVALID_CLIENT")
        return self.deps.jwts.issue(
            user_id=row.id,
            account_id=row.account_id,
            roles=sorted(roles),
            kind=row.kind,
            client_id=client_id,
            generation=generation,
        )

    def authenticate_client(self, client_id: str, client_secret: str) -> Principal:
        """The caller of an OAuth endpoint that authenticates clients (RFC 7662, RFC 7009).

        CreateToken's own check, so the same failed-attempt limiter counts it (a wrong
        secret here is one more failure of that client at that address), and the caller
        is the one the client's JWT would stand for: built by the one authenticator, from
        the database now, rather than by a second copy of its rules. The JWT made on the
        way is never shown to anyone.
        """
        issued = self.create_token(client_id, client_secret)
        try:
            return self.deps.authn.principal_for_token(issued.token, touch=False)
        except Unauthenticated:  # the user was deleted, or its secret rotated, meanwhile
            raise Unauthenticated("invalid client credentials", reason="INVALID_CLIENT") from None

    # -- GetJwks ---------------------------------------------------------------------------
    def jwks(self) -> list[dict[str, Any]]:
        """The public keys that verify tokens now (RFC 7517 members), newest first."""
        return self.deps.keys.jwks()

    def issuer(self) -> Issuer:
        """The issuer and signing algorithms the OAuth metadata documents."""
        algs: list[str] = []
        for key in self.jwks():
            alg = key.get("alg")
            if isinstance(alg, str) and alg not in algs:
                algs.append(alg)
        return Issuer(self.deps.settings.issuer,
                      tuple(algs) or (self.deps.settings.signing_alg,))

    # -- CreateSession ---------------------------------------------------------------------
    def create_session(
        self, p: Principal, user: UserRefArgs, *, user_agent: str = "", request_id: str = ""
    ) -> tuple[Any, str]:
        """Open a session; returns (session row, token). The token is "" on a retry."""
        v = Validator()
        user_agent = v.text("user_agent", user_agent.strip(), max_len=MAX_USER_AGENT)
        v.raise_if_any()
        fp = fingerprint("CreateSession", user.user_id, user.external_id, user.account_id,
                         user_agent)
        if not user_agent:
            call = current_call()
            user_agent = (call.metadata.get("user-agent", "") if call else "")[:MAX_USER_AGENT]
        token = new_session_token()

        def create(uow: UnitOfWork) -> dict[str, str]:
            target = resolve_user_ref(
                uow.authority, p, user_id=user.user_id, external_id=user.external_id,
                account_id=user.account_id, field="user",
            )
            authorize_user(
                uow.authority, p, policy.Action.USER_MANAGE, target.target, target.row.roles,
                key=user.key,
            )
            now = now_us()
            sid = new_id()
            uow.sessions.insert(
                session_id=sid,
                user_id=target.row.id,
                account_id=target.row.account_id,
                token_hash=hash_secret(token),
                user_agent=user_agent,
                now=now,
                expire_time=now + self.deps.settings.session_ttl * _US,
            )
            uow.audit.record(
                account_id=target.row.account_id,
                actor_user_id=p.user_id,
                action="session.create",
                resource_type="Session",
                resource_id=sid,
                changed_fields=["user_id", "user_agent"],
                request_id=request_id,
            )
            return {"session_id": sid}

        def load(uow: UnitOfWork, ids: Any) -> Any:
            row = uow.sessions.by_id(ids["session_id"])
            if row is None:  # a retry after the session's user was deleted
                raise not_found("session", "id", ids["session_id"])
            return row

        row, created = create_once(
            self.deps.db, p, "/accounts.v1.SessionService/CreateSession", request_id, fp,
            create, load, keep=self.deps.settings.request_id_ttl,
        )
        return row, token if created else ""

    # -- ListSessions ----------------------------------------------------------------------
    def list_sessions(
        self, p: Principal, user: UserRefArgs, *, page_size: int = 0, page_token: str = ""
    ) -> Page:
        """The user's working sessions (not revoked, not expired), newest first."""
        with self.deps.db.read() as uow:
            target = resolve_user_ref(
                uow.authority, p, user_id=user.user_id, external_id=user.external_id,
                account_id=user.account_id, field="user",
            )
            authorize_user(
                uow.authority, p, policy.Action.USER_SELF, target.target, target.row.roles,
                key=user.key,
            )
            query = parse_list_request(
                uow.sessions.list_shape,
                secret=self.deps.page_secret,
                page_size=page_size,
                page_token=page_token,
                scope={"user_id": target.row.id},
            )
            return uow.sessions.list_for_user(target.row.id, query, now=now_us())

    # -- RevokeSession ---------------------------------------------------------------------
    def revoke_session(self, p: Principal, session_id: str) -> Any:
        """Revoke at once (the next call with its token is SESSION_REVOKED); idempotent."""
        v = Validator()
        v.id("id", session_id)
        v.raise_if_any(reason="INVALID_ID" if session_id else "INVALID_ARGUMENT")
        with self.deps.db.write() as uow:
            scope = uow.sessions.scope(session_id)
            if scope is None:
                raise not_found("session", "id", session_id)
            self._revoke(uow, p, scope)
            row = uow.sessions.by_id(session_id)
            uow.commit()
        return row

    def _revoke(self, uow: UnitOfWork, p: Principal, scope: Any) -> None:
        """RevokeSession's rule and write, for the session ``scope`` describes."""
        session_id = scope.id
        target = policy.Target(
            account_id=scope.account_id,
            consultancy_account_id=scope.consultancy_account_id,
            account_closed=bool(scope.closed),
            user_id=scope.user_id,
            user_kind=scope.kind,
        )
        authorize_user(
            uow.authority, p, policy.Action.USER_SELF, target, scope.roles,
            what="session", key=session_id,
        )
        if scope.revoke_time is None:
            uow.sessions.revoke(session_id, now=now_us())
            uow.audit.record(
                account_id=scope.account_id,
                actor_user_id=p.user_id,
                action="session.revoke",
                resource_type="Session",
                resource_id=session_id,
                changed_fields=["revoke_time"],
                revocation=events.revocation(events.SESSION_REVOKED, session_ids=[session_id]),
            )

    def revoke_token(self, p: Principal, token: str) -> bool:
        """RFC 7009 for the client ``p``: revoke the session a session token opens.

        True if it was revoked now; False if there was nothing to revoke (an unknown,
        expired or revoked token, or one of a closed account: RFC 7009 §2.2 answers
        such a request as a success). A session the client may not revoke by
        RevokeSession's rule (its user is another tenant's, or outranks the client) is
        PERMISSION_DENIED: the token goes on working, so the client must not be told it
        was revoked. A JWT that still works is INVALID_ARGUMENT UNSUPPORTED_TOKEN_TYPE
        (RFC 7009 §2.2.1).
        """
        token = token.strip()
        if not token:
            raise InvalidArgument.field("token", "is required")
        try:
            q = self.deps.authn.principal_for_token(token, touch=False)
        except Unauthenticated:
            return False
        if q.token_type != "session" or not q.session_id:
            raise InvalidArgument.field(
                "token",
                "a JWT access token cannot be revoked on its own: it works until its exp "
                "(rotating the client secret revokes every JWT of that client)",
                reason="UNSUPPORTED_TOKEN_TYPE",
            )
        with self.deps.db.write() as uow:
            scope = uow.sessions.scope(q.session_id)
            if scope is None or scope.revoke_time is not None:
                return False  # deleted or revoked since it was looked up
            try:
                self._revoke(uow, p, scope)
            except NotFound:  # the client may not even see the session's user
                raise PermissionDenied(
                    "this client may not revoke that token", reason="SESSION_NOT_REVOCABLE"
                ) from None
            uow.commit()
        return True

    # -- IntrospectToken -------------------------------------------------------------------
    def introspect(self, p: Principal, token: str) -> TokenInfo:
        """RFC 7662: what ``token`` carries if it would authenticate a call now."""
        token = token.strip()
        if not token:
            raise InvalidArgument.field("token", "is required")
        try:
            q = self.deps.authn.principal_for_token(token, touch=False)
        except Unauthenticated:
            return INACTIVE
        if q.account_id != p.account_id and not p.is_platform_reader:
            return INACTIVE  # another tenant's token: as if unknown
        common: dict[str, Any] = dict(
            active=True,
            token_type=q.token_type,
            sub=q.user_id,
            account_id=q.account_id,
            roles=tuple(sorted(q.roles)),
            kind=q.kind,
        )
        if q.token_type == "session":
            with self.deps.db.read() as reader:
                row = reader.sessions.by_id(q.session_id) if q.session_id else None
            if row is None:  # revoked and deleted between the two reads
                return INACTIVE
            return TokenInfo(
                **common,
                jti=row.id,
                exp=row.expire_time // _US,
                iat=row.create_time // _US,
            )
        claims = self.deps.jwts.verify(token)  # a cache hit: verified just above
        aud = claims.get("aud", "")
        return TokenInfo(
            **common,
            iss=str(claims.get("iss", "")),
            aud=aud if isinstance(aud, str) else " ".join(map(str, aud)),
            jti=str(claims.get("jti", "")),
            exp=int(claims["exp"]),
            iat=int(claims.get("iat", 0)),
            client_id=str(claims.get("client_id", "")),
            scope=str(claims.get("scope", "")),
        )
