"""The load generator: separate processes, each keeping C calls in flight, in a closed loop.

The orchestrator (``bench.run``) keeps ``procs`` worker processes alive for the whole run
and sends each a job: a row, the set-up context, the CPUs to run on, and a common
wall-clock start. Each of the job's clients issues its row's call back to back, waits for
the answer, and records the latency of each call that *completes* inside the measured
window ``[start + warmup, start + warmup + seconds]``. Calls are bounded
(``rows.CALL_TIMEOUT``) and so is the window, so a job always ends. Only loopback
addresses are ever dialled.

Clients (``--client``):

- ``aio`` (the default for gRPC rows): one asyncio event loop per process, C tasks, each
  awaiting one ``grpc.aio`` call at a time, over ``channels`` channels (TCP connections)
  per process, the tasks spread round-robin over them. No thread hand-offs: with the load
  pinned to one core, 2 processes x 64 tasks keep 128 calls in flight against a bare
  echo that saturates its own core (measured: the echo server at 100% of its core, the
  two load processes at ~85% of theirs; the sync client with 64 threads per process did
  ~15% fewer echo calls for more load CPU).
- ``threads``: C threads per process, each making blocking calls (``grpc.Channel``); the
  REST rows always use these (``http.client``, one keep-alive connection per thread).

Every channel has its own TCP connection (``grpc.use_local_subchannel_pool``): a server
with ``--processes N`` (SO_REUSEPORT) gets the connections spread over its workers.
Whether the C calls really are in flight is checked in the table: "in flight" is the mean
concurrency the clients saw (Little's law: the sum of latencies over the window), and
"load CPU" shows whether the load processes' core was saturated.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import signal
import threading
import time
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import grpc

from bench import rows

_CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1), ("grpc.enable_retries", 0)]
_ALL_CPUS = os.sched_getaffinity(0)  # what this process may use: "unpinned"


@dataclass
class Job:
    row: str
    ctx: dict[str, Any]
    clients: int  # calls in flight in this process (threads or tasks)
    channels: int  # gRPC channels (TCP connections) in this process
    warmup: float
    seconds: float
    client: str = "aio"  # "aio" | "threads" (REST rows always use threads)
    cpus: set[int] | None = None  # run this job on these CPUs (None: all of them)


@dataclass
class Result:
    latencies: array = field(default_factory=lambda: array("d"))  # seconds, measured window only
    errors: dict[str, int] = field(default_factory=dict)
    first_error: str = ""
    unimplemented: bool = False
    cpu_seconds: float = 0.0  # this load process, over the measured window
    build_error: str = ""

    def merge(self, other: Result) -> None:
        self.latencies.extend(other.latencies)
        for k, v in other.errors.items():
            self.errors[k] = self.errors.get(k, 0) + v
        self.first_error = self.first_error or other.first_error
        self.unimplemented = self.unimplemented or other.unimplemented
        self.cpu_seconds += other.cpu_seconds
        self.build_error = self.build_error or other.build_error


def _address(job: Job) -> str | None:
    kind = rows.BY_KEY[job.row].kind
    if kind == "echo":
        return str(job.ctx["echo_address"])
    if kind == "grpc":
        return str(job.ctx["grpc_address"])
    return None


def _host_is_loopback(address: str) -> bool:
    return address.startswith("127.0.0.1:") or address.startswith("localhost:")


def uses_aio(job: Job) -> bool:
    return job.client == "aio" and rows.BY_KEY[job.row].kind in ("grpc", "echo")


def set_cpus(cpus: set[int] | None) -> None:
    """Pin every thread of this process (grpc's own threads too, which a plain
    sched_setaffinity(0) would miss) to ``cpus``; None: every CPU it may use."""
    target = cpus or _ALL_CPUS
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(tid), target)


class Built:
    """A threads job's per-thread calls and their channels, made before the clock starts."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.channels: list[grpc.Channel] = []
        self.calls: list[Any] = []
        address = _address(job)
        if address is not None and not _host_is_loopback(address):
            raise ValueError(f"the bench only dials loopback, not {address}")
        try:
            if address:
                self.channels = [grpc.insecure_channel(address, options=_CHANNEL_OPTIONS)
                                 for _ in range(max(1, min(job.channels, job.clients)))]
            for i in range(job.clients):
                ch = self.channels[i % len(self.channels)] if self.channels else None
                self.calls.append(rows.build_call(job.row, job.ctx, ch, i))
            for ch in self.channels:
                grpc.channel_ready_future(ch).result(timeout=10)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for ch in self.channels:
            with contextlib.suppress(Exception):
                ch.close()
        self.channels = []


