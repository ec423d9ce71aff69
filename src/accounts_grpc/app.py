"""The composition root: settings → store → keys → auth → services → servers.

An ``App`` is one serving process. ``serve --processes N`` (N > 1) runs N of them, each
a worker process under the supervisor (supervisor.py), sharing the ports through
SO_REUSEPORT; the worker's number is ``App(worker=...)``.

The services served are the one list ``SERVICERS``; the gRPC registration and the REST
shim's handlers both derive from it. The servers get what they need, not the App: the
gRPC server the pipeline and the servicers, the REST gateway the pipeline, the servicers
by service and a readiness check (``rest.gateway.GatewayConfig``).
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

import grpc

from accounts_grpc.auth.authenticate import Authenticator
from accounts_grpc.auth.jwt_tokens import JwtService
from accounts_grpc.auth.keys import KeyStore, load_kek
from accounts_grpc.config import Settings
from accounts_grpc.rest.gateway import GatewayConfig, Readiness
from accounts_grpc.rest.server import HttpServer
from accounts_grpc.rpc import metrics, registry
from accounts_grpc.rpc.account_servicer import AccountServiceServicer
from accounts_grpc.rpc.partition_servicer import PartitionServiceServicer
from accounts_grpc.rpc.pipeline import Pipeline
from accounts_grpc.rpc.server import GrpcServer
from accounts_grpc.rpc.session_servicer import SessionServiceServicer
from accounts_grpc.rpc.user_group_servicer import UserGroupServiceServicer
from accounts_grpc.rpc.user_servicer import UserServiceServicer
from accounts_grpc.services import Services
from accounts_grpc.services.deps import Deps
from accounts_grpc.store import migrate
from accounts_grpc.store.db import Database

log = logging.getLogger("accounts_grpc")


#: Every service this server runs, one entry each: its servicer class, built from the
#: use cases (``Services``). Its generated base class names the service and the function
#: that registers it on a grpc.Server (``grpc_binding``); the gRPC registration and the
#: REST shim's servicer map both derive from this list.
SERVICERS: tuple[type, ...] = (
    AccountServiceServicer,
    UserServiceServicer,
    UserGroupServiceServicer,
    PartitionServiceServicer,
    SessionServiceServicer,
)

AddToServer = Callable[[Any, grpc.Server], None]


def grpc_binding(servicer_class: type) -> tuple[str, AddToServer]:
    """(the service's full name, its ``add_<Service>Servicer_to_server``), from the
    ``<Service>Servicer`` base class protoc's gRPC plugin wrote into ``*_pb2_grpc``."""
    base = next((c for c in servicer_class.__mro__ if c.__module__.endswith("_pb2_grpc")),
                None)
    if base is None or not base.__name__.endswith("Servicer"):
        raise TypeError(f"{servicer_class.__qualname__} does not subclass a generated "
                        "<Service>Servicer")
    pb2 = importlib.import_module(base.__module__.removesuffix("_grpc"))
    service = pb2.DESCRIPTOR.services_by_name[base.__name__.removesuffix("Servicer")]
    add = getattr(importlib.import_module(base.__module__), f"add_{base.__name__}_to_server")
    return service.full_name, add


class SchemaNotReady(SystemExit):
    pass


def open_database(settings: Settings, *, auto_migrate: bool) -> Database:
    """The database, at the current schema: SQLite is migrated on start, PostgreSQL must be."""
    db = Database(settings.database_url, pool_size=settings.pool_size(),
                  max_overflow=settings.db_max_overflow, pool_timeout=settings.db_pool_timeout)
    if not migrate.is_current(db.engine):
        if auto_migrate or db.is_sqlite:
            migrate.upgrade(db.engine)
        else:
            raise SchemaNotReady(
                f"accounts-grpc: the database schema is at {migrate.current(db.engine)!r}, "
                f"not {migrate.head()!r}: run `accounts-grpc migrate` first"
            )
    return db


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
        self.db = open_database(settings, auto_migrate=auto_migrate)
        self.keys = KeyStore(self.db, load_kek(settings), settings)
        self.keys.ensure_key()
        self.jwts = JwtService(self.keys, settings)
        self.authn = Authenticator(self.db, self.jwts, settings)
        self.deps = Deps(settings, self.db, self.keys, self.jwts, self.authn,
                         page_secret=Deps.derive_secret(settings, "page-tokens"))
        self.services = Services.build(self.deps)
        self.pipeline = Pipeline(self.authn, registry.access_rules(),
                                 settings.proxy_networks())
        #: service full name → its servicer
        self.servicers: dict[str, object] = {}
        registrations: list[tuple[AddToServer, object]] = []
        for servicer_class in SERVICERS:
            name, add = grpc_binding(servicer_class)
            self.servicers[name] = servicer = servicer_class(self.services)
            registrations.append((add, servicer))
        unknown = sorted(self.servicers.keys() - set(registry.service_names()))
        if unknown:  # no access rules (every call denied), no REST routes, no health status
            raise RuntimeError(f"served but not in rpc/registry.py's SERVICE_MODULES: {unknown}")
        self.draining = False
        self.grpc = GrpcServer(
            settings,
            self.pipeline,
            registrations,
            registry.service_names(),
            extra_handlers,
            reuse_port=self.reuse_port,
        )
        self.http: HttpServer | None = None
        if settings.http_port >= 0:
            # /readyz reads the flag and pings the database each time it is asked
            gateway = GatewayConfig.from_settings(
                settings, pipeline=self.pipeline, servicers=self.servicers,
                readiness=Readiness(draining=lambda: self.draining,
                                    database_answers=lambda: self.db.ping()))
            self.http = HttpServer(settings, gateway, reuse_port=self.reuse_port)
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
        deadline = time.monotonic() + grace
        grpc_done = self.grpc.begin_stop(grace)
        if self.http:
            self.http.stop(grace)
        if not grpc_done.wait(max(0.0, deadline - time.monotonic())):
            log.warning("calls still running at the end of the grace are cancelled")
        self.grpc.stop(grace)  # returns once every call has ended
        self.db.dispose()
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
        while not stop.wait(3600):
            pass
        self.stop()
