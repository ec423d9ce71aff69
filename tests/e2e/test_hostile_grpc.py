"""Hostile input on the gRPC port: malformed messages are INVALID_ARGUMENT (not INTERNAL,
not a traceback each), open streams cannot starve unary calls, and overload is a prompt
RESOURCE_EXHAUSTED with ErrorInfo and RetryInfo, for every service served."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from accounts.v1 import session_service_pb2 as spb
from accounts.v1 import user_pb2
from accounts.v1 import user_service_pb2 as upb
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from accounts_grpc.rpc.interceptor import MALFORMED, ThrottledLog
from tests.e2e.auth_helpers import hold_write_lock
from tests.support import Failure, Server, failure, running_server, sample

GET_USER = "/accounts.v1.UserService/GetUser"
GET_ME = "/accounts.v1.UserService/GetMe"
CREATE_SESSION = "/accounts.v1.SessionService/CreateSession"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
HEALTH_WATCH = "/grpc.health.v1.Health/Watch"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


# -- malformed messages, built by hand ----------------------------------------------------------


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (string, bytes or message) on the wire."""
    return varint((number << 3) | 2) + varint(len(payload)) + payload


def nested_groups(depth: int, number: int = 15) -> bytes:
    """An unknown group nested ``depth`` deep: parsers descend into groups, so this is
    nesting deeper than protobuf's limit of 100 in any message."""
    return bytes([(number << 3) | 3]) * depth + bytes([(number << 3) | 4]) * depth


def nested_values(depth: int) -> bytes:
    """google.protobuf.Value in a ListValue in a Value ... ``depth`` times (two message
    levels each)."""
    raw = b""
    for _ in range(depth):
        raw = field(6, field(1, raw))
    return raw


GARBAGE = b"\xff\xff\xff\xff\xff\xff"
BAD_UTF8 = field(1, b"\xff\xfe")  # GetUserRequest.id / HealthCheckRequest.service: strings
TOO_DEEP = nested_groups(200)
# a message of another type: CreateTokenRequest's grant_type (field 1, a string) read as
# CreateSessionRequest.user (field 1, a UserRef message)
WRONG_TYPE = spb.CreateTokenRequest(grant_type="client_credentials",
                                    client_id="x").SerializeToString()


def test_protobuf_reports_each_of_them_as_what_the_server_catches() -> None:
    """What upb (the implementation in use) raises is what the interceptor catches."""
    cases: list[tuple[Any, bytes]] = [
        (upb.GetUserRequest, GARBAGE),
        (upb.GetUserRequest, BAD_UTF8),
        (upb.GetUserRequest, TOO_DEEP),
        (spb.CreateSessionRequest, WRONG_TYPE),
        (struct_pb2.Value, nested_values(100)),  # 200 message levels, not unknown groups
    ]
    for cls, raw in cases:
        with pytest.raises(MALFORMED):
            cls.FromString(raw)
    upb.GetUserRequest.FromString(nested_groups(90))  # within the limit: fine
    struct_pb2.Value.FromString(nested_values(45))


def raw_unary(srv: Server, method: str) -> Callable[..., Any]:
    return srv.channel.unary_unary(method, request_serializer=None,
                                   response_deserializer=None)


def malformed(call: Callable[[], Any]) -> Failure:
    with pytest.raises(grpc.RpcError) as e:
        call()
    f = failure(e.value)
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT, f
    assert (f.domain, f.reason) == ("accounts.v1", "MALFORMED_REQUEST"), f
    return f


