"""AccountService end to end: what a client sees on each RPC, on a real server."""

from __future__ import annotations

import time

import grpc
import sqlalchemy as sa
from accounts.v1 import account_pb2, user_pb2
from accounts.v1.audit_event_pb2 import AuditEvent

from accounts_grpc.store.db import new_etag, new_id, now_us
from accounts_grpc.store.tables import (
    audit_events,
    device_permissions,
    devices,
    group_members,
    group_partitions,
    orders,
    partitions,
    sessions,
    user_groups,
    users,
)
from tests.e2e.accounts_helpers import (
    HUMAN,
    MACHINE,
    account_row,
    add_user,
    audit_count,
    get,
    human_token,
    new_account,
    pb,
    uniq,
    update,
)
from tests.support import Server, expect_error

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def audit_of(server: Server, account_id: str, **kw: object) -> list[AuditEvent]:
    return list(server.stubs.accounts.ListAuditEvents(
        pb.ListAuditEventsRequest(account_id=account_id, **kw),  # type: ignore[arg-type]
        metadata=server.admin).audit_events)


# -- CreateAccount -----------------------------------------------------------------------
def test_create_account_with_its_first_user(server: Server) -> None:
    name = uniq("Acme ")
    resp = server.stubs.accounts.CreateAccount(pb.CreateAccountRequest(
        account=account_pb2.Account(name=f"  {name} ", email="Ops@Example.COM".replace(
            "Ops", uniq("Ops")), primary_color="#1A73E8", logo_url="https://acme.io/logo.png"),
        first_user=user_pb2.User(email=f"{uniq('ann-')}@acme.io", first_name="Ann",
                                 last_name="Lee"),
        request_id=uniq("req-"),
    ), metadata=server.admin)
    a, u = resp.account, resp.first_user
    assert a.name == name and a.primary_color == "#1a73e8" and not a.closed
    assert a.id and a.etag and a.create_time.seconds and a.create_time == a.update_time
    assert not a.HasField("activity_time")
    assert u.kind == HUMAN and u.account_id == a.id and list(u.roles) == ["account-admin"]
    assert (u.first_name, u.last_name) == ("Ann", "Lee")
    assert get(server, a.id) == a
    events = audit_of(server, a.id)
    assert sorted(e.action for e in events) == ["account.create", "user.create"]
    create = next(e for e in events if e.action == "account.create")
    assert create.resource_type == "Account" and create.resource_id == a.id
    assert sorted(create.changed_fields) == ["email", "logo_url", "name", "primary_color"]
    assert all(e.request_id and e.actor_user_id for e in events)
    # the first user can sign in at once and is its account's admin
    md = human_token(server, u)
    assert server.stubs.accounts.GetAccount(pb.GetAccountRequest(), metadata=md).account.id == a.id


def test_create_account_may_set_roles_and_consultancy(server: Server) -> None:
    c = new_account(server, roles=("consultancy", "intermediary")).account
    assert list(c.roles) == ["consultancy", "intermediary"]
    x = new_account(server, consultancy_account_id=c.id).account
    assert x.consultancy_account_id == c.id


def test_email_is_unique_among_open_accounts_case_insensitively(server: Server) -> None:
    email = f"{uniq('Taken-')}@Example.com"
    first = new_account(server, email=email).account
    f = expect_error(new_account, server, email=email.upper(),
                     code=grpc.StatusCode.ALREADY_EXISTS, reason="ACCOUNT_EMAIL_TAKEN")
    assert email.upper() in f.message
    other = new_account(server).account
    expect_error(update, server, account_pb2.Account(id=other.id, email=email.lower()),
                 code=grpc.StatusCode.ALREADY_EXISTS, reason="ACCOUNT_EMAIL_TAKEN")
    # closing frees the email
    server.stubs.accounts.CloseAccount(pb.CloseAccountRequest(id=first.id),
                                       metadata=server.admin)
    again = new_account(server, email=email.lower()).account
    assert again.id != first.id
    # lookup by email finds the open account; admins fall back to the tombstone
    found = server.stubs.accounts.GetAccount(pb.GetAccountRequest(email=email),
                                             metadata=server.admin).account
    assert found.id == again.id


