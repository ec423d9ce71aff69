"""The composition root: settings → store → keys → auth → services → servers.

An ``App`` is one serving process. ``serve --processes N`` (N > 1) runs N of them, each
a worker process under the supervisor (supervisor.py), sharing the ports through
SO_REUSEPORT; the worker's number is ``App(worker=...)``.

The services served are the one list ``rpc.registry.SERVICERS``; the gRPC registration,
the access rules and the REST shim's handlers all derive from it. The servers get what
they need, not the App: the gRPC server the pipeline and the servicers, the REST gateway
the pipeline, the servicers by service and a readiness check
(``rest.gateway.GatewayConfig``).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable
from types import FrameType

import grpc
from cryptography.fernet import Fernet

from accounts_grpc import tracing
from accounts_grpc.auth.authenticate import Authenticator
from accounts_grpc.auth.jwt_tokens import JwtService
from accounts_grpc.auth.keys import KeyStore, load_kek
from accounts_grpc.config import Settings, StartupError
from accounts_grpc.rest.gateway import GatewayConfig, Readiness
from accounts_grpc.rest.server import HttpServer
from accounts_grpc.rpc import metrics, registry
from accounts_grpc.rpc.pipeline import Pipeline
from accounts_grpc.rpc.server import GrpcServer
from accounts_grpc.services import Services
from accounts_grpc.services.deps import Deps
from accounts_grpc.store import migrate
from accounts_grpc.store.db import Database

log = logging.getLogger("accounts_grpc")


class SchemaNotReady(StartupError):
    pass


def open_database(settings: Settings, *, auto_migrate: bool) -> Database:
    """The database, at the current schema: SQLite is migrated on start, PostgreSQL must be.
    A URL it cannot use, a database it cannot reach or migrate, an old schema: a
    StartupError naming --database-url (store/db.py, store/migrate.py)."""
    db = Database(settings.database_url, pool_size=settings.pool_size(),
                  max_overflow=settings.db_max_overflow, pool_timeout=settings.db_pool_timeout)
    try:
        at = migrate.current(db.engine)
        if at != migrate.head():
            if auto_migrate or db.is_sqlite:
                migrate.upgrade(db.engine)
            else:
                raise SchemaNotReady(
                    "database_url",
                    f"the schema of {db.engine.url.render_as_string(hide_password=True)} "
                    f"is at {at!r}, not {migrate.head()!r}: run `accounts-grpc migrate` first",
                )
    except BaseException:
        db.dispose()
        raise
    return db


def load_key_encryption_key(settings: Settings) -> Fernet:
    """The key-encryption key (auth.keys.load_kek); a key or a file that is not one, or a
    file that cannot be read or made, is a StartupError naming its setting."""
    try:
        return load_kek(settings)
    except StartupError:
        raise
    except SystemExit as e:
        if "--key-encryption-key" in str(e.code):  # names the settings already (NO_KEK)
            raise
        if settings.key_encryption_key:  # never in the message: it is a secret
            raise StartupError(_kek_setting(settings),
                               "is not a key: it must be 32 bytes of urlsafe base64") from None
        raise StartupError("key_encryption_key_file", f"{settings.kek_path()} does not "
                           "hold a key: it must be 32 bytes of urlsafe base64") from None
    except OSError as e:
        raise StartupError("key_encryption_key_file", f"cannot read or create "
                           f"{settings.kek_path()}: {e.strerror or e}") from None


class _Held(logging.Filter):
    """Holds back every record of the logger it filters (see ensure_signing_key)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.records.append(record)
        return False


def _kek_setting(settings: Settings) -> str:
    """The setting the key-encryption key came from."""
    return "key_encryption_key" if settings.key_encryption_key else "key_encryption_key_file"


def ensure_signing_key(keys: KeyStore, settings: Settings, *, signer: bool = True) -> None:
    """``keys.ensure_key()``, whose failure (the key-encryption key does not decrypt a
    key that signs) is a StartupError naming the setting the key came from: what the key
    store logs meanwhile (each key it cannot decrypt) is held back, and written only if
    it succeeds, so that the failure is one line."""
    logger = logging.getLogger(KeyStore.__module__)
    held = _Held()
    logger.addFilter(held)
    try:
        keys.ensure_key(signer=signer)
    except StartupError:
        raise
    except SystemExit as e:
        raise StartupError(_kek_setting(settings),
                           str(e.code).removeprefix("accounts-grpc: ")) from None
    finally:
        logger.removeFilter(held)
    for record in held.records:
        logger.handle(record)


