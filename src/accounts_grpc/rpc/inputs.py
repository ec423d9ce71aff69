"""The one check every request's strings pass before any use case sees them.

Whatever the RPC and the transport, no string a caller sends may hold a character of
``validate.FORBIDDEN_CHARS`` (NUL and the other control characters but TAB, LF and CR,
and lone surrogates): such a value is INVALID_ARGUMENT with one field violation per bad
field, on SQLite and PostgreSQL alike, before anything reaches the database. Field
paths are the proto field names, dotted, with ``[i]`` for list items and ``[key]`` for
map entries, as every other violation names them.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from accounts_grpc.domain.errors import FieldViolation, InvalidArgument
from accounts_grpc.domain.validate import forbidden_char

_STRING = FieldDescriptor.TYPE_STRING
_MESSAGE = FieldDescriptor.TYPE_MESSAGE
MAX_DEPTH = 32  # deeper requests are refused by the decoder long before this


def _violations(msg: Message, prefix: str, out: list[FieldViolation], depth: int) -> None:
    for fd, value in msg.ListFields():
        name = prefix + fd.name
        if fd.type == _STRING:
            items: Any = enumerate(value) if fd.is_repeated else ((None, value),)
            for i, text in items:
                why = forbidden_char(text)
                if why is not None:
                    out.append(FieldViolation(name if i is None else f"{name}[{i}]", why))
        elif fd.type == _MESSAGE and depth < MAX_DEPTH:
            entry = fd.message_type
            assert entry is not None  # a message field has its type
            if entry.GetOptions().map_entry:
                key_fd, value_fd = entry.fields_by_name["key"], entry.fields_by_name["value"]
                for key, item in value.items():
                    if key_fd.type == _STRING and forbidden_char(key) is not None:
                        out.append(FieldViolation(f"{name}[{key!r}]",
                                                  "the key " + str(forbidden_char(key))))
                    path = f"{name}[{key}]"
                    if value_fd.type == _STRING:
                        why = forbidden_char(item)
                        if why is not None:
                            out.append(FieldViolation(path, why))
                    elif value_fd.type == _MESSAGE:
                        _violations(item, path + ".", out, depth + 1)
            elif fd.is_repeated:
                for i, item in enumerate(value):
                    _violations(item, f"{name}[{i}].", out, depth + 1)
            else:
                _violations(value, name + ".", out, depth + 1)


def check_strings(request: Message) -> None:
    """Raise InvalidArgument (reason ``INVALID_CHARACTER``) naming every string field of
    ``request`` that holds a forbidden character."""
    out: list[FieldViolation] = []
    _violations(request, "", out, 0)
    if out:
        first = out[0]
        more = f" (and {len(out) - 1} more)" if len(out) > 1 else ""
        raise InvalidArgument(f"{first.field}: {first.description}{more}", out,
                              reason="INVALID_CHARACTER")