def test_only_human_first_users(server: Server) -> None:
    for kind in (MACHINE, user_pb2.USER_KIND_EXTERNAL):
        req = pb.CreateAccountRequest(
            account=account_pb2.Account(name="X", email=f"{uniq()}@x.io"),
            first_user=user_pb2.User(kind=kind, email=f"{uniq()}@x.io"))
        expect_error(server.stubs.accounts.CreateAccount, req, metadata=server.admin,
                     code=INVALID, field="first_user.kind")
    # UNSPECIFIED is taken as HUMAN
    req = pb.CreateAccountRequest(
        account=account_pb2.Account(name="X", email=f"{uniq()}@x.io"),
        first_user=user_pb2.User(email=f"{uniq()}@x.io"))
    resp = server.stubs.accounts.CreateAccount(req, metadata=server.admin)
    assert resp.first_user.kind == HUMAN


def test_first_user_may_get_more_roles_than_account_admin(server: Server) -> None:
    req = pb.CreateAccountRequest(
        account=account_pb2.Account(name="X", email=f"{uniq()}@x.io"),
        first_user=user_pb2.User(email=f"{uniq()}@x.io", roles=["consultant"]))
    resp = server.stubs.accounts.CreateAccount(req, metadata=server.admin)
    assert list(resp.first_user.roles) == ["account-admin", "consultant"]


# -- GetAccount --------------------------------------------------------------------------
def test_get_account_by_id_email_or_own(server: Server) -> None:
    made = new_account(server)
    a = made.account
    stub = server.stubs.accounts
    assert stub.GetAccount(pb.GetAccountRequest(id=a.id), metadata=server.admin).account == a
    by_email = stub.GetAccount(pb.GetAccountRequest(email=f"  {a.email.upper()} "),
                               metadata=server.admin).account
    assert by_email.id == a.id
    md = human_token(server, made.first_user)
    assert stub.GetAccount(pb.GetAccountRequest(), metadata=md).account.id == a.id
    expect_error(stub.GetAccount, pb.GetAccountRequest(id=a.id, email=a.email),
                 metadata=server.admin, code=INVALID, field="email")
    f = expect_error(stub.GetAccount, pb.GetAccountRequest(email=f"{uniq()}@nowhere.io"),
                     metadata=server.admin, code=grpc.StatusCode.NOT_FOUND,
                     reason="ACCOUNT_NOT_FOUND")
    assert "email" in f.metadata


def test_closed_account_answers_admins_only(server: Server) -> None:
    made = new_account(server)
    a = made.account
    reader = add_user(server, get(server, a.id).id, roles=())  # a member of the account
    server.stubs.accounts.CloseAccount(pb.CloseAccountRequest(id=a.id), metadata=server.admin)
    assert get(server, a.id).closed
    found = server.stubs.accounts.GetAccount(pb.GetAccountRequest(email=a.email),
                                             metadata=server.admin).account
    assert found.id == a.id and found.closed  # no open account has the email: the tombstone
    # the account's own users are gone and their tokens dead
    expect_error(server.stubs.accounts.GetAccount, pb.GetAccountRequest(),
                 metadata=reader.metadata, code=grpc.StatusCode.UNAUTHENTICATED)


