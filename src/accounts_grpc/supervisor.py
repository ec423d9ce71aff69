"""`serve --processes N`: N worker processes share the ports, under a small supervisor.

One Python process serves on about one core (the GIL); N processes serve on N. Each
worker is a whole ``App`` (gRPC server, REST shim, database pool), the same as a single
process, and the kernel spreads new connections over the workers: they all listen on
the same gRPC and HTTP ports with SO_REUSEPORT.

What the supervisor does, in order:

1. Before any worker: the settings are valid (Settings); each port is reserved: bound
   with SO_REUSEPORT (port 0 becomes a concrete port) by a socket the supervisor keeps,
   bound but never listening (the kernel hands connections only to listening sockets),
   so the port stays ours while workers come and go (a port that another program holds
   is an error here, not a port silently shared with it); the database is at the
   current schema (SQLite is migrated; PostgreSQL must be, as with one process), the
   signing key exists, and ``--print-bootstrap`` prints its credentials, once. Each
   failure is one line naming its setting (config.StartupError), and no worker starts.
2. Workers are new interpreters (``python -m accounts_grpc.cli serve``), never forks:
   grpc's own rule (examples/python/multiprocessing) is that no gRPC server or channel
   may exist in a process that forks workers, and a fork would carry SQLite handles and
   threads as well. The supervisor creates no server, channel or connection. A worker
   inherits the environment, with the resolved settings as ``ACCOUNTS_*`` variables,
   stderr (one log stream; each line names its worker, see logs.py), and one end of a
   socket pair: it writes ``ready`` there once it serves, and reads EOF there if the
   supervisor dies, which makes it drain and exit (no orphans). Workers ignore SIGINT
   (a terminal's Ctrl-C reaches the whole process group: the supervisor passes it on)
   and a repeated SIGTERM (a service manager may signal every process of the service).
3. One line, once every worker serves: ``serving gRPC on ..., HTTP on ..., N processes``.
4. A worker that dies is restarted: at once if it had served a while, after a backoff
   (0.5 s, doubling up to 30 s) while it keeps dying before it serves or within 10 s
   of serving.
5. SIGTERM or SIGINT: every worker is sent SIGTERM and drains as a single process does
   (health NOT_SERVING and ``--drain-delay`` of serving, then new calls refused and
   in-flight calls get ``--shutdown-grace``). The supervisor waits for them (a worker
   still there ``delay + grace + 10`` s later is
   killed) and exits 0, or 1 if a worker did not exit cleanly. A second SIGTERM or
   SIGINT kills the workers at once (exit 1).

Metrics: prometheus_client's multiprocess mode. ``PROMETHEUS_MULTIPROC_DIR`` is a fresh
directory in each worker's environment (set before the worker imports the library) and
is removed at exit; ``mark_process_dead`` is called for each worker that exits. Every
worker's ``/metrics`` sums all of them (rpc/metrics.py).

Tracing: each worker, a new interpreter, sets up its own OpenTelemetry provider and
exporter as its App is built, and exports what is left as it drains (tracing.py); the
workers inherit the ``OTEL_*`` variables with the rest of the environment, and the
supervisor itself traces nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING

from accounts_grpc import logs
from accounts_grpc.config import Settings

if TYPE_CHECKING:
    from accounts_grpc.store.db import Database

log = logging.getLogger("accounts_grpc.supervisor")
serving_log = logging.getLogger("accounts_grpc")

#: set in a worker's environment: "<worker number>:<fd of its end of the socket pair>"
WORKER_ENV = "_ACCOUNTS_WORKER"
#: a worker that exits before it serves, or sooner than this after, restarts after a backoff
QUICK_EXIT = 10.0
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
#: how long after the grace the supervisor waits before it kills a draining worker
DRAIN_SLACK = 10.0

FirstSteps = Callable[["Database", int, "int | None"], None]


# -- the worker's side ---------------------------------------------------------------------


def worker_identity() -> tuple[int, int] | None:
    """(number, fd) if this process is a worker of a supervisor (read once, then
    forgotten, so that a process the worker starts is not taken for one)."""
    raw = os.environ.pop(WORKER_ENV, None)
    if not raw:
        return None
    number, _, fd = raw.partition(":")
    return int(number), int(fd)


def serve_worker(settings: Settings, number: int, fd: int) -> None:
    """Serve as worker ``number``: the App on the shared ports, ``ready`` on ``fd`` once
    it serves, and a drain when the supervisor signals or goes away."""
    from accounts_grpc.app import App

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to pass on
    logs.setup(settings.log_level, settings.log_json, worker=number)
    os.set_inheritable(fd, False)
    lifeline = socket.socket(fileno=fd)
    app = App(settings, worker=number)

    def watch_supervisor() -> None:
        with contextlib.suppress(OSError):
            while lifeline.recv(64):
                pass
        if not app.draining:
            log.warning("the supervisor is gone: draining")
            app.request_stop()

    def ready() -> None:
        with contextlib.suppress(OSError):  # the supervisor is gone: the lifeline says so
            lifeline.sendall(b"ready\n")

    threading.Thread(target=watch_supervisor, name="supervisor-lifeline", daemon=True).start()
    app.serve_forever(ready=ready)
    # Drained, the database closed: nothing is left to do, so leave without the
    # interpreter's teardown (joining idle pool threads, collecting every module's
    # objects), which took most of a second idle and several on a busy machine, all of
    # it time the supervisor's own exit waits for. Calls cut off at the grace and still
    # holding a thread are not waited for either (as cli._exit_if_calls_linger does).
    busy = app.grpc.busy_workers()
    if busy:
        log.warning("exiting with %d worker thread(s) still busy after the grace", busy)
    logging.shutdown()
    os._exit(0)


# -- the supervisor's side -----------------------------------------------------------------


def reserve_port(host: str, port: int, setting: str = "grpc_port") -> socket.socket:
    """A socket bound to ``host:port`` with SO_REUSEPORT and never listening: it keeps the
    port (port 0: a free one) for the workers, which bind it the same way. First, for a
    given port, a bind without SO_REUSEPORT checks that nobody holds it already (else
    another program of this user could share it with us without a word). A port that
    cannot be had is a StartupError naming ``setting``, the port's (or --bind-host)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    addr = host.strip("[]")

    def new_socket() -> socket.socket:
        s = socket.socket(family, socket.SOCK_STREAM)
        if family == socket.AF_INET6 and addr == "::":
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # dual stack
        return s

    try:
        if port:
            with new_socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((addr, port))
        sock = new_socket()
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((addr, port))
        except BaseException:
            sock.close()
            raise
    except OSError as e:
        from accounts_grpc.app import cannot_listen

        raise cannot_listen(setting, host, port, e) from None
    return sock


