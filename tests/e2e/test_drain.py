"""Draining loses no call: NOT_SERVING first while calls are still served (for
``--drain-delay``), then new calls are refused and in-flight ones finish. Three replicas
on one database under a round-robin, health-checking client: stopping one fails nothing."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
from accounts.v1 import user_service_pb2 as upb
from accounts.v1 import user_service_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from accounts_grpc.app import App
from tests import support
from tests.support import running_server

DELAY = 1.5


def _health(address: str) -> int:
    with grpc.insecure_channel(address) as ch:
        return int(health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5).status)


def test_not_serving_first_while_calls_are_still_served(backend: str, tmp_path: Path) -> None:
    with running_server(backend, tmp_path, drain_delay=DELAY) as srv:
        auth = {"authorization": f"Bearer {srv.admin_token}"}
        stopper = threading.Thread(target=srv.app.stop)
        started = time.monotonic()
        stopper.start()
        try:
            time.sleep(0.3)
            assert time.monotonic() - started < DELAY, "the check ran too late"
            assert _health(srv.address) == health_pb2.HealthCheckResponse.NOT_SERVING
            assert httpx.get(f"{srv.http_url}/readyz", timeout=5).status_code == 503
            # ... and yet calls are served, on both transports, by new connections too
            with grpc.insecure_channel(srv.address) as ch:
                user_service_pb2_grpc.UserServiceStub(ch).GetMe(
                    upb.GetMeRequest(), metadata=srv.admin, timeout=5)
            assert httpx.get(f"{srv.http_url}/v1/me", headers=auth,
                             timeout=5).status_code == 200
        finally:
            stopper.join(30)
        assert time.monotonic() - started >= DELAY


def _round_robin(addresses: list[str]) -> grpc.Channel:
    config = {"loadBalancingConfig": [{"round_robin": {}}],
              "healthCheckConfig": {"serviceName": ""}}
    target = "ipv4:" + ",".join(addresses)
    return grpc.insecure_channel(target, options=[
        ("grpc.service_config", json.dumps(config)),
        ("grpc.enable_retries", 0),
    ])


@contextlib.contextmanager
def _replicas(srv: support.Server, n: int) -> Iterator[list[App]]:
    apps = []
    try:
        for _ in range(n):
            app = App(support.test_settings(srv.db_url, srv.tmp, drain_delay=DELAY))
            app.start()
            apps.append(app)
        yield apps
    finally:
        for app in apps:
            app.stop(grace=1.0, delay=0)


def test_stopping_one_of_three_replicas_under_load_fails_no_call(
        backend: str, tmp_path: Path) -> None:
    with running_server(backend, tmp_path) as srv, _replicas(srv, 2) as others:
        srv.app.settings = support.test_settings(srv.db_url, srv.tmp, drain_delay=DELAY)
        addresses = [srv.address] + [f"127.0.0.1:{a.grpc_port}" for a in others]
        channel = _round_robin(addresses)
        stub = user_service_pb2_grpc.UserServiceStub(channel)
        stub.GetMe(upb.GetMeRequest(), metadata=srv.admin, timeout=10,
                   wait_for_ready=True)
        done = threading.Event()
        results: list[str] = []
        lock = threading.Lock()

        def load() -> None:
            while not done.is_set():
                try:
                    stub.GetMe(upb.GetMeRequest(), metadata=srv.admin, timeout=10)
                    outcome = "OK"
                except grpc.RpcError as e:
                    outcome = f"{e.code().name}: {e.details()}"
                with lock:
                    results.append(outcome)

        threads = [threading.Thread(target=load) for _ in range(24)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.5)
            srv.app.stop(grace=3.0)  # NOT_SERVING, DELAY s of serving, then refusing
            time.sleep(0.5)
        finally:
            done.set()
            for t in threads:
                t.join(30)
            channel.close()
        failed = [r for r in results if r != "OK"]
        assert len(results) > 50, "the load made too few calls to mean anything"
        assert failed == [], f"{len(failed)} of {len(results)} calls failed: {failed[:5]}"


@contextlib.contextmanager
def _writes_blocked(srv: support.Server) -> Iterator[None]:
    """Every write to the accounts table waits until the block ends: on SQLite the
    writers' lock file is held, on PostgreSQL the table is locked by another session."""
    if srv.backend == "sqlite":
        import fcntl
        import os

        path = srv.db_url.removeprefix("sqlite:///") + ".write-lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # lets go of the lock
        return
    import sqlalchemy as sa

    engine = sa.create_engine(srv.db_url)
    try:
        with engine.connect() as conn, conn.begin():
            conn.exec_driver_sql("LOCK TABLE accounts IN EXCLUSIVE MODE")
            yield
    finally:
        engine.dispose()


def test_a_rest_call_cut_at_the_end_of_the_grace_is_503_never_500(
        backend: str, tmp_path: Path) -> None:
    with running_server(backend, tmp_path) as srv, _writes_blocked(srv):
        auth = {"authorization": f"Bearer {srv.admin_token}"}
        answers: list[httpx.Response] = []
        call = threading.Thread(target=lambda: answers.append(httpx.post(
            f"{srv.http_url}/v1/accounts", headers=auth, timeout=20,
            json={"account": {"name": "cut at shutdown", "email": "cut@example.com"},
                  "firstUser": {"email": "first@example.com"}})))
        call.start()
        time.sleep(0.5)  # the call waits for the database
        assert not answers, answers[0].text
        srv.app.stop(grace=0.5, delay=0)
        call.join(10)
    assert answers, "the call was answered"
    r = answers[0]
    assert r.status_code == 503, r.text
    body = r.json()
    assert body["code"] == 14  # UNAVAILABLE
    assert body["details"][0]["reason"] == "SHUTTING_DOWN"
    assert "outcome is unknown" in body["message"]
