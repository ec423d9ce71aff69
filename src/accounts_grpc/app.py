"""The composition root: settings → store → keys → auth → services → servers.

An ``App`` is one serving process. ``serve --processes N`` (N > 1) runs N of them, each
a worker process under the supervisor (supervisor.py), sharing the ports through
SO_REUSEPORT; the worker's number is ``App(worker=...)``.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from types import FrameType

import grpc
from accounts.v1 import (
    account_service_pb2_grpc,
    partition_service_pb2_grpc,
    session_service_pb2_grpc,
    user_group_service_pb2_grpc,
    user_service_pb2_grpc,
)

from accounts_grpc.auth.authenticate import Authenticator
from accounts_grpc.auth.jwt_tokens import JwtService
from accounts_grpc.auth.keys import KeyStore, load_kek
from accounts_grpc.config import Settings
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
        s = self.services
        self.servicers = {
            "accounts.v1.AccountService": AccountServiceServicer(s),
            "accounts.v1.UserService": UserServiceServicer(s),
            "accounts.v1.UserGroupService": UserGroupServiceServicer(s),
            "accounts.v1.PartitionService": PartitionServiceServicer(s),
            "accounts.v1.SessionService": SessionServiceServicer(s),
        }
        adders = {
            "accounts.v1.AccountService":
                account_service_pb2_grpc.add_AccountServiceServicer_to_server,
            "accounts.v1.UserService": user_service_pb2_grpc.add_UserServiceServicer_to_server,
            "accounts.v1.UserGroupService":
                user_group_service_pb2_grpc.add_UserGroupServiceServicer_to_server,
            "accounts.v1.PartitionService":
                partition_service_pb2_grpc.add_PartitionServiceServicer_to_server,
            "accounts.v1.SessionService":
                session_service_pb2_grpc.add_SessionServiceServicer_to_server,
        }
        self.grpc = GrpcServer(
            settings,
            self.pipeline,
            [(adders[name], servicer) for name, servicer in self.servicers.items()],
            registry.service_names(),
            extra_handlers,
            reuse_port=self.reuse_port,
        )
        self.http = None
        if settings.http_port >= 0:
            from accounts_grpc.rest.server import HttpServer

            self.http = HttpServer(self)
        self.draining = False
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
