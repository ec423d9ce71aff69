"""proto ⇄ domain conversions; shared helpers here, one module per area beside it."""

from __future__ import annotations

from google.protobuf import timestamp_pb2


def ts(us: int | None) -> timestamp_pb2.Timestamp | None:
    """A Timestamp from microseconds since the epoch (None stays None: field left unset)."""
    if us is None:
        return None
    t = timestamp_pb2.Timestamp()
    t.seconds, micros = divmod(us, 1_000_000)
    t.nanos = micros * 1000
    return t


def us_of(t: timestamp_pb2.Timestamp) -> int:
    return t.seconds * 1_000_000 + t.nanos // 1000
