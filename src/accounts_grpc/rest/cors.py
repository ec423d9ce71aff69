"""CORS (the Fetch standard's protocol) for the REST shim, by an allow-list of exact origins.

A page of another origin may read the shim's answers only if the shim says so:

- A *preflight* (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``), which
  a browser sends before any call that is not "simple" (one with ``Authorization`` or a
  JSON body), is answered before routing to a call: no authentication (a browser sends no
  credentials on a preflight), no call, so no log line and no failed-login count. From an
  allowed origin to a path the shim serves: 204 with that origin, the path's own methods
  (those a 405's ``Allow`` names), the requested headers the shim reads, and the max-age.
  Anything else is no preflight of ours: it is answered as any ``OPTIONS`` is (405 with
  ``Allow``), without CORS headers, and the browser refuses the call.
- Every other response to an allowed origin names it in ``Access-Control-Allow-Origin``
  (the origin itself, never ``*``), with ``Access-Control-Allow-Credentials`` if so
  configured, and the response headers a page may read (``Access-Control-Expose-Headers``).
- Every response carries ``Vary: Origin``, so a shared cache never hands one origin's
  answer to another.

Credentials are off by default: the shim authenticates by a token in the
``Authorization`` header, which the page sets itself and which needs only to be allowed
as a request header. ``Allow-Credentials`` is for what a browser adds on its own
(cookies, TLS client certificates, stored HTTP authentication): with mutual TLS to
browsers, turn it on.

Written here rather than taken from a library: Starlette's CORSMiddleware would bring
Starlette into the service, and the small ASGI middlewares answer every preflight with
one fixed list of methods, where this one answers with each path's own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from accounts_grpc.config import Settings
from accounts_grpc.rest.asgi import Scope, Send
from accounts_grpc.rest.errors import Headers

#: request headers a page may send (lowercase, as browsers list them): those the shim
#: reads, and the safelisted ones a page may send with a value the safelist refuses
REQUEST_HEADERS = frozenset({
    "authorization", "content-type", "x-request-id", "traceparent", "tracestate",
    "accept", "accept-language", "content-language",
})
#: grpc-gateway's ``Grpc-Metadata-<name>``: passed on to the call as gRPC metadata
METADATA_PREFIX = "grpc-metadata-"
#: response headers a page may read besides the safelisted ones (Content-Type, ...)
EXPOSE_HEADERS = b"x-request-id, retry-after, www-authenticate, allow"
VARY = (b"vary", b"origin")
PREFLIGHT_VARY = (b"vary",
                  b"origin, access-control-request-method, access-control-request-headers")


def _granted(asked: str) -> list[str]:
    """The headers of an ``Access-Control-Request-Headers`` list that a page may send."""
    names = (name.strip().lower() for name in asked.split(","))
    return [n for n in names if n in REQUEST_HEADERS
            or (n.startswith(METADATA_PREFIX) and len(n) > len(METADATA_PREFIX))]


@dataclass(frozen=True)
class CorsPolicy:
    """The origins whose pages may call the shim, and how they are answered."""

    origins: frozenset[bytes]
    allow_credentials: bool = False
    max_age: int = 600

    @classmethod
    def from_settings(cls, settings: Settings) -> CorsPolicy | None:
        """The policy of ``--cors-*``; None when no origin is allowed (no CORS at all)."""
        origins = settings.cors_origins()
        if not origins:
            return None
        return cls(frozenset(o.encode() for o in origins), settings.cors_allow_credentials,
                   settings.cors_max_age)

    def _allowed(self, origin: bytes | None) -> Headers:
        if origin is None or origin not in self.origins:
            return []
        headers = [(b"access-control-allow-origin", origin)]
        if self.allow_credentials:
            headers.append((b"access-control-allow-credentials", b"true"))
        return headers

    def preflight(self, scope: Scope, methods: Callable[[], Sequence[str]]) -> Headers | None:
        """The headers of the 204 that answers ``scope`` if it is a preflight from an
        allowed origin to a path that ``methods`` (its methods) serves; else None."""
        if scope["method"] != "OPTIONS":
            return None
        origin: bytes | None = None
        asked_method: bytes | None = None
        asked_headers: list[str] = []
        for k, v in scope["headers"]:
            if k == b"origin" and origin is None:
                origin = v
            elif k == b"access-control-request-method":
                asked_method = v
            elif k == b"access-control-request-headers":
                asked_headers.append(v.decode("latin-1"))
        headers = self._allowed(origin)
        served = methods() if headers and asked_method is not None else ()
        if not served:
            return None
        headers.append((b"access-control-allow-methods", ", ".join(served).encode()))
        granted = _granted(",".join(asked_headers))
        if granted:
            headers.append((b"access-control-allow-headers", ", ".join(granted).encode()))
        headers += [(b"access-control-max-age", str(self.max_age).encode()), PREFLIGHT_VARY]
        return headers

    def wrap(self, scope: Scope, send: Send) -> Send:
        """``send`` adding to the response what CORS asks for ``scope``'s origin."""
        origin = next((v for k, v in scope["headers"] if k == b"origin"), None)
        extra = self._allowed(origin)
        if extra:
            extra.append((b"access-control-expose-headers", EXPOSE_HEADERS))
        extra.append(VARY)

        async def cors_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        return cors_send
