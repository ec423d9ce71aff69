"""Use cases for accounts: CreateAccount, GetAccount, ListAccounts, UpdateAccount,
CloseAccount.

The fields of an account and their rules (what a request may set, how each value is
checked, the first user's, the consultancy an account names) are in
services/account_fields.py; the account's audit log (ListAuditEvents) is
services/audit_log.py; the statements are ``uow.accounts``' (store/accounts.py: accounts,
their lists, the user an account is made with) and ``uow.audit``'s (the audit events).

Rules:
- CreateAccount (admin): the account and its first user, a HUMAN user with
  ``account-admin``, in one transaction with one audit event each. Email is required
  and unique, case-insensitively, among open accounts (ALREADY_EXISTS,
  ACCOUNT_EMAIL_TAKEN). ``request_id`` makes it idempotent (services/writes.create_once).
- GetAccount: by ``id`` (one primary-key read), by ``email`` (one read of the partial
  unique index of open accounts; admins and admin-readers fall back to the most recently
  closed account with that email), or, with neither, the caller's own. Setting both is
  INVALID_ARGUMENT. Whoever may not read an account gets NOT_FOUND, whether it exists or
  not; a closed account answers admins and admin-readers only.
- ListAccounts: keyset pages (store/listing/; the page tokens are domain/listing.py's)
  over what the caller may read, filtered in SQL: admin and admin-reader all accounts, a
  consultant its own and its clients', anyone else its own. Closed accounts only with
  ``show_closed``, and only for admin and admin-reader (nobody else can read a closed
  account). ``total_size`` is exact on the first page: an admin's unfiltered list reads
  it in ``account_counts`` (kept by triggers, migration 0007) with the page; any other
  list counts its rows.
- UpdateAccount (admin; account-admin on its own account): an AIP-134 update mask as
  domain/masks.py pins it. account-admins change name, email, colours and logo; only
  admins change ``roles`` and ``consultancy_account_id`` (PERMISSION_DENIED, not
  ignored). The ``consultancy`` role cannot be taken from an account that open accounts
  still name as their consultancy (FAILED_PRECONDITION CONSULTANCY_HAS_CLIENTS). A set
  ``etag`` must match (ABORTED). Fields whose value does not change are not written; a
  request that changes nothing writes nothing and returns the account as it is. The
  audit event lists the fields that changed.
- CloseAccount (admin): irreversible. In one transaction, everything the account owns
  goes (``uow.accounts.purge_contents``), accounts that named it as their consultancy
  lose that link (one audit event each), and the account becomes a tombstone
  (``closed``), which frees its email. Its tokens die on their next call (the
  authenticator reads the account on every call). Closing a closed account, or the
  caller's own account (that would lock the platform's admins out), is
  FAILED_PRECONDITION.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from accounts_grpc.domain import policy
from accounts_grpc.domain import roles as R
from accounts_grpc.domain.errors import (
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    not_found,
)
from accounts_grpc.domain.listing import Page, parse_list_request
from accounts_grpc.domain.masks import require_paths_allowed, resolve_mask
from accounts_grpc.domain.ports import ListScope, UnitOfWork
from accounts_grpc.domain.principal import Principal
from accounts_grpc.domain.validate import Validator, check_id
from accounts_grpc.services import events
from accounts_grpc.services.account_fields import (
    OUTPUT_ONLY,
    UPDATABLE,
    AccountInput,
    FirstUserInput,
    changed_values,
    check_account_update,
    check_consultancy,
    check_new_account,
    stored_values,
    target_of,
    unchanged_fields,
)
from accounts_grpc.services.deps import Deps
from accounts_grpc.services.writes import (
    check_etag,
    conditional_update,
    create_once,
    fingerprint,
)
from accounts_grpc.store.db import new_etag, new_id, now_us


def _closed(account_id: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"account {account_id!r} is closed; a closed account never changes again",
        reason="ACCOUNT_CLOSED",
        metadata={"id": account_id},
    )


class AccountsService:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    # -- CreateAccount ---------------------------------------------------------------------
    def create_account(
        self,
        p: Principal,
        account: AccountInput,
        first_user: FirstUserInput,
        request_id: str = "",
    ) -> tuple[Any, Any]:
        """The new account and first user rows (or, for a retried request_id, the first's)."""
        if not policy.allows(p, policy.Action.ACCOUNT_CREATE, policy.Target(account_id="")):
            raise PermissionDenied("only an admin may create accounts", reason="ROLE_REQUIRED")
        new, user = check_new_account(account, first_user)
        fp = fingerprint("CreateAccount", new, user)

        def create(uow: UnitOfWork) -> dict[str, str]:
            uow.accounts.require_email_free(new["email"])
            if new["consultancy_account_id"]:
                check_consultancy(
                    uow.accounts, new["consultancy_account_id"], "",
                    "account.consultancy_account_id",
                )
            now = now_us()
            account_id, user_id = new_id(), new_id()
            uow.accounts.insert(
                {
                    **new,
                    "id": account_id,
                    "closed": False,
                    "create_time": now,
                    "update_time": now,
                    "activity_time": None,
                    "etag": new_etag(),
                },
            )
            full_name = f"{user['first_name']} {user['last_name']}".strip()
            uow.accounts.insert_user(
                user_id=user_id,
                account_id=account_id,
                kind="HUMAN",
                email=user["email"],
                first_name=user["first_name"],
                last_name=user["last_name"],
                name=full_name or user["email"],
                roles=user["roles"],
                now=now,
            )
            account_fields = [k for k, v in new.items() if v]
            uow.audit.record(
                account_id=account_id,
                actor_user_id=p.user_id,
                action="account.create",
                resource_type="Account",
                resource_id=account_id,
                changed_fields=account_fields,
                request_id=request_id,
            )
            uow.audit.record(
                account_id=account_id,
                actor_user_id=p.user_id,
                action="user.create",
                resource_type="User",
                resource_id=user_id,
                changed_fields=["kind", *(k for k, v in user.items() if v)],
                request_id=request_id,
            )
            return {"account_id": account_id, "user_id": user_id}

        def load(uow: UnitOfWork, ids: Mapping[str, Any]) -> tuple[Any, Any]:
            acct = uow.accounts.get(ids["account_id"])
            usr = uow.accounts.user_by_id(ids["user_id"])
            if acct is None:
                raise not_found("account", "id", ids["account_id"])
            return acct, usr

        (acct, usr), _created = create_once(
            self.deps.db, p, "CreateAccount", request_id, fp, create, load,
            keep=self.deps.settings.request_id_ttl,
        )
        return acct, usr

    # -- GetAccount ------------------------------------------------------------------------
    def get_account(self, p: Principal, account_id: str = "", email: str = "") -> Any:
        if account_id and email:
            raise InvalidArgument.field(
                "email", "set either id or email, not both", reason="INVALID_ARGUMENT"
            )
        if email and not account_id:
            v = Validator()
            email = v.email("email", email)
            v.raise_if_any()
            key, value = "email", email
        else:
            if account_id:
                check_id("id", account_id)
            key, value = "id", account_id or p.account_id
        with self.deps.db.read(single_statement=True) as uow:  # one indexed statement
            if key == "email":
                row = uow.accounts.find_by_email(email, include_closed=p.is_platform_reader)
            else:
                row = uow.accounts.get(value)
        if row is None or not policy.allows(p, policy.Action.ACCOUNT_READ, target_of(row)):
            raise not_found("account", key, value)
        return row

    # -- ListAccounts ----------------------------------------------------------------------
    def list_accounts(
        self,
        p: Principal,
        *,
        page_size: int = 0,
        page_token: str = "",
        filter: str = "",
        order_by: str = "",
        show_closed: bool = False,
    ) -> Page:
        see_all, own, clients = policy.account_filter(p)
        scope: ListScope
        if see_all:  # closed accounts only on request, and only for platform readers
            scope = "every" if show_closed else "open"
        else:
            scope = "own_and_clients" if clients else "own"
        # no transaction around the list's two statements (the count of a filter, then
        # the page): each is its own snapshot, and a total_size off by a row written in
        # between is within AIP-158's estimate; the page itself is one statement, and an
        # unfiltered platform list is that statement alone (page and kept count agree)
        with self.deps.db.read(single_statement=True) as uow:
            query = parse_list_request(
                uow.accounts.list_shape,
                secret=self.deps.page_secret,
                page_size=page_size,
                page_token=page_token,
                filter=filter,
                order_by=order_by,
                scope={
                    "show_closed": show_closed,
                    "see": "*" if see_all else own,
                    "clients": clients,
                },
            )
            return uow.accounts.list_page(query, scope=scope, own=own)

    # -- UpdateAccount ---------------------------------------------------------------------
    def update_account(
        self, p: Principal, account: AccountInput, mask_paths: Sequence[str] = ()
    ) -> Any:
        account_id = account.get("id")
        check_id("account.id", account_id)
        with self.deps.db.write() as uow:
            row = uow.accounts.get(account_id, lock=True)
            if row is None:
                raise not_found("account", "id", account_id)
            t = target_of(row)
            policy.require(p, policy.Action.ACCOUNT_UPDATE, t, what="account", key=account_id)
            if row.closed:
                raise _closed(account_id)
            check_etag(account.get("etag"), row.etag, "account")
            stored = stored_values(row)
            unchanged = unchanged_fields(account, stored)
            paths = resolve_mask(
                "account",
                mask_paths,
                account.populated,
                updatable=UPDATABLE,
                output_only=OUTPUT_ONLY,
                unchanged=unchanged,
            )
            require_paths_allowed(
                paths, policy.account_update_fields(p, t), "the caller (not an admin)"
            )
            wanted = check_account_update(paths, account)
            changes = changed_values(wanted, stored)
            if changes.get("consultancy_account_id"):
                check_consultancy(
                    uow.accounts,
                    changes["consultancy_account_id"],
                    account_id,
                    "account.consultancy_account_id",
                )
            if (
                "roles" in changes
                and R.CONSULTANCY in stored["roles"]
                and R.CONSULTANCY not in changes["roles"]
            ):
                clients = uow.accounts.open_clients(account_id)
                if clients:
                    raise FailedPrecondition(
                        f"{len(clients)} open account(s) name this account as their "
                        "consultancy; change their consultancy_account_id first",
                        reason="CONSULTANCY_HAS_CLIENTS",
                        metadata={"clients": str(len(clients))},
                    )
            if not changes:
                return row
            email = changes.get("email")
            if email is not None:
                uow.accounts.require_email_free(email, except_id=account_id)
            uow.accounts.update_guarded(
                lambda: conditional_update(
                    uow.accounts.update_if_etag, account_id, row.etag, changes, "account"
                ),
                email,
            )
            uow.audit.record(
                account_id=account_id,
                actor_user_id=p.user_id,
                action="account.update",
                resource_type="Account",
                resource_id=account_id,
                changed_fields=sorted(changes),
                revocation=(events.revocation(events.ROLES_CHANGED, account_ids=[account_id])
                            if "roles" in changes else None),
            )
            row = uow.accounts.get(account_id)
            uow.commit()
        return row

    # -- CloseAccount ----------------------------------------------------------------------
    def close_account(self, p: Principal, account_id: str) -> Any:
        check_id("id", account_id)
        with self.deps.db.write() as uow:
            row = uow.accounts.get(account_id, lock=True)
            if row is None:
                raise not_found("account", "id", account_id)
            policy.require(p, policy.Action.ACCOUNT_CLOSE, target_of(row), what="account",
                           key=account_id)
            if row.closed:
                raise _closed(account_id)
            if account_id == p.account_id:
                raise FailedPrecondition(
                    "the caller cannot close its own account (it would lock itself out); "
                    "ask an admin of another account",
                    reason="OWN_ACCOUNT",
                    metadata={"id": account_id},
                )
            uow.accounts.purge_contents(account_id)
            for client in uow.accounts.open_clients(account_id):
                conditional_update(
                    uow.accounts.update_if_etag, client.id, client.etag,
                    {"consultancy_account_id": None}, "account",
                )
                uow.audit.record(
                    account_id=client.id,
                    actor_user_id=p.user_id,
                    action="account.update",
                    resource_type="Account",
                    resource_id=client.id,
                    changed_fields=["consultancy_account_id"],
                )
            conditional_update(
                uow.accounts.update_if_etag, account_id, row.etag, {"closed": True}, "account"
            )
            uow.audit.record(
                account_id=account_id,
                actor_user_id=p.user_id,
                action="account.close",
                resource_type="Account",
                resource_id=account_id,
                changed_fields=["closed"],
                revocation=events.revocation(events.ACCOUNT_CLOSED, account_ids=[account_id]),
            )
            row = uow.accounts.get(account_id)
            uow.commit()
        return row
