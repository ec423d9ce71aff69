"""`accounts-grpc serve --processes 2`, as real processes: two workers behind one pair of
ports, a supervisor that replaces a killed worker and drains them all on SIGTERM, writes
from both processes that lose nothing, and /metrics that counts both.

Which worker served a call is read from the log: every worker logs one line per call,
naming itself (``worker=2``, or ``"worker": 2`` with --log-json). The kernel hands each
new TCP connection to one of the workers, so the tests open new connections (a gRPC
channel with a subchannel pool of its own, a fresh HTTP connection) until both have
answered.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import sqlalchemy as sa
from accounts.v1 import session_service_pb2 as spb
from accounts.v1 import (
    session_service_pb2_grpc,
    user_group_service_pb2_grpc,
    user_service_pb2,
    user_service_pb2_grpc,
)
from accounts.v1 import user_group_pb2 as ugpb
from accounts.v1 import user_group_service_pb2 as ugspb

from accounts_grpc.config import Settings
from tests import support
from tests.serving import CLI, LoggedProcess, clean_env, cli
from tests.support import exposition_problems, sample

ME = "/accounts.v1.UserService/GetMe"
CREATE_GROUP = "/accounts.v1.UserGroupService/CreateUserGroup"
GRACE = 3.0

pytestmark = pytest.mark.timeout(180)


@dataclass
class Cluster(LoggedProcess):
    """A running `serve --processes 2` and what it has written to stderr so far."""

    backend: str
    db_url: str
    grpc_port: int = 0
    http_port: int = 0
    creds: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"timed out; the log:\n{self.log}"
            time.sleep(0.05)

    def worker_pids(self) -> dict[int, int]:
        """Worker number → the pid of its latest process (the supervisor logs each start)."""
        out: dict[int, int] = {}
        for line in list(self.lines):
            m = re.search(r"worker (\d+) started \(pid (\d+)\)", line)
            if m:
                out[int(m.group(1))] = int(m.group(2))
        return out

    def all_pids(self) -> list[int]:
        return [int(m) for m in re.findall(r"worker \d+ started \(pid (\d+)\)", self.log)]

    def calls_by_worker(self, transport: str, method: str, code: str = "OK",
                        start: int = 0) -> Counter[int]:
        """Worker number → call log lines for ``method`` (text or JSON lines)."""
        out: Counter[int] = Counter()
        for line in list(self.lines)[start:]:
            if line.startswith("{"):
                rec = json.loads(line)
                if (rec.get("transport"), rec.get("rpc_method"), rec.get("rpc_code")) == (
                        transport, method, code) and "worker" in rec:
                    out[int(rec["worker"])] += 1
                continue
            m = re.search(rf" worker=(\d+) accounts_grpc\.calls: {transport} {re.escape(method)}"
                          rf" {code} ", line)
            if m:
                out[int(m.group(1))] += 1
        return out

    def channel(self) -> grpc.Channel:
        """A channel with a connection of its own (so the kernel picks a worker for it)."""
        return grpc.insecure_channel(self.address,
                                     options=[("grpc.use_local_subchannel_pool", 1)])

    def token(self) -> str:
        with self.channel() as ch:
            return str(session_service_pb2_grpc.SessionServiceStub(ch).CreateToken(
                spb.CreateTokenRequest(client_id=self.creds["client_id"],
                                       client_secret=self.creds["client_secret"]),
                timeout=10).access_token)

    def metrics(self) -> str:
        with httpx.Client() as client:  # a new connection: any worker may answer
            r = client.get(f"{self.http_url}/metrics", timeout=10)
        assert r.status_code == 200
        return r.text


def _alive(pid: int) -> bool:
    """True if ``pid`` is a live process (not gone, not a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@contextlib.contextmanager
def cluster(backend: str, tmp: Path, *, print_bootstrap: bool = False,
            log_json: bool = False) -> Iterator[Cluster]:
    with support.database_url(backend, tmp) as url:
        flags = ["--database-url", url, "--key-encryption-key-file", str(tmp / "test.kek")]
        if backend == "postgres":
            cli("migrate", *flags)  # PostgreSQL is never migrated by `serve`
        creds = {} if print_bootstrap else json.loads(cli("bootstrap", "--json", *flags))
        proc = subprocess.Popen(
            [*CLI, "serve", "--processes", "2", *flags, "--bind-host", "127.0.0.1",
             "--grpc-port", "0", "--http-port", "0", "--shutdown-grace", str(GRACE),
             "--log-level", "INFO", "--log-json" if log_json else "--no-log-json",
             "--print-bootstrap" if print_bootstrap else "--no-print-bootstrap"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**clean_env(), "TMPDIR": str(tmp)},  # where the metrics directory goes
        )
        c = Cluster(proc, backend, url, creds=creds)
        reader = threading.Thread(target=c.read_stderr, daemon=True)
        reader.start()
        try:
            m = c.wait_for(r"serving gRPC on 127\.0\.0\.1:(\d+), HTTP on 127\.0\.0\.1:(\d+), "
                           r"2 processes", timeout=120)  # slow only on a busy machine
            c.grpc_port, c.http_port = int(m.group(1)), int(m.group(2))
            if print_bootstrap:
                c.creds = {"client_id": c.wait_for(r"client_id:\s+(\S+)").group(1),
                           "client_secret": c.wait_for(r"client_secret:\s+(\S+)").group(1)}
            yield c
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(GRACE + 15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for pid in c.all_pids():  # never leave a worker behind, even after a failure
                if _alive(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            reader.join(10)


def get_me(channel: grpc.Channel, token: str, timeout: float = 10) -> Any:
    return user_service_pb2_grpc.UserServiceStub(channel).GetMe(
        user_service_pb2.GetMeRequest(), metadata=support.bearer(token), timeout=timeout)


# -- both processes serve, and /metrics counts both ----------------------------------------------


def test_both_workers_serve_grpc_and_rest_and_metrics_sum_them(
    backend: str, tmp_path: Path
) -> None:
    with cluster(backend, tmp_path) as c:
        token = c.token()
        auth = {"authorization": f"Bearer {token}"}
        grpc_calls = rest_calls = 0
        for _batch in range(8):  # 8 new connections a batch, until both workers answered
            for _ in range(8):
                with c.channel() as ch:
                    for _ in range(3):
                        assert get_me(ch, token).user.id == c.creds["user_id"]
                        grpc_calls += 1
                with httpx.Client() as client:
                    r = client.get(f"{c.http_url}/v1/me", headers=auth, timeout=10)
                    assert r.status_code == 200, r.text
                    rest_calls += 1
            c.wait_until(lambda g=grpc_calls, r=rest_calls:
                         sum(c.calls_by_worker("grpc", ME).values()) == g
                         and sum(c.calls_by_worker("rest", ME).values()) == r)
            if len(c.calls_by_worker("grpc", ME)) == len(c.calls_by_worker("rest", ME)) == 2:
                break
        by_grpc, by_rest = c.calls_by_worker("grpc", ME), c.calls_by_worker("rest", ME)
        assert set(by_grpc) == {1, 2}, f"gRPC calls by worker: {by_grpc}"
        assert set(by_rest) == {1, 2}, f"REST calls by worker: {by_rest}"

        # whichever worker answers /metrics, it counts every worker's calls (each worker
        # served only a part of them, as the log shows)
        me = {"grpc_service": "accounts.v1.UserService", "grpc_method": "GetMe"}
        for _ in range(6):
            text = c.metrics()
            assert sample(text, "grpc_server_handled_total", **me, grpc_code="OK") == grpc_calls
            assert sample(text, "http_server_request_duration_seconds_count", **me,
                          http_response_status_code="200") == rest_calls
            assert sample(text, "grpc_server_handling_seconds_count", **me) == grpc_calls
            assert "accounts_serving_processes 2.0" in text
            # every live worker's process metrics, one series each (read from /proc)
            pids = sorted(c.worker_pids().values())
            for name in ("process_start_time_seconds", "process_cpu_seconds_total",
                         "process_resident_memory_bytes", "process_open_fds"):
                found = re.findall(rf'^{name}\{{pid="(\d+)"\}}', text, re.M)
                assert sorted(map(int, found)) == pids, name
            # no series twice, none _created, and the gauges summed over the workers
            assert exposition_problems(text) == []
            assert sample(text, "accounts_db_pool_size") == 2 * Settings().pool_size()
            assert sample(text, "accounts_calls_in_flight", transport="grpc") == 0
            assert sample(text, "accounts_calls_in_flight", transport="rest") == 1  # this one


# -- a worker killed is replaced; the calls go on ------------------------------------------------


@dataclass
class Outcome:
    started: float
    ended: float
    error: str | None  # None: OK; else the gRPC code name or the HTTP failure


class Load:
    """Threads calling GetMe over and over, each outcome recorded with its times."""

    def __init__(self, c: Cluster, token: str, grpc_threads: int, rest_threads: int = 0):
        self.c, self.token = c, token
        self.stop = threading.Event()
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._grpc, daemon=True)
                        for _ in range(grpc_threads)]
        self.threads += [threading.Thread(target=self._rest, daemon=True)
                         for _ in range(rest_threads)]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _record(self, started: float, error: str | None) -> None:
        with self._lock:
            self.outcomes.append(Outcome(started, time.monotonic(), error))

    def _grpc(self) -> None:
        with self.c.channel() as ch:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    get_me(ch, self.token, timeout=30)
                    self._record(started, None)
                except grpc.RpcError as e:
                    self._record(started, e.code().name)
                    time.sleep(0.01)

    def _rest(self) -> None:
        auth = {"authorization": f"Bearer {self.token}"}
        with httpx.Client() as client:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    r = client.get(f"{self.c.http_url}/v1/me", headers=auth, timeout=30)
                    self._record(started, None if r.status_code == 200 else f"HTTP {r.status_code}")
                except httpx.TransportError as e:
                    self._record(started, type(e).__name__)
                    time.sleep(0.01)

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)


