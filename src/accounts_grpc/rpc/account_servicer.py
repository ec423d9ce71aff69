"""AccountService: thin servicer (unpack, convert, call the use case, convert back)."""

from __future__ import annotations

from typing import Any

from accounts.v1 import account_service_pb2 as pb
from accounts.v1 import account_service_pb2_grpc

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
        page = self.audit_log.list_audit_events(
            current_principal(),
            request.account_id,
            page_size=request.page_size,
            page_token=request.page_token,
            filter=request.filter,
        )
        return pb.ListAuditEventsResponse(
            audit_events=[audit_event_to_proto(r) for r in page.rows],
            next_page_token=page.next_page_token,
            previous_page_token=page.previous_page_token,
            total_size=page.total_size,
        )
