"""AccountService.WatchEvents on a real server (both databases): the change feed.

- the issue's test: 8 concurrent writers while a reader disconnects and resumes 20 times,
  on this server, on a second server of the same database, and on that one restarted; the
  reader's events equal the audit table past its start, in feed order, none missed or
  repeated;
- list-then-watch: ``next_cursor`` of ListAuditEvents misses nothing; a new event reaches
  an open stream (the latency is printed, never asserted);
- access: an account-admin sees its own account's events only, admin every account's and
  the platform's (a retired signing key);
- revocation events: what each change that kills tokens says;
- REST: newline-delimited JSON, as grpc-gateway streams (an error once the stream is
  open as a last ``{"error": ...}`` line: the drain), before it opens a plain Status;
- bounds: open streams count against the stream caps and never starve unary calls;
- the stream re-checks its caller (a deleted caller: UNAUTHENTICATED) and ends on drain;
- a malformed or foreign cursor is INVALID_ARGUMENT.
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import httpx
import pytest
import sqlalchemy as sa
from accounts.v1 import account_pb2, audit_event_pb2, user_service_pb2
from accounts.v1 import account_service_pb2 as apb
from accounts.v1 import session_service_pb2 as spb
from accounts.v1 import user_group_service_pb2 as gpb

from accounts_grpc.app import App
from accounts_grpc.store.tables import audit_events
from tests import support
from tests.e2e.groups_helpers import (
    create_account,
    create_user,
    device_id,
    machine,
    make_partition,
    register,
    uniq,
)
from tests.e2e.users_helpers import by_device, ref
from tests.support import Failure, Server, Stubs, failure, running_server

pytestmark = pytest.mark.timeout(300)

T = 30.0  #: seconds: the deadline of every stream and call here
Md = tuple[tuple[str, str], ...]
K = audit_event_pb2


class Watcher:
    """A WatchEvents stream read on a thread of its own: its events as they come (with
    when), and how it ended."""

    def __init__(self, stubs: Stubs, md: Md, *, cursor: str = "", account_id: str = "") -> None:
        self.call = stubs.accounts.WatchEvents(
            apb.WatchEventsRequest(cursor=cursor, account_id=account_id), metadata=md,
            timeout=120)
        self.events: list[tuple[float, Any]] = []
        self.error: grpc.RpcError | None = None
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for resp in self.call:
                with self._changed:
                    self.events.append((time.monotonic(), resp.event))
                    self._changed.notify_all()
        except grpc.RpcError as e:
            with self._changed:
                self.error = e
                self._changed.notify_all()

    def wait(self, done: Callable[[Watcher], bool], timeout: float = T) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: done(self), timeout), (
                f"still waiting after {timeout} s: {len(self.events)} events, {self.error}")

    def actions(self) -> list[str]:
        return [e.action for _, e in self.events]

    def close(self) -> None:
        self.call.cancel()
        self._thread.join(10)


@contextlib.contextmanager
def watching(stubs: Stubs, md: Md, **kw: str) -> Iterator[Watcher]:
    w = Watcher(stubs, md, **kw)
    try:
        yield w
    finally:
        w.close()


def refused(stubs: Stubs, md: Md, **request: str) -> Failure:
    """How a WatchEvents call fails before its first event."""
    with pytest.raises(grpc.RpcError) as e:
        next(stubs.accounts.WatchEvents(apb.WatchEventsRequest(**request), metadata=md,
                                        timeout=T))
    return failure(e.value)


def newest_cursor(srv: Server, account_id: str) -> str:
    return str(srv.stubs.accounts.ListAuditEvents(
        apb.ListAuditEventsRequest(account_id=account_id, page_size=1),
        metadata=srv.admin).next_cursor)


def rename(stubs: Stubs, md: Md, account_id: str) -> None:
    stubs.accounts.UpdateAccount(apb.UpdateAccountRequest(
        account=account_pb2.Account(id=account_id, name=uniq("n-")),
        update_mask={"paths": ["name"]}), metadata=md, timeout=T)


def position(srv: Server, cursor: str) -> int:
    found = srv.app.services.events.position(cursor)
    assert found is not None
    return int(found)


@contextlib.contextmanager
def another_server(srv: Server) -> Iterator[Server]:
    """A second server process's worth (an App) on ``srv``'s database and KEK."""
    app = App(support.test_settings(srv.db_url, srv.tmp), auto_migrate=True)
    app.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{app.grpc_port}")
    try:
        yield Server(app, channel, Stubs.on(channel), srv.tmp, srv.db_url, srv.backend,
                     admin_token=srv.admin_token)
    finally:
        channel.close()
        app.stop(grace=1.0, delay=0.0)


# -- the test ------------------------------------------------------------------------


def test_concurrent_writers_resume_twenty_times_across_servers(server: Server) -> None:
    """8 writers commit concurrently (on PostgreSQL out of order) while a reader reads a
    few events, disconnects and resumes from the last cursor, 20 times, on this server
    and on a second one of the same database (restarted half-way); its events equal
    the audit table past its start, in feed order. (Numbered at insert rather than at
    commit, PostgreSQL fails this: an event that commits late is skipped.)"""
    accounts = [create_account(server, uniq("w-"))[0] for _ in range(8)]
    start = newest_cursor(server, accounts[0])
    stop = threading.Event()
    writes = [0] * 8

    def writer(i: int) -> None:
        """RPC writes, and transactions that go on after their event (a long write),
        so that on PostgreSQL a later event often commits first."""
        slow = random.Random(i)
        while not stop.is_set() and writes[i] < 60:
            if writes[i] % 2:
                rename(server.stubs, server.admin, accounts[i])
            else:
                with server.app.db.write() as uow:
                    uow.audit.record(account_id=accounts[i], actor_user_id=None,
                                     action="test.slow", resource_type="Account",
                                     resource_id=accounts[i])
                    time.sleep(slow.uniform(0, 0.05))
                    uow.commit()
            writes[i] += 1

    rng = random.Random(15)
    seen: list[Any] = []
    cursor = start
    with ThreadPoolExecutor(8) as pool, contextlib.ExitStack() as stack:
        other = stack.enter_context(another_server(server))
        futures = [pool.submit(writer, i) for i in range(8)]
        for n in range(20):
            if n == 10:  # the second server restarts: its replacement takes over
                stack.close()
                other = stack.enter_context(another_server(server))
            target = server if n % 2 == 0 else other
            call = target.stubs.accounts.WatchEvents(
                apb.WatchEventsRequest(cursor=cursor), metadata=server.admin, timeout=T)
            for _ in range(rng.randint(1, 8)):
                event = next(call).event
                seen.append(event)
                cursor = event.cursor
            call.cancel()
        stop.set()
        for f in futures:
            f.result()
        with server.app.db.read() as uow:
            expected = [r.id for r in uow.conn.execute(
                sa.select(audit_events.c.id).where(audit_events.c.seq > position(server, start))
                .order_by(audit_events.c.seq))]
        call = other.stubs.accounts.WatchEvents(apb.WatchEventsRequest(cursor=cursor),
                                                metadata=server.admin, timeout=T)
        while len(seen) < len(expected):
            seen.append(next(call).event)
        call.cancel()
    assert sum(writes) >= 8
    assert [e.id for e in seen] == expected
    positions = [position(server, e.cursor) for e in seen]
    assert positions == sorted(set(positions))


# -- list, then watch --------------------------------------------------------------------------


def test_list_then_watch_misses_nothing_and_new_events_arrive(server: Server) -> None:
    account_id, _ = create_account(server, uniq("l-"))
    rename(server.stubs, server.admin, account_id)  # committed before the list
    page = server.stubs.accounts.ListAuditEvents(
        apb.ListAuditEventsRequest(account_id=account_id), metadata=server.admin)
    assert page.next_cursor and all(e.cursor for e in page.audit_events)
    rename(server.stubs, server.admin, account_id)  # after the list, before the watch
    with watching(server.stubs, server.admin, cursor=page.next_cursor,
                  account_id=account_id) as w:
        w.wait(lambda w: len(w.events) == 1)
        time.sleep(0.5)  # the open stream now waits for new events
        sent = time.monotonic()
        rename(server.stubs, server.admin, account_id)
        w.wait(lambda w: len(w.events) == 2)
        print(f"\n{server.backend}: a new event reached the open stream in "
              f"{w.events[1][0] - sent:.3f} s")
    assert w.actions() == ["account.update", "account.update"]
    # resuming from the first event's cursor gives the second, not the first again
    with watching(server.stubs, server.admin, cursor=w.events[0][1].cursor,
                  account_id=account_id) as again:
        again.wait(lambda w: len(w.events) >= 1)
    assert again.events[0][1].id == w.events[1][1].id
    # "now" starts after the newest event
    with watching(server.stubs, server.admin, cursor="now", account_id=account_id) as now:
        time.sleep(0.5)
        rename(server.stubs, server.admin, account_id)
        now.wait(lambda w: len(w.events) >= 1)
    assert now.events[0][1].id not in {e.id for _, e in w.events}


# -- access ------------------------------------------------------------------------------------


def test_account_admin_sees_only_its_account(server: Server) -> None:
    mine, _ = create_account(server, uniq("mine-"))
    theirs, _ = create_account(server, uniq("theirs-"))
    boss = machine(server, "boss", mine, roles=("account-admin",))
    start = newest_cursor(server, mine)
    with watching(server.stubs, boss.md, cursor=start) as w, \
            watching(server.stubs, server.admin, cursor=start) as everything:
        rename(server.stubs, server.admin, theirs)
        rename(server.stubs, server.admin, mine)
        server.app.keys.rotate(activate_in=3600)  # makes no event
        everything.wait(lambda w: {mine, theirs} <= {e.account_id for _, e in w.events})
        w.wait(lambda w: len(w.events) >= 1)
        time.sleep(1.0)
    assert {e.account_id for _, e in w.events} == {mine}
    err = refused(server.stubs, boss.md, account_id=theirs)
    assert (err.code, err.reason) == (grpc.StatusCode.NOT_FOUND, "ACCOUNT_NOT_FOUND")
    member = machine(server, "member", mine)
    err = refused(server.stubs, member.md)
    assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_REQUIRED")


# -- revocation events ---------------------------------------------------------------------------


def test_changes_that_kill_tokens_are_revocation_events(server: Server) -> None:
    account_id, _ = create_account(server, uniq("r-"))
    gone, _, _ = create_user(server, account_id, kind="MACHINE")
    bot, _, _ = create_user(server, account_id, kind="MACHINE")
    partition = make_partition(server, account_id)
    dev = register(server, partition.id, {"device_id": device_id(), "meter_id": uniq("m")})[0]
    users = server.stubs.users
    users.AddDevicePermissions(user_service_pb2.AddDevicePermissionsRequest(
        user=ref(bot), devices=[by_device(dev.device_id)]), metadata=server.admin)
    session = server.stubs.sessions.CreateSession(
        spb.CreateSessionRequest(user=ref(bot)), metadata=server.admin).session
    group = server.stubs.groups.CreateUserGroup(gpb.CreateUserGroupRequest(
        account_id=account_id, user_group={"name": uniq("g-")}), metadata=server.admin
    ).user_group
    start = newest_cursor(server, account_id)
    with watching(server.stubs, server.admin, cursor=start) as w:
        server.stubs.sessions.RevokeSession(spb.RevokeSessionRequest(id=session.id),
                                            metadata=server.admin)
        users.RemoveDevicePermissions(user_service_pb2.RemoveDevicePermissionsRequest(
            user=ref(bot), devices=[by_device(dev.device_id)]), metadata=server.admin)
        server.stubs.groups.AddUserGroupMembers(gpb.AddUserGroupMembersRequest(
            id=group.id, user_ids=[bot]), metadata=server.admin)
        server.stubs.groups.UpdateUserGroup(gpb.UpdateUserGroupRequest(
            user_group={"id": group.id, "roles": ["account-admin"]},
            update_mask={"paths": ["roles"]}), metadata=server.admin)
        users.RotateClientSecret(user_service_pb2.RotateClientSecretRequest(id=bot),
                                 metadata=server.admin)
        users.DeleteUser(user_service_pb2.DeleteUserRequest(id=gone), metadata=server.admin)
        server.stubs.accounts.CloseAccount(apb.CloseAccountRequest(id=account_id),
                                           metadata=server.admin)
        (kid,) = [k.kid for k in server.app.keys.list_keys() if k.retire_time is None]
        server.app.keys.rotate(activate_in=0)
        server.app.keys.retire(kid)
        w.wait(lambda w: "signing_key.retire" in w.actions())
    revoked = {(K.RevocationKind.Name(e.revocation.kind)[len("REVOCATION_KIND_"):],
                tuple(e.revocation.subjects), tuple(e.revocation.session_ids),
                tuple(e.revocation.key_ids), tuple(e.revocation.account_ids))
               for _, e in w.events if e.HasField("revocation")}
    assert revoked == {
        ("SESSION_REVOKED", (), (session.id,), (), ()),
        ("DEVICE_PERMISSION_REMOVED", (bot,), (), (), ()),
        ("GROUP_MEMBERSHIP_CHANGED", (bot,), (), (), ()),
        ("ROLES_CHANGED", (bot,), (), (), ()),
        ("CREDENTIALS_ROTATED", (bot,), (), (), ()),
        ("USER_DELETED", (gone,), (), (), ()),
        ("ACCOUNT_CLOSED", (), (), (), (account_id,)),
        ("SIGNING_KEY_RETIRED", (), (), (kid,), ()),
    }
    for _, e in w.events:
        if e.HasField("revocation"):  # iat counts seconds: the event's, rounded down
            assert e.revocation.issued_before.seconds == e.create_time.seconds
    retired = [e for _, e in w.events if e.action == "signing_key.retire"]
    assert retired[0].account_id == ""  # the platform's stream: admins see it


# -- REST ----------------------------------------------------------------------------------------


def test_rest_streams_newline_delimited_json(server: Server) -> None:
    account_id, _ = create_account(server, uniq("rest-"))
    start = newest_cursor(server, account_id)
    rename(server.stubs, server.admin, account_id)
    rename(server.stubs, server.admin, account_id)
    auth = {"authorization": f"Bearer {server.admin_token}"}
    with httpx.Client(base_url=server.http_url, timeout=T) as http, http.stream(
            "GET", f"/v1/accounts/{account_id}/events:watch", params={"cursor": start},
            headers=auth) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/x-ndjson"
        lines = r.iter_lines()
        got = [json.loads(next(lines)) for _ in range(2)]
    assert [list(line) for line in got] == [["result"], ["result"]]
    events = [line["result"]["event"] for line in got]
    assert [e["action"] for e in events] == ["account.update"] * 2
    assert events[0]["revocation"] is None and events[0]["cursor"]
    # the same events over gRPC, field for field
    with watching(server.stubs, server.admin, cursor=start, account_id=account_id) as w:
        w.wait(lambda w: len(w.events) >= 2)
    assert [e["id"] for e in events] == [e.id for _, e in w.events[:2]]
    with httpx.Client(base_url=server.http_url, timeout=T) as http:
        bad = http.get("/v1/events:watch", params={"cursor": "nope"}, headers=auth)
        stranger = http.get("/v1/events:watch")
    # before the stream opens, an error is any call's (a Status with its HTTP status)
    assert (bad.status_code, bad.json()["details"][0]["reason"]) == (400, "INVALID_CURSOR")
    assert (stranger.status_code, stranger.json()["code"]) == (401, 16)


# -- bad cursors ---------------------------------------------------------------------------------


def test_malformed_or_foreign_cursor_is_invalid_argument(server: Server) -> None:
    good = newest_cursor(server, create_account(server, uniq("c-"))[0])
    raw = bytearray(base64.urlsafe_b64decode(good + "=" * (-len(good) % 4)))
    raw[8] ^= 1  # another position under the same MAC: edited
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    for cursor in ("garbage!", "AQ", forged, good + "A", "now\x01"):
        err = refused(server.stubs, server.admin, cursor=cursor)
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT, cursor
    with watching(server.stubs, server.admin, cursor=good) as w:
        time.sleep(0.3)
    assert w.error is None or w.error.code() == grpc.StatusCode.CANCELLED


# -- bounds, re-checks, drain ----------------------------------------------------------------------


def test_open_streams_are_capped_and_never_starve_unary_calls(backend: str,
                                                              tmp_path: Any) -> None:
    with running_server(backend, tmp_path, grpc_max_streams=6,
                        grpc_max_streams_per_peer=4) as srv:
        watchers = [Watcher(srv.stubs, srv.admin) for _ in range(4)]
        try:
            time.sleep(1.0)  # every one of them is open, waiting for events
            err = refused(srv.stubs, srv.admin)
            assert (err.code, err.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED,
                                              "TOO_MANY_STREAMS")
            for _ in range(20):  # unary calls answer while the streams stay open
                srv.stubs.users.GetMe(user_service_pb2.GetMeRequest(), metadata=srv.admin,
                                      timeout=5)
            account_id, _ = create_account(srv, uniq("cap-"))
            for w in watchers:
                w.wait(lambda w, a=account_id: any(e.account_id == a for _, e in w.events))
            assert all(w.error is None for w in watchers)
        finally:
            for w in watchers:
                w.close()


def test_a_deleted_caller_is_ended_and_drain_ends_streams(backend: str, tmp_path: Any) -> None:
    with running_server(backend, tmp_path, watch_recheck_interval=0.3) as srv:
        account_id, _ = create_account(srv, uniq("d-"))
        boss = machine(srv, "boss", account_id, roles=("account-admin",))
        w = Watcher(srv.stubs, boss.md)
        time.sleep(0.5)
        srv.stubs.users.DeleteUser(user_service_pb2.DeleteUserRequest(id=boss.user_id),
                                   metadata=srv.admin)
        w.wait(lambda w: w.error is not None)
        err = failure(w.error)  # type: ignore[arg-type]
        assert (err.code, err.reason) == (grpc.StatusCode.UNAUTHENTICATED, "USER_DELETED")
        assert w.actions() == ["user.delete"]  # it saw the event that ended it
        drained = Watcher(srv.stubs, srv.admin)
        time.sleep(0.5)
        stopping = threading.Thread(target=srv.app.stop, kwargs={"grace": 10.0, "delay": 0.0})
        began = time.monotonic()
        stopping.start()
        drained.wait(lambda w: w.error is not None)
        ended = time.monotonic() - began
        stopping.join(15)
        err = failure(drained.error)  # type: ignore[arg-type]
        assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN")
        assert ended < 10.0  # ended by the drain, not cut at the end of the grace
        print(f"\n{backend}: the drain ended the stream in {ended:.2f} s")


def test_rest_stream_ends_when_its_client_goes(server: Server) -> None:
    """A REST stream whose client hangs up gives back its place (and its thread)."""
    auth = {"authorization": f"Bearer {server.admin_token}"}
    assert server.app.http is not None
    gateway = server.app.http.gateway
    with httpx.Client(base_url=server.http_url, timeout=T) as http:
        with http.stream("GET", "/v1/events:watch", headers=auth) as r:
            assert r.status_code == 200
            assert gateway.open_streams == 1
        deadline = time.monotonic() + T
        while gateway.open_streams and time.monotonic() < deadline:
            time.sleep(0.1)
    assert gateway.open_streams == 0
    server.stubs.users.GetMe(user_service_pb2.GetMeRequest(), metadata=server.admin)