# -- ListAccounts ------------------------------------------------------------------------
def test_list_accounts_pages_filters_and_orders(server: Server) -> None:
    tag = uniq("zlist")
    made = [new_account(server, name=f"{tag} {n}").account for n in ("b", "a", "d", "c", "e")]
    stub = server.stubs.accounts

    def page(**kw: object) -> pb.ListAccountsResponse:
        return stub.ListAccounts(pb.ListAccountsRequest(**kw),  # type: ignore[arg-type]
                                 metadata=server.admin)

    first = page(filter=tag, order_by="name desc", page_size=2)
    assert [a.name for a in first.accounts] == [f"{tag} e", f"{tag} d"]
    assert first.total_size == 5 and first.next_page_token and not first.previous_page_token
    second = page(filter=tag, order_by="name desc", page_size=2,
                  page_token=first.next_page_token)
    assert [a.name for a in second.accounts] == [f"{tag} c", f"{tag} b"]
    third = page(filter=tag, order_by="name desc", page_size=2,
                 page_token=second.next_page_token)
    assert [a.name for a in third.accounts] == [f"{tag} a"] and not third.next_page_token
    back = page(filter=tag, order_by="name desc", page_size=2,
                page_token=third.previous_page_token)
    assert back.accounts == second.accounts
    # default order is create_time; quoted phrases stay whole; every term must match
    assert [a.id for a in page(filter=tag).accounts] == [a.id for a in made]
    assert [a.name for a in page(filter=f'"{tag} c"').accounts] == [f"{tag} c"]
    assert page(filter=f'"c {tag}"').total_size == 0
    assert page(filter=f'"{tag.upper()} E"').total_size == 1  # case-insensitive
    assert page(filter=f"{tag} example.com").total_size == 5  # on the email too
    # the token is bound to its query
    expect_error(stub.ListAccounts, pb.ListAccountsRequest(
        filter=tag, order_by="name", page_token=first.next_page_token), metadata=server.admin,
        code=INVALID, reason="PAGE_TOKEN_QUERY_MISMATCH", field="page_token")
    expect_error(stub.ListAccounts, pb.ListAccountsRequest(
        filter=tag, order_by="name desc", show_closed=True,
        page_token=first.next_page_token), metadata=server.admin,
        code=INVALID, reason="PAGE_TOKEN_QUERY_MISMATCH", field="page_token")
    expect_error(stub.ListAccounts, pb.ListAccountsRequest(order_by="colour"),
                 metadata=server.admin, code=INVALID, reason="INVALID_ORDER_BY",
                 field="order_by")
    expect_error(stub.ListAccounts, pb.ListAccountsRequest(filter='"open'),
                 metadata=server.admin, code=INVALID, reason="INVALID_FILTER", field="filter")
    # closed accounts only with show_closed
    stub.CloseAccount(pb.CloseAccountRequest(id=made[0].id), metadata=server.admin)
    assert page(filter=tag).total_size == 4
    shown = page(filter=tag, show_closed=True)
    assert shown.total_size == 5 and any(a.closed for a in shown.accounts)


def test_list_accounts_of_an_account_admin_is_its_own(server: Server) -> None:
    made = new_account(server)
    md = human_token(server, made.first_user)
    resp = server.stubs.accounts.ListAccounts(pb.ListAccountsRequest(), metadata=md)
    assert [a.id for a in resp.accounts] == [made.account.id] and resp.total_size == 1


def test_list_order_by_every_field(server: Server) -> None:
    for order in ("name", "email desc", "create_time desc", "update_time", "createTime desc"):
        resp = server.stubs.accounts.ListAccounts(
            pb.ListAccountsRequest(order_by=order, page_size=3), metadata=server.admin)
        assert len(resp.accounts) == 3


# -- UpdateAccount -----------------------------------------------------------------------
def test_account_admin_updates_its_account(server: Server) -> None:
    made = new_account(server)
    md = human_token(server, made.first_user)
    a = made.account
    before = audit_count(server, a.id)
    got = update(server, account_pb2.Account(
        id=a.id, name="Renamed", primary_color="#ABCDEF", secondary_color="#000000",
        logo_url="https://x.io/l.svg", email=f"{uniq('new-')}@x.io", etag=a.etag),
        metadata=md)
    assert got.name == "Renamed" and got.primary_color == "#abcdef"
    assert got.etag != a.etag and got.update_time.ToMicroseconds() > a.update_time.ToMicroseconds()
    assert got.create_time == a.create_time
    events = audit_of(server, a.id)
    assert audit_count(server, a.id) == before + 1
    e = events[0]
    assert e.action == "account.update" and e.actor_user_id == made.first_user.id
    assert sorted(e.changed_fields) == ["email", "logo_url", "name", "primary_color",
                                        "secondary_color"]


