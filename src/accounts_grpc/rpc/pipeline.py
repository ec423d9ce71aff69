"""What happens around every RPC, once, for gRPC and REST alike.

errors → authentication → authorization → the request's strings → the servicer, then
one log line and (gRPC) the metrics. The gRPC interceptor and the REST shim both call
``Pipeline.call``; servicers never read headers or the gRPC context (they take the
Principal from a contextvar). The REST shim runs ``admit`` (authentication and
authorization alone) before it reads a request body, so a stranger's body is never read.

Every failure a client can cause is a status with details: typed domain errors as they
say; a value the database driver refuses (``DataError``) INVALID_ARGUMENT; the
database down or busy UNAVAILABLE; anything else INTERNAL, logged without the
statement's parameters (the engine hides them), and nothing of it on the wire.
"""

from __future__ import annotations

import ipaddress
import logging
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import unquote

from google.protobuf import duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

from accounts_grpc.auth.authenticate import Authenticator
from accounts_grpc.domain.call import (
    REQUEST_ID_KEY,
    CallInfo,
    current_call,
    request_id,
    reset_call,
    set_call,
)
from accounts_grpc.domain.errors import DomainError, PermissionDenied
from accounts_grpc.domain.principal import (
    Principal,
    maybe_principal,
    reset_principal,
    set_principal,
)
from accounts_grpc.rpc import metrics
from accounts_grpc.rpc.inputs import check_strings
from accounts_grpc.rpc.registry import AccessRule
from accounts_grpc.rpc.status import internal_status, status_for, status_from_error
from accounts_grpc.store import errors as db

log = logging.getLogger("accounts_grpc.calls")
errlog = logging.getLogger("accounts_grpc.errors")

__all__ = ["REQUEST_ID_KEY", "Admission", "CallFailed", "CallInfo", "Pipeline",
           "client_address", "current_call", "peer_address", "request_id"]


class CallFailed(Exception):
    """The call ended with a non-OK status; ``status`` is what goes on the wire."""

    def __init__(self, status: status_pb2.Status) -> None:
        super().__init__(status.message)
        self.status = status


def peer_address(peer: str) -> str:
    """'ipv4:127.0.0.1:5555' / 'ipv6:%5B::1%5D:5555' / '127.0.0.1' → the bare address."""
    if peer.startswith("ipv4:"):
        return peer[5:].rsplit(":", 1)[0]
    if peer.startswith("ipv6:"):
        return unquote(peer[5:]).rsplit(":", 1)[0].strip("[]")
    return peer


Networks = Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[::1]:443"
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # "203.0.113.7:443"
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def client_address(peer: str, forwarded_for: str | None, trusted: Networks) -> str:
    """The client's address: the peer's, unless the peer is a trusted proxy; then the
    nearest address in X-Forwarded-For, read from the right, that is not a trusted
    proxy (each proxy appends the address it was called from, so only the entries
    trusted proxies appended can be believed; whatever a client wrote to the left of
    them cannot). An entry that is not an address stops the walk at the last one
    believed."""
    if not trusted or not forwarded_for:
        return peer
    current = _ip(peer)
    address = peer
    for hop in reversed(forwarded_for.split(",")):
        if current is None or not any(current in net for net in trusted):
            break
        current = _ip(hop)
        if current is None:
            break
        address = str(current)
    return address


class Admission:
    """A call already authenticated and authorized by ``Pipeline.admit``."""

    __slots__ = ("principal",)

    def __init__(self, principal: Principal | None) -> None:
        self.principal = principal


