"""AccountService: thin servicer (unpack, convert, call the use case, convert back)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from accounts.v1 import account_service_pb2 as pb
from accounts.v1 import account_service_pb2_grpc, audit_event_pb2

from accounts_grpc.domain.principal import current_principal
from accounts_grpc.rpc.convert.accounts import (
    account_input,
    account_to_proto,
    audit_event_to_proto,
    first_user_input,
)
from accounts_grpc.rpc.convert.users import user_to_proto
from accounts_grpc.services import Services


class AccountServiceServicer(account_service_pb2_grpc.AccountServiceServicer):
    def __init__(self, services: Services) -> None:
        self.services = services
        self.accounts = services.accounts
        self.audit_log = services.audit_log
        self.events = services.events

    def CreateAccount(
        self, request: pb.CreateAccountRequest, context: Any
    ) -> pb.CreateAccountResponse:
        account, user = self.accounts.create_account(
            current_principal(),
            account_input(request.account),
            first_user_input(request.first_user),
            request.request_id,
        )
        return pb.CreateAccountResponse(
            account=account_to_proto(account), first_user=user_to_proto(user)
        )

    def GetAccount(self, request: pb.GetAccountRequest, context: Any) -> pb.GetAccountResponse:
        row = self.accounts.get_account(current_principal(), request.id, request.email)
        return pb.GetAccountResponse(account=account_to_proto(row))

    def ListAccounts(
        self, request: pb.ListAccountsRequest, context: Any
    ) -> pb.ListAccountsResponse:
        page = self.accounts.list_accounts(
            current_principal(),
            page_size=request.page_size,
            page_token=request.page_token,
            filter=request.filter,
            order_by=request.order_by,
            show_closed=request.show_closed,
        )
        return pb.ListAccountsResponse(
            accounts=[account_to_proto(r) for r in page.rows],
            next_page_token=page.next_page_token,
            previous_page_token=page.previous_page_token,
            total_size=page.total_size,
        )

    def UpdateAccount(
        self, request: pb.UpdateAccountRequest, context: Any
    ) -> pb.UpdateAccountResponse:
        row = self.accounts.update_account(
            current_principal(), account_input(request.account), list(request.update_mask.paths)
        )
        return pb.UpdateAccountResponse(account=account_to_proto(row))

    def CloseAccount(
        self, request: pb.CloseAccountRequest, context: Any
    ) -> pb.CloseAccountResponse:
        row = self.accounts.close_account(current_principal(), request.id)
        return pb.CloseAccountResponse(account=account_to_proto(row))

    def ListAuditEvents(
        self, request: pb.ListAuditEventsRequest, context: Any
    ) -> pb.ListAuditEventsResponse:
        newest = self.events.newest_cursor()  # before the page: watching from it misses none
        page = self.audit_log.list_audit_events(
            current_principal(),
            request.account_id,
            page_size=request.page_size,
            page_token=request.page_token,
            filter=request.filter,
        )
        return pb.ListAuditEventsResponse(
            audit_events=[self._event(r) for r in page.rows],
            next_page_token=page.next_page_token,
            previous_page_token=page.previous_page_token,
            total_size=page.total_size,
            next_cursor=newest,
        )

    def WatchEvents(
        self, request: pb.WatchEventsRequest, context: Any
    ) -> Iterator[pb.WatchEventsResponse | None]:
        """A server stream; ``None`` is a heartbeat (rpc/pipeline.py ``stream``)."""
        batches = self.events.watch(current_principal(), request.account_id, request.cursor)
        return (pb.WatchEventsResponse(event=self._event(row)) if row is not None else None
                for batch in batches for row in (batch or [None]))

    def _event(self, row: Any) -> audit_event_pb2.AuditEvent:
        """An event with its feed cursor and what it revokes."""
        event = audit_event_to_proto(row)
        event.cursor = self.events.cursor(row.seq)
        revoked = row.revocation
        if revoked:
            event.revocation.CopyFrom(audit_event_pb2.Revocation(
                kind=f"REVOCATION_KIND_{revoked['kind']}",
                subjects=revoked["subjects"], session_ids=revoked["session_ids"],
                key_ids=revoked["key_ids"], account_ids=revoked["account_ids"],
            ))
            event.revocation.issued_before.FromSeconds(row.create_time // 1_000_000)
        return event
