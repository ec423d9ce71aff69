"""Use cases for users: create, read, list, update and delete them, GetMe, and the
client secret of MACHINE users.

The fields of a user and their rules (kinds, roles a caller may grant) are in
services/user_fields.py; naming a user and authorizing an act on it in
services/user_access.py; what hangs off a user in device_permissions.py, charging.py
and orders.py; the statements are ``uow.users``' (store/users.py).

Who may do what comes from ``domain/policy.py`` (asked right where the user is loaded):
a caller that may not *read* a user gets NOT_FOUND (``USER_NOT_FOUND``), one that may
read it but not manage it gets PERMISSION_DENIED. A caller may not act on a user
(update, delete, rotate its secret, grant or take its device or charging permissions,
write its orders) holding a role it could not grant, directly or through a user group
(PERMISSION_DENIED ``USER_OUTRANKS_CALLER``): every USER_MANAGE check goes through
``common.authorize_user``, which decides it. Decisions where API.md is silent:

- DeleteUser of oneself is FAILED_PRECONDITION (``CANNOT_DELETE_SELF``): nobody locks
  themselves out by accident.
- RotateClientSecret of a non-MACHINE user is FAILED_PRECONDITION (``USER_NOT_MACHINE``).
  The rotation increments the user's ``credential_generation`` in the same
  transaction, so every JWT issued with the old secret (its ``gen`` claim is the old
  generation) is UNAUTHENTICATED ``TOKEN_REVOKED`` here from then on; verifiers that
  only check the signature offline still accept it until its ``exp``.
- Audit: ``user.create|update|delete|rotate_secret``; an update that changes nothing
  records nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from accounts_grpc.auth.secrets import hash_secret, new_client_id, new_client_secret
from accounts_grpc.domain import policy
from accounts_grpc.domain import roles as R
from accounts_grpc.domain.errors import (
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
    not_found,
)
from accounts_grpc.domain.listing import Page, parse_list_request
from accounts_grpc.domain.masks import resolve_mask
from accounts_grpc.domain.policy import Action
from accounts_grpc.domain.ports import UnitOfWork, Visible
from accounts_grpc.domain.principal import Principal
from accounts_grpc.domain.validate import Validator, check_id, is_uuid
from accounts_grpc.services import events
from accounts_grpc.services.common import (
    ResolvedUser,
    account_target,
    load_user,
    resolve_user_ref,
    user_target,
)
from accounts_grpc.services.deps import Deps
from accounts_grpc.services.user_access import (
    KINDS,
    MACHINE,
    authorize,
    write,
)
from accounts_grpc.services.user_fields import (
    KIND_CHOICES,
    USER_OUTPUT_ONLY,
    USER_UPDATABLE,
    CreatedUser,
    RotatedSecret,
    UserInput,
    check_grantable,
    check_new_user,
    check_user_fields,
    display_name,
    identity_values,
    new_user,
    taken,
    unchanged_fields,
)
from accounts_grpc.services.writes import check_etag, conditional_update, create_once, fingerprint
from accounts_grpc.store.db import new_etag, new_id, now_us

#: A user id no caller has: asks the policy about "some other user of this account".
_SOMEONE_ELSE = "\x00someone-else"


class UsersService:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    # -- GetMe -------------------------------------------------------------------------------

    def get_me(self, p: Principal) -> tuple[Any, Any]:
        """The caller's own user and account, as authentication read them on this call."""
        if p.user_row is not None and p.account_row is not None:
            return p.user_row, p.account_row
        with self.deps.db.read() as uow:
            user, account = uow.users.me(p.user_id, p.account_id)
        if user is None or account is None:
            raise Unauthenticated("the token's user no longer exists", reason="USER_DELETED")
        return user, account

    # -- CreateUser --------------------------------------------------------------------------

    def create_user(
        self, p: Principal, account_id: str, u: UserInput, request_id: str = ""
    ) -> CreatedUser:
        fields = check_new_user(account_id, u)
        kind = u.kind
        roles = R.validate_roles(u.roles, R.USER_ROLES, "user.roles")
        fp = fingerprint("CreateUser", account_id, kind, fields, roles)
        secrets: list[str] = []

        def create(uow: UnitOfWork) -> dict[str, str]:
            t = account_target(uow.authority, account_id)
            policy.require(
                p, Action.USER_MANAGE, replace(t, user_kind=kind), what="account", key=account_id
            )
            if t.account_closed:
                raise FailedPrecondition("the account is closed", reason="ACCOUNT_CLOSED")
            stored_roles = check_grantable(p, roles, "user.roles")
            taken_now = uow.users.taken_fields(
                account_id, email=fields["email"], external_id=fields["external_id"]
            )
            if taken_now:
                raise taken(taken_now[0], fields[taken_now[0]])
            uid, now = new_id(), now_us()
            client_id = secret_hash = None
            if kind == MACHINE:
                client_id, secret = new_client_id(), new_client_secret()
                secret_hash = hash_secret(secret)
                secrets.append(secret)
            values = new_user(
                uid, account_id, kind, fields, stored_roles, client_id=client_id,
                secret_hash=secret_hash, now=now, etag=new_etag(),
            )
            # a concurrent create that won the e-mail or external id: as if taken above
            uow.users.insert(values, lambda f: taken(f, values.get(f) or ""))
            uow.audit.record(
                account_id=account_id,
                actor_user_id=p.user_id,
                action="user.create",
                resource_type="User",
                resource_id=uid,
                changed_fields=["kind", "roles"]
                + [f for f, val in fields.items() if val]
                + (["client_id"] if client_id else []),
                request_id=request_id,
            )
            return {"user_id": uid}

        def load(uow: UnitOfWork, ids: Any) -> Any:
            r = load_user(uow.authority, ids["user_id"])
            authorize(uow.authority, p, Action.USER_READ, r, "id", ids["user_id"])
            return r.row

        row, created = create_once(self.deps.db, p, "CreateUser", request_id, fp, create, load,
                                   keep=self.deps.settings.request_id_ttl)
        return CreatedUser(row, secrets[0] if created and secrets else "")

    # -- GetUser -----------------------------------------------------------------------------

    def get_user(
        self,
        p: Principal,
        *,
        id: str = "",
        email: str = "",
        external_id: str = "",
        account_id: str = "",
    ) -> Any:
        keys = (("id", id), ("email", email), ("external_id", external_id))
        named = [(k, val) for k, val in keys if val]
        if len(named) != 1:
            raise InvalidArgument.field(
                "id",
                "name the user by exactly one of id, email or external_id"
                + (f" (got {', '.join(k for k, _ in named)})" if named else ""),
                reason="USER_REF_REQUIRED",
            )
        key, value = named[0]
        if key == "id":
            check_id("id", id)
        if account_id and not is_uuid(account_id):
            check_id("account_id", account_id)
        with self.deps.db.read() as uow:
            if key == "id":
                r = load_user(uow.authority, id)
                if account_id and r.row.account_id != account_id:
                    raise not_found("user", "id", id)
            elif key == "email":
                row = uow.users.user_by_email(account_id or p.account_id, email)
                if row is None:
                    raise not_found("user", "email", email)
                r = ResolvedUser(row, user_target(row))
            else:
                r = resolve_user_ref(
                    uow.authority, p, external_id=external_id, account_id=account_id,
                    field="external_id",
                )
            authorize(uow.authority, p, Action.USER_READ, r, key, value)
        return r.row

    # -- ListUsers ---------------------------------------------------------------------------

    def _visible_users(self, p: Principal, t: policy.Target) -> Visible | None:
        """The users of an account the caller may read: None means all of them."""
        kinds = tuple(
            k
            for k in KINDS
            if policy.allows(p, Action.USER_READ, replace(t, user_id=_SOMEONE_ELSE, user_kind=k))
        )
        if len(kinds) == len(KINDS):
            return None
        me = replace(t, user_id=p.user_id, user_kind=p.kind)
        itself = t.account_id == p.account_id and policy.allows(p, Action.USER_READ, me)
        if not kinds and not itself:
            if not policy.can_see_account(p, t):
                raise not_found("account", "id", t.account_id)
            raise PermissionDenied(
                "the caller may not list this account's users", reason="PERMISSION_DENIED"
            )
        return Visible(kinds, p.user_id if itself else None)

    def list_users(
        self,
        p: Principal,
        account_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        filter: str = "",
        order_by: str = "",
        kind: str = "",
    ) -> Page:
        if account_id != "-":
            check_id("account_id", account_id)
        if kind and kind not in KINDS:
            raise InvalidArgument.field("kind", KIND_CHOICES)
        with self.deps.db.read() as uow:
            q = parse_list_request(
                uow.users.list_shape,
                secret=self.deps.page_secret,
                page_size=page_size,
                page_token=page_token,
                filter=filter,
                order_by=order_by,
                scope={"account_id": account_id, "kind": kind, "caller": p.user_id},
            )
            if account_id == "-":
                if not p.is_platform_reader:
                    raise PermissionDenied(
                        "only admin and admin-reader may list the users of all accounts",
                        reason="PERMISSION_DENIED",
                    )
                return uow.users.list_page(q, account_id=None, kind=kind)
            t = account_target(uow.authority, account_id)
            visible = self._visible_users(p, t)
            return uow.users.list_page(q, account_id=account_id, kind=kind, visible=visible)

    # -- UpdateUser --------------------------------------------------------------------------

    def update_user(
        self, p: Principal, user_id: str, u: UserInput, mask_paths: Sequence[str]
    ) -> Any:
        check_id("user.id", user_id)

        def tx(uow: UnitOfWork) -> Any:
            r = load_user(uow.authority, user_id, field="user.id")
            authorize(uow.authority, p, Action.USER_MANAGE, r, "id", user_id)
            row = r.row
            paths = resolve_mask(
                "user",
                mask_paths,
                u.populated,
                updatable=USER_UPDATABLE,
                output_only=USER_OUTPUT_ONLY,
                unchanged=unchanged_fields(u, row),
            )
            check_etag(u.etag, row.etag, "user")
            if not paths:
                return row
            cur = {
                "email": row.email or "",
                "first_name": row.first_name,
                "last_name": row.last_name,
                "external_id": row.external_id or "",
            }
            merged = {f: (getattr(u, f) if f in paths else val) for f, val in cur.items()}
            v = Validator()
            fields = check_user_fields(v, row.kind, **merged)
            v.raise_if_any()
            values: dict[str, Any] = {}
            if "roles" in paths:
                values["roles"] = check_grantable(p, u.roles, "user.roles")
            values.update(identity_values(fields, paths))
            taken_now = uow.users.taken_fields(
                row.account_id,
                email=fields["email"] if "email" in paths else None,
                external_id=fields["external_id"] if "external_id" in paths else None,
                exclude_user_id=row.id,
            )
            if taken_now:
                raise taken(taken_now[0], fields[taken_now[0]])
            values["name"] = display_name(
                fields["first_name"],
                fields["last_name"],
                fields["email"],
                fields["external_id"],
                row.client_id or "",
            )
            conditional_update(uow.users.update_if_etag, row.id, row.etag, values, "user")
            uow.audit.record(
                account_id=row.account_id,
                actor_user_id=p.user_id,
                action="user.update",
                resource_type="User",
                resource_id=row.id,
                changed_fields=paths,
                revocation=(events.revocation(events.ROLES_CHANGED, subjects=[row.id])
                            if "roles" in paths else None),
            )
            return load_user(uow.authority, row.id).row

        return write(self.deps.db, tx)

    # -- DeleteUser --------------------------------------------------------------------------

    def delete_user(self, p: Principal, user_id: str, etag: str = "") -> None:
        check_id("id", user_id)

        def tx(uow: UnitOfWork) -> None:
            r = load_user(uow.authority, user_id)
            authorize(uow.authority, p, Action.USER_MANAGE, r, "id", user_id)
            if r.row.id == p.user_id:
                raise FailedPrecondition(
                    "a user cannot delete itself; ask another administrator",
                    reason="CANNOT_DELETE_SELF",
                )
            check_etag(etag, r.row.etag, "user")
            counts = uow.users.delete_cascade(r.row.id)
            uow.audit.record(
                account_id=r.row.account_id,
                actor_user_id=p.user_id,
                action="user.delete",
                resource_type="User",
                resource_id=r.row.id,
                changed_fields=[k for k, n in counts.items() if n],
                revocation=events.revocation(events.USER_DELETED, subjects=[r.row.id]),
            )

        write(self.deps.db, tx)

    # -- RotateClientSecret ------------------------------------------------------------------

    def rotate_client_secret(self, p: Principal, user_id: str) -> RotatedSecret:
        check_id("id", user_id)

        def tx(uow: UnitOfWork) -> RotatedSecret:
            r = load_user(uow.authority, user_id)
            authorize(uow.authority, p, Action.USER_MANAGE, r, "id", user_id)
            row = r.row
            if row.kind != MACHINE or not row.client_id:
                raise FailedPrecondition(
                    f"only MACHINE users have a client secret; this user is {row.kind}",
                    reason="USER_NOT_MACHINE",
                    metadata={"kind": row.kind},
                )
            secret = new_client_secret()
            # the new generation revokes every JWT issued with the old secret (authenticate)
            values = uow.users.secret_rotated(hash_secret(secret))
            conditional_update(uow.users.update_if_etag, row.id, row.etag, values, "user")
            uow.audit.record(
                account_id=row.account_id,
                actor_user_id=p.user_id,
                action="user.rotate_secret",
                resource_type="User",
                resource_id=row.id,
                changed_fields=["client_secret"],  # the audit log drops it: no secrets there
                revocation=events.revocation(events.CREDENTIALS_ROTATED, subjects=[row.id]),
            )
            return RotatedSecret(row.client_id, secret)

        return write(self.deps.db, tx)