def bind_problem(host: str, port: int) -> OSError | None:
    """Why ``host:port`` cannot be listened on (None: it can), found by binding it as a
    single server does (SO_REUSEADDR, no SO_REUSEPORT: a port another program holds is
    not shared with it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            if family == socket.AF_INET6 and host.strip("[]") == "::":
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # dual stack
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host.strip("[]"), port))
    except OSError as e:
        return e
    return None


def cannot_listen(setting: str, host: str, port: int, e: OSError) -> StartupError:
    """A port that cannot be listened on, as a startup error naming ``setting`` (the
    port's), or --bind-host when it is the address that is wrong."""
    if isinstance(e, socket.gaierror) or e.errno == errno.EADDRNOTAVAIL:
        setting = "bind_host"
    return StartupError(setting, f"cannot listen on {host}:{port}: {e.strerror or e}")


def _check_ports(settings: Settings) -> None:
    """Serving alone: each port is free, checked before the servers bind. grpc's own
    failure comes late and unclear (a RuntimeError that gives no reason, after a log line
    of its core on stderr); uvicorn's names no setting."""
    for setting in ("grpc_port", "http_port"):
        port = getattr(settings, setting)
        if port >= 0:  # 0 too: the address is checked
            problem = bind_problem(settings.bind_host, port)
            if problem is not None:
                raise cannot_listen(setting, settings.bind_host, port, problem)


def _listen_failed(settings: Settings, setting: str) -> StartupError | None:
    """After a server failed to bind: a startup error naming ``setting`` if its port (or
    the address) cannot be listened on now, else None (the failure was something else)."""
    port = getattr(settings, setting)
    problem = bind_problem(settings.bind_host, max(port, 0))
    return None if problem is None else cannot_listen(setting, settings.bind_host, port,
                                                      problem)


class App:
    """Everything one server process runs. ``start()`` binds the ports; ``stop()`` drains."""

    def __init__(
        self,
        settings: Settings,
        *,
        auto_migrate: bool = False,
        extra_handlers: Iterable[grpc.GenericRpcHandler] = (),
        worker: int | None = None,
    ) -> None:
        self.settings = settings
        #: this process's number under a supervisor (None: serving alone); a worker binds
        #: its ports with SO_REUSEPORT, as its siblings do
        self.worker = worker
        self.reuse_port = worker is not None
        if not self.reuse_port:  # a worker's ports are the supervisor's, checked there
            _check_ports(settings)  # first: a failed start changes nothing
        # OpenTelemetry when configured (this process's own provider), before the engine
        # and the servers, which are instrumented as they are made (tracing.py)
        tracing.setup(settings.otlp_endpoint)
        self.db = open_database(settings, auto_migrate=auto_migrate)
        self.db.watch_pool(metrics.pool_state)
        self.keys = KeyStore(self.db, load_key_encryption_key(settings), settings)
        ensure_signing_key(self.keys, settings)
        self.jwts = JwtService(self.keys, settings)
        self.authn = Authenticator(self.db, self.jwts, settings)
        self.deps = Deps(settings, self.db, self.keys, self.jwts, self.authn,
                         page_secret=Deps.derive_secret(settings, "page-tokens"))
        self.services = Services.build(self.deps)
        self.pipeline = Pipeline(self.authn, registry.access_rules(),
                                 settings.proxy_networks())
        #: service full name → its servicer
        self.servicers: dict[str, object] = {}
        registrations: list[tuple[registry.AddToServer, object]] = []
        for servicer_class in registry.SERVICERS:
            name, add = registry.grpc_binding(servicer_class)
            self.servicers[name] = servicer = servicer_class(self.services)
            registrations.append((add, servicer))
        self.draining = False
        try:
            self.grpc = GrpcServer(
                settings,
                self.pipeline,
                registrations,
                registry.service_names(),
                extra_handlers,
                reuse_port=self.reuse_port,
            )
        except (RuntimeError, SystemExit) as e:  # taken since the check, or a bad address
            if self.reuse_port:  # a worker: the supervisor holds the port, so no probe
                raise
            raise _listen_failed(settings, "grpc_port") or e from None
        self.http: HttpServer | None = None
        if settings.http_port >= 0:
            # /readyz reads the flag and pings the database each time it is asked
            gateway = GatewayConfig.from_settings(
                settings, pipeline=self.pipeline, servicers=self.servicers,
                readiness=Readiness(draining=lambda: self.draining,
                                    database_answers=lambda: self.db.ping()))
            try:
                self.http = HttpServer(settings, gateway, reuse_port=self.reuse_port)
            except (OSError, SystemExit) as e:  # e.g. the gRPC port, taken just now
                failed = None if self.reuse_port else _listen_failed(settings, "http_port")
                self.grpc.server.stop(None)  # let go of the gRPC port
                raise failed or e from None
        self._stopped = threading.Event()
        self._stop_requested = threading.Event()

    @property
    def grpc_port(self) -> int:
        return self.grpc.port

    @property
    def http_port(self) -> int | None:
        return self.http.port if self.http else None

    def start(self) -> None:
        self.grpc.start()
        if self.http:
            self.http.start()
        metrics.process_started()
        log.info("%s", tracing.status())
        if self.worker is not None:  # the supervisor says where it serves, once
            log.info("worker %d serving (pid %d)", self.worker, os.getpid())
            return
        log.info(
            "serving gRPC on %s:%d%s (database %s)",
            self.settings.bind_host,
            self.grpc_port,
            f", HTTP on {self.settings.bind_host}:{self.http_port}" if self.http else "",
            self.db.engine.url.render_as_string(hide_password=True),
        )

    def stop(self, grace: float | None = None, delay: float | None = None) -> None:
        """Drain without losing a call: first health NOT_SERVING and /readyz 503 while
        every call is still served, for ``delay`` seconds (``--drain-delay``), so that
        balancers and round-robin clients move away; then new calls are refused and
        in-flight calls finish within ``grace``.

        gRPC and HTTP drain at the same time, so the refusing part takes at most about
        ``grace`` seconds (not one grace after the other).
        """
        if self._stopped.is_set():
            return
        grace = self.settings.shutdown_grace if grace is None else grace
        delay = self.settings.drain_delay if delay is None else delay
        self.draining = True
        # every status NOT_SERVING for good (watchers are told once, now); calls are
        # still served until the delay is over
        self.grpc.health.enter_graceful_shutdown()
        if delay > 0:
            log.info("not serving: new calls are still taken for %.1fs", delay)
            time.sleep(delay)
        log.info("draining (grace %.1fs)", grace)
        self.services.events.close()  # open WatchEvents streams end (UNAVAILABLE) at once
        deadline = time.monotonic() + grace
        grpc_done = self.grpc.begin_stop(grace)
        if self.http:
            self.http.stop(grace)
        if not grpc_done.wait(max(0.0, deadline - time.monotonic())):
            log.warning("calls still running at the end of the grace are cancelled")
        self.grpc.stop(grace)  # returns once every call has ended
        self.db.dispose()
        tracing.flush()
        self._stopped.set()
        log.info("stopped")

    def request_stop(self) -> None:
        """Make ``serve_forever`` drain and return, as SIGTERM does (any thread)."""
        self._stop_requested.set()

    def serve_forever(self, ready: Callable[[], None] | None = None) -> None:
        """Start, call ``ready``, then block until SIGTERM/SIGINT (or ``request_stop``),
        then drain and return.

        A second signal while draining exits at once (status 1), for an impatient Ctrl-C.
        A worker (under a supervisor) ignores SIGINT, which a terminal sends the whole
        process group (the supervisor passes it on as SIGTERM), and a second SIGTERM: the
        supervisor decides when a drain has taken too long, and kills.
        """
        stop = self._stop_requested

        def _on_signal(signum: int, _frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            if stop.is_set():
                if self.worker is not None:
                    return
                log.warning("received %s again while draining: exiting now", name)
                logging.shutdown()
                os._exit(1)
            log.info("received %s", name)
            stop.set()

        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal if self.worker is None else signal.SIG_IGN)
        self.start()
        if ready is not None:
            ready()
        # short waits: a process-directed signal may be delivered to one of grpc's or
        # uvicorn's threads, and then the Python handler runs only when this (the main)
        # thread next runs bytecode; a long wait would hold the drain back for its length
        while not stop.wait(0.25):
            pass
        self.stop()
