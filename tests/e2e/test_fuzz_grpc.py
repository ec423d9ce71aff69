"""Fuzzing every accounts.v1 RPC over a real channel, with the admin's token.

Requests are generated field by field from the request descriptors (strings with NUL
and control characters, huge and negative numbers, NaN, repeated fields, nested
messages, enums including numbers no enum names, ids that exist), and raw bytes that
may not parse at all are sent with no serializer. Whatever the input, the server must
answer with a status a client can act on: never INTERNAL or UNKNOWN, never
DEADLINE_EXCEEDED (a hang), and UNAVAILABLE only while ``/readyz`` says the database is
down; and every error carries ``google.rpc.ErrorInfo`` of the domain ``accounts.v1``
(API.md, "Errors").

``ACCOUNTS_FUZZ_EXAMPLES`` sets the messages per RPC (raw payloads: half as many);
``make test`` draws the same ones on every run (see tests/fuzz_support.py), ``make fuzz``
many more with a random seed. ``pytest -s`` prints the number of calls per backend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from accounts_grpc.rpc import registry
from tests import fuzz_support
from tests.support import Server

EXAMPLES = fuzz_support.examples(default=20)
RAW_EXAMPLES = max(1, EXAMPLES // 2)
TALLY = fuzz_support.Tally("gRPC")
T = FieldDescriptor

METHODS: list[MethodDescriptor] = [m for s in registry.service_descriptors() for m in s.methods]
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
             grpc.StatusCode.DEADLINE_EXCEEDED}
CALL_TIMEOUT = 30.0
MAX_DEPTH = 3  # nested messages below this are left unset


def _rpc_id(m: MethodDescriptor) -> str:
    return f"{m.containing_service.name}.{m.name}"


# -- values -----------------------------------------------------------------------------------

_INT_RANGES = {
    **dict.fromkeys((T.TYPE_INT32, T.TYPE_SINT32, T.TYPE_SFIXED32), (-(2**31), 2**31 - 1)),
    **dict.fromkeys((T.TYPE_INT64, T.TYPE_SINT64, T.TYPE_SFIXED64), (-(2**63), 2**63 - 1)),
    **dict.fromkeys((T.TYPE_UINT32, T.TYPE_FIXED32), (0, 2**32 - 1)),
    **dict.fromkeys((T.TYPE_UINT64, T.TYPE_FIXED64), (0, 2**64 - 1)),
}
NASTY_STRINGS = [*fuzz_support.NASTY_STRINGS, "\u00e9" * 70000]


def _strings(pool: list[str], idish: bool = False) -> st.SearchStrategy[str]:
    """Text of every kind: generated (NUL and controls included), nasty, or a seeded
    value that exists on the server (an id, an external id, a device id ...), which is
    what an id field gets half the time, so calls get past "not found"."""
    choices: list[st.SearchStrategy[str]] = [st.text(max_size=40), st.sampled_from(NASTY_STRINGS),
                                             st.uuids().map(str)]
    if pool:
        existing = st.sampled_from(pool)
        choices += [existing] * (3 if idish else 1)
        choices.append(existing.map(lambda s: s + "\x00"))
    return st.one_of(*choices)


def _idish(f: FieldDescriptor) -> bool:
    return f.name in ("id", "ids") or f.name.endswith(("_id", "_ids"))


def _scalar(f: FieldDescriptor, pool: list[str]) -> st.SearchStrategy[Any]:
    t = f.type
    if t in _INT_RANGES:
        lo, hi = _INT_RANGES[t]
        edges = sorted({lo, hi, 0, 1, -1 if lo < 0 else 0, 50, 1000, 1001, 2**31 - 1})
        return st.one_of(st.sampled_from([e for e in edges if lo <= e <= hi]),
                         st.integers(lo, hi))
    if t == T.TYPE_DOUBLE:
        return st.floats()
    if t == T.TYPE_FLOAT:
        return st.floats(width=32)
    if t == T.TYPE_BOOL:
        return st.booleans()
    if t == T.TYPE_STRING:
        return _strings(pool, _idish(f))
    if t == T.TYPE_BYTES:
        return st.binary(max_size=64)
    if t == T.TYPE_ENUM:
        assert f.enum_type is not None
        known = [v.number for v in f.enum_type.values]
        # proto3 enums are open: any int32 goes on the wire
        return st.one_of(st.sampled_from(known), st.integers(-(2**31), 2**31 - 1))
    raise AssertionError(f"no strategy for {f.full_name} (type {t})")


def _names(desc: Descriptor) -> list[str]:
    """Field names (both spellings) of a message, for field masks and order_by."""
    out: list[str] = []
    for f in desc.fields:
        out += [f.name, f.json_name]
        if f.message_type is not None and not f.message_type.GetOptions().map_entry:
            out += [f"{f.name}.{g.name}" for g in f.message_type.fields]
    return out


def _field_values(f: FieldDescriptor, pool: list[str], depth: int,
                  siblings: Descriptor) -> st.SearchStrategy[Any] | None:
    """A strategy for what to set on a field (a list for repeated ones), or None to skip."""
    mt = f.message_type
    if mt is not None and mt.GetOptions().map_entry:
        key = _scalar(mt.fields_by_name["key"], pool)
        value_field = mt.fields_by_name["value"]
        value = (message_strategy(value_field.message_type, pool, depth + 1)
                 if value_field.message_type is not None else _scalar(value_field, pool))
        return st.dictionaries(key, value, max_size=3)
    if mt is not None:
        if mt.full_name == "google.protobuf.FieldMask":
            # real paths of the message next to the mask, and anything else
            paths = st.one_of(st.sampled_from(_names(siblings) or ["x"]), _strings(pool))
            one: st.SearchStrategy[Any] = st.lists(paths, max_size=4).map(
                lambda ps: FieldMask(paths=ps))
        elif depth >= MAX_DEPTH:
            return None
        else:
            one = message_strategy(mt, pool, depth + 1)
    else:
        one = _scalar(f, pool)
    if f.is_repeated:
        return st.lists(one, max_size=6)
    return one


def message_strategy(desc: Descriptor, pool: list[str],
                     depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of ``desc``, any subset of fields set (oneof members included: the last
    one set wins, as on the wire)."""
    cls = GetMessageClass(desc)
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for f in desc.fields:
        values = _field_values(f, pool, depth, desc)
        if values is not None:
            optional[f.name] = values
    return st.fixed_dictionaries({}, optional=optional).map(lambda kw: _build(cls, kw))


