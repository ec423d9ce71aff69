"""The rules of AccountService's use cases, asked in process: the domain error (class =
gRPC code, reason, field violation), a short message that does not echo the input, and no
row changed.

Moved from tests/e2e/test_accounts_errors.py (old test → here); the e2e module keeps one
real call per RPC and per error class, and what only the transport decides:
- test_bad_input[<case>] → test_bad_input[<case>], every case of the old table but
  "create-control-char-name" (INVALID_CHARACTER is the edge's check of every string,
  rpc/inputs.py: e2e only); "create-3mb-name" is here and stays in e2e too (a 3 MB
  message passes grpc's size limit and reaches the use case)
- test_all_violations_come_at_once → same name
- test_a_message_over_4mb_is_refused_by_grpc: e2e only (grpc refuses it before any use case)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from accounts.v1 import account_pb2, user_pb2
from accounts.v1 import account_service_pb2 as pb
from google.protobuf import field_mask_pb2

from accounts_grpc.domain.errors import DomainError, InvalidArgument, NotFound
from accounts_grpc.domain.principal import Principal
from accounts_grpc.rpc.convert.accounts import account_input, first_user_input
from accounts_grpc.services import Services
from tests.usecases.helpers import UseCases, uniq

NOWHERE = "7d0c4a43-2b1e-4c55-9b7e-8c5f3a6d1e20"  # a well-formed id of no account
MB = 1_000_000

#: each RPC as its servicer calls the use case
CALLS: dict[str, Callable[[Services, Principal, Any], Any]] = {
    "CreateAccount": lambda s, p, r: s.accounts.create_account(
        p, account_input(r.account), first_user_input(r.first_user), r.request_id),
    "GetAccount": lambda s, p, r: s.accounts.get_account(p, r.id, r.email),
    "ListAccounts": lambda s, p, r: s.accounts.list_accounts(
        p, page_size=r.page_size, page_token=r.page_token, filter=r.filter, order_by=r.order_by,
        show_closed=r.show_closed),
    "UpdateAccount": lambda s, p, r: s.accounts.update_account(
        p, account_input(r.account), list(r.update_mask.paths)),
    "CloseAccount": lambda s, p, r: s.accounts.close_account(p, r.id),
    "ListAuditEvents": lambda s, p, r: s.audit_log.list_audit_events(
        p, r.account_id, page_size=r.page_size, page_token=r.page_token, filter=r.filter),
}


@dataclass(frozen=True)
class Case:
    rpc: str
    build: Callable[[str], Any]  # target account id → request
    error: type[DomainError]
    reason: str
    field: str | None


def create(account: dict[str, Any] | None = None, user: dict[str, Any] | None = None,
           **kw: Any) -> Callable[[str], Any]:
    def build(_: str) -> Any:
        a = {"name": "Fine", "email": f"{uniq()}@x.io", **(account or {})}
        u = {"email": f"{uniq()}@x.io", **(user or {})}
        return pb.CreateAccountRequest(account=account_pb2.Account(**a),
                                       first_user=user_pb2.User(**u), **kw)
    return build


def upd(paths: list[str] | None = None, **fields: Any) -> Callable[[str], Any]:
    def build(target: str) -> Any:
        mask = field_mask_pb2.FieldMask(paths=paths) if paths is not None else None
        rest = dict(fields)
        account = account_pb2.Account(id=rest.pop("id", target), **rest)
        return pb.UpdateAccountRequest(account=account, update_mask=mask)
    return build


def fixed(msg: Any) -> Callable[[str], Any]:
    return lambda _target: msg


INVALID = InvalidArgument
CASES: dict[str, Case] = {
    # names
    "create-empty-name": Case("CreateAccount", create({"name": ""}), INVALID,
                              "INVALID_ARGUMENT", "account.name"),
    "create-blank-name": Case("CreateAccount", create({"name": "   "}), INVALID,
                              "INVALID_ARGUMENT", "account.name"),
    "create-3mb-name": Case("CreateAccount", create({"name": "n" * (3 * MB)}), INVALID,
                            "INVALID_ARGUMENT", "account.name"),
    "create-201-char-name": Case("CreateAccount", create({"name": "n" * 201}), INVALID,
                                 "INVALID_ARGUMENT", "account.name"),
    "update-empty-name": Case("UpdateAccount", upd(["name"], name=""), INVALID,
                              "INVALID_ARGUMENT", "account.name"),
    "update-3mb-name": Case("UpdateAccount", upd(name="n" * (3 * MB)), INVALID,
                            "INVALID_ARGUMENT", "account.name"),
    # emails
    "create-no-email": Case("CreateAccount", create({"email": ""}), INVALID,
                            "INVALID_ARGUMENT", "account.email"),
    "create-bad-email": Case("CreateAccount", create({"email": "not-an-email"}), INVALID,
                             "INVALID_ARGUMENT", "account.email"),
    "create-bad-email-2": Case("CreateAccount", create({"email": "a@b"}), INVALID,
                               "INVALID_ARGUMENT", "account.email"),
    "create-bad-first-user-email": Case("CreateAccount", create(user={"email": "x@@y.io"}),
                                        INVALID, "INVALID_ARGUMENT", "first_user.email"),
    "create-no-first-user": Case("CreateAccount", fixed(pb.CreateAccountRequest(
        account=account_pb2.Account(name="N", email="n@x.io"))), INVALID, "INVALID_ARGUMENT",
        "first_user.email"),
    "update-bad-email": Case("UpdateAccount", upd(email="nope@"), INVALID,
                             "INVALID_ARGUMENT", "account.email"),
    "update-clear-email": Case("UpdateAccount", upd(["email"]), INVALID,
                               "INVALID_ARGUMENT", "account.email"),
    "get-bad-email": Case("GetAccount", fixed(pb.GetAccountRequest(email="nope")), INVALID,
                          "INVALID_ARGUMENT", "email"),
    # colours and logos
    "create-colour-word": Case("CreateAccount", create({"primary_color": "red"}), INVALID,
                               "INVALID_ARGUMENT", "account.primary_color"),
    "create-colour-short": Case("CreateAccount", create({"secondary_color": "#abc"}),
                                INVALID, "INVALID_ARGUMENT", "account.secondary_color"),
    "update-colour-not-hex": Case("UpdateAccount", upd(primary_color="#GGGGGG"), INVALID,
                                  "INVALID_ARGUMENT", "account.primary_color"),
    "update-colour-newline": Case("UpdateAccount", upd(primary_color="#aabbcc\n"), INVALID,
                                  "INVALID_ARGUMENT", "account.primary_color"),
    "create-logo-relative": Case("CreateAccount", create({"logo_url": "logo.png"}), INVALID,
                                 "INVALID_ARGUMENT", "account.logo_url"),
    "update-logo-javascript": Case("UpdateAccount", upd(logo_url="javascript:alert(1)"),
                                   INVALID, "INVALID_ARGUMENT", "account.logo_url"),
    "update-logo-ftp": Case("UpdateAccount", upd(logo_url="ftp://x.io/l.png"), INVALID,
                            "INVALID_ARGUMENT", "account.logo_url"),
    # roles
    "create-unknown-account-role": Case("CreateAccount", create({"roles": ["customer"]}),
                                        INVALID, "UNKNOWN_ROLE", "account.roles[0]"),
    "create-user-role-on-account": Case("CreateAccount", create({"roles": ["admin"]}),
                                        INVALID, "UNKNOWN_ROLE", "account.roles[0]"),
    "create-unknown-user-role": Case("CreateAccount", create(user={"roles": ["boss"]}),
                                     INVALID, "UNKNOWN_ROLE", "first_user.roles[0]"),
    "update-unknown-role": Case("UpdateAccount", upd(roles=["consultancy", "x"]), INVALID,
                                "UNKNOWN_ROLE", "account.roles[1]"),
    # output-only and immutable fields
    "create-with-id": Case("CreateAccount", create({"id": NOWHERE}), INVALID,
                           "INVALID_ARGUMENT", "account.id"),
    "create-closed": Case("CreateAccount", create({"closed": True}), INVALID,
                          "INVALID_ARGUMENT", "account.closed"),
    "create-first-user-id": Case("CreateAccount", create(user={"id": NOWHERE}), INVALID,
                                 "INVALID_ARGUMENT", "first_user.id"),
    "update-mask-output-only": Case("UpdateAccount", upd(["create_time"]), INVALID,
                                    "INVALID_UPDATE_MASK", "update_mask.paths[0]"),
    "update-mask-closed": Case("UpdateAccount", upd(["name", "closed"], name="x"), INVALID,
                               "INVALID_UPDATE_MASK", "update_mask.paths[1]"),
    "update-mask-id": Case("UpdateAccount", upd(["id"]), INVALID, "INVALID_UPDATE_MASK",
                           "update_mask.paths[0]"),
    "update-mask-unknown": Case("UpdateAccount", upd(["colour"]), INVALID,
                                "INVALID_UPDATE_MASK", "update_mask.paths[0]"),
    "update-mask-prefixed": Case("UpdateAccount", upd(["account.name"]), INVALID,
                                 "INVALID_UPDATE_MASK", "update_mask.paths[0]"),
    "update-populated-closed": Case("UpdateAccount", upd(closed=True), INVALID,
                                    "FIELD_NOT_UPDATABLE", "account.closed"),
    # unknown ids
    "get-unknown-id": Case("GetAccount", fixed(pb.GetAccountRequest(id=NOWHERE)), NotFound,
                           "ACCOUNT_NOT_FOUND", None),
    "update-unknown-id": Case("UpdateAccount", upd(id=NOWHERE, name="x"), NotFound,
                              "ACCOUNT_NOT_FOUND", None),
    "close-unknown-id": Case("CloseAccount", fixed(pb.CloseAccountRequest(id=NOWHERE)),
                             NotFound, "ACCOUNT_NOT_FOUND", None),
    "audit-unknown-id": Case("ListAuditEvents", fixed(pb.ListAuditEventsRequest(
        account_id=NOWHERE)), NotFound, "ACCOUNT_NOT_FOUND", None),
    # ids of the wrong shape
    "get-bad-id": Case("GetAccount", fixed(pb.GetAccountRequest(id="acme")), INVALID,
                       "INVALID_ID", "id"),
    "get-braced-id": Case("GetAccount", fixed(pb.GetAccountRequest(id="{" + NOWHERE + "}")),
                          INVALID, "INVALID_ID", "id"),
    "get-sql-id": Case("GetAccount", fixed(pb.GetAccountRequest(id="1' OR '1'='1")), INVALID,
                       "INVALID_ID", "id"),
    "update-bad-id": Case("UpdateAccount", upd(id="42", name="x"), INVALID, "INVALID_ID",
                          "account.id"),
    "update-no-id": Case("UpdateAccount", upd(id="", name="x"), INVALID, "INVALID_ARGUMENT",
                         "account.id"),
    "close-bad-id": Case("CloseAccount", fixed(pb.CloseAccountRequest(id="x" * 36)), INVALID,
                         "INVALID_ID", "id"),
    "close-no-id": Case("CloseAccount", fixed(pb.CloseAccountRequest()), INVALID,
                        "INVALID_ARGUMENT", "id"),
    "audit-bad-id": Case("ListAuditEvents", fixed(pb.ListAuditEventsRequest(account_id="a")),
                         INVALID, "INVALID_ID", "account_id"),
    "consultancy-bad-id": Case("UpdateAccount", upd(consultancy_account_id="c-1"), INVALID,
                               "INVALID_ARGUMENT", "account.consultancy_account_id"),
    "consultancy-unknown": Case("UpdateAccount", upd(consultancy_account_id=NOWHERE),
                                INVALID, "CONSULTANCY_ACCOUNT_INVALID",
                                "account.consultancy_account_id"),
    # lists
    "list-negative-page-size": Case("ListAccounts", fixed(pb.ListAccountsRequest(
        page_size=-1)), INVALID, "INVALID_PAGE_SIZE", "page_size"),
    "audit-negative-page-size": Case("ListAuditEvents", lambda t: pb.ListAuditEventsRequest(
        account_id=t, page_size=-5), INVALID, "INVALID_PAGE_SIZE", "page_size"),
    "list-garbage-token": Case("ListAccounts", fixed(pb.ListAccountsRequest(
        page_token="garbage")), INVALID, "INVALID_PAGE_TOKEN", "page_token"),
    "list-garbage-token-2": Case("ListAccounts", fixed(pb.ListAccountsRequest(
        page_token="eyJ2IjoxLCJxIjoiIn0")), INVALID, "INVALID_PAGE_TOKEN", "page_token"),
    "audit-garbage-token": Case("ListAuditEvents", lambda t: pb.ListAuditEventsRequest(
        account_id=t, page_token="%%%"), INVALID, "INVALID_PAGE_TOKEN", "page_token"),
    "list-unknown-order": Case("ListAccounts", fixed(pb.ListAccountsRequest(
        order_by="id")), INVALID, "INVALID_ORDER_BY", "order_by"),
    "list-open-quote": Case("ListAccounts", fixed(pb.ListAccountsRequest(filter='"x')),
                            INVALID, "INVALID_FILTER", "filter"),
    "create-long-request-id": Case("CreateAccount", create(request_id="r" * 201), INVALID,
                                   "INVALID_ARGUMENT", "request_id"),
}


@pytest.fixture(scope="module")
def target(uc: UseCases) -> str:
    account, _ = uc.new_account("Target")
    return str(account.id)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(uc: UseCases, target: str, name: str) -> None:
    case = CASES[name]
    e = uc.rejects(lambda: CALLS[case.rpc](uc.services, uc.admin, case.build(target)),
                   case.error, case.reason, field=case.field)
    assert len(e.message) < 500, "the error echoes the input"


def test_all_violations_come_at_once(uc: UseCases, target: str) -> None:
    req = upd(["name", "email", "primary_color", "logo_url"], name="", email="bad",
              primary_color="red", logo_url="x")(target)
    e = uc.rejects(lambda: CALLS["UpdateAccount"](uc.services, uc.admin, req),
                   InvalidArgument, "INVALID_ARGUMENT")
    assert isinstance(e, InvalidArgument)
    assert sorted(v.field for v in e.violations) == [
        "account.email", "account.logo_url", "account.name", "account.primary_color"]
