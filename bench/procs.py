"""Server processes for the bench: free loopback ports, start, wait until ready, CPU time, kill.

Every child is started with PR_SET_PDEATHSIG (Linux), so even a SIGKILLed bench leaves no
server behind; the normal path stops them in ``finally`` (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

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


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a whole process (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime


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

    def stop(self, grace: float = 5.0) -> None:
        p = self.popen
        if p is not None and p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                p.wait(5)
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None  # type: ignore[assignment]


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
                    tag: str = "", cpus: set[int] | None = None) -> AccountsServer:
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
    argv += extra or []
    proc = Proc(f"accounts server{tag}", argv, tmp / f"server{tag}.log", cpus=cpus)
    proc.start()
    address = f"{HOST}:{grpc_port}"
    proc.wait_grpc_ready(address, 60)
    proc.wait_http_ready(http_port, 20)
    return AccountsServer(proc, address, http_port)