def _build(cls: Callable[[], Message], fields: dict[str, Any]) -> Message:
    msg = cls()
    for name, value in fields.items():
        f = msg.DESCRIPTOR.fields_by_name[name]
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            target = getattr(msg, name)
            for k, v in value.items():
                if isinstance(v, Message):
                    target[k].CopyFrom(v)
                else:
                    target[k] = v
        elif f.is_repeated:
            getattr(msg, name).extend(value)
        elif f.message_type is not None:
            getattr(msg, name).CopyFrom(value)
        else:
            setattr(msg, name, value)
    return msg


# -- raw bytes ----------------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _wire_field() -> st.SearchStrategy[bytes]:
    """One field as protobuf encodes it, often with the wrong wire type, a length that
    lies, invalid UTF-8, a reserved field number or a truncated varint."""
    number = st.one_of(st.integers(1, 12), st.sampled_from([0, 19000, 2**29 - 1]))
    wire = st.integers(0, 7)
    payload = st.one_of(
        st.binary(max_size=24),
        st.sampled_from([b"\xff\xfe\xfd", b"\xc3\x28", b"\xed\xa0\x80", b"\x80" * 11,
                         b"\x00", b"\xff" * 10]),
    )
    return st.builds(
        lambda n, w, body, lie: _varint((n << 3) | w) + _varint(len(body) + lie) + body,
        number, wire, payload, st.sampled_from([0, 0, 0, 1, -1, 2**31]))


def raw_payloads(desc: Descriptor, pool: list[str]) -> st.SearchStrategy[bytes]:
    """Bytes that may or may not parse as ``desc``: random, field-shaped, and valid
    messages with bytes flipped, cut or appended."""
    valid = message_strategy(desc, pool).map(lambda m: m.SerializeToString())

    def mutate(data: bytes, at: int, byte: int, cut: int) -> bytes:
        if not data:
            return bytes([byte])
        i = at % len(data)
        return (data[:i] + bytes([byte]) + data[i + 1:])[: max(1, len(data) - cut)]

    return st.one_of(
        st.binary(max_size=256),
        st.lists(_wire_field(), min_size=1, max_size=6).map(b"".join),
        st.builds(mutate, valid, st.integers(0, 2**16), st.integers(0, 255),
                  st.integers(0, 4)),
        st.builds(lambda data, tail: data + tail, valid, _wire_field()),
    )


# -- calling and judging ---------------------------------------------------------------------


@dataclass
class Outcome:
    code: grpc.StatusCode
    message: str
    error: grpc.RpcError | None


