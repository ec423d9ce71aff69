"""What happens around every RPC, once, for gRPC and REST alike.

errors → authentication → authorization → the servicer, then one log line and the
metrics. The gRPC interceptor and the REST shim both call ``Pipeline.call``; servicers
never read headers or the gRPC context (they take the Principal from a contextvar).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote

from google.rpc import code_pb2, status_pb2
from sqlalchemy import exc as sa_exc

from accounts_grpc.auth.authenticate import Authenticator
from accounts_grpc.domain.call import CallInfo, current_call, reset_call, set_call
from accounts_grpc.domain.errors import DomainError, PermissionDenied
from accounts_grpc.domain.principal import Principal, reset_principal, set_principal
from accounts_grpc.rpc import metrics
from accounts_grpc.rpc.registry import AccessRule
from accounts_grpc.rpc.status import internal_status, status_for, status_from_error

log = logging.getLogger("accounts_grpc.calls")
errlog = logging.getLogger("accounts_grpc.errors")

__all__ = ["CallFailed", "CallInfo", "Pipeline", "client_address", "current_call",
           "peer_address"]


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


class Pipeline:
    def __init__(self, authenticator: Authenticator, rules: Mapping[str, AccessRule],
                 trusted_proxies: Networks = ()) -> None:
        self._authn = authenticator
        self._rules = dict(rules)
        self._trusted = tuple(trusted_proxies)

    def call(
        self,
        method: str,
        request: Any,
        metadata: Mapping[str, str],
        peer: str,
        transport: str,
        handler: Callable[[Any], Any],
    ) -> Any:
        start = time.perf_counter()
        code = "OK"
        principal: Principal | None = None
        token = None
        address = client_address(peer_address(peer), metadata.get("x-forwarded-for"),
                                 self._trusted)
        ctok = set_call(CallInfo(method, transport, address, metadata))
        try:
            rule = self._rules.get(method)
            if rule is None:
                raise PermissionDenied(
                    "this RPC declares no access rule and is denied", reason="NO_ACCESS_RULE"
                )
            if not rule.public:
                principal = self._authn.authenticate(metadata.get("authorization"))
                if rule.roles.isdisjoint(principal.roles):
                    raise PermissionDenied(
                        f"this RPC needs one of the roles {sorted(rule.roles)}",
                        reason="ROLE_REQUIRED",
                        metadata={"roles": ",".join(sorted(rule.roles))},
                    )
                token = set_principal(principal)
            return handler(request)
        except DomainError as e:
            code = e.code
            raise CallFailed(status_from_error(e)) from None
        except CallFailed as e:
            code = code_pb2.Code.Name(e.status.code)
            raise
        except NotImplementedError:  # a servicer method still inherited from the generated base
            code = "UNIMPLEMENTED"
            raise CallFailed(
                status_for("UNIMPLEMENTED", f"{method} is not implemented", "UNIMPLEMENTED")
            ) from None
        except sa_exc.OperationalError:  # the database is down or busy: retryable, not a bug
            code = "UNAVAILABLE"
            errlog.warning("database unavailable in %s", method, exc_info=True)
            raise CallFailed(
                status_for("UNAVAILABLE", "the database is unavailable; retry later",
                           "DATABASE_UNAVAILABLE")
            ) from None
        except Exception:
            code = "INTERNAL"
            errlog.exception("unexpected error in %s", method)
            raise CallFailed(internal_status()) from None
        finally:
            if token is not None:
                reset_principal(token)
            reset_call(ctok)
            elapsed = time.perf_counter() - start
            metrics.observe(transport, method, code, elapsed)
            if log.isEnabledFor(logging.INFO):
                log.info(
                    "%s %s %s %.1fms caller=%s",
                    transport,
                    method,
                    code,
                    elapsed * 1000,
                    principal.user_id if principal else "-",
                    extra={
                        "rpc_method": method,
                        "rpc_code": code,
                        "duration_ms": round(elapsed * 1000, 3),
                        "caller": principal.user_id if principal else None,
                        "transport": transport,
                    },
                )