def _window(job: Job, start_at: float) -> tuple[float, float, float]:
    """(start, measure-from, end) on the perf_counter clock for a wall-clock start."""
    t_start = start_at + (time.perf_counter() - time.time())
    return t_start, t_start + job.warmup, t_start + job.warmup + job.seconds


def _failed(res: Result, e: Exception, t1: float, t_meas: float, t_end: float) -> bool:
    """Count a failed call; True if the row is unimplemented (stop this client)."""
    code = rows.error_code(e)
    if t_meas <= t1 <= t_end:
        res.errors[code] = res.errors.get(code, 0) + 1
    if not res.first_error:
        res.first_error = f"{code}: {rows.error_detail(e)}"
    if code == "UNIMPLEMENTED":
        res.unimplemented = True
        return True
    return False


def run_built(built: Built, start_at: float) -> Result:
    """Run the threads closed loop from ``start_at`` (time.time()); return the window."""
    job = built.job
    t_start, t_meas, t_end = _window(job, start_at)
    stop = threading.Event()
    per_thread = [Result() for _ in built.calls]

    def loop(call: Any, res: Result) -> None:
        pc = time.perf_counter
        lat = res.latencies
        while pc() < t_start:
            time.sleep(min(0.01, max(0.0, t_start - pc())))
        while not stop.is_set():
            t0 = pc()
            if t0 >= t_end:
                return
            try:
                call()
            except Exception as e:
                if _failed(res, e, pc(), t_meas, t_end):
                    stop.set()
                    return
                continue
            t1 = pc()
            if t_meas <= t1 <= t_end:
                lat.append(t1 - t0)

    threads = [threading.Thread(target=loop, args=(c, r), daemon=True, name=f"load-{i}")
               for i, (c, r) in enumerate(zip(built.calls, per_thread, strict=True))]
    for t in threads:
        t.start()
    total = Result()
    time.sleep(max(0.0, t_meas - time.perf_counter()))
    c0 = sum(os.times()[:2])
    time.sleep(max(0.0, t_end - time.perf_counter()))
    total.cpu_seconds = sum(os.times()[:2]) - c0
    for t in threads:
        t.join(rows.CALL_TIMEOUT + 5)
    stop.set()
    for r in per_thread:
        total.merge(r)
    return total


async def _run_aio(conn: Connection, job: Job) -> None:
    """Build the job's channels and tasks, answer "ready", wait for the start, run, reply."""
    address = _address(job)
    assert address is not None
    if not _host_is_loopback(address):
        conn.send(Result(build_error=f"the bench only dials loopback, not {address}"))
        return
    chans = [grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS)
             for _ in range(max(1, min(job.channels, job.clients)))]
    try:
        try:
            calls = [rows.build_call(job.row, job.ctx, chans[i % len(chans)], i, aio=True)
                     for i in range(job.clients)]
            await asyncio.wait_for(asyncio.gather(*(c.channel_ready() for c in chans)), 10)
        except Exception as e:
            conn.send(Result(build_error=f"{type(e).__name__}: {e}"))
            return
        conn.send("ready")
        start_at = conn.recv()  # blocks the loop, which has nothing to do yet
        conn.send(await _aio_loop(calls, job, start_at))
    finally:
        for ch in chans:
            with contextlib.suppress(Exception):
                await ch.close(None)


