"""What the REST shim's ASGI handlers share: the ASGI callable types, sending a whole
response, and reading a bounded request body."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class BodyTooLarge(Exception):
    """The body is larger than allowed, as declared or as received."""


class ClientGone(Exception):
    """The client disconnected before its body arrived."""


async def read_body(receive: Receive, limit: int, declared: int | None) -> bytes:
    """The request body; BodyTooLarge as soon as it is known to pass ``limit`` bytes
    (declared by Content-Length, or received), ClientGone if the client leaves."""
    if declared is not None and declared > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