@pytest.mark.parametrize(
    ("method", "raw", "why"),
    [
        (GET_USER, GARBAGE, "corrupt"),
        (GET_USER, BAD_UTF8, "UTF-8"),
        (GET_USER, TOO_DEEP, ""),
        (CREATE_SESSION, WRONG_TYPE, ""),
    ],
    ids=["garbage", "invalid-utf8", "nested-200-deep", "wrong-message-type"],
)
def test_malformed_request_is_invalid_argument(server: Server, method: str, raw: bytes,
                                               why: str) -> None:
    message = {GET_USER: "accounts.v1.GetUserRequest",
               CREATE_SESSION: "accounts.v1.CreateSessionRequest"}[method]
    call = raw_unary(server, method)
    for metadata in ((), server.admin):  # before authentication, and after it alike
        f = malformed(functools.partial(call, raw, metadata=metadata, timeout=10))
        assert f.message.startswith(f"the request is not a valid {message}: "), f.message
        assert why in f.message
        assert f.metadata == {"message_type": message}


def test_50_malformed_calls_log_a_line_or_two_and_no_traceback(
    server: Server, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.INFO)
    time.sleep(1.1)  # the throttle's window of earlier tests' lines is over
    caplog.clear()
    capfd.readouterr()
    get_user = raw_unary(server, GET_USER)
    for i in range(50):
        raw = (GARBAGE, BAD_UTF8, TOO_DEEP)[i % 3]
        malformed(functools.partial(get_user, raw, timeout=10))
    malformed(lambda: raw_unary(server, HEALTH_CHECK)(BAD_UTF8, timeout=10))
    err = capfd.readouterr().err
    records = caplog.records
    assert not any(r.exc_info for r in records), "a traceback was logged"
    assert "Traceback" not in caplog.text + err and "deserializ" not in caplog.text + err
    lines = [r for r in records if r.levelno >= logging.WARNING]
    assert 1 <= len(lines) <= 3, [r.getMessage() for r in lines]
    assert all(len(r.getMessage()) < 300 for r in lines)
    assert "malformed request to /accounts.v1.UserService/GetUser" in lines[0].getMessage()
    # the server is fine: a good request still works
    me = server.stubs.users.GetMe(upb.GetMeRequest(), metadata=server.admin, timeout=10)
    assert me.user.id


def test_throttled_log_writes_one_line_per_interval_and_counts_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("tests.throttled")
    caplog.set_level(logging.WARNING, logger="tests.throttled")
    note = ThrottledLog(logger, interval=0.2)
    for i in range(100):
        note.warning("bad call %d", i)
    time.sleep(0.25)
    note.warning("bad call %d", 100)
    assert [r.getMessage() for r in caplog.records] == [
        "bad call 0", "bad call 100 (and 99 more not logged)"]


def test_malformed_health_requests(server: Server) -> None:
    f = malformed(lambda: raw_unary(server, HEALTH_CHECK)(BAD_UTF8, timeout=10))
    assert "grpc.health.v1.HealthCheckRequest" in f.message
    malformed(lambda: raw_unary(server, HEALTH_CHECK)(TOO_DEEP, timeout=10))
    watch = server.channel.unary_stream(HEALTH_WATCH, request_serializer=None,
                                        response_deserializer=None)
    malformed(lambda: list(watch(GARBAGE, timeout=10)))
    # a well-formed one still works
    ok = health_pb2_grpc.HealthStub(server.channel).Check(health_pb2.HealthCheckRequest(),
                                                          timeout=10)
    assert ok.status == health_pb2.HealthCheckResponse.SERVING


def test_malformed_message_in_the_reflection_stream_ends_it(server: Server) -> None:
    good = reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString()
    info = server.channel.stream_stream(REFLECTION, request_serializer=None,
                                        response_deserializer=None)
    for bad in (GARBAGE, BAD_UTF8, TOO_DEEP):
        answers: list[bytes] = []

        def run(bad: bytes = bad, answers: list[bytes] = answers) -> None:
            for answer in info(iter([good, bad, good]), timeout=10):
                answers.append(answer)

        f = malformed(run)
        assert "grpc.reflection.v1alpha.ServerReflectionRequest" in f.message
        assert len(answers) == 1, "the first message was answered, then the stream ended"
    wait_for(lambda: server.app.grpc.lanes.streams.held == 0, "the streams were released")


