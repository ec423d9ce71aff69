"""Server processes for the bench: free loopback ports, start, wait until ready, CPU time, kill.

Every child is started with PR_SET_PDEATHSIG (Linux), so even a SIGKILLed bench leaves no
server behind; the normal path stops them in ``finally`` (SIGTERM, then SIGKILL), and
a server's own children (``serve --processes N`` workers) that outlive it are killed too.
CPU time and context switches are summed over a server's whole process tree, so a
supervisor with N workers counts as one server.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

HOST = "127.0.0.1"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A free TCP port on the loopback (the tiny bind-then-close race is fine here)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _stat(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name (field 3, the state, is item 0)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a whole process (all its threads) so far."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime


def _all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def descendants(pid: int) -> list[int]:
    """The live processes below ``pid`` (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for p in _all_pids():
        try:
            children.setdefault(int(_stat(p)[1]), []).append(p)
        except (OSError, IndexError, ValueError):
            continue
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants (OSError if ``pid`` is gone)."""
    total = cpu_seconds(pid)
    for c in descendants(pid):
        with contextlib.suppress(OSError):
            total += cpu_seconds(c)
    return total


def tree_context_switches(pid: int) -> int:
    return context_switches(pid) + sum(context_switches(c) for c in descendants(pid))


def pg_backends_cpu(dbname: str) -> dict[int, float]:
    """{pid: CPU seconds so far} of the PostgreSQL backends connected to ``dbname`` (found
    by their process title); they serve the server's queries on any core."""
    out: dict[int, float] = {}
    for p in _all_pids():
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                title = f.read().replace(b"\0", b" ").decode(errors="replace").split()
            # "postgres: [CLUSTER:] USER DBNAME HOST(PORT) STATE" (cluster_name, if set)
            if title[:1] == ["postgres:"] and dbname in title[1:5]:
                out[p] = cpu_seconds(p)
        except OSError:
            continue
    return out


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two ``pg_backends_cpu`` samples (a backend that started
    in between counts from 0; one that ended counts until the first sample)."""
    return sum(max(0.0, t - before.get(p, 0.0)) for p, t in after.items())


def context_switches(pid: int) -> int:
    """Context switches of all the process's live threads so far (voluntary + not): many per
    call means threads handing the GIL (or a lock) back and forth."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except OSError:
            continue  # the thread ended meanwhile
    return total


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle so far (from /proc/stat), to spot other load."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / _CLK_TCK


@dataclass
class Proc:
    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    cpus: set[int] | None = None  # pin the process (all its threads) to these CPUs
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, **self.env}
        cpus = self.cpus

        def preexec() -> None:  # pragma: no cover - runs in the child
            _die_with_parent()
            if cpus:
                os.sched_setaffinity(0, cpus)

        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env=env, preexec_fn=preexec,
        )

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, n: int = 30) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def wait_grpc_ready(self, address: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(address) as ch:
            while True:
                if not self.alive():
                    raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
                try:
                    grpc.channel_ready_future(ch).result(timeout=0.25)
                    return
                except grpc.FutureTimeoutError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"{self.name} not ready on {address} after {timeout:.0f}s:\n"
                            f"{self.log_tail()}") from None

    def wait_http_ready(self, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
            try:
                with socket.create_connection((HOST, port), timeout=0.25):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name}: HTTP port {port} not open after "
                                       f"{timeout:.0f}s:\n{self.log_tail()}") from None
                time.sleep(0.05)

    def kill_now(self) -> None:
        """SIGKILL the process and its descendants (the watchdog's last resort)."""
        if self.popen is not None and self.popen.poll() is None:
            for pid in [*descendants(self.popen.pid), self.popen.pid]:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)

    def stop(self, grace: float = 5.0) -> None:
        p = self.popen
        below: list[tuple[int, str]] = []
        if p is not None and p.poll() is None:
            below = [(c, _starttime(c)) for c in descendants(p.pid)]
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                p.wait(5)
        _reap(below, grace)
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None  # type: ignore[assignment]


