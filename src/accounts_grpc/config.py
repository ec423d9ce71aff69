"""One Settings object. Every setting is a flag and an ``ACCOUNTS_*`` environment variable.

Precedence: flag > environment > default. ``accounts-grpc serve --help`` lists them all,
each with its variable name.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _opt(default: Any, help: str, *, metavar: str | None = None) -> Any:
    return field(default=default, metadata={"help": help, "metavar": metavar})


@dataclass(frozen=True)
class Settings:
    database_url: str = _opt(
        "sqlite:///data/accounts.db",
        "SQLAlchemy URL: sqlite:///path.db (embedded default) or postgresql+psycopg://...",
    )
    bind_host: str = _opt("0.0.0.0", "address the gRPC and HTTP servers listen on")
    grpc_port: int = _opt(50051, "gRPC port (0 picks a free one)")
    http_port: int = _opt(8080, "REST/HTTP port (0 picks a free one, -1 disables the REST shim)")
    grpc_workers: int = _opt(
        64,
        "worker threads of the gRPC server for unary calls (streams have threads of their "
        "own, --grpc-max-streams)",
    )
    grpc_max_concurrent_rpcs: int = _opt(
        0,
        "unary calls running at once (0 or more than the workers: as many as workers); "
        "more wait, up to --grpc-max-queued-calls",
    )
    grpc_max_queued_calls: int = _opt(
        1024,
        "unary calls (gRPC, and REST requests alike) that may wait for a worker while all "
        "are busy; past that a call gets RESOURCE_EXHAUSTED (OVERLOADED, retry in 1 s; "
        "REST: 503 with Retry-After) at once",
    )
    grpc_max_streams: int = _opt(
        160,
        "streams (WatchEvents, reflection, health Watch) open at once, each on a thread of "
        "its own beside the workers (REST WatchEvents streams count apart, against the same "
        "number); past that a new one gets RESOURCE_EXHAUSTED (TOO_MANY_STREAMS)",
    )
    grpc_max_streams_per_peer: int = _opt(
        8, "streams open at once from one client address; past that: RESOURCE_EXHAUSTED"
    )
    grpc_message_timeout: float = _opt(
        10.0, "seconds a unary call (or a health Watch) has to send its request message; "
        "then it ends with DEADLINE_EXCEEDED"
    )
    grpc_max_unsent: int = _opt(
        64, "calls whose request message is still missing after a second, in all, each "
        "holding a thread beside the workers until it comes; past that such a call ends "
        "with RESOURCE_EXHAUSTED"
    )
    grpc_max_unsent_per_peer: int = _opt(
        16, "the same from one client address; while it has that many, its new calls get "
        "RESOURCE_EXHAUSTED (TOO_MANY_PENDING_CALLS, retry in 1 s) at once"
    )
    shutdown_grace: float = _opt(10.0, "seconds in-flight calls get to finish on SIGTERM/SIGINT")
    # -- WatchEvents (services/feed.py, services/events.py) --
    feed_poll_interval: float = _opt(
        0.2, "seconds between two reads of new audit events by the one poller of a process "
        "that serves open WatchEvents streams (it stops while none is open)"
    )
    watch_recheck_interval: float = _opt(
        10.0, "seconds between two checks of an open WatchEvents stream's caller (its token "
        "still valid, the caller still allowed); a failed check ends the stream"
    )
    drain_delay: float = _opt(
        5.0,
        "seconds a draining server keeps serving after it turns NOT_SERVING (health, "
        "/readyz), so load balancers and round-robin clients move away before new calls "
        "are refused; set it to at least your balancer's health-check interval",
    )
    processes: int = _opt(
        0,
        "serving processes: 1 serves in this process; more run that many worker processes "
        "sharing the ports (SO_REUSEPORT) under a supervisor; 0: one per core this process "
        "may use (its CPU affinity, lowered by a cgroup CPU limit)",
    )
    issuer: str = _opt("accounts-grpc", "JWT iss claim, checked on every token")
    audience: str = _opt("accounts-grpc", "JWT aud claim, checked on every token")
    token_lifetime: int = _opt(86400, "lifetime of a CreateToken JWT, seconds")
    delegation_max_lifetime: int = _opt(
        3600, "the longest lifetime of a delegated token (ExchangeToken, RFC 8693), seconds; "
        "it never outlives the token it was exchanged for either"
    )
    session_ttl: int = _opt(
        30 * 86400, "a session expires this many seconds after its last activity (sliding)"
    )
    request_id_ttl: int = _opt(
        86400,
        "seconds a create's request_id is remembered: a retry within it returns the first "
        "result, a later one creates anew",
    )
    activity_interval: int = _opt(
        60,
        "seconds between writes of a session's or account's activity time "
        "(activity within this window is not written again)",
    )
    signing_alg: str = _opt(
        "ES256",
        "JWT signing algorithm of new keys: ES256 (P-256: about 10x faster to sign than "
        "RS256 here, as fast to verify, shorter tokens) or RS256; a key keeps its own",
    )
    key_encryption_key: str = _opt(
        "",
        "key-encryption key for the signing keys (urlsafe base64, 32 bytes); "
        "empty: read --key-encryption-key-file (created when missing)",
    )
    key_encryption_key_file: str = _opt(
        "",
        "file holding the key-encryption key (SQLite default: accounts.kek beside the database "
        "file, generated when missing; PostgreSQL has no default: set this or "
        "--key-encryption-key, the same on every server)",
    )
    jwt_cache_size: int = _opt(10000, "verified JWTs kept in memory (by raw token, up to exp)")
    jwt_cache_ttl: float = _opt(30.0, "seconds a verified JWT's signature check is reused")
    key_cache_seconds: float = _opt(
        60.0,
        "seconds a server reuses the signing keys it read from the database before reading "
        "them again (a rotation publishes the new key at least this long, plus "
        "--jwks-max-age, before any server signs with it)",
    )
    jwks_max_age: int = _opt(
        30, "Cache-Control max-age of the JWKS (/.well-known/jwks.json), seconds"
    )
    auth_max_failures: int = _opt(
        10,
        "failed client-credential attempts (CreateToken, POST /v1/token) of one client id "
        "from one address within --auth-failure-window before that client is refused at "
        "that address (RESOURCE_EXHAUSTED / 429) for --auth-block-seconds; other clients "
        "there and the same client elsewhere go on. 0 turns the whole attempt limiter off, "
        "the two bounds below included",
    )
    auth_max_failures_per_address: int = _opt(
        100,
        "failed attempts from one address, whatever the client ids, before every client at "
        "that address is refused (stops a scanner trying client ids); many clients may share "
        "one NAT or pod address, so keep it well above --auth-max-failures. 0: no "
        "per-address bound",
    )
    auth_max_failures_per_client: int = _opt(
        100,
        "failed attempts for one client id, from any address, before that client is "
        "refused at every address (bounds a guesser spread over many addresses; someone "
        "who knows the client id can trigger this block on purpose, so keep it well above "
        "--auth-max-failures). 0: no per-client bound",
    )
    auth_failure_window: int = _opt(300, "seconds over which failed attempts are counted")
    auth_block_seconds: int = _opt(
        300, "seconds a client at an address, an address or a client is refused after that"
    )
    trusted_proxies: str = _opt(
        "",
        "comma-separated addresses or networks (CIDR) of the proxies in front of the "
        "server: a call from one of them is from the address its X-Forwarded-For names "
        "(the rate limit counts per address); empty: the peer's own address",
    )
    http_max_body_bytes: int = _opt(1 << 20, "largest accepted HTTP request body, bytes")
    http_max_header_bytes: int = _opt(
        16384, "largest HTTP request head (request line and headers), bytes; more: 431"
    )
    http_max_headers: int = _opt(100, "most header fields in one HTTP request; more: 431")
    http_header_timeout: float = _opt(
        10.0, "seconds a client has to send a request's head, from the connection or the "
        "request's first byte; then the connection is closed (slow clients cannot hold it)"
    )
    http_body_timeout: float = _opt(
        30.0, "seconds a client has to send a request's body once its head is in; then 408"
    )
    http_idle_timeout: float = _opt(
        75.0, "seconds an idle keep-alive HTTP connection stays open"
    )
    tls_cert_file: str = _opt(
        "",
        "PEM certificate chain (the server's certificate first): the gRPC and the HTTP port "
        "speak TLS only, with --tls-key-file; empty: both speak plaintext only (a port is "
        "one or the other, never both)",
    )
    tls_key_file: str = _opt("", "PEM private key (unencrypted) of --tls-cert-file")
    tls_client_ca_file: str = _opt(
        "",
        "PEM CA certificate(s): mutual TLS, every client of either port must present a "
        "certificate signed by one of them (callers still authenticate with a token); needs "
        "--tls-cert-file; empty: no client certificate is asked for",
    )
    cors_allowed_origins: str = _opt(
        "",
        "comma-separated origins (https://app.example.com, as a browser sends Origin) whose "
        "pages may call the REST shim: preflights are answered and responses name the "
        "origin; empty: no CORS headers at all, so browsers refuse cross-origin calls",
    )
    cors_allow_credentials: bool = _opt(
        False,
        "answer those origins with Access-Control-Allow-Credentials: true, for browser "
        "requests sent with credentials (cookies, TLS client certificates, a browser's "
        "stored HTTP authentication); a token in the Authorization header needs none",
    )
    cors_max_age: int = _opt(
        600, "seconds a browser may cache a preflight's answer (Chromium keeps at most 7200)"
    )
    db_pool_size: int = _opt(
        0,
        "database connections kept open per process, reused by every call; 0: as many as "
        "threads may use one at once (unary workers + REST workers + 2), at most 16. Size "
        "PostgreSQL for it: each replica opens at most processes x (db_pool_size + "
        "db_max_overflow) connections, so N replicas need N x that, plus a margin for "
        "migrations and tools, within max_connections (PostgreSQL's default: 100)",
    )
    db_max_overflow: int = _opt(
        0,
        "connections a process may open beyond --db-pool-size under a burst (PostgreSQL); "
        "they are closed again when returned, so keep this 0 and size the pool instead",
    )
    db_pool_timeout: float = _opt(
        5.0,
        "seconds a call waits for a free database connection when all are in use; then it "
        "gets UNAVAILABLE (DATABASE_BUSY, retry in 1 s)",
    )
    log_level: str = _opt("INFO", "log level: DEBUG, INFO, WARNING, ERROR")
    log_json: bool = _opt(False, "log one JSON object per line instead of text")
    otlp_endpoint: str = _opt(
        "",
        "OpenTelemetry tracing: the OTLP/HTTP collector to send spans to, e.g. "
        "http://otel-collector:4318 (they go to its /v1/traces); empty: the standard "
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT, and without "
        "those no tracing at all. Service name, sampler, headers: the OTEL_* variables",
    )

    def __post_init__(self) -> None:
        problems = list(_problems(self))
        if problems:
            raise SettingsError("; ".join(problems))

    # -- derived ---------------------------------------------------------------------------
    def proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """``trusted_proxies`` parsed (ValueError if it does not parse)."""
        return tuple(ipaddress.ip_network(part.strip(), strict=False)
                     for part in self.trusted_proxies.split(",") if part.strip())

    @property
    def max_concurrent_rpcs(self) -> int:
        """Never more than the workers: a call admitted beyond them would queue for a
        thread that an open stream may hold for ever (a hang, not RESOURCE_EXHAUSTED)."""
        return min(self.grpc_max_concurrent_rpcs or self.grpc_workers, self.grpc_workers)

    def pool_size(self) -> int:
        """``db_pool_size`` resolved. 0: the threads of one process that may hold a
        connection at once (the unary workers, the REST shim's workers, a couple for
        background work), at most 16: beyond that the calls are bound by the GIL rather
        than the database, so more connections would only idle (and count against
        PostgreSQL's max_connections on every process of every replica)."""
        if self.db_pool_size:
            return self.db_pool_size
        rest = self.rest_workers() if self.http_port >= 0 else 0
        return min(self.max_concurrent_rpcs + rest + 2, 16)

    def rest_workers(self) -> int:
        """Threads the REST shim runs its calls on."""
        return max(4, min(32, self.grpc_workers))

    def cors_origins(self) -> tuple[str, ...]:
        """``cors_allowed_origins`` as a tuple (checked by the settings' own checks)."""
        return tuple(o.strip() for o in self.cors_allowed_origins.split(",") if o.strip())

    def process_count(self) -> int:
        """``processes`` resolved: 0 is the number of cores this process may use, the
        cores it may run on, fewer when a cgroup CPU limit (a container's) allows less."""
        if self.processes:
            return self.processes
        return usable_cores()

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def sqlite_path(self) -> Path | None:
        if not self.is_sqlite:
            return None
        path = self.database_url.split(":///", 1)[1] if ":///" in self.database_url else ""
        if not path or path == ":memory:":
            return None
        return Path(path.split("?", 1)[0])

    def kek_path(self) -> Path:
        if self.key_encryption_key_file:
            return Path(self.key_encryption_key_file)
        db = self.sqlite_path()
        return (db.parent if db else Path("data")) / "accounts.kek"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    # -- flags and environment -------------------------------------------------------------
    @staticmethod
    def env_name(name: str) -> str:
        return "ACCOUNTS_" + name.upper()

    @staticmethod
    def flag(name: str) -> str:
        return "--" + name.replace("_", "-")

    @classmethod
    def add_arguments(
        cls, parser: argparse.ArgumentParser, names: Sequence[str] | None = None
    ) -> list[argparse.Action]:
        """A flag for each setting (of ``names``: those a command uses); the flags."""
        actions = []
        for f in dataclasses.fields(cls):
            if names is not None and f.name not in names:
                continue
            flag = cls.flag(f.name)
            env = cls.env_name(f.name)
            help_ = f"{f.metadata['help']} [env {env}; default {f.default!r}]"
            if f.type in (bool, "bool"):
                actions.append(parser.add_argument(
                    flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                    help=help_))
            else:
                actions.append(parser.add_argument(
                    flag, dest=f.name, default=None, help=help_,
                    metavar=f.metadata.get("metavar") or f.name.upper()))
        return actions

    @classmethod
    def load(cls, args: argparse.Namespace | None = None,
             env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw: Any = None
            if args is not None and getattr(args, f.name, None) is not None:
                raw = getattr(args, f.name)
            elif cls.env_name(f.name) in env:
                raw = env[cls.env_name(f.name)]
            if f.name in overrides:
                raw = overrides[f.name]
            if raw is None:
                continue
            values[f.name] = _coerce(f, raw)
        try:
            return cls(**values)
        except SettingsError as e:
            raise SystemExit(f"accounts-grpc: {e}") from None


class SettingsError(ValueError):
    """A setting has a value the server cannot run with."""


class StartupError(SystemExit):
    """The process cannot start with a setting's value: the database it names is down,
    its port is in use, its key does not decrypt. Uncaught, it exits with status 1 and
    one line, ``accounts-grpc: --flag (ACCOUNTS_VARIABLE): what is wrong``, and no
    traceback (a SystemExit, as the settings' own checks are)."""

    def __init__(self, setting: str, problem: str) -> None:
        self.setting = setting
        self.problem = " ".join(problem.split())  # one line, whatever the reason holds
        super().__init__(f"accounts-grpc: {Settings.flag(setting)} "
                         f"({Settings.env_name(setting)}): {self.problem}")


#: the database URLs the server can use (postgres:// and postgresql:// use psycopg 3)
DATABASE_SCHEMES = ("sqlite", "sqlite+pysqlite", "postgresql", "postgres",
                    "postgresql+psycopg")
DATABASE_URL_FORMS = "sqlite:///<file> or postgresql://<user>@<host>/<database>"


def hide_password(url: str) -> str:
    """``url`` with the password of its user, if any, as ``***`` (for messages)."""
    return re.sub(r"^([^:/]*://[^:/@]*:)[^/]*@", r"\1***@", url)


def _database_url_problem(url: str) -> str | None:
    scheme, sep, _rest = url.partition("://")
    if not sep or not scheme:
        return f"must be a URL, {DATABASE_URL_FORMS}, not {hide_password(url)!r}"
    if scheme not in DATABASE_SCHEMES:
        return (f"has an unknown scheme {scheme!r} ({hide_password(url)!r}): use "
                f"{DATABASE_URL_FORMS}")
    return None


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _problems(s: Settings) -> Iterator[str]:
    def need(ok: bool, name: str, what: str) -> Iterator[str]:
        if not ok:
            yield f"{name} ({Settings.env_name(name)}) must be {what}, not {getattr(s, name)!r}"

    yield from need(bool(s.database_url), "database_url", "set")
    url_problem = _database_url_problem(s.database_url) if s.database_url else None
    if url_problem:
        yield f"database_url ({Settings.env_name('database_url')}) {url_problem}"
    yield from need(0 <= s.grpc_port <= 65535, "grpc_port", "a port (0 picks a free one)")
    yield from need(-1 <= s.http_port <= 65535, "http_port", "a port, 0 or -1")
    yield from need(s.grpc_workers >= 1, "grpc_workers", "at least 1")
    yield from need(s.grpc_max_concurrent_rpcs >= 0, "grpc_max_concurrent_rpcs", ">= 0")
    yield from need(s.grpc_max_queued_calls >= 0, "grpc_max_queued_calls", ">= 0")
    yield from need(s.grpc_max_streams >= 1, "grpc_max_streams", "at least 1")
    yield from need(s.grpc_max_streams_per_peer >= 1, "grpc_max_streams_per_peer", "at least 1")
    yield from need(s.grpc_message_timeout > 0, "grpc_message_timeout", "more than 0 seconds")
    yield from need(s.grpc_max_unsent >= 1, "grpc_max_unsent", "at least 1")
    yield from need(s.grpc_max_unsent_per_peer >= 1, "grpc_max_unsent_per_peer", "at least 1")
    yield from need(s.shutdown_grace >= 0, "shutdown_grace", ">= 0")
    yield from need(0 < s.feed_poll_interval <= 60, "feed_poll_interval", "in (0, 60]")
    yield from need(s.watch_recheck_interval > 0, "watch_recheck_interval", "> 0")
    yield from need(s.drain_delay >= 0, "drain_delay", ">= 0")
    yield from need(s.processes >= 0, "processes", ">= 0 (0: one per core)")
    yield from need(bool(s.issuer), "issuer", "set")
    yield from need(bool(s.audience), "audience", "set")
    # expires_in is an int32 on the wire
    yield from need(1 <= s.token_lifetime <= 366 * 86400, "token_lifetime",
                    "between 1 and 31622400 seconds")
    yield from need(1 <= s.delegation_max_lifetime <= 366 * 86400, "delegation_max_lifetime",
                    "between 1 and 31622400 seconds")
    yield from need(s.session_ttl >= 1, "session_ttl", "at least 1 second")
    yield from need(s.activity_interval >= 0, "activity_interval", ">= 0")
    yield from need(s.signing_alg in ("RS256", "ES256"), "signing_alg", "RS256 or ES256")
    yield from need(s.jwt_cache_size >= 0, "jwt_cache_size", ">= 0")
    yield from need(s.jwt_cache_ttl >= 0, "jwt_cache_ttl", ">= 0")
    yield from need(0 < s.key_cache_seconds <= 3600, "key_cache_seconds",
                    "more than 0 and at most 3600 seconds")
    yield from need(0 <= s.jwks_max_age <= 3600, "jwks_max_age", "between 0 and 3600 seconds")
    yield from need(s.auth_max_failures >= 0, "auth_max_failures", ">= 0 (0: no limit)")
    yield from need(s.auth_max_failures_per_address >= 0, "auth_max_failures_per_address",
                    ">= 0 (0: no per-address bound)")
    yield from need(s.auth_max_failures_per_client >= 0, "auth_max_failures_per_client",
                    ">= 0 (0: no per-client bound)")
    yield from need(s.auth_failure_window >= 1, "auth_failure_window", "at least 1 second")
    yield from need(s.auth_block_seconds >= 1, "auth_block_seconds", "at least 1 second")
    yield from need(s.http_max_body_bytes >= 1024, "http_max_body_bytes", "at least 1024")
    yield from need(s.http_max_header_bytes >= 1024, "http_max_header_bytes", "at least 1024")
    yield from need(s.http_max_headers >= 8, "http_max_headers", "at least 8")
    for name in ("http_header_timeout", "http_body_timeout", "http_idle_timeout"):
        yield from need(getattr(s, name) > 0, name, "more than 0 seconds")
    yield from need(s.db_pool_size >= 0, "db_pool_size", ">= 0 (0: sized from the workers)")
    yield from need(s.db_max_overflow >= 0, "db_max_overflow", ">= 0")
    yield from need(s.db_pool_timeout > 0, "db_pool_timeout", "more than 0 seconds")
    yield from need(s.request_id_ttl >= 3600, "request_id_ttl", "at least 3600 (AIP-155)")
    try:
        s.proxy_networks()
    except ValueError:
        yield from need(False, "trusted_proxies", "addresses or CIDR networks, comma-separated")
    if bool(s.tls_cert_file) != bool(s.tls_key_file):
        given, missing = (("tls_cert_file", "tls_key_file") if s.tls_cert_file
                          else ("tls_key_file", "tls_cert_file"))
        yield from need(False, missing,
                        f"set too when {Settings.flag(given)} is (both or neither)")
    yield from need(bool(s.tls_cert_file) or not s.tls_client_ca_file, "tls_client_ca_file",
                    "empty without --tls-cert-file and --tls-key-file (mutual TLS is TLS too)")
    bad = [o for o in s.cors_origins() if not _is_origin(o)]
    if bad:
        yield (f"cors_allowed_origins ({Settings.env_name('cors_allowed_origins')}) must be "
               "origins as a browser sends them (scheme://host or scheme://host:port, "
               "lowercase, no default port, path or trailing slash; never *), "
               f"comma-separated, not {', '.join(bad)!r}")
    yield from need(0 <= s.cors_max_age <= 86400, "cors_max_age", "between 0 and 86400 seconds")
    yield from need(s.log_level.upper() in LOG_LEVELS, "log_level", " or ".join(LOG_LEVELS))
    yield from need(not s.otlp_endpoint or re.match(r"https?://[^/?#\s]+", s.otlp_endpoint)
                    is not None, "otlp_endpoint", "an http:// or https:// URL, or empty")


#: an origin as the Fetch standard serializes it (Origin header): no path, default port left out
_ORIGIN = re.compile(r"(https?)://(\[[0-9a-f:.]+\]|[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?)"
                     r"(?::([1-9][0-9]{0,4}))?")
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def _is_origin(value: str) -> bool:
    m = _ORIGIN.fullmatch(value)
    if m is None:
        return False
    return m[3] is None or (int(m[3]) <= 65535 and _DEFAULT_PORTS[m[1]] != m[3])


@dataclass(frozen=True)
class TlsMaterial:
    """The PEM files the ``--tls-*`` settings name, read and checked (``read_tls``)."""

    cert_chain: bytes
    private_key: bytes
    #: the CAs client certificates must be signed by (mutual TLS); None: none is asked for
    client_ca: bytes | None


def read_tls(settings: Settings) -> TlsMaterial | None:
    """The TLS files, read and checked together, or None (plaintext). A file missing or
    unreadable, one that holds no PEM certificate (or key), an encrypted key, or a key
    that is not the certificate's is a StartupError naming its setting: found at start,
    not at a client's first handshake (where grpc would only log it)."""
    if not settings.tls_cert_file:
        return None
    import ssl

    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    cert_path, key_path = settings.tls_cert_file, settings.tls_key_file
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    cert_pem = _read_file("tls_cert_file", cert_path)
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise StartupError("tls_cert_file", f"{cert_path} holds no PEM certificate") from None
    key_pem = _read_file("tls_key_file", key_path)
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:  # it wants a password
        raise StartupError("tls_key_file", f"{key_path} is encrypted: the server needs the "
                           "key unencrypted (protect the file instead)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise StartupError("tls_key_file", f"{key_path} holds no PEM private key") from None
    if key.public_key().public_bytes(*spki) != chain[0].public_key().public_bytes(*spki):
        raise StartupError("tls_key_file", f"{key_path} is not the key of the certificate "
                           f"in {cert_path} (the first one there must be the server's)")
    client_ca = None
    if settings.tls_client_ca_file:
        client_ca = _read_file("tls_client_ca_file", settings.tls_client_ca_file)
        try:
            x509.load_pem_x509_certificates(client_ca)
        except ValueError:
            raise StartupError("tls_client_ca_file", f"{settings.tls_client_ca_file} holds "
                               "no PEM certificate") from None
    # what the HTTP side (Python's ssl, OpenSSL) will do with them, once, now
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert_path, key_path)
    except (ssl.SSLError, OSError) as e:
        raise StartupError("tls_cert_file", f"{cert_path} with {key_path} cannot serve "
                           f"TLS: {e}") from None
    if client_ca is not None:
        try:
            context.load_verify_locations(cadata=client_ca.decode("ascii", "replace"))
        except (ssl.SSLError, ValueError) as e:
            raise StartupError("tls_client_ca_file", f"{settings.tls_client_ca_file} "
                               f"cannot verify clients: {e}") from None
    return TlsMaterial(cert_pem, key_pem, client_ca)


def _read_file(setting: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise StartupError(setting, f"cannot read {path}: {e.strerror or e}") from None


def _coerce(f: dataclasses.Field[Any], raw: Any) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    if not isinstance(raw, str):
        return raw
    try:
        if kind == "bool":
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError as e:
        raise SystemExit(f"accounts-grpc: bad value {raw!r} for {f.name}: {e}") from None
    return raw


def usable_cores(cgroup_root: Path = Path("/sys/fs/cgroup"),
                 proc_cgroup: Path = Path("/proc/self/cgroup")) -> int:
    """The cores this process may use: those it may run on (its affinity), or fewer when
    its cgroup's CPU quota allows less (cgroup v2 ``cpu.max``, or v1 ``cpu.cfs_quota_us``
    over ``cpu.cfs_period_us``), rounded up. A container limited to 2 CPUs on a 64-core
    node gets 2, not 64 (Python's own count, before 3.13, sees the node)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
    quota = _cgroup_quota(cgroup_root, proc_cgroup)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def _cgroup_quota(root: Path, proc_cgroup: Path) -> float | None:
    """The CPU quota in cores, or None when there is none (or it cannot be read)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _id, controllers, path = line.split(":", 2)
        rel = path.lstrip("/")
        if controllers == "":  # cgroup v2: "0::/path"
            for d in (root / rel, root):  # inside a cgroup namespace the path is "/"
                try:
                    quota, period = (d / "cpu.max").read_text().split()
                except (OSError, ValueError):
                    continue
                return None if quota == "max" else int(quota) / int(period)
        elif "cpu" in controllers.split(","):  # cgroup v1
            for d in (root / controllers / rel, root / "cpu" / rel, root / "cpu"):
                try:
                    quota_us = int((d / "cpu.cfs_quota_us").read_text())
                    period_us = int((d / "cpu.cfs_period_us").read_text())
                except (OSError, ValueError):
                    continue
                return None if quota_us <= 0 else quota_us / period_us
    return None
