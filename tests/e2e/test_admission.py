"""Admission: on default settings calls past the workers queue rather than fail; past the
queue bound they are refused at once, with RetryInfo (gRPC) or 503 and Retry-After
(REST), and the server serves again right after."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from accounts.v1 import user_service_pb2 as upb
from accounts.v1 import user_service_pb2_grpc

from accounts_grpc.config import Settings
from tests.e2e.test_hostile_grpc import silent_calls, wait_for
from tests.support import Server, failure, running_server


def test_the_default_queue_takes_a_thousand_calls() -> None:
    s = Settings()
    assert s.max_concurrent_rpcs + s.grpc_max_queued_calls >= 1000


def test_a_thousand_unary_calls_in_flight_all_succeed(server: Server) -> None:
    """1,000 GetMe calls in flight at once, over 8 connections: no RESOURCE_EXHAUSTED."""
    channels = [grpc.insecure_channel(server.address) for _ in range(8)]
    try:
        stubs = [user_service_pb2_grpc.UserServiceStub(c) for c in channels]
        futures = [stubs[i % 8].GetMe.future(upb.GetMeRequest(), metadata=server.admin,
                                             timeout=60) for i in range(1000)]
        codes: Counter[str] = Counter()
        for f in futures:
            try:
                f.result()
                codes["OK"] += 1
            except grpc.RpcError as e:
                codes[e.code().name] += 1
        assert codes == Counter({"OK": 1000})
    finally:
        for c in channels:
            c.close()


@pytest.fixture
def tight(backend: str, tmp_path: Path) -> Iterator[Server]:
    with running_server(backend, tmp_path, grpc_workers=1, grpc_max_queued_calls=0) as srv:
        yield srv


def _burst(n: int, call: object) -> list[object]:
    out: list[object] = []
    lock = threading.Lock()
    go = threading.Barrier(n)

    def run() -> None:
        go.wait()
        r = call()  # type: ignore[operator]
        with lock:
            out.append(r)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_rest_past_the_bound_is_503_with_retry_after(tight: Server) -> None:
    auth = {"authorization": f"Bearer {tight.admin_token}"}
    refused: list[httpx.Response] = []
    for _ in range(5):  # a burst of 48 on 4 REST workers with no queue: some are refused
        results = _burst(48, lambda: httpx.get(f"{tight.http_url}/v1/me", headers=auth,
                                               timeout=30))
        codes = {r.status_code for r in results}  # type: ignore[attr-defined]
        assert codes <= {200, 503}, codes
        refused = [r for r in results if r.status_code == 503]  # type: ignore[attr-defined]
        if refused:
            break
    assert refused, "no request was refused: the bound did not hold"
    r = refused[0]
    assert r.headers["retry-after"] == "1"
    body = r.json()
    assert body["code"] == 8
    assert body["details"][0]["reason"] == "OVERLOADED"
    ok = httpx.get(f"{tight.http_url}/v1/me", headers=auth, timeout=10)
    assert ok.status_code == 200


def test_grpc_past_the_bound_is_overloaded_with_retry_info(tight: Server) -> None:
    def call() -> object:
        try:
            tight.stubs.users.GetMe(upb.GetMeRequest(), metadata=tight.admin, timeout=30)
            return "OK"
        except grpc.RpcError as e:
            return failure(e)

    refused = []
    for _ in range(5):
        results = _burst(48, call)
        refused = [r for r in results if r != "OK"]
        if refused:
            break
    assert refused, "no call was refused: the bound did not hold"
    for f in refused:
        assert f.code == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
        assert f.reason == "OVERLOADED" and f.retry_seconds == 1  # type: ignore[attr-defined]
    tight.stubs.users.GetMe(upb.GetMeRequest(), metadata=tight.admin, timeout=10)


def test_calls_waiting_for_their_message_take_no_worker(backend: str, tmp_path: Path) -> None:
    """One worker, and 10 calls that never send their request message (no token needed):
    a worker's place is taken only once a call's message has come, so an authenticated
    call is served meanwhile. grpcio alone read the message on the worker, which the
    first silent call then held until its deadline."""
    with (running_server(backend, tmp_path, grpc_workers=1, grpc_max_queued_calls=20) as srv,
          silent_calls([srv.channel], 10, "127.0.0.1") as calls):
        wait_for(lambda: srv.app.grpc.lanes.unary.held == 10, "the silent calls are in")
        for _ in range(3):
            me = srv.stubs.users.GetMe(upb.GetMeRequest(), metadata=srv.admin, timeout=10)
            assert me.user.id
        assert not any(c.done() for c in calls)
