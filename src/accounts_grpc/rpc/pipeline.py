"""What happens around every RPC, once, for gRPC and REST alike.

errors → authentication → authorization → the servicer, then one log line and the
metrics. The gRPC interceptor and the REST shim both call ``Pipeline.call``; servicers
never read headers or the gRPC context (they take the Principal from a contextvar).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
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

__all__ = ["CallFailed", "CallInfo", "Pipeline", "current_call", "peer_address"]


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


class Pipeline:
    def __init__(self, authenticator: Authenticator, rules: Mapping[str, AccessRule]) -> None:
        self._authn = authenticator
        self._rules = dict(rules)

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
        ctok = set_call(CallInfo(method, transport, peer_address(peer), metadata))
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