def worker_env(settings: Settings, number: int, fd: int, metrics_dir: str) -> dict[str, str]:
    """A worker's environment: ours, with every setting as its ACCOUNTS_* variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCOUNTS_")}
    for f in dataclasses.fields(Settings):
        value = getattr(settings, f.name)
        env[Settings.env_name(f.name)] = (
            ("true" if value else "false") if isinstance(value, bool) else str(value)
        )
    env["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    env[WORKER_ENV] = f"{number}:{fd}"
    return env


@dataclass
class _Worker:
    number: int
    proc: subprocess.Popen[bytes] | None = None
    conn: socket.socket | None = None
    ready_at: float | None = None  # when it said it serves
    quick_exits: int = 0
    restart_at: float | None = None
    buffer: bytes = b""
    pids: list[int] = field(default_factory=list)


class Supervisor:
    def __init__(self, settings: Settings, processes: int, *,
                 first_steps: FirstSteps | None = None) -> None:
        self.settings = settings
        self.processes = processes
        self.first_steps = first_steps
        self.workers = [_Worker(n) for n in range(1, processes + 1)]
        self.selector = selectors.DefaultSelector()
        self.stopping = False
        self.killing = False
        self.announced = False
        self.failed = False
        self.metrics_dir = ""
        self.database = ""
        self._reserved: list[socket.socket] = []

    # the steps before the first worker ----------------------------------------------------
    def prepare(self) -> None:
        from accounts_grpc.app import ensure_signing_key, load_key_encryption_key, open_database
        from accounts_grpc.auth.keys import KeyStore

        s = self.settings
        # the ports first: a start that fails on one changes nothing (no migration, no key)
        grpc_sock = reserve_port(s.bind_host, s.grpc_port)
        self._reserved.append(grpc_sock)
        http_port = s.http_port
        if http_port >= 0:
            http_sock = reserve_port(s.bind_host, http_port, "http_port")
            self._reserved.append(http_sock)
            http_port = http_sock.getsockname()[1]
        kek = load_key_encryption_key(s)  # before the database
        db = open_database(s, auto_migrate=False)
        try:
            ensure_signing_key(KeyStore(db, kek, s), s)
            self.database = db.engine.url.render_as_string(hide_password=True)
            self.settings = s.replace(grpc_port=grpc_sock.getsockname()[1],
                                      http_port=http_port, processes=self.processes)
            if self.first_steps is not None:
                self.first_steps(db, self.settings.grpc_port,
                                 http_port if http_port >= 0 else None)
        finally:
            db.dispose()

    # running ---------------------------------------------------------------------------------
    def run(self) -> int:
        """Prepare, start the workers, supervise them until a signal; the exit status."""
        logs.setup(self.settings.log_level, self.settings.log_json, supervisor=True)
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.selector.register(wake_r, selectors.EVENT_READ)
        old_wakeup = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        handlers = {sig: signal.signal(sig, _noop)
                    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)}
        self.metrics_dir = tempfile.mkdtemp(prefix="accounts-grpc-metrics-")
        try:
            self.prepare()
            for w in self.workers:
                self._start(w)
            return self._loop(wake_r)
        finally:
            for w in self.workers:  # only after an error: the loop leaves none running
                if w.proc is not None and w.proc.poll() is None:
                    w.proc.kill()
                    w.proc.wait()
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            for sock in self._reserved:
                sock.close()
            os.close(wake_r)
            os.close(wake_w)
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def _loop(self, wake_r: int) -> int:
        deadline: float | None = None
        while True:
            now = time.monotonic()
            timeouts = [w.restart_at - now for w in self.workers if w.restart_at is not None]
            if deadline is not None:
                timeouts.append(deadline - now)
            timeout = max(0.0, min(timeouts)) if timeouts else None
            for key, _ in self.selector.select(timeout):
                if key.fileobj == wake_r:
                    for signum in _read_all(wake_r):
                        if signum in (signal.SIGTERM, signal.SIGINT):
                            self._on_stop_signal(signal.Signals(signum))
                else:
                    self._on_message(key.data)
            self._reap()
            now = time.monotonic()
            if self.stopping:
                if deadline is None:
                    deadline = (now + self.settings.drain_delay + self.settings.shutdown_grace
                                + DRAIN_SLACK)
                if all(w.proc is None for w in self.workers):
                    log.info("stopped")
                    return 1 if self.failed or self.killing else 0
                if now >= deadline and not self.killing:
                    log.error("workers still draining %.0fs after the grace: killing them",
                              DRAIN_SLACK)
                    self._kill_all()
                continue
            if self.failed:  # a worker failed before everything served: give up
                self._stop_all()
                continue
            for w in self.workers:
                if w.restart_at is not None and now >= w.restart_at:
                    self._start(w)

    def _start(self, w: _Worker) -> None:
        ours, theirs = socket.socketpair()
        try:
            env = worker_env(self.settings, w.number, theirs.fileno(), self.metrics_dir)
            w.proc = subprocess.Popen(
                [sys.executable, "-m", "accounts_grpc.cli", "serve"],
                env=env, stdin=subprocess.DEVNULL, pass_fds=(theirs.fileno(),),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        w.conn, w.ready_at, w.restart_at, w.buffer = ours, None, None, b""
        w.pids.append(w.proc.pid)
        self.selector.register(ours, selectors.EVENT_READ, w)
        log.info("worker %d started (pid %d)", w.number, w.proc.pid)

    def _on_message(self, w: _Worker) -> None:
        assert w.conn is not None
        try:
            data = w.conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the worker has gone (reaped below, or on its SIGCHLD)
            self._forget_conn(w)
            return
        w.buffer += data
        while b"\n" in w.buffer:
            line, _, w.buffer = w.buffer.partition(b"\n")
            if line == b"ready" and w.ready_at is None:
                w.ready_at = time.monotonic()
                if not self.announced and all(x.ready_at is not None for x in self.workers):
                    self._announce()

    def _announce(self) -> None:
        self.announced = True
        s = self.settings
        serving_log.info(
            "serving gRPC on %s:%d%s, %d processes (database %s)",
            s.bind_host, s.grpc_port,
            f", HTTP on {s.bind_host}:{s.http_port}" if s.http_port >= 0 else "",
            self.processes, self.database,
        )

    def _forget_conn(self, w: _Worker) -> None:
        if w.conn is not None:
            self.selector.unregister(w.conn)
            w.conn.close()
            w.conn = None

    def _reap(self) -> None:
        from prometheus_client import multiprocess

        for w in self.workers:
            if w.proc is None:
                continue
            code = w.proc.poll()
            if code is None:
                continue
            pid, ready_at = w.proc.pid, w.ready_at
            w.proc = None
            self._forget_conn(w)
            multiprocess.mark_process_dead(pid, self.metrics_dir)
            if self.stopping:
                # a worker that never served may die of the SIGTERM itself: that is fine
                clean = code == 0 or (ready_at is None and code == -signal.SIGTERM)
                if not clean:
                    self.failed = True
                (log.info if clean else log.error)(
                    "worker %d (pid %d) exited with %s", w.number, pid, _status(code))
                continue
            if not self.announced:
                log.error("worker %d (pid %d) exited with %s before it served: stopping",
                          w.number, pid, _status(code))
                self.failed = True
                continue
            served = None if ready_at is None else time.monotonic() - ready_at
            quick = served is None or served < QUICK_EXIT
            w.quick_exits = w.quick_exits + 1 if quick else 0
            delay = (min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (w.quick_exits - 1))
                     if w.quick_exits else 0.0)
            log.warning("worker %d (pid %d) exited with %s %s: restarting it%s",
                        w.number, pid, _status(code),
                        "before it served" if served is None else f"after serving {served:.1f}s",
                        f" in {delay:.1f}s" if delay else "")
            w.restart_at = time.monotonic() + delay

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        if self.stopping:
            if not self.killing:
                log.warning("received %s again while draining: killing the workers now",
                            sig.name)
                self._kill_all()
            return
        log.info("received %s: draining %d workers", sig.name,
                 sum(1 for w in self.workers if w.proc))
        self._stop_all()

    def _stop_all(self) -> None:
        self.stopping = True
        for w in self.workers:
            w.restart_at = None
            if w.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(signal.SIGTERM)

    def _kill_all(self) -> None:
        self.killing = True
        for w in self.workers:
            if w.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.kill()


def _noop(_signum: int, _frame: FrameType | None) -> None:
    """The handler of the signals the supervisor waits for: the wakeup fd carries them."""


def _read_all(fd: int) -> bytes:
    out = b""
    with contextlib.suppress(BlockingIOError, InterruptedError):
        while chunk := os.read(fd, 512):
            out += chunk
    return out


def _status(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"