def test_masks_clear_fields_and_stale_etags_abort(server: Server) -> None:
    a = new_account(server).account
    a1 = update(server, account_pb2.Account(id=a.id, logo_url="https://x.io/a.png"))
    # a mask clears a field the request leaves empty
    a2 = update(server, account_pb2.Account(id=a.id), ["logo_url"])
    assert a2.logo_url == ""
    events = audit_of(server, a.id)
    assert list(events[0].changed_fields) == ["logo_url"]
    # the etag of a1 is stale now
    f = expect_error(update, server, account_pb2.Account(id=a.id, name="Late", etag=a1.etag),
                     code=grpc.StatusCode.ABORTED, reason="ETAG_MISMATCH")
    assert f.metadata["current_etag"] == a2.etag
    assert get(server, a.id).name == a.name


def test_read_modify_write_of_the_whole_resource(server: Server) -> None:
    """Sending back what GetAccount returned, one field edited, with no mask, works: fields
    equal to the stored ones (output-only and admin-only alike) ask for no change."""
    made = new_account(server, roles=("intermediary",))
    md = human_token(server, made.first_user)
    current = get(server, made.account.id, md)
    current.name = "Edited"
    got = update(server, current, metadata=md)
    assert got.name == "Edited" and list(got.roles) == ["intermediary"]
    assert list(audit_of(server, made.account.id)[0].changed_fields) == ["name"]
    # an output-only field that differs is an error, never silently ignored
    got.create_time.seconds += 1
    got.name = "Again"
    expect_error(update, server, got, metadata=md, code=INVALID,
                 reason="FIELD_NOT_UPDATABLE", field="account.create_time")
    # and a changed admin-only field is beyond an account-admin
    current = get(server, made.account.id, md)
    current.roles[:] = ["consultancy"]
    expect_error(update, server, current, metadata=md,
                 code=grpc.StatusCode.PERMISSION_DENIED, reason="FIELD_PERMISSION_DENIED")


def test_update_that_changes_nothing_writes_nothing(server: Server) -> None:
    a = new_account(server).account
    before = audit_count(server, a.id)
    same = update(server, account_pb2.Account(id=a.id, name=a.name, etag=a.etag))
    assert same == a
    assert audit_count(server, a.id) == before


def test_roles_and_consultancy_rules(server: Server) -> None:
    c = new_account(server).account
    x = new_account(server).account
    # consultancy_account_id must name a consultancy
    f = expect_error(update, server, account_pb2.Account(id=x.id, consultancy_account_id=c.id),
                     code=INVALID, reason="CONSULTANCY_ACCOUNT_INVALID",
                     field="account.consultancy_account_id")
    assert "consultancy" in f.violations[0][1]
    update(server, account_pb2.Account(id=c.id, roles=["consultancy"]))
    assert update(server, account_pb2.Account(
        id=x.id, consultancy_account_id=c.id)).consultancy_account_id == c.id
    expect_error(update, server, account_pb2.Account(id=c.id, consultancy_account_id=c.id),
                 code=INVALID, reason="CONSULTANCY_ACCOUNT_INVALID")
    expect_error(update, server, account_pb2.Account(
        id=x.id, consultancy_account_id="00000000-0000-4000-8000-000000000000"),
        code=INVALID, reason="CONSULTANCY_ACCOUNT_INVALID")
    expect_error(update, server, account_pb2.Account(id=x.id, consultancy_account_id="nope"),
                 code=INVALID, field="account.consultancy_account_id")
    # the role cannot be taken while a client names the account
    f = expect_error(update, server, account_pb2.Account(id=c.id), ["roles"],
                     code=grpc.StatusCode.FAILED_PRECONDITION,
                     reason="CONSULTANCY_HAS_CLIENTS")
    assert f.metadata["clients"] == "1"
    f = expect_error(update, server, account_pb2.Account(id=c.id, roles=["consultant"]),
                     code=INVALID, reason="UNKNOWN_ROLE", field="account.roles[0]")
    # closing the consultancy unlinks its clients, with an audit event on each
    server.stubs.accounts.CloseAccount(pb.CloseAccountRequest(id=c.id), metadata=server.admin)
    unlinked = get(server, x.id)
    assert unlinked.consultancy_account_id == ""
    e = audit_of(server, x.id)[0]
    assert e.action == "account.update" and list(e.changed_fields) == ["consultancy_account_id"]