def test_a_killed_worker_is_replaced_and_calls_keep_succeeding(
    backend: str, tmp_path: Path
) -> None:
    with cluster(backend, tmp_path, print_bootstrap=True) as c:
        assert c.log.count("a new admin machine user was bootstrapped") == 1, "printed once"
        token = c.token()
        old = c.worker_pids()
        assert set(old) == {1, 2} and _alive(old[1]) and _alive(old[2])
        with Load(c, token, grpc_threads=4) as load:
            c.wait_until(lambda: sum(o.error is None for o in load.snapshot()) >= 20)
            killed_at = time.monotonic()
            os.kill(old[1], signal.SIGKILL)
            # the supervisor starts another worker 1 at once ("worker 1 started (pid ...)"),
            # which serves as soon as it has started up (seconds, more on a busy machine)
            c.wait_until(lambda: c.worker_pids()[1] != old[1], timeout=5)
            new_pid = c.worker_pids()[1]
            c.wait_for(rf"worker=1 accounts_grpc: worker 1 serving \(pid {new_pid}\)",
                       timeout=60)
            served_from = len(c.lines)
            assert not _alive(old[1]) and c.worker_pids()[2] == old[2], "only one was replaced"
            time.sleep(1.0)  # the load goes on with the new worker in place
        # the replacement serves too: new connections until one reaches it
        for _ in range(64):
            with c.channel() as ch:
                get_me(ch, token)
            if c.calls_by_worker("grpc", ME, start=served_from)[1]:
                break
            time.sleep(0.05)
        assert c.calls_by_worker("grpc", ME, start=served_from)[1] > 0, c.log

    outcomes = load.snapshot()
    # calls in flight in the killed process fail (UNAVAILABLE); every call made once it
    # was gone succeeded
    late = [o for o in outcomes if o.started >= killed_at + 1.0]
    assert len(late) > 50 and all(o.error is None for o in late), Counter(o.error for o in late)
    failed = [o for o in outcomes if o.error is not None]
    assert all(o.error == "UNAVAILABLE" and o.started < killed_at + 1.0 for o in failed), failed
    assert "exited with signal SIGKILL" in c.log and "restarting it" in c.log