class Pipeline:
    def __init__(self, authenticator: Authenticator, rules: Mapping[str, AccessRule],
                 trusted_proxies: Networks = ()) -> None:
        self._authn = authenticator
        self._rules = dict(rules)
        self._trusted = tuple(trusted_proxies)

    def client_address(self, peer: str, metadata: Mapping[str, str]) -> str:
        """The one client address of a call, for both transports: the peer's own, unless
        the peer is one of ``--trusted-proxies`` (then the nearest untrusted hop of
        X-Forwarded-For)."""
        return client_address(peer_address(peer), metadata.get("x-forwarded-for"),
                              self._trusted)

    def _admitted(self, method: str, metadata: Mapping[str, str]) -> Principal | None:
        rule = self._rules.get(method)
        if rule is None:
            raise PermissionDenied(
                "this RPC declares no access rule and is denied", reason="NO_ACCESS_RULE"
            )
        if rule.public:
            return None
        principal = self._authn.authenticate(metadata.get("authorization"))
        if rule.roles.isdisjoint(principal.roles):
            raise PermissionDenied(
                f"this RPC needs one of the roles {sorted(rule.roles)}",
                reason="ROLE_REQUIRED",
                metadata={"roles": ",".join(sorted(rule.roles))},
            )
        return principal

    def admit(self, method: str, metadata: Mapping[str, str], peer: str,
              transport: str) -> Admission:
        """Authentication and authorization alone, before the request exists; raises
        CallFailed (logged and counted as the call's outcome). ``call(...,
        admitted=...)`` then runs the rest without authenticating again."""
        return self.call(method, None, metadata, peer, transport,  # type: ignore[no-any-return]
                         lambda _request: Admission(maybe_principal()), observe_ok=False)

    def call(
        self,
        method: str,
        request: Any,
        metadata: Mapping[str, str],
        peer: str,
        transport: str,
        handler: Callable[[Any], Any],
        *,
        admitted: Admission | None = None,
        build: Callable[[], Any] | None = None,
        observe_ok: bool = True,
    ) -> Any:
        """Run one call; raises CallFailed. ``build``, when given, makes the request once
        the caller is admitted (the REST shim transcodes nothing a stranger sends)."""
        start = time.perf_counter()
        code = "OK"
        principal: Principal | None = None
        token = None
        # the edges (interceptor, REST shim) have put the id they echo in the metadata
        # already; a caller that has not gets one made here
        info = CallInfo(method, transport, self.client_address(peer, metadata), metadata,
                        request_id(metadata.get(REQUEST_ID_KEY)))
        ctok = set_call(info)
        # a gRPC call is counted here, as go-grpc-prometheus counts it (a stream by
        # ``stream``); a REST request once, as an HTTP request naming its RPC (gateway.py)
        counted = (metrics.rpc(method).begin() if transport == metrics.GRPC and observe_ok
                   else None)
        try:
            principal = (self._admitted(method, metadata) if admitted is None
                         else admitted.principal)
            if principal is not None:
                token = set_principal(principal)
            if build is not None:
                request = build()
            if isinstance(request, Message):
                check_strings(request)
            return handler(request)
        except Exception as e:
            failed = _failed(method, e)
            code = code_pb2.Code.Name(failed.status.code)
            raise failed from None
        finally:
            if token is not None:
                reset_principal(token)
            reset_call(ctok)
            elapsed = time.perf_counter() - start
            if counted is not None:
                counted.end(code, elapsed)
            if code != "OK" or observe_ok:
                _observe(info, code, elapsed, principal)


    def stream(self, method: str, request: Any, metadata: Mapping[str, str], peer: str,
               transport: str, handler: Callable[[Any], Iterable[Any]], *,
               build: Callable[[], Any] | None = None) -> Iterator[Any]:
        """A server stream, run as ``call`` runs a unary call: admitted, then
        ``handler(request)`` (which checks what it must and returns the stream's
        messages) with the principal set; a failure so far is raised here. Each later
        message is made with the principal and the call set again, and a failure then
        is raised by the iterator, as CallFailed mapped as ``call`` maps it. ``None``
        from the handler is a heartbeat: the transport checks that its client is still
        there. The stream's one log line is written when it ends."""
        start = time.perf_counter()
        seen: list[Principal | None] = []
        # a gRPC stream is counted from here to its end, each message sent as it goes
        counted = metrics.rpc(method).begin() if transport == metrics.GRPC else None

        def begin(req: Any) -> Iterator[Any]:
            seen.append(maybe_principal())
            return iter(handler(req))

        try:
            messages = self.call(method, request, metadata, peer, transport, begin,
                                 build=build, observe_ok=False)
        except CallFailed as e:
            if counted is not None:
                counted.end(code_pb2.Code.Name(e.status.code), time.perf_counter() - start)
            raise
        info = CallInfo(method, transport, self.client_address(peer, metadata), metadata,
                        request_id(metadata.get(REQUEST_ID_KEY)))
        return self._streamed(info, seen[0], messages, start, counted)

    @staticmethod
    def _streamed(info: CallInfo, principal: Principal | None, messages: Iterator[Any],
                  start: float, counted: metrics.Rpc | None) -> Iterator[Any]:
        code = "OK"
        try:
            while True:
                ctok = set_call(info)
                token = set_principal(principal) if principal is not None else None
                try:
                    message = next(messages, _END)
                except Exception as e:
                    failed = _failed(info.method, e)
                    code = code_pb2.Code.Name(failed.status.code)
                    raise failed from None
                finally:
                    if token is not None:
                        reset_principal(token)
                    reset_call(ctok)
                if message is _END:
                    return
                if counted is not None and message is not None:  # None: a heartbeat
                    counted.sent.inc()
                yield message
        except GeneratorExit:
            code = "CANCELLED"  # the client went away, or the transport stopped reading
            raise
        finally:
            close = getattr(messages, "close", None)
            if close is not None:
                close()
            if counted is not None:
                counted.end(code, time.perf_counter() - start)
            _observe(info, code, time.perf_counter() - start, principal)