def test_closed_accounts_do_not_change(server: Server) -> None:
    a = new_account(server).account
    server.stubs.accounts.CloseAccount(pb.CloseAccountRequest(id=a.id), metadata=server.admin)
    expect_error(update, server, account_pb2.Account(id=a.id, name="Zombie"),
                 code=grpc.StatusCode.FAILED_PRECONDITION, reason="ACCOUNT_CLOSED")
    expect_error(server.stubs.accounts.CloseAccount, pb.CloseAccountRequest(id=a.id),
                 metadata=server.admin, code=grpc.StatusCode.FAILED_PRECONDITION,
                 reason="ACCOUNT_CLOSED")


# -- CloseAccount ------------------------------------------------------------------------
def _fill(server: Server, account_id: str, user_id: str) -> None:
    """Give the account one of everything it can own (rows, straight into the store)."""
    now = now_us()
    with server.app.db.engine.begin() as conn:
        gid, pid, did = new_id(), new_id(), new_id()
        conn.execute(user_groups.insert().values(
            id=gid, account_id=account_id, name=uniq("g"), description="", roles=["member"],
            create_time=now, update_time=now, etag=new_etag()))
        conn.execute(group_members.insert().values(group_id=gid, user_id=user_id,
                                                   create_time=now))
        conn.execute(partitions.insert().values(
            id=pid, account_id=account_id, name=uniq("p"), description="", create_time=now,
            update_time=now, etag=new_etag()))
        conn.execute(group_partitions.insert().values(group_id=gid, partition_id=pid))
        conn.execute(devices.insert().values(
            id=did, account_id=account_id, partition_id=pid, device_id=uniq()[:8],
            meter_id=None, name="d", create_time=now, update_time=now, etag=new_etag()))
        conn.execute(device_permissions.insert().values(
            user_id=user_id, device_pk=did, id=new_id(), account_id=account_id, charging=True,
            create_time=now, update_time=now, etag=new_etag()))
        conn.execute(orders.insert().values(
            id=new_id(), account_id=account_id, user_id=user_id, order_id=uniq("o"),
            status="RECEIVED", device_id=None, tracking_link=None, create_time=now,
            update_time=now, etag=new_etag()))
        conn.execute(sessions.insert().values(
            id=new_id(), user_id=user_id, account_id=account_id, token_hash=uniq() * 3,
            user_agent="", create_time=now, update_time=now, last_activity_time=now,
            expire_time=now + 10**9, revoke_time=None, etag=new_etag()))


def _owned(server: Server, account_id: str) -> dict[str, int]:
    out = {}
    with server.app.db.engine.connect() as conn:
        for t in (users, user_groups, partitions, devices, device_permissions, orders, sessions):
            out[t.name] = int(conn.execute(sa.select(sa.func.count()).select_from(t).where(
                t.c.account_id == account_id)).scalar_one())
    return out


def test_close_account_removes_everything_and_keeps_the_log(server: Server) -> None:
    made = new_account(server)
    a, first = made.account, made.first_user
    md = human_token(server, first)
    machine = add_user(server, a.id, kind=MACHINE)
    _fill(server, a.id, first.id)
    assert all(n >= 1 for n in _owned(server, a.id).values())
    log_before = audit_count(server, a.id)
    server.stubs.accounts.GetAccount(pb.GetAccountRequest(), metadata=md)  # tokens work
    server.stubs.accounts.GetAccount(pb.GetAccountRequest(), metadata=machine.metadata)

    closed = server.stubs.accounts.CloseAccount(pb.CloseAccountRequest(id=a.id),
                                                metadata=server.admin).account
    assert closed.closed and closed.id == a.id and closed.name == a.name
    assert closed.etag != a.etag
    assert _owned(server, a.id) == dict.fromkeys(_owned(server, a.id), 0)
    assert audit_count(server, a.id) == log_before + 1
    assert audit_of(server, a.id)[0].action == "account.close"
    # every token of the account dies on its next call
    for dead in (md, machine.metadata):
        expect_error(server.stubs.accounts.GetAccount, pb.GetAccountRequest(),
                     metadata=dead, code=grpc.StatusCode.UNAUTHENTICATED)
    # and the row is a tombstone
    row = account_row(server, a.id)
    assert row.closed and row.name == a.name