async def _aio_loop(calls: list[Any], job: Job, start_at: float) -> Result:
    t_start, t_meas, t_end = _window(job, start_at)
    pc = time.perf_counter
    total = Result()
    lat = total.latencies
    stop = False

    async def client(call: Any) -> None:
        nonlocal stop
        while not stop:
            t0 = pc()
            if t0 >= t_end:
                return
            try:
                await call()
            except Exception as e:
                if _failed(total, e, pc(), t_meas, t_end):
                    stop = True
                    return
                continue
            t1 = pc()
            if t_meas <= t1 <= t_end:
                lat.append(t1 - t0)

    async def cpu_sampler() -> None:
        await asyncio.sleep(max(0.0, t_meas - pc()))
        c0 = sum(os.times()[:2])
        await asyncio.sleep(max(0.0, t_end - pc()))
        total.cpu_seconds = sum(os.times()[:2]) - c0

    await asyncio.sleep(max(0.0, t_start - pc()))
    await asyncio.wait_for(asyncio.gather(*(client(c) for c in calls), cpu_sampler()),
                           job.warmup + job.seconds + rows.CALL_TIMEOUT + 5)
    return total


def _worker(conn: Connection) -> None:  # pragma: no cover
    """Job protocol: recv Job -> build -> send "ready" (or a Result with build_error) ->
    recv start time -> run -> send Result. ``None`` ends the process. Ctrl-C is the
    orchestrator's to handle (it stops this process), so it is ignored here."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn.send("up")
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        set_cpus(job.cpus)
        if uses_aio(job):
            try:
                asyncio.run(_run_aio(conn, job))
            except (EOFError, OSError):
                return
            continue
        try:
            built = Built(job)
        except Exception as e:
            conn.send(Result(build_error=f"{type(e).__name__}: {e}"))
            continue
        try:
            conn.send("ready")
            start_at = conn.recv()
            conn.send(run_built(built, start_at))
        except (EOFError, OSError):
            return
        finally:
            built.close()


class LoadPool:
    """``n`` long-lived load processes (spawned, so no gRPC state is inherited by fork)."""

    def __init__(self, n: int) -> None:
        ctx = mp.get_context("spawn")
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        for i in range(n):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(child,), name=f"bench-load-{i}", daemon=True)
            p.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(p)

    @property
    def size(self) -> int:
        return len(self._procs)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def _recv(self, i: int, deadline: float) -> Any:
        c, p = self._conns[i], self._procs[i]
        while not c.poll(0.2):
            if not p.is_alive():
                raise RuntimeError(f"load process {p.name} died (exit {p.exitcode})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"load process {p.name} did not answer in time")
        return c.recv()

    def wait_up(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        for i in range(len(self._conns)):
            if self._recv(i, deadline) != "up":
                raise RuntimeError("load process protocol error")

    def run(self, job: Job, on_start: Any = None) -> Result:
        """Build in every process, start them together, return the merged Result.

        ``on_start(start_at)`` is called once the common start time is fixed (the
        orchestrator samples the server's CPU time around the window with it)."""
        for c in self._conns:
            c.send(job)
        deadline = time.monotonic() + 60
        acks = [self._recv(i, deadline) for i in range(len(self._conns))]
        failed = [a for a in acks if isinstance(a, Result)]
        if failed:
            for i, a in enumerate(acks):  # release the ones that did build
                if a == "ready":
                    self._conns[i].send(time.time())
                    self._recv(i, time.monotonic() + job.warmup + job.seconds + 60)
            return failed[0]
        start_at = time.time() + 0.05
        for c in self._conns:
            c.send(start_at)
        if on_start is not None:
            on_start(start_at)
        total = Result()
        deadline = time.monotonic() + job.warmup + job.seconds + rows.CALL_TIMEOUT + 30
        for i in range(len(self._conns)):
            total.merge(self._recv(i, deadline))
        return total

    def close(self) -> None:
        for c in self._conns:
            with contextlib.suppress(Exception):
                c.send(None)
        for p in self._procs:
            p.join(3)
            if p.is_alive():
                p.terminate()
                p.join(3)
            if p.is_alive():
                p.kill()
