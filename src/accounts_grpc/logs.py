"""Logging: one line per call (see rpc/pipeline.py), text or JSON; never a secret or token.

Nothing logs secrets in the first place (the call line names the method, the status
code, the duration, the caller's user id, the request id and the client's address;
other metadata and messages are not logged). The request id is the caller's only when
it is 1 to 128 visible ASCII characters (``domain.call.request_id``), so a line cannot be
split or forged through it.
As a second line of defence every formatted line, tracebacks included, passes through
``redact``, which masks anything shaped like one of our credentials: client secrets
(``cs_...``), session tokens (``st_...``), JWTs and ``Bearer`` values.

Under a supervisor (``serve --processes N``) the workers write to the supervisor's
stderr, so there is one stream; each line names its process: ``worker=2`` (JSON:
``"worker": 2``) or ``supervisor`` (JSON: ``"supervisor": true``). A single process
writes its lines as before, naming no process.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

_EXTRA = ("rpc_method", "rpc_code", "duration_ms", "caller", "transport", "request_id", "peer")

_SECRETS = re.compile(
    r"\b(?P<prefix>cs_|st_)[A-Za-z0-9_-]{16,}"  # client secrets, session tokens
    r"|\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"  # JWTs
    r"|(?i:\bbearer\s+)[^\s\"',;]+"  # anything sent as a bearer token
)


def redact(text: str) -> str:
    """``text`` with every credential-shaped substring masked."""

    def mask(m: re.Match[str]) -> str:
        if m.group("prefix"):
            return m.group("prefix") + "[REDACTED]"
        if m.group(0).lower().startswith("bearer"):
            return "Bearer [REDACTED]"
        return "[REDACTED-JWT]"

    return _SECRETS.sub(mask, text)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    def __init__(self, process: dict[str, object] | None = None) -> None:
        super().__init__()
        self._process = process or {}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **self._process,
        }
        for k in _EXTRA:
            if hasattr(record, k):
                out[k] = getattr(record, k)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(out))


def setup(level: str = "INFO", json_lines: bool = False, *, worker: int | None = None,
          supervisor: bool = False) -> None:
    """Log to stderr; ``worker`` (its number) or ``supervisor`` under a supervisor."""
    handler = logging.StreamHandler(sys.stderr)
    tag, process = "", dict[str, object]()
    if worker is not None:
        tag, process = f"worker={worker} ", {"worker": worker}
    elif supervisor:
        tag, process = "supervisor ", {"supervisor": True}
    handler.setFormatter(
        JsonFormatter(process)
        if json_lines
        else TextFormatter(f"%(asctime)s %(levelname)s {tag}%(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.error", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
