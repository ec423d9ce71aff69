"""Use cases for users: every rule about users, their credentials, device permissions
and device orders is in this module.

Who may do what comes from ``domain/policy.py`` (asked right where the user is loaded):
a caller that may not *read* a user gets NOT_FOUND (``USER_NOT_FOUND``), one that may
read it but not manage it gets PERMISSION_DENIED. Decisions where API.md is silent:

- Kinds: HUMAN needs ``email`` (names optional); EXTERNAL needs ``external_id`` (email and
  names optional); MACHINE has no email and no external_id (its optional names label
  it). ``external_id`` is only for EXTERNAL users. Populated output-only fields are
  INVALID_ARGUMENT on create too, never silently ignored.
- Roles: stored sorted; an empty list is stored as ``["member"]``. A caller grants only
  roles from ``roles.grantable_roles`` (PERMISSION_DENIED ``ROLE_NOT_GRANTABLE``), and
  may not act on a user (update, delete, rotate its secret, grant or take its device or
  charging permissions, write its orders) holding a role it could not grant, directly
  or through a user group (PERMISSION_DENIED ``USER_OUTRANKS_CALLER``): every
  USER_MANAGE check goes through ``common.authorize_user``, which decides it.
- DeleteUser of oneself is FAILED_PRECONDITION (``CANNOT_DELETE_SELF``): nobody locks
  themselves out by accident.
- RotateClientSecret of a non-MACHINE user is FAILED_PRECONDITION (``USER_NOT_MACHINE``).
  The rotation increments the user's ``credential_generation`` in the same
  transaction, so every JWT issued with the old secret (its ``gen`` claim is the old
  generation) is UNAUTHENTICATED ``TOKEN_REVOKED`` here from then on; verifiers that
  only check the signature offline still accept it until its ``exp``.
- Device permissions: devices are looked up inside the user's account; a device of
  another account is as unknown as a missing one (NOT_FOUND ``DEVICE_NOT_FOUND`` whose
  metadata names every unknown ``device_id`` / ``meter_id``, comma-separated).
  Charging needs the device permission (FAILED_PRECONDITION
  ``DEVICE_PERMISSION_REQUIRED``), for adding and for removing it.
- Orders belong to EXTERNAL users (others: FAILED_PRECONDITION ``USER_NOT_EXTERNAL``);
  ``order_id`` is unique inside the account (another user's: ALREADY_EXISTS
  ``ORDER_ID_TAKEN``). Status only moves forward, RECEIVED < PROCESSING < SHIPPED <
  DELIVERED (skipping is fine); CANCELLED is reachable from any open status; DELIVERED
  and CANCELLED are final (any change: FAILED_PRECONDITION ``ORDER_CLOSED``; repeating
  the same state is a no-op). SHIPPED and DELIVERED need ``device_id`` and an http(s)
  ``tracking_link``. An upsert that leaves ``device_id`` / ``tracking_link`` empty keeps
  the stored values.
- Audit: ``user.create|update|delete|rotate_secret``; one ``device_permission.add`` /
  ``.remove`` per permission granted or taken, ``device_permission.update`` (changed
  field ``charging``) for charging; ``order.create|update``. A call that changes nothing
  (a permission already held, charging already on, an order re-sent unchanged) writes
  nothing and records nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from accounts_grpc.auth.secrets import hash_secret, new_client_id, new_client_secret
from accounts_grpc.domain import policy
from accounts_grpc.domain import roles as R
from accounts_grpc.domain.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    not_found,
)
from accounts_grpc.domain.listing import (
    ListSpec,
    Page,
    SearchIndex,
    parse_list_request,
    run_list,
)
from accounts_grpc.domain.masks import resolve_mask
from accounts_grpc.domain.policy import Action
from accounts_grpc.domain.principal import Principal
from accounts_grpc.domain.validate import Validator, check_id, is_uuid
from accounts_grpc.services.common import (
    ResolvedUser,
    account_target,
    authorize_user,
    load_user,
    resolve_user_ref,
    user_target,
)
from accounts_grpc.services.deps import Deps
from accounts_grpc.services.writes import (
    check_etag,
    conditional_update,
    create_once,
    fingerprint,
    new_row,
)
from accounts_grpc.store import audit
from accounts_grpc.store import users as repo
from accounts_grpc.store.db import UnitOfWork, new_etag, new_id, now_us
from accounts_grpc.store.tables import accounts, device_permissions, devices, orders, users

T = TypeVar("T")

HUMAN, EXTERNAL, MACHINE = "HUMAN", "EXTERNAL", "MACHINE"
KINDS = (HUMAN, EXTERNAL, MACHINE)

#: User fields a client may set, and those only the server sets.
USER_UPDATABLE = frozenset({"email", "first_name", "last_name", "external_id", "roles"})
USER_OUTPUT_ONLY = frozenset({"id", "account_id", "client_id", "create_time", "update_time"})

RECEIVED, PROCESSING, SHIPPED, DELIVERED, CANCELLED = (
    "RECEIVED",
    "PROCESSING",
    "SHIPPED",
    "DELIVERED",
    "CANCELLED",
)
ORDER_STATUSES = (RECEIVED, PROCESSING, SHIPPED, DELIVERED, CANCELLED)
_STATUS_RANK = {RECEIVED: 1, PROCESSING: 2, SHIPPED: 3, DELIVERED: 4}
FINAL_STATUSES = frozenset({DELIVERED, CANCELLED})
NEEDS_SHIPPING = frozenset({SHIPPED, DELIVERED})
ORDER_OUTPUT_ONLY = frozenset({"id", "user_id", "create_time", "update_time"})

MAX_DEVICES_PER_CALL = 1000
MAX_ORDER_ID = 200
MAX_METER_ID = 200

_ME = sa.select(users).where(users.c.id == sa.bindparam("uid"))
_ACCOUNT = sa.select(accounts).where(accounts.c.id == sa.bindparam("aid"))


# -- inputs (what the servicer unpacks from the protos) ----------------------------------------


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
class UserRef:
    user_id: str = ""
    external_id: str = ""
    account_id: str = ""


@dataclass(frozen=True)
class DeviceRef:
    device_id: str = ""
    meter_id: str = ""


@dataclass(frozen=True)
class OrderInput:
    order_id: str = ""
    status: str = ""  # one of ORDER_STATUSES, "" when unspecified
    device_id: str = ""
    tracking_link: str = ""
    etag: str = ""
    populated: tuple[str, ...] = ()


@dataclass(frozen=True)
class CreatedUser:
    row: Any
    client_secret: str  # only for a MACHINE user just created; "" otherwise


@dataclass(frozen=True)
class RotatedSecret:
    client_id: str
    client_secret: str


# -- pure rules (unit-tested without I/O) --------------------------------------------------------


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


def check_order_transition(current: str | None, new: str, *, changed: bool) -> None:
    """FAILED_PRECONDITION unless an order may go from ``current`` to ``new``."""
    if current is None:
        return
    if current in FINAL_STATUSES:
        if changed:
            raise FailedPrecondition(
                f"the order is {current} and can no longer change",
                reason="ORDER_CLOSED",
                metadata={"status": current},
            )
        return
    if new == CANCELLED:
        return
    if _STATUS_RANK[new] < _STATUS_RANK[current]:
        raise FailedPrecondition(
            f"an order's status never moves backwards: it is {current}, not {new}",
            reason="ORDER_STATUS_BACKWARDS",
            metadata={"status": current, "requested_status": new},
        )


def check_shipping(status: str, device_id: str, tracking_link: str) -> None:
    """SHIPPED (and DELIVERED) orders name the device sent and a link to track it."""
    if status not in NEEDS_SHIPPING:
        return
    bad = []
    if not device_id:
        bad.append(FieldViolation("order.device_id", f"is required once the order is {status}"))
    if not tracking_link:
        bad.append(FieldViolation("order.tracking_link", f"is required once the order is {status}"))
    if bad:
        raise InvalidArgument(
            f"a {status} order needs a device_id and a tracking_link",
            bad,
            reason="SHIPPING_DETAILS_REQUIRED",
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


def check_device_refs(refs: Sequence[DeviceRef], field: str, *, single: bool = False) -> None:
    v = Validator()
    if not refs and not single:
        v.add(field, "is required: name at least one device")
    if len(refs) > MAX_DEVICES_PER_CALL:
        v.add(field, f"must name at most {MAX_DEVICES_PER_CALL} devices (got {len(refs)})")
    for i, ref in enumerate(refs):
        at = field if single else f"{field}[{i}]"
        if ref.device_id:
            v.device_id(f"{at}.device_id", ref.device_id)
        elif ref.meter_id:
            v.name(f"{at}.meter_id", ref.meter_id, max_len=MAX_METER_ID)
        else:
            v.add(at, "name the device by device_id or meter_id")
    v.raise_if_any()


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


# -- list specs ----------------------------------------------------------------------------------

_email_key = sa.func.coalesce(users.c.email_lower, "")
_external_key = sa.func.coalesce(users.c.external_id, "")

USER_LIST = ListSpec(
    resource="users",
    id_column=users.c.id,
    orderable={
        "name": users.c.name,
        "email": _email_key,
        "first_name": users.c.first_name,
        "last_name": users.c.last_name,
        "external_id": _external_key,
        "create_time": users.c.create_time,
        "update_time": users.c.update_time,
    },
    # NULL matches no term; plain columns, so that PostgreSQL's pg_trgm indexes serve them
    searchable=[users.c.name, users.c.email, users.c.external_id],
    search=SearchIndex("users_search", ("name", "email", "external_id"), users),  # 0002
)

PERMISSION_LIST = ListSpec(
    resource="device_permissions",
    id_column=device_permissions.c.id,
    orderable={
        "create_time": device_permissions.c.create_time,
        "update_time": device_permissions.c.update_time,
    },
    searchable=[
        devices.c.name,
        sa.func.coalesce(devices.c.device_id, ""),
        sa.func.coalesce(devices.c.meter_id, ""),
    ],
)

ORDER_LIST = ListSpec(
    resource="orders",
    id_column=orders.c.id,
    orderable={
        "create_time": orders.c.create_time,
        "update_time": orders.c.update_time,
        "order_id": orders.c.order_id,
    },
    searchable=[
        orders.c.order_id,
        sa.func.coalesce(orders.c.device_id, ""),
        sa.func.coalesce(orders.c.tracking_link, ""),
    ],
)

#: A user id no caller has: asks the policy about "some other user of this account".
_SOMEONE_ELSE = "\x00someone-else"


class UsersService:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    # -- helpers ---------------------------------------------------------------------------

    def _write(self, fn: Callable[[UnitOfWork], T]) -> T:
        """Run ``fn`` in one write transaction; a lost insert race is retried once."""
        for attempt in range(2):
            try:
                with self.deps.db.write() as uow:
                    out = fn(uow)
                    uow.commit()
                    return out
            except IntegrityError:
                if attempt:
                    raise Aborted(
                        "a concurrent call changed the same data; retry",
                        reason="CONCURRENT_MODIFICATION",
                    ) from None
        raise AssertionError("unreachable")

    @staticmethod
    def _authorize(
        conn: sa.Connection, p: Principal, action: Action, r: ResolvedUser, key: str, value: str
    ) -> None:
        """NOT_FOUND unless the caller may read the user; then PERMISSION_DENIED unless
        it may do ``action`` on it, nor on a user holding roles it could not grant
        (``common.authorize_user``)."""
        authorize_user(
            conn, p, action, r.target, r.row.roles, what="user", key_field=key, key=value
        )

    def _target(
        self, conn: sa.Connection, p: Principal, ref: UserRef, action: Action
    ) -> ResolvedUser:
        r = resolve_user_ref(
            conn,
            p,
            user_id=ref.user_id,
            external_id=ref.external_id,
            account_id=ref.account_id,
        )
        key, value = ("id", ref.user_id) if ref.user_id else ("external_id", ref.external_id)
        self._authorize(conn, p, action, r, key, value)
        return r

    @staticmethod
    def _resolve_devices(
        conn: sa.Connection, account_id: str, refs: Sequence[DeviceRef]
    ) -> list[Any]:
        """The devices named, in request order without repeats; NOT_FOUND naming every
        device that is not registered in ``account_id``."""
        rows = repo.devices_in_account(
            conn,
            account_id,
            {r.device_id for r in refs if r.device_id},
            {r.meter_id for r in refs if r.meter_id and not r.device_id},
        )
        by_device = {d.device_id: d for d in rows if d.device_id}
        by_meter = {d.meter_id: d for d in rows if d.meter_id}
        found: dict[str, Any] = {}
        missing: dict[str, list[str]] = {"device_id": [], "meter_id": []}
        for ref in refs:
            key, value = _device_key(ref)
            d = (by_device if key == "device_id" else by_meter).get(value)
            if d is None:
                if value not in missing[key]:
                    missing[key].append(value)
            else:
                found.setdefault(d.id, d)
        if missing["device_id"] or missing["meter_id"]:
            names = [f"{k} {v!r}" for k, vs in missing.items() for v in vs]
            raise NotFound(
                f"device{'s' if len(names) > 1 else ''} not found: {', '.join(names)}",
                reason="DEVICE_NOT_FOUND",
                metadata={k: ",".join(vs) for k, vs in missing.items() if vs},
            )
        return list(found.values())

    @staticmethod
    def _user_inserted(uow: UnitOfWork, values: dict[str, Any]) -> None:
        try:
            repo.insert_user(uow.conn, values)
        except IntegrityError as e:  # a concurrent create won the unique key
            text = str(e.orig).lower()
            if "client_id" in text:
                raise
            field = "email" if "email" in text else "external_id"
            raise _taken(field, values.get(field) or "") from None

    # -- GetMe -------------------------------------------------------------------------------

    def get_me(self, p: Principal) -> tuple[Any, Any]:
        """The caller's own user and account, as authentication read them on this call."""
        if p.user_row is not None and p.account_row is not None:
            return p.user_row, p.account_row
        with self.deps.db.connect() as conn:
            user = conn.execute(_ME, {"uid": p.user_id}).first()
            account = conn.execute(_ACCOUNT, {"aid": p.account_id}).first()
        if user is None or account is None:
            raise Unauthenticated("the token's user no longer exists", reason="USER_DELETED")
        return user, account

    # -- CreateUser --------------------------------------------------------------------------

    def create_user(
        self, p: Principal, account_id: str, u: UserInput, request_id: str = ""
    ) -> CreatedUser:
        v = Validator()
        v.id("account_id", account_id)
        kind = u.kind
        if kind not in KINDS:
            v.add("user.kind", f"must be one of {', '.join('USER_KIND_' + k for k in KINDS)}")
        for f in sorted(set(u.populated) & USER_OUTPUT_ONLY):
            if f == "account_id" and u.account_id == account_id:
                continue  # the same account as the request's: harmless
            v.add(f"user.{f}", "is output-only and cannot be set")
        if u.etag:
            v.add("user.etag", "must be empty when creating a user")
        fields = check_user_fields(
            v,
            kind,
            email=u.email,
            first_name=u.first_name,
            last_name=u.last_name,
            external_id=u.external_id,
        )
        v.raise_if_any()
        roles = R.validate_roles(u.roles, R.USER_ROLES, "user.roles")
        fp = fingerprint("CreateUser", account_id, kind, fields, roles)
        secrets: list[str] = []

        def create(uow: UnitOfWork) -> dict[str, str]:
            t = account_target(uow.conn, account_id)
            policy.require(
                p, Action.USER_MANAGE, replace(t, user_kind=kind), what="account", key=account_id
            )
            if t.account_closed:
                raise FailedPrecondition("the account is closed", reason="ACCOUNT_CLOSED")
            stored_roles = check_grantable(p, roles, "user.roles")
            taken = repo.taken_fields(
                uow.conn, account_id, email=fields["email"], external_id=fields["external_id"]
            )
            if taken:
                raise _taken(taken[0], fields[taken[0]])
            uid, now = new_id(), now_us()
            client_id = secret_hash = None
            if kind == MACHINE:
                client_id, secret = new_client_id(), new_client_secret()
                secret_hash = hash_secret(secret)
                secrets.append(secret)
            email = fields["email"] or None
            self._user_inserted(
                uow,
                dict(
                    id=uid,
                    account_id=account_id,
                    kind=kind,
                    email=email,
                    email_lower=email.lower() if email else None,
                    first_name=fields["first_name"],
                    last_name=fields["last_name"],
                    name=display_name(
                        fields["first_name"],
                        fields["last_name"],
                        fields["email"],
                        fields["external_id"],
                        client_id or "",
                    ),
                    external_id=fields["external_id"] or None,
                    client_id=client_id,
                    secret_hash=secret_hash,
                    roles=stored_roles,
                    create_time=now,
                    update_time=now,
                    etag=new_etag(),
                ),
            )
            audit.record(
                uow,
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
            r = load_user(uow.conn, ids["user_id"])
            self._authorize(uow.conn, p, Action.USER_READ, r, "id", ids["user_id"])
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
        with self.deps.db.connect() as conn:
            if key == "id":
                r = load_user(conn, id)
                if account_id and r.row.account_id != account_id:
                    raise not_found("user", "id", id)
            elif key == "email":
                row = repo.user_by_email(conn, account_id or p.account_id, email)
                if row is None:
                    raise not_found("user", "email", email)
                r = ResolvedUser(row, user_target(row))
            else:
                r = resolve_user_ref(
                    conn, p, external_id=external_id, account_id=account_id, field="external_id"
                )
            self._authorize(conn, p, Action.USER_READ, r, key, value)
        return r.row

    # -- ListUsers ---------------------------------------------------------------------------

    def _visible_users(self, p: Principal, t: policy.Target) -> sa.ColumnElement[bool] | None:
        """The users of an account the caller may read: None means all of them."""
        kinds = [
            k
            for k in KINDS
            if policy.allows(p, Action.USER_READ, replace(t, user_id=_SOMEONE_ELSE, user_kind=k))
        ]
        if len(kinds) == len(KINDS):
            return None
        conds: list[sa.ColumnElement[bool]] = []
        if kinds:
            conds.append(users.c.kind.in_(kinds))
        me = replace(t, user_id=p.user_id, user_kind=p.kind)
        if t.account_id == p.account_id and policy.allows(p, Action.USER_READ, me):
            conds.append(users.c.id == p.user_id)
        if not conds:
            if not policy.can_see_account(p, t):
                raise not_found("account", "id", t.account_id)
            raise PermissionDenied(
                "the caller may not list this account's users", reason="PERMISSION_DENIED"
            )
        return sa.or_(*conds)

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
            raise InvalidArgument.field(
                "kind", f"must be one of {', '.join('USER_KIND_' + k for k in KINDS)}"
            )
        q = parse_list_request(
            USER_LIST,
            secret=self.deps.page_secret,
            page_size=page_size,
            page_token=page_token,
            filter=filter,
            order_by=order_by,
            scope={"account_id": account_id, "kind": kind, "caller": p.user_id},
        )
        base = sa.select(users)
        if kind:
            base = base.where(users.c.kind == kind)
        with self.deps.db.connect() as conn:
            if account_id == "-":
                if not p.is_platform_reader:
                    raise PermissionDenied(
                        "only admin and admin-reader may list the users of all accounts",
                        reason="PERMISSION_DENIED",
                    )
            else:
                t = account_target(conn, account_id)
                base = base.where(users.c.account_id == account_id)
                visible = self._visible_users(p, t)
                if visible is not None:
                    base = base.where(visible)
            return run_list(conn, USER_LIST, q, base)

    # -- UpdateUser --------------------------------------------------------------------------

    def update_user(
        self, p: Principal, user_id: str, u: UserInput, mask_paths: Sequence[str]
    ) -> Any:
        check_id("user.id", user_id)

        def tx(uow: UnitOfWork) -> Any:
            r = load_user(uow.conn, user_id, field="user.id")
            self._authorize(uow.conn, p, Action.USER_MANAGE, r, "id", user_id)
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
            for f in ("first_name", "last_name"):
                if f in paths:
                    values[f] = fields[f]
            if "email" in paths:
                values["email"] = fields["email"] or None
                values["email_lower"] = fields["email"].lower() or None
            if "external_id" in paths:
                values["external_id"] = fields["external_id"] or None
            taken = repo.taken_fields(
                uow.conn,
                row.account_id,
                email=fields["email"] if "email" in paths else None,
                external_id=fields["external_id"] if "external_id" in paths else None,
                exclude_user_id=row.id,
            )
            if taken:
                raise _taken(taken[0], fields[taken[0]])
            values["name"] = display_name(
                fields["first_name"],
                fields["last_name"],
                fields["email"],
                fields["external_id"],
                row.client_id or "",
            )
            conditional_update(uow, users, row.id, row.etag, values, "user")
            audit.record(
                uow,
                account_id=row.account_id,
                actor_user_id=p.user_id,
                action="user.update",
                resource_type="User",
                resource_id=row.id,
                changed_fields=paths,
            )
            return load_user(uow.conn, row.id).row

        return self._write(tx)

    # -- DeleteUser --------------------------------------------------------------------------

    def delete_user(self, p: Principal, user_id: str, etag: str = "") -> None:
        check_id("id", user_id)

        def tx(uow: UnitOfWork) -> None:
            r = load_user(uow.conn, user_id)
            self._authorize(uow.conn, p, Action.USER_MANAGE, r, "id", user_id)
            if r.row.id == p.user_id:
                raise FailedPrecondition(
                    "a user cannot delete itself; ask another administrator",
                    reason="CANNOT_DELETE_SELF",
                )
            check_etag(etag, r.row.etag, "user")
            counts = repo.delete_user_cascade(uow.conn, r.row.id)
            audit.record(
                uow,
                account_id=r.row.account_id,
                actor_user_id=p.user_id,
                action="user.delete",
                resource_type="User",
                resource_id=r.row.id,
                changed_fields=[k for k, n in counts.items() if n],
            )

        self._write(tx)

    # -- RotateClientSecret ------------------------------------------------------------------

    def rotate_client_secret(self, p: Principal, user_id: str) -> RotatedSecret:
        check_id("id", user_id)

        def tx(uow: UnitOfWork) -> RotatedSecret:
            r = load_user(uow.conn, user_id)
            self._authorize(uow.conn, p, Action.USER_MANAGE, r, "id", user_id)
            row = r.row
            if row.kind != MACHINE or not row.client_id:
                raise FailedPrecondition(
                    f"only MACHINE users have a client secret; this user is {row.kind}",
                    reason="USER_NOT_MACHINE",
                    metadata={"kind": row.kind},
                )
            secret = new_client_secret()
            # the new generation revokes every JWT issued with the old secret (authenticate)
            conditional_update(
                uow,
                users,
                row.id,
                row.etag,
                {
                    "secret_hash": hash_secret(secret),
                    "credential_generation": users.c.credential_generation + 1,
                },
                "user",
            )
            audit.record(
                uow,
                account_id=row.account_id,
                actor_user_id=p.user_id,
                action="user.rotate_secret",
                resource_type="User",
                resource_id=row.id,
                changed_fields=["client_secret"],  # the audit log drops it: no secrets there
            )
            return RotatedSecret(row.client_id, secret)

        return self._write(tx)

    # -- device permissions ------------------------------------------------------------------

    def add_device_permissions(
        self, p: Principal, ref: UserRef, refs: Sequence[DeviceRef]
    ) -> list[Any]:
        check_user_ref(ref)
        check_device_refs(refs, "devices")

        def tx(uow: UnitOfWork) -> list[Any]:
            r = self._target(uow.conn, p, ref, Action.USER_MANAGE)
            user = r.row
            devs = self._resolve_devices(uow.conn, user.account_id, refs)
            pks = [d.id for d in devs]
            held = repo.permissions_of(uow.conn, user.id, pks)
            now = now_us()
            new = [
                {
                    "id": new_id(),
                    "user_id": user.id,
                    "device_pk": pk,
                    "account_id": user.account_id,
                    "charging": False,
                    "create_time": now,
                    "update_time": now,
                    "etag": new_etag(),
                }
                for pk in pks
                if pk not in held
            ]
            repo.insert_permissions(uow.conn, new)
            for perm in new:
                audit.record(
                    uow,
                    account_id=user.account_id,
                    actor_user_id=p.user_id,
                    action="device_permission.add",
                    resource_type="DevicePermission",
                    resource_id=perm["id"],
                    changed_fields=["user_id", "device"],
                )
            now_held = repo.permissions_of(uow.conn, user.id, pks)
            return [now_held[pk] for pk in pks]

        return self._write(tx)

    def remove_device_permissions(
        self, p: Principal, ref: UserRef, refs: Sequence[DeviceRef]
    ) -> None:
        check_user_ref(ref)
        check_device_refs(refs, "devices")

        def tx(uow: UnitOfWork) -> None:
            r = self._target(uow.conn, p, ref, Action.USER_MANAGE)
            user = r.row
            devs = self._resolve_devices(uow.conn, user.account_id, refs)
            held = repo.permissions_of(uow.conn, user.id, [d.id for d in devs])
            repo.delete_permissions(uow.conn, user.id, list(held))
            for perm in held.values():
                audit.record(
                    uow,
                    account_id=user.account_id,
                    actor_user_id=p.user_id,
                    action="device_permission.remove",
                    resource_type="DevicePermission",
                    resource_id=perm.id,
                    changed_fields=["user_id", "device"],
                )

        self._write(tx)

    def list_device_permissions(
        self,
        p: Principal,
        ref: UserRef,
        *,
        page_size: int = 0,
        page_token: str = "",
        filter: str = "",
    ) -> Page:
        check_user_ref(ref)
        scope = {"user_id": ref.user_id, "external_id": ref.external_id, "account": ref.account_id}
        q = parse_list_request(
            PERMISSION_LIST,
            secret=self.deps.page_secret,
            page_size=page_size,
            page_token=page_token,
            filter=filter,
            scope=scope,
        )
        with self.deps.db.connect() as conn:
            r = self._target(conn, p, ref, Action.USER_READ)
            base = repo.PERMISSION_WITH_DEVICE.where(device_permissions.c.user_id == r.row.id)
            return run_list(conn, PERMISSION_LIST, q, base)

    def _set_charging(self, p: Principal, ref: UserRef, dref: DeviceRef, on: bool) -> Any:
        check_user_ref(ref)
        check_device_refs([dref], "device", single=True)

        def tx(uow: UnitOfWork) -> Any:
            r = self._target(uow.conn, p, ref, Action.USER_MANAGE)
            user = r.row
            (dev,) = self._resolve_devices(uow.conn, user.account_id, [dref])
            perm = repo.permissions_of(uow.conn, user.id, [dev.id]).get(dev.id)
            if perm is None:
                key, value = _device_key(dref)
                raise FailedPrecondition(
                    f"the user may not see device {value!r}: add the device permission first",
                    reason="DEVICE_PERMISSION_REQUIRED",
                    metadata={key: value},
                )
            if bool(perm.charging) == on:
                return perm
            conditional_update(
                uow, device_permissions, perm.id, perm.etag, {"charging": on}, "device permission"
            )
            audit.record(
                uow,
                account_id=user.account_id,
                actor_user_id=p.user_id,
                action="device_permission.update",
                resource_type="DevicePermission",
                resource_id=perm.id,
                changed_fields=["charging"],
            )
            return repo.permissions_of(uow.conn, user.id, [dev.id])[dev.id]

        return self._write(tx)

    def add_charging_permission(self, p: Principal, ref: UserRef, dref: DeviceRef) -> Any:
        return self._set_charging(p, ref, dref, True)

    def remove_charging_permission(self, p: Principal, ref: UserRef, dref: DeviceRef) -> Any:
        return self._set_charging(p, ref, dref, False)

    # -- orders ------------------------------------------------------------------------------

    def upsert_user_order(self, p: Principal, ref: UserRef, o: OrderInput) -> Any:
        check_user_ref(ref)
        v = Validator()
        order_id = v.name("order.order_id", o.order_id, max_len=MAX_ORDER_ID)
        if o.status not in ORDER_STATUSES:
            v.add(
                "order.status",
                f"must be one of {', '.join('ORDER_STATUS_' + x for x in ORDER_STATUSES)}",
            )
        v.device_id("order.device_id", o.device_id, required=False)
        link = v.url("order.tracking_link", o.tracking_link)
        for f in sorted(set(o.populated) & ORDER_OUTPUT_ONLY):
            v.add(f"order.{f}", "is output-only and cannot be set")
        v.raise_if_any()

        def tx(uow: UnitOfWork) -> Any:
            r = self._target(uow.conn, p, ref, Action.USER_MANAGE)
            user = r.row
            if user.kind != EXTERNAL:
                raise FailedPrecondition(
                    f"orders are for EXTERNAL users; this user is {user.kind}",
                    reason="USER_NOT_EXTERNAL",
                    metadata={"kind": user.kind},
                )
            cur = repo.order_by_order_id(uow.conn, user.account_id, order_id)
            if cur is not None and cur.user_id != user.id:
                raise AlreadyExists(
                    f"order_id {order_id!r} is another user's order in this account",
                    reason="ORDER_ID_TAKEN",
                    metadata={"order_id": order_id},
                )
            if cur is None and o.etag:
                raise Aborted(
                    f"order {order_id!r} does not exist, so no etag can match",
                    reason="ETAG_MISMATCH",
                )
            if cur is not None:
                check_etag(o.etag, cur.etag, "order")
            device_id = o.device_id or (cur.device_id if cur is not None else "") or ""
            tracking = link or (cur.tracking_link if cur is not None else "") or ""
            new = {"status": o.status, "device_id": device_id, "tracking_link": tracking}
            if cur is None:
                changed = ["order_id"] + [k for k, val in new.items() if val]
            else:
                old = {k: (getattr(cur, k) or "") for k in new}
                changed = [k for k in new if new[k] != old[k]]
            check_order_transition(
                cur.status if cur is not None else None, o.status, changed=bool(changed)
            )
            check_shipping(o.status, device_id, tracking)
            # a device_id the order is set to must be a device of the user's account (of that
            # account only: another tenant's device is as unknown as an unregistered id); a
            # kept or re-sent one is not checked again
            if "device_id" in changed and not repo.devices_in_account(
                uow.conn, user.account_id, [device_id], []
            ):
                raise InvalidArgument.field(
                    "order.device_id", "is not a device of this account", reason="DEVICE_NOT_FOUND"
                )
            if cur is not None and not changed:
                return cur
            values = {k: (val or None) for k, val in new.items()}
            if cur is None:
                row = new_row(
                    account_id=user.account_id, user_id=user.id, order_id=order_id, **values
                )
                pk = row["id"]
                repo.insert_order(uow.conn, row)
                action = "order.create"
            else:
                pk = cur.id
                conditional_update(
                    uow, orders, pk, cur.etag, {k: values[k] for k in changed}, "order"
                )
                action = "order.update"
            audit.record(
                uow,
                account_id=user.account_id,
                actor_user_id=p.user_id,
                action=action,
                resource_type="Order",
                resource_id=pk,
                changed_fields=changed,
            )
            return repo.order_by_pk(uow.conn, pk)

        return self._write(tx)

    def list_user_orders(
        self,
        p: Principal,
        ref: UserRef,
        *,
        page_size: int = 0,
        page_token: str = "",
        filter: str = "",
        order_by: str = "",
    ) -> Page:
        check_user_ref(ref)
        scope = {"user_id": ref.user_id, "external_id": ref.external_id, "account": ref.account_id}
        q = parse_list_request(
            ORDER_LIST,
            secret=self.deps.page_secret,
            page_size=page_size,
            page_token=page_token,
            filter=filter,
            order_by=order_by,
            scope=scope,
        )
        with self.deps.db.connect() as conn:
            r = self._target(conn, p, ref, Action.USER_READ)
            base = sa.select(orders).where(orders.c.user_id == r.row.id)
            return run_list(conn, ORDER_LIST, q, base)


def _device_key(ref: DeviceRef) -> tuple[str, str]:
    return ("device_id", ref.device_id) if ref.device_id else ("meter_id", ref.meter_id)


def _taken(field: str, value: str) -> AlreadyExists:
    return AlreadyExists(
        f"another user of the account already has this {field.replace('_', ' ')}",
        reason=f"{field.upper()}_TAKEN",
        metadata={field: value},
    )