# -- SIGTERM drains every worker under load -------------------------------------------------------


def test_sigterm_drains_every_worker_under_load_then_exits_0(
    backend: str, tmp_path: Path
) -> None:
    with cluster(backend, tmp_path) as c:
        token = c.token()
        pids = c.worker_pids()
        with Load(c, token, grpc_threads=4, rest_threads=2) as load:
            c.wait_until(lambda: sum(o.error is None for o in load.snapshot()) >= 100)
            assert len(list(tmp_path.glob("accounts-grpc-metrics-*"))) == 1
            signalled = time.monotonic()
            c.proc.send_signal(signal.SIGTERM)
            try:
                code = c.proc.wait(GRACE + 8)
            except subprocess.TimeoutExpired:
                pytest.fail(f"still running {GRACE + 8}s after SIGTERM; the log:\n{c.log}")
            exited = time.monotonic()
            time.sleep(0.3)  # the load meets a closed port
        assert code == 0, c.log
        assert exited - signalled < GRACE + 8
        c.wait_for(r"supervisor accounts_grpc\.supervisor: stopped")
        assert not list(tmp_path.glob("accounts-grpc-metrics-*")), "the metrics files are gone"
        for pid in [*pids.values(), *c.all_pids()]:
            assert not _alive(pid), f"worker pid {pid} outlived the supervisor"

    outcomes = load.snapshot()
    before = [o for o in outcomes if o.started < signalled]
    after = [o for o in outcomes if o.started >= signalled]
    assert len(before) >= 100
    # Every call done before the signal succeeded; new calls after it are refused:
    # UNAVAILABLE (REST: 503, or the port closed). One exception, not ours to fix here
    # (the zero-loss drain is a later issue): grpc core cancels the calls it has received
    # but grpcio's serving thread has not yet taken when the server stops; such a call
    # ends CANCELLED. One process does the same. At most one a load thread, at the signal.
    assert all(o.error is None for o in before if o.ended < signalled)
    cut = [o for o in outcomes if o.error == "CANCELLED"]
    assert len(cut) <= 4 and all(o.ended >= signalled for o in cut), cut
    unavailable = {"UNAVAILABLE", "CANCELLED", "HTTP 503", "ConnectError",
                   "RemoteProtocolError", "ReadError"}
    assert {o.error for o in before} <= {None, "CANCELLED"}, Counter(o.error for o in before)
    assert {o.error for o in after} <= {None, *unavailable}, (Counter(o.error for o in after),
                                                              c.log)
    assert any(o.error for o in after), "the load saw the server go away"
    log = c.log
    assert "received SIGTERM: draining 2 workers" in log
    assert log.count("accounts_grpc: stopped") == 2, "each worker drained"
    assert re.search(r"worker 1 \(pid \d+\) exited with status 0", log)
    assert re.search(r"worker 2 \(pid \d+\) exited with status 0", log)