def _starttime(pid: int) -> str:
    """The process's start time (clock ticks since boot) while it runs; "" once it is gone
    or a zombie."""
    try:
        fields = _stat(pid)
    except (OSError, IndexError):
        return ""
    return "" if fields[0] in ("Z", "X") else fields[19]


def _reap(procs: list[tuple[int, str]], grace: float) -> None:
    """SIGTERM, then SIGKILL, whichever of ``procs`` (pid, start time) outlived their parent
    (the same pid with the same start time: not a reused pid)."""
    def alive() -> list[int]:
        return [pid for pid, st in procs if st and _starttime(pid) == st]

    left = alive()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = alive()
        if not left:
            return


def python() -> str:
    """The interpreter running the bench (the project venv under `make bench`)."""
    return sys.executable


def echo_server(tmp: Path, workers: int, cpus: set[int] | None = None) -> tuple[Proc, str]:
    port = free_port()
    proc = Proc("echo server", [python(), "-m", "bench.echo_server", "--host", HOST,
                                "--port", str(port), "--workers", str(workers)],
                tmp / "echo.log", cpus=cpus)
    proc.start()
    address = f"{HOST}:{port}"
    proc.wait_grpc_ready(address, 20)
    return proc, address


@dataclass
class AccountsServer:
    proc: Proc
    grpc_address: str
    http_port: int


def accounts_server(tmp: Path, database_url: str, kek_file: Path, workers: int | None,
                    max_rpcs: int | None = None, extra: list[str] | None = None,
                    tag: str = "", cpus: set[int] | None = None,
                    processes: int | None = None) -> AccountsServer:
    grpc_port, http_port = free_port(), free_port()
    argv = [python(), "-m", "accounts_grpc.cli", "serve",
            "--database-url", database_url,
            "--key-encryption-key-file", str(kek_file),
            "--bind-host", HOST, "--grpc-port", str(grpc_port), "--http-port", str(http_port),
            "--log-level", "WARNING", "--shutdown-grace", "1"]
    if workers:
        argv += ["--grpc-workers", str(workers)]
    if max_rpcs:
        argv += ["--grpc-max-concurrent-rpcs", str(max_rpcs)]
    if processes is not None:
        argv += ["--processes", str(processes)]
    argv += extra or []
    proc = Proc(f"accounts server{tag}", argv, tmp / f"server{tag}.log", cpus=cpus)
    proc.start()
    address = f"{HOST}:{grpc_port}"
    try:
        proc.wait_grpc_ready(address, 60)
        proc.wait_http_ready(http_port, 20)
    except BaseException:
        proc.stop()
        raise
    return AccountsServer(proc, address, http_port)


def cli(args: list[str], timeout: float = 120) -> str:
    """Run ``accounts-grpc ARGS`` (a subprocess); its stdout, or RuntimeError saying why not."""
    out = subprocess.run([python(), "-m", "accounts_grpc.cli", *args], capture_output=True,
                         text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise RuntimeError(f"accounts-grpc {args[0]} failed (exit {out.returncode}):\n"
                           f"{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return out.stdout


def serve_flags() -> str:
    """``accounts-grpc serve --help`` (to see which flags this tree's server has)."""
    return cli(["serve", "--help"], timeout=60)


def guard_run(name: str, timeout: float, cleanup: Callable[[], None]) -> threading.Timer:
    """A bench run that cannot hang or leak: past ``timeout`` seconds ``cleanup`` runs (its
    errors ignored) and the process exits 3; SIGTERM raises KeyboardInterrupt in the main
    thread, so the run's own ``finally`` cleans up as on Ctrl-C. Cancel the timer returned
    when the run ends."""
    def watchdog() -> None:
        print(f"{name}: --timeout {timeout:.0f}s reached; killing everything",
              file=sys.stderr, flush=True)
        with contextlib.suppress(Exception):
            cleanup()
        os._exit(3)

    timer = threading.Timer(timeout, watchdog)
    timer.daemon = True
    timer.start()

    def on_term(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    return timer