def test_admin_cannot_close_its_own_account(server: Server) -> None:
    from accounts.v1 import user_service_pb2

    me = server.stubs.users.GetMe(user_service_pb2.GetMeRequest(), metadata=server.admin)
    expect_error(server.stubs.accounts.CloseAccount, pb.CloseAccountRequest(id=me.account.id),
                 metadata=server.admin, code=grpc.StatusCode.FAILED_PRECONDITION,
                 reason="OWN_ACCOUNT")
    assert not get(server, me.account.id).closed


# -- ListAuditEvents ---------------------------------------------------------------------
def test_audit_log_newest_first_paged_and_filtered(server: Server) -> None:
    a = new_account(server).account
    for i in range(5):
        update(server, account_pb2.Account(id=a.id, name=f"step {i}"))
    stub = server.stubs.accounts
    first = stub.ListAuditEvents(pb.ListAuditEventsRequest(account_id=a.id, page_size=3),
                                 metadata=server.admin)
    assert first.total_size == 7 and len(first.audit_events) == 3
    rest = stub.ListAuditEvents(pb.ListAuditEventsRequest(
        account_id=a.id, page_size=3, page_token=first.next_page_token), metadata=server.admin)
    last = stub.ListAuditEvents(pb.ListAuditEventsRequest(
        account_id=a.id, page_size=3, page_token=rest.next_page_token), metadata=server.admin)
    assert not last.next_page_token
    events = [*first.audit_events, *rest.audit_events, *last.audit_events]
    times = [e.create_time.ToMicroseconds() for e in events]
    assert times == sorted(times, reverse=True)
    assert {e.action for e in events[-2:]} == {"account.create", "user.create"}
    assert all(e.update_time == e.create_time and e.etag for e in events)
    updates = stub.ListAuditEvents(pb.ListAuditEventsRequest(
        account_id=a.id, filter="account.update"), metadata=server.admin)
    assert updates.total_size == 5
    users_ = stub.ListAuditEvents(pb.ListAuditEventsRequest(account_id=a.id, filter="USER"),
                                  metadata=server.admin)
    assert [e.action for e in users_.audit_events] == ["user.create"]
    # the token is bound to the account
    other = new_account(server).account
    expect_error(stub.ListAuditEvents, pb.ListAuditEventsRequest(
        account_id=other.id, page_size=3, page_token=first.next_page_token),
        metadata=server.admin, code=INVALID, reason="PAGE_TOKEN_QUERY_MISMATCH")


def test_audit_events_hold_no_secrets(server: Server) -> None:
    a = new_account(server).account
    add_user(server, a.id, kind=MACHINE)
    with server.app.db.engine.connect() as conn:
        rows = conn.execute(sa.select(audit_events).where(
            audit_events.c.account_id == a.id)).all()
    text = repr([tuple(r) for r in rows]).lower()
    assert "secret" not in text and "token" not in text and "cs_" not in text


# -- activity_time -----------------------------------------------------------------------
def test_activity_time_moves_when_the_account_is_used(server: Server) -> None:
    made = new_account(server)
    a = made.account
    assert not get(server, a.id).HasField("activity_time")
    md = human_token(server, made.first_user)
    t0 = time.time()
    mine = server.stubs.accounts.GetAccount(pb.GetAccountRequest(), metadata=md).account
    assert mine.HasField("activity_time")
    assert abs(mine.activity_time.seconds - t0) < 60
    row = account_row(server, a.id)
    # within activity_interval a second call does not write again
    server.stubs.accounts.GetAccount(pb.GetAccountRequest(), metadata=md)
    assert account_row(server, a.id).activity_time == row.activity_time
    assert account_row(server, a.id).etag == row.etag  # activity is not a change
    # an admin reading the account is not activity of the account
    get(server, a.id)
    assert account_row(server, a.id).activity_time == row.activity_time
