"""Input checks shared by every use case. Collect violations, then raise them all at once.

v = Validator()
v.name("account.name", name)
v.email("account.email", email)
v.raise_if_any()          # InvalidArgument with one BadRequest violation per bad field
"""

from __future__ import annotations

import re
import uuid
from urllib.parse import urlsplit

from accounts_grpc.domain.errors import FieldViolation, InvalidArgument

MAX_NAME = 200
MAX_TEXT = 2000
MAX_EMAIL = 320
MAX_URL = 2048
MAX_EXTERNAL_ID = 200
DEVICE_ID_LEN = 8

# Pragmatic address syntax (WHATWG's "valid e-mail address"): local@domain with dotted labels.
_EMAIL = re.compile(
    r"^[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)+$"
)
_COLOR = re.compile(r"#[0-9a-fA-F]{6}")  # fullmatch: "$" would let a trailing newline in
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1 control characters
#: What no string of any request may hold, whatever the field: NUL (PostgreSQL cannot
#: store it, SQLite would, so the two would disagree), the other C0 controls but TAB, LF
#: and CR, DEL, the C1 controls (ESC, BEL and CSI drive terminals that print them), and
#: lone surrogates (a JSON "\ud800" escape; no UTF-8 encodes one). Single-line fields
#: (names, ids, emails, URLs) refuse TAB, LF and CR too (``_CONTROL``).
FORBIDDEN_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def forbidden_char(value: str) -> str | None:
    """Why ``value`` cannot be taken (naming the first bad character), or None."""
    m = FORBIDDEN_CHARS.search(value)
    if m is None:
        return None
    return (f"must not contain U+{ord(m.group()):04X} at offset {m.start()} (control "
            "characters other than tab, line feed and carriage return, and lone "
            "surrogates, are refused)")


def is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value.lower() and len(value) == 36
    except (ValueError, AttributeError, TypeError):
        return False


class Validator:
    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.violations.append(FieldViolation(field, description))

    def raise_if_any(self, message: str | None = None, reason: str = "INVALID_ARGUMENT") -> None:
        if self.violations:
            first = self.violations[0]
            msg = message or (
                f"{first.field}: {first.description}"
                + (f" (and {len(self.violations) - 1} more)" if len(self.violations) > 1 else "")
            )
            raise InvalidArgument(msg, self.violations, reason=reason)

    # -- checks: each returns the cleaned value ---------------------------------------------
    def required(self, field: str, value: str) -> str:
        if not value or not value.strip():
            self.add(field, "is required")
        return value.strip() if value else value

    def name(
        self, field: str, value: str, *, required: bool = True, max_len: int = MAX_NAME
    ) -> str:
        value = (value or "").strip()
        if not value:
            if required:
                self.add(field, "is required")
        elif len(value) > max_len:
            self.add(field, f"must be at most {max_len} characters (got {len(value)})")
        elif _CONTROL.search(value):
            self.add(field, "must not contain control characters")
        return value

    def text(self, field: str, value: str, *, max_len: int = MAX_TEXT) -> str:
        if value and len(value) > max_len:
            self.add(field, f"must be at most {max_len} characters (got {len(value)})")
        return value or ""

    def email(self, field: str, value: str, *, required: bool = True) -> str:
        value = (value or "").strip()
        if not value:
            if required:
                self.add(field, "is required")
        elif len(value) > MAX_EMAIL or not _EMAIL.fullmatch(value):
            self.add(field, f"{_short(value)!r} is not a valid email address")
        return value

    def color(self, field: str, value: str) -> str:
        if value and not _COLOR.fullmatch(value):
            self.add(field, f"{_short(value)!r} is not a colour of the form #RRGGBB")
        return value.lower() if value else ""

    def url(self, field: str, value: str, *, required: bool = False) -> str:
        value = (value or "").strip()
        if not value:
            if required:
                self.add(field, "is required")
            return value
        ok = len(value) <= MAX_URL and not _CONTROL.search(value) and " " not in value
        if ok:
            try:
                parts = urlsplit(value)
                ok = parts.scheme in ("http", "https") and bool(parts.hostname)
            except ValueError:
                ok = False
        if not ok:
            self.add(field, f"{_short(value)!r} is not an absolute http(s) URL")
        return value

    def id(self, field: str, value: str, *, required: bool = True) -> str:
        if not value:
            if required:
                self.add(field, "is required")
        elif not is_uuid(value):
            self.add(field, f"{_short(value)!r} is not an id (a UUID)")
        return value

    def device_id(self, field: str, value: str, *, required: bool = True) -> str:
        if not value:
            if required:
                self.add(field, "is required")
        elif len(value) != DEVICE_ID_LEN or _CONTROL.search(value) or value != value.strip():
            self.add(
                field, f"{_short(value)!r} is not a device id (exactly {DEVICE_ID_LEN} characters)"
            )
        return value

    def external_id(self, field: str, value: str, *, required: bool = True) -> str:
        return self.name(field, value, required=required, max_len=MAX_EXTERNAL_ID)


def _short(value: str, n: int = 60) -> str:
    """``value`` cut to ``n`` characters for a message (a caller's value echoed whole could
    outgrow what a gRPC client accepts as trailers)."""
    return value if len(value) <= n else value[:n] + "…"


shorten = _short


def check_id(field: str, value: str) -> str:
    """A single id argument: INVALID_ARGUMENT (reason INVALID_ID) unless it is a UUID."""
    v = Validator()
    v.id(field, value)
    v.raise_if_any(reason="INVALID_ID" if value else "INVALID_ARGUMENT")
    return value