def call(channel: grpc.Channel, m: MethodDescriptor, request: Message | bytes,
         metadata: tuple[tuple[str, str], ...]) -> Outcome:
    """One call of ``m``; a ``bytes`` request goes on the wire as it is."""
    path = f"/{m.containing_service.full_name}/{m.name}"
    serialize = None if isinstance(request, bytes) else type(request).SerializeToString
    response_cls = GetMessageClass(m.output_type)
    try:
        if m.client_streaming:
            requests_ = iter([request])
            if m.server_streaming:
                for _ in channel.stream_stream(path, serialize, response_cls.FromString)(
                        requests_, metadata=metadata, timeout=CALL_TIMEOUT):
                    break
            else:
                channel.stream_unary(path, serialize, response_cls.FromString)(
                    requests_, metadata=metadata, timeout=CALL_TIMEOUT)
        elif m.server_streaming:
            stream = channel.unary_stream(path, serialize, response_cls.FromString)(
                request, metadata=metadata, timeout=CALL_TIMEOUT)
            stream.initial_metadata()  # open (a feed may have nothing to send), or failed
            if not stream.is_active():
                for _ in stream:  # the first answer, or the error
                    break
            stream.cancel()
        else:
            channel.unary_unary(path, serialize, response_cls.FromString)(
                request, metadata=metadata, timeout=CALL_TIMEOUT)
    except grpc.RpcError as e:
        return Outcome(e.code(), e.details() or "", e)
    return Outcome(grpc.StatusCode.OK, "", None)


def _error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo | str:
    """The call's ErrorInfo, or why there is none."""
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except ValueError as e:  # grpc-status-details-bin says another code than the call
        return str(e)
    if status is None:
        return "no grpc-status-details-bin"
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return "no google.rpc.ErrorInfo in the details"


def judge(server: Server, m: MethodDescriptor, request: Message | bytes,
          outcome: Outcome, what: str) -> None:
    TALLY.add(_rpc_id(m), what, outcome.code.name)
    shown = repr(request)[:600] if isinstance(request, bytes) else \
        f"{type(request).__name__}({str(request)[:600]!r})"
    where = f"{_rpc_id(m)} with {shown}"
    if outcome.code == grpc.StatusCode.CANCELLED and m.server_streaming:
        return  # we hung up after the first answer
    if outcome.code == grpc.StatusCode.UNAVAILABLE:
        ready = httpx.get(f"{server.http_url}/readyz", timeout=10)
        assert ready.status_code == 503, \
            f"{where}: UNAVAILABLE ({outcome.message}) while /readyz says {ready.text}"
        return
    assert outcome.code not in FORBIDDEN, f"{where}: {outcome.code.name}: {outcome.message}"
    if outcome.error is not None:
        info = _error_info(outcome.error)
        assert not isinstance(info, str), \
            f"{where}: {outcome.code.name} ({outcome.message[:300]}): {info}"
        assert info.domain == "accounts.v1" and info.reason, f"{where}: ErrorInfo {info}"


# -- the tests -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_server(server: Server, backend: str) -> Iterator[Server]:
    """The module's server with two tenants seeded; prints the number of calls at the end."""
    with fuzz_support.seeded_run(server.http_url, server.admin_token, backend, SEEDED, TALLY):
        yield server


SEEDED = fuzz_support.Seeded()


def _run(label: str, examples: int, strategy: st.SearchStrategy[Any],
         body: Callable[[Any], None]) -> None:
    """Run ``body`` over ``strategy`` as a Hypothesis test of its own."""
    test = given(strategy)(body)
    test = settings(max_examples=examples, deadline=None, database=None,
                    phases=[Phase.generate, Phase.shrink],
                    suppress_health_check=list(HealthCheck))(test)
    hypothesis_seed(fuzz_support.derived_seed(label))(test)()


@pytest.mark.parametrize("method", METHODS, ids=_rpc_id)
def test_grpc_fuzz_messages(fuzz_server: Server, method: MethodDescriptor) -> None:
    pool = SEEDED.all(method.name)

    def body(request: Message) -> None:
        judge(fuzz_server, method, request, call(fuzz_server.channel, method, request,
                                                 fuzz_server.admin), "message")

    _run(f"message {_rpc_id(method)}", EXAMPLES, message_strategy(method.input_type, pool), body)


@pytest.mark.parametrize("method", METHODS, ids=_rpc_id)
def test_grpc_fuzz_raw_bytes(fuzz_server: Server, method: MethodDescriptor) -> None:
    pool = SEEDED.all(method.name)

    def body(payload: bytes) -> None:
        judge(fuzz_server, method, payload, call(fuzz_server.channel, method, payload,
                                                 fuzz_server.admin), "raw")

    _run(f"raw {_rpc_id(method)}", RAW_EXAMPLES, raw_payloads(method.input_type, pool), body)


def test_every_rpc_is_fuzzed() -> None:
    """The list is the server's: a new service or RPC is fuzzed with no change here."""
    names = {f"/{m.containing_service.full_name}/{m.name}" for m in METHODS}
    assert set(registry.access_rules()) <= names
    assert {m.containing_service.full_name for m in METHODS} == set(registry.service_names())
    assert len(METHODS) >= 41