# -- streams do not starve unary calls ----------------------------------------------------------


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@contextmanager
def reflection_streams(channel: grpc.Channel, n: int) -> Iterator[tuple[list[Any], list[Failure]]]:
    """Start ``n`` ServerReflectionInfo streams, each fed by a request iterator that blocks
    until the block ends (what grpcurl does for each call); yields (open, refused)."""
    release = threading.Event()

    def requests() -> Iterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")
        release.wait(60)

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    streams = [stub.ServerReflectionInfo(requests(), timeout=60) for _ in range(n)]
    opened: list[Any] = []
    refused: list[Failure] = []
    try:
        for s in streams:
            try:
                assert next(s).list_services_response.service
                opened.append(s)
            except grpc.RpcError as e:
                refused.append(failure(e))
        yield opened, refused
    finally:
        release.set()
        for s in streams:
            s.cancel()


def get_me_256(srv: Server) -> None:
    """256 authenticated GetMe calls in flight at once, started from 8 threads."""
    futures: list[Any] = []
    lock = threading.Lock()

    def start() -> None:
        mine = [srv.stubs.users.GetMe.future(upb.GetMeRequest(), metadata=srv.admin,
                                             timeout=30) for _ in range(32)]
        with lock:
            futures.extend(mine)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(futures) == 256
    results = [f.result(timeout=30) for f in futures]
    assert all(r.user.id == results[0].user.id for r in results)


@pytest.mark.parametrize(
    ("overrides", "admitted", "scope"),
    [({}, 8, "client"), ({"grpc_max_streams_per_peer": 64}, 32, "server")],
    ids=["per-peer-cap", "server-cap"],
)
def test_64_open_streams_do_not_starve_256_unary_calls(
    backend: str, tmp_path: Path, overrides: dict[str, Any], admitted: int, scope: str
) -> None:
    with running_server(backend, tmp_path, grpc_max_streams=32, **overrides) as srv:
        with reflection_streams(srv.channel, 64) as (opened, refused):
            assert len(opened) == admitted and len(refused) == 64 - admitted
            for f in refused:
                assert f.code == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert (f.domain, f.reason) == ("accounts.v1", "TOO_MANY_STREAMS")
                assert f.metadata["scope"] == scope and f.retry_seconds == 1
            # a refused stream holds its place until its refusal has ended
            wait_for(lambda: srv.app.grpc.lanes.streams.held == admitted,
                     f"{admitted} streams held")
            start = time.perf_counter()
            get_me_256(srv)
            assert time.perf_counter() - start < 20
            # a second client too, while they are open
            with grpc.insecure_channel(srv.address) as other:
                from accounts.v1 import user_service_pb2_grpc

                user_service_pb2_grpc.UserServiceStub(other).GetMe(
                    upb.GetMeRequest(), metadata=srv.admin, timeout=5)
        # the streams are closed: their places are free again
        wait_for(lambda: srv.app.grpc.lanes.streams.held == 0, "the streams were released")
        with reflection_streams(srv.channel, 1) as (opened, refused):
            assert len(opened) == 1 and not refused


def test_health_watches_count_as_streams(backend: str, tmp_path: Path) -> None:
    """A Watch holds no thread (non-blocking), but it is an open stream all the same."""
    with running_server(backend, tmp_path, grpc_max_streams_per_peer=3) as srv:
        health = health_pb2_grpc.HealthStub(srv.channel)
        serving = health_pb2.HealthCheckResponse.SERVING
        watches = [health.Watch(health_pb2.HealthCheckRequest(), timeout=30) for _ in range(3)]
        for w in watches:
            assert next(w).status == serving
        assert srv.app.grpc.lanes.streams.held == 3
        extra = health.Watch(health_pb2.HealthCheckRequest(), timeout=30)
        with pytest.raises(grpc.RpcError) as e:
            next(extra)
        f = failure(e.value)
        assert (f.code, f.reason, f.retry_seconds) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_STREAMS", 1)
        # unary calls are not streams: still served
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == serving
        watches[0].cancel()  # one ends: its place is free
        wait_for(lambda: srv.app.grpc.lanes.streams.held == 2, "the watch was released")
        again = health.Watch(health_pb2.HealthCheckRequest(), timeout=30)
        assert next(again).status == serving
        for w in [*watches[1:], again]:
            w.cancel()
        wait_for(lambda: srv.app.grpc.lanes.streams.held == 0, "every watch was released")