_END = object()


def _failed(method: str, e: Exception) -> CallFailed:
    """The status a failed call answers (``call`` and ``stream`` alike), logged as it
    must be: typed domain errors as they say, the database's troubles as retryable or
    as the caller's value, anything else INTERNAL with nothing of it on the wire."""
    if isinstance(e, DomainError):
        return CallFailed(status_from_error(e))
    if isinstance(e, CallFailed):
        return e
    if isinstance(e, NotImplementedError):  # a servicer method still inherited from the base
        return CallFailed(
            status_for("UNIMPLEMENTED", f"{method} is not implemented", "UNIMPLEMENTED"))
    if isinstance(e, db.ValueRefused):
        # a value the driver or the database refused (out of range, bad encoding): the
        # caller's mistake, so say so; the log line names no value
        errlog.warning("the database refused a value in %s: %s", method, db.describe(e))
        return CallFailed(status_for("INVALID_ARGUMENT", "a value of the request cannot be "
                                     "stored", "INVALID_VALUE"))
    if isinstance(e, db.PoolExhausted):  # no pooled connection within db_pool_timeout
        errlog.warning("database pool exhausted in %s", method)
        return CallFailed(status_for(
            "UNAVAILABLE", "the database is busy; retry later", "DATABASE_BUSY",
            extra=[error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=1))]))
    if isinstance(e, db.DatabaseUnavailable):  # the database is down or busy: retryable
        errlog.warning("database unavailable in %s: %s", method, db.describe(e))
        return CallFailed(status_for("UNAVAILABLE", "the database is unavailable; retry later",
                                     "DATABASE_UNAVAILABLE"))
    if isinstance(e, db.DatabaseError):
        errlog.error("unexpected database error in %s: %s\n%s", method, db.describe(e),
                     "".join(traceback.format_tb(e.__traceback__)))
        return CallFailed(internal_status())
    errlog.error("unexpected error in %s", method, exc_info=e)
    return CallFailed(internal_status())


def _observe(info: CallInfo, code: str, elapsed: float, principal: Principal | None) -> None:
    """The call's one log line. The request id is safe to log as it is
    (``domain.call.request_id`` lets only visible ASCII through), and so is the peer
    (an IP address, or grpcio's own peer string)."""
    transport, method = info.transport, info.method
    if log.isEnabledFor(logging.INFO):
        log.info(
            "%s %s %s %.1fms caller=%s request_id=%s peer=%s",
            transport,
            method,
            code,
            elapsed * 1000,
            principal.user_id if principal else "-",
            info.request_id,
            info.peer or "-",
            extra={
                "rpc_method": method,
                "rpc_code": code,
                "duration_ms": round(elapsed * 1000, 3),
                "caller": principal.user_id if principal else None,
                "transport": transport,
                "request_id": info.request_id,
                "peer": info.peer or None,
            },
        )