# -- writes from both processes: none lost, none doubled -----------------------------------------


def test_concurrent_creates_from_two_processes_are_neither_lost_nor_doubled(
    backend: str, tmp_path: Path
) -> None:
    threads, per_thread = 8, 50
    with cluster(backend, tmp_path, log_json=True) as c:
        token = c.token()
        account_id = c.creds["account_id"]
        acked: dict[str, str] = {}  # name → id the server answered
        errors: list[str] = []
        lock = threading.Lock()

        def create(t: int) -> None:
            ch = None
            try:
                for i in range(per_thread):
                    if i % 10 == 0:  # a new connection every 10 creates: both workers write
                        if ch is not None:
                            ch.close()
                        ch = c.channel()
                    name = f"group-{t}-{i}"
                    try:
                        resp = user_group_service_pb2_grpc.UserGroupServiceStub(ch) \
                            .CreateUserGroup(
                                ugspb.CreateUserGroupRequest(
                                    account_id=account_id,
                                    user_group=ugpb.UserGroup(name=name),
                                    request_id=str(uuid.uuid4())),
                                metadata=support.bearer(token), timeout=30)
                        with lock:
                            acked[name] = resp.user_group.id
                    except grpc.RpcError as e:
                        with lock:
                            errors.append(f"{name}: {e.code().name} {e.details()}")
            finally:
                if ch is not None:
                    ch.close()

        workers = [threading.Thread(target=create, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(120)
        assert errors == []
        assert len(acked) == threads * per_thread

        engine = sa.create_engine(_sa_url(c.db_url))
        try:
            with engine.connect() as conn:
                rows = conn.execute(sa.text(
                    "SELECT id, name FROM user_groups WHERE account_id = :a AND name LIKE 'group-%'"
                ), {"a": account_id}).all()
        finally:
            engine.dispose()
        names = Counter(r.name for r in rows)
        assert all(n == 1 for n in names.values()), "no create is stored twice"
        assert {r.name: r.id for r in rows} == acked, "every acknowledged create is stored"

        c.wait_until(lambda: sum(c.calls_by_worker("grpc", CREATE_GROUP).values())
                     == threads * per_thread)
        by_worker = c.calls_by_worker("grpc", CREATE_GROUP)
        assert set(by_worker) == {1, 2}, f"both processes wrote: {by_worker}"
        assert "database is locked" not in c.log
        assert sample(c.metrics(), "grpc_server_handled_total",
                      grpc_service="accounts.v1.UserGroupService",
                      grpc_method="CreateUserGroup", grpc_code="OK") == threads * per_thread


def _sa_url(url: str) -> str:
    from accounts_grpc.store.db import normalize_url

    return normalize_url(url)


# -- the supervisor's other duties ---------------------------------------------------------------


def test_a_worker_that_keeps_dying_is_restarted_after_a_growing_backoff(tmp_path: Path) -> None:
    with cluster("sqlite", tmp_path) as c:
        pid = c.worker_pids()[1]
        delays = []
        for _ in range(3):
            os.kill(pid, signal.SIGKILL)
            m = c.wait_for(rf"worker 1 \(pid {pid}\) exited with signal SIGKILL "
                           r"(?:after serving [\d.]+s|before it served): "
                           r"restarting it(?: in ([\d.]+)s)?$")
            delays.append(float(m.group(1) or 0))
            c.wait_until(lambda pid=pid: c.worker_pids()[1] != pid, timeout=15)
            pid = c.worker_pids()[1]  # killed next while it starts up: it never serves
        assert "before it served" in c.log
        assert delays[1] >= 0.5 and delays[2] == 2 * delays[1], delays
        c.wait_for(rf"worker 1 serving \(pid {pid}\)", timeout=60)
        with c.channel() as ch:
            assert get_me(ch, c.token()).user.id == c.creds["user_id"]


def test_workers_drain_and_leave_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    with cluster("sqlite", tmp_path) as c:
        pids = c.worker_pids()
        os.kill(c.proc.pid, signal.SIGKILL)
        c.proc.wait(5)
        c.wait_until(lambda: not any(_alive(p) for p in pids.values()), timeout=GRACE + 10)
        assert c.log.count("the supervisor is gone: draining") == 2


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        p = subprocess.run(
            [*CLI, "serve", "--processes", "2", "--database-url",
             f"sqlite:///{tmp_path / 'accounts.db'}", "--key-encryption-key-file",
             str(tmp_path / "test.kek"), "--bind-host", "127.0.0.1", "--grpc-port", str(port),
             "--http-port", "0"],
            capture_output=True, text=True, env=clean_env(), timeout=60, check=False)
    assert p.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in p.stderr and "Traceback" not in p.stderr
    assert "started" not in p.stderr, "no worker was started"