def test_watches_opened_and_cancelled_at_once_do_not_freeze_the_server(server: Server) -> None:
    """With grpcio-health-checking's servicer as it is, a Watch ending while another
    started deadlocked grpcio's serving thread: six clients doing this froze the whole
    server (every call, on every service) within a second."""
    stop = threading.Event()
    seen: list[str] = []

    def churn() -> None:
        with grpc.insecure_channel(server.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while not stop.is_set():
                watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=5)
                try:
                    next(watch)
                    seen.append("ok")
                except grpc.RpcError as e:
                    # refused past the per-address limit, never a deadline
                    assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
                    seen.append("refused")
                watch.cancel()

    threads = [threading.Thread(target=churn, daemon=True) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    stop.set()
    for t in threads:
        t.join(10)
    assert seen.count("ok") > 100, f"{seen.count('ok')} watches in 2 s"
    check = health_pb2_grpc.HealthStub(server.channel).Check(health_pb2.HealthCheckRequest(),
                                                            timeout=5)
    assert check.status == health_pb2.HealthCheckResponse.SERVING
    server.stubs.users.GetMe(upb.GetMeRequest(), metadata=server.admin, timeout=5)
    wait_for(lambda: server.app.grpc.lanes.streams.held == 0, "every watch was released")


# -- calls whose request message never comes ---------------------------------------------------

ATTACKER, OTHER = "203.0.113.7", "198.51.100.8"  # as a trusted proxy (127.0.0.1) names them


@contextmanager
def silent_calls(channels: list[grpc.Channel], n: int, address: str) -> Iterator[list[Any]]:
    """``n`` GetMe calls from ``address`` (X-Forwarded-For), spread over ``channels``,
    whose request stream sends nothing until the block ends (no token either)."""
    never = threading.Event()

    def silent() -> Iterator[bytes]:
        never.wait(60)
        yield from ()

    calls = [channels[i % len(channels)].stream_unary(
        GET_ME, request_serializer=None, response_deserializer=None,
    ).future(silent(), metadata=(("x-forwarded-for", address),), timeout=60) for i in range(n)]
    try:
        yield calls
    finally:
        never.set()
        for c in calls:
            c.cancel()


def handled(srv: Server) -> dict[str, float]:
    text = httpx.get(f"{srv.http_url}/metrics", timeout=10).text
    return {code: sample(text, "grpc_server_handled_total", grpc_method="GetMe", grpc_code=code)
            for code in ("DeadlineExceeded", "ResourceExhausted")}


@pytest.mark.parametrize("connections", [1, 4])
def test_unary_calls_whose_message_never_comes_do_not_starve_the_others(
        backend: str, tmp_path: Path, connections: int) -> None:
    """70 calls that never send their request message, from one address over one or
    several connections: grpcio alone would hold a worker for each until its deadline
    (70 took all 64 workers: GetMe timed out). Now others are served meanwhile; 16 of
    them (the per-address cap) are kept until the message timeout, the rest end sooner."""
    with running_server(backend, tmp_path, trusted_proxies="127.0.0.1",
                        grpc_message_timeout=4.0) as srv:
        unsent = srv.app.grpc.lanes.unsent
        assert unsent.per_peer == 16
        channels = [grpc.insecure_channel(srv.address) for _ in range(connections)]
        before = handled(srv)
        try:
            with silent_calls(channels, 70, ATTACKER) as calls:
                health = health_pb2_grpc.HealthStub(srv.channel)
                for _ in range(2):  # while all 70 wait, and once 16 are kept
                    me = srv.stubs.users.GetMe(upb.GetMeRequest(), metadata=srv.admin,
                                               timeout=10)
                    assert me.user.id
                    assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
                    wait_for(lambda: unsent.unsent(ATTACKER) == 16, "16 unsent calls kept", 30)
                ended = [failure(c.exception(timeout=30)) for c in calls]
        finally:
            for c in channels:
                c.close()
        codes = Counter(f.code for f in ended)
        assert codes == {grpc.StatusCode.DEADLINE_EXCEEDED: 16,
                         grpc.StatusCode.RESOURCE_EXHAUSTED: 54}, codes
        for f in ended:
            if f.code == grpc.StatusCode.DEADLINE_EXCEEDED:
                assert f.message == "the request message did not come within 4 s"
            else:
                assert "calls from your address have not sent their request message" in f.message
                assert "retry in 1 s" in f.message
        wait_for(lambda: srv.app.grpc.lanes.unary.held == 0 and unsent.total == 0,
                 "every call has ended")
        after = handled(srv)
        assert after["DeadlineExceeded"] - before["DeadlineExceeded"] == 16
        assert after["ResourceExhausted"] - before["ResourceExhausted"] == 54


def test_past_the_per_address_cap_new_calls_are_refused_at_once(backend: str,
                                                                tmp_path: Path) -> None:
    """While an address has as many unsent calls as its cap, its new calls are refused at
    once (a call cannot be told apart before its message is read), with ErrorInfo and
    RetryInfo; another address is served, its own unsent calls included."""
    with running_server(backend, tmp_path, trusted_proxies="127.0.0.1",
                        grpc_max_unsent_per_peer=4, grpc_message_timeout=60.0) as srv:
        unsent = srv.app.grpc.lanes.unsent
        with silent_calls([srv.channel], 4, ATTACKER) as kept:
            wait_for(lambda: unsent.unsent(ATTACKER) == 4, "4 unsent calls kept")
            with silent_calls([srv.channel], 1, ATTACKER) as [fifth]:
                refused = fifth.exception(timeout=10)  # long before the message timeout
                f = failure(refused)
                assert (f.code, f.domain, f.reason, f.retry_seconds) == (
                    grpc.StatusCode.RESOURCE_EXHAUSTED, "accounts.v1", "TOO_MANY_PENDING_CALLS",
                    1), f
                assert f.metadata == {"limit": "4", "scope": "client"}
                assert "x-request-id" in dict(refused.trailing_metadata())
            from_there = (*srv.admin, ("x-forwarded-for", ATTACKER))
            with pytest.raises(grpc.RpcError) as e:
                srv.stubs.users.GetMe(upb.GetMeRequest(), metadata=from_there, timeout=10)
            assert failure(e.value).reason == "TOO_MANY_PENDING_CALLS"
            with silent_calls([srv.channel], 1, OTHER):
                wait_for(lambda: unsent.unsent(OTHER) == 1, "the other address's call kept")
                me = srv.stubs.users.GetMe(upb.GetMeRequest(), timeout=10,
                                           metadata=(*srv.admin, ("x-forwarded-for", OTHER)))
                assert me.user.id
            assert not any(c.done() for c in kept)
        wait_for(lambda: unsent.total == 0 and srv.app.grpc.lanes.unary.held == 0,
                 "every call has ended")


def test_a_unary_call_is_answered_from_its_one_message(server: Server) -> None:
    """None is INVALID_ARGUMENT (grpcio said UNIMPLEMENTED); a second one is never read,
    as grpcio reads none for a unary method."""
    get_me = server.channel.stream_unary(GET_ME, request_serializer=None,
                                         response_deserializer=upb.GetMeResponse.FromString)
    f = malformed(lambda: get_me(iter(()), metadata=server.admin, timeout=10))
    assert f.message.endswith("the call ended without a request message (this method takes "
                              "exactly one)"), f.message
    me = get_me(iter([b"", GARBAGE]), metadata=server.admin, timeout=10)
    assert me.user.id
    check = server.channel.stream_unary(HEALTH_CHECK, request_serializer=None,
                                        response_deserializer=None)
    malformed(lambda: check(iter(()), timeout=10))


def test_watches_whose_message_never_comes_are_capped_then_ended(backend: str,
                                                                 tmp_path: Path) -> None:
    """A Watch's one request message is read the same way: the per-address stream cap
    holds before it comes, and a Watch without one ends at the message timeout."""
    with running_server(backend, tmp_path, grpc_max_streams_per_peer=3,
                        grpc_message_timeout=2.0) as srv:
        never = threading.Event()

        def silent() -> Iterator[bytes]:
            never.wait(60)
            yield from ()

        watch = srv.channel.stream_stream(HEALTH_WATCH, request_serializer=None,
                                          response_deserializer=None)
        try:
            calls = [watch(silent(), timeout=60) for _ in range(4)]
            codes = Counter(c.code() for c in calls)
        finally:
            never.set()
        assert codes == {grpc.StatusCode.DEADLINE_EXCEEDED: 3,
                         grpc.StatusCode.RESOURCE_EXHAUSTED: 1}, codes
        wait_for(lambda: srv.app.grpc.lanes.streams.held == 0, "the streams were released")


# -- overload -----------------------------------------------------------------------------------


def test_overload_is_a_prompt_overloaded_with_retry_info(backend: str, tmp_path: Path) -> None:
    """Two workers and one waiting place: of 8 slow calls at once, 3 are admitted (and
    finish once the database frees up); the other 5 are refused at once."""
    with running_server(backend, tmp_path, grpc_workers=2, grpc_max_queued_calls=1) as srv:
        lanes = srv.app.grpc.lanes
        assert lanes.unary_limit == 3
        me = srv.stubs.users.GetMe(upb.GetMeRequest(), metadata=srv.admin, timeout=10)
        create = srv.stubs.sessions.CreateSession
        request = spb.CreateSessionRequest(user=user_pb2.UserRef(user_id=me.user.id))
        with hold_write_lock(srv):
            slow = [create.future(request, metadata=srv.admin, timeout=30) for _ in range(2)]
            wait_for(lambda: lanes.unary.held == 2, "the slow calls are in the server")
            start = time.perf_counter()
            took: list[float] = []
            calls = [create.future(request, metadata=srv.admin, timeout=30) for _ in range(6)]
            for c in calls:
                c.add_done_callback(lambda _c: took.append(time.perf_counter() - start))
            wait_for(lambda: len(took) >= 5, "5 calls were refused", timeout=5)
            time.sleep(0.3)
            refused = [failure(c.exception()) for c in calls if c.done()]
            waiting = [c for c in calls if not c.done()]
            assert len(refused) == 5 and len(waiting) == 1, (refused, waiting)
            for f in refused:
                assert f.code == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert (f.domain, f.reason, f.retry_seconds) == ("accounts.v1", "OVERLOADED", 1)
            assert max(took) < 1.0, f"refusing took {max(took):.2f}s"
            assert not any(c.done() for c in slow)
            # streams have threads of their own: reflection still answers
            with reflection_streams(srv.channel, 1) as (opened, _):
                assert len(opened) == 1
        for c in [*slow, *waiting]:  # the database is free: the admitted calls finish
            assert c.result(timeout=30).access_token.startswith("st_")
        wait_for(lambda: lanes.unary.held == 0, "every call has ended")
        assert srv.stubs.users.GetMe(upb.GetMeRequest(), metadata=srv.admin,
                                     timeout=5).user.id == me.user.id
