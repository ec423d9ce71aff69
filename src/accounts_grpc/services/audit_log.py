"""Use case for an account's audit log: ListAuditEvents.

- Who may read it: admin, admin-reader and the account's account-admins
  (``policy.Action.AUDIT_READ``, asked by ``policy.require``: a caller that cannot see
  the account at all gets NOT_FOUND, as for an account that does not exist). A closed
  account's log stays readable for admins and admin-readers.
- Newest first, keyset pages, ``filter`` on action and resource type (the list's shape
  is ``uow.audit.list_shape``, store/audit.AUDIT_LIST).

The events are written by every use case, in its own transaction (``uow.audit.record``);
the statements are in store/audit.py.
"""

from __future__ import annotations

from accounts_grpc.domain import policy
from accounts_grpc.domain.errors import not_found
from accounts_grpc.domain.listing import Page, parse_list_request
from accounts_grpc.domain.principal import Principal
from accounts_grpc.domain.validate import check_id
from accounts_grpc.services.account_fields import target_of
from accounts_grpc.services.deps import Deps


class AuditLogService:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    # -- ListAuditEvents -------------------------------------------------------------------
    def list_audit_events(
        self,
        p: Principal,
        account_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        filter: str = "",
    ) -> Page:
        check_id("account_id", account_id)
        with self.deps.db.read() as uow:
            query = parse_list_request(
                uow.audit.list_shape,
                secret=self.deps.page_secret,
                page_size=page_size,
                page_token=page_token,
                filter=filter,
                scope={"account_id": account_id},
            )
            row = uow.accounts.get(account_id)
            if row is None:
                raise not_found("account", "id", account_id)
            policy.require(
                p, policy.Action.AUDIT_READ, target_of(row), what="account", key=account_id
            )
            return uow.audit.list_page(account_id, query)
