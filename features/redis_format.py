"""Feast's Redis online-store format, read without the Feast package.

The gateway reads features straight from the online store Feast writes (materialization and
push), so a request pays for one Redis round trip rather than an HTTP call to Feast's feature
server (benchmarks/feature_serving.py measures both). Feast (0.66, `entity_key_serialization_
version` 3) stores one Redis hash per entity and project:

    key     serialize_entity_key(entity) + project (UTF-8)
            entity key v3: <u32 number of join keys>, then per join key <u32 STRING=2><u32 len>
            <name>, then per value <u32 value type><u32 len><bytes> (little endian; string
            values UTF-8, int64 values 8 bytes)
    fields  mmh3_32("<feature view>:<feature>") as 4 little-endian bytes -> a serialized
            feast.types.Value protobuf; "_ts:<feature view>" -> a serialized
            google.protobuf.Timestamp (the event time of the row the values came from)

(feast/infra/online_stores/redis.py, feast/infra/key_encoding_utils.py,
feast/infra/online_stores/helpers.py at tag v0.66.0). tests/integration/test_features_feast.py
checks every piece against values the real Feast wrote into a real redis-server.

The Value protobuf is decoded here by hand (scalars and lists of scalars: the types a prompt or a
tabular model takes); a feature of another type decodes to None and the plan refuses it for a
feature service the gateway serves (features.repo.GATEWAY_TYPES).
"""

from __future__ import annotations

import struct
from typing import Any

import mmh3

ENTITY_KEY_VERSION = 3
_STRING, _INT64 = 2, 4
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")
_F32 = struct.Struct("<f")


def entity_key(project: str, join_key: str, value: str | int) -> bytes:
    """The Redis key of one entity (a single join key) in one project."""
    name = join_key.encode()
    if isinstance(value, int):
        vtype, raw = _INT64, _I64.pack(value)
    else:
        vtype, raw = _STRING, value.encode()
    return b"".join(
        (
            _U32.pack(1),
            _U32.pack(_STRING),
            _U32.pack(len(name)),
            name,
            _U32.pack(vtype),
            _U32.pack(len(raw)),
            raw,
            project.encode(),
        )
    )


def field_key(view: str, feature: str) -> bytes:
    """The hash field of one feature: murmur3 (32 bit, unsigned) of "<view>:<feature>"."""
    return mmh3.hash(f"{view}:{feature}", signed=False).to_bytes(4, "little")


def timestamp_field(view: str) -> bytes:
    return f"_ts:{view}".encode()


# -- protobuf wire format -------------------------------------------------------------------


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _signed32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


def _fields(buf: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) of each field: varints as int, 64/32-bit as raw bytes,
    length-delimited as bytes."""
    out = []
    i, n = 0, len(buf)
    while i < n:
        tag, i = _varint(buf, i)
        number, wire = tag >> 3, tag & 7
        value: int | bytes
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i : i + 8], i + 8
        elif wire == 5:
            value, i = buf[i : i + 4], i + 4
        elif wire == 2:
            length, i = _varint(buf, i)
            value, i = buf[i : i + length], i + length
        else:  # groups: not in Feast's Value
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.append((number, wire, value))
    return out


def _packed_varints(raw: bytes) -> list[int]:
    out, i = [], 0
    while i < len(raw):
        v, i = _varint(raw, i)
        out.append(v)
    return out


def _list(number: int, raw: bytes) -> list[Any] | None:
    """A feast.types.*List message: field 1, repeated (numbers packed)."""
    items = [v for n, _w, v in _fields(raw) if n == 1]
    if number in (11,):  # bytes_list
        return [bytes(x) for x in items]
    if number in (12,):  # string_list
        return [bytes(x).decode() for x in items]
    values: list[Any] = []
    for x in items:
        if isinstance(x, int):  # unpacked varint
            values.append(x)
        elif number in (13, 14, 17, 18):
            values.extend(_packed_varints(x))
        elif number == 15:
            values.extend(v[0] for v in _F64.iter_unpack(x))
        elif number == 16:
            values.extend(v[0] for v in _F32.iter_unpack(x))
    if number == 13:
        return [_signed32(v) for v in values]
    if number in (14, 18):
        return [_signed64(v) for v in values]
    if number == 17:
        return [bool(v) for v in values]
    if number in (15, 16):
        return values
    return None


def decode_value(raw: bytes | None) -> Any:
    """A serialized feast.types.Value as a Python value (None when unset, null, or a type the
    gateway does not serve)."""
    if not raw:
        return None
    for number, wire, v in _fields(raw):
        if number == 1:
            return bytes(v)
        if number in (2, 32, 36, 37, 44):  # string, json, uuid, time uuid, decimal
            return bytes(v).decode()
        if number == 3:
            return _signed32(v)
        if number in (4, 8):  # int64, unix timestamp (seconds)
            return _signed64(v)
        if number == 5:
            return _F64.unpack(v)[0] if wire == 1 else None
        if number == 6:
            return _F32.unpack(v)[0] if wire == 5 else None
        if number == 7:
            return bool(v)
        if 11 <= number <= 18:
            return _list(number, bytes(v))
        return None  # null_val (19) and the structured types
    return None


def decode_timestamp(raw: bytes | None) -> float | None:
    """A serialized google.protobuf.Timestamp as epoch seconds (None when absent)."""
    if not raw:
        return None
    seconds = nanos = 0
    for number, _wire, v in _fields(raw):
        if number == 1:
            seconds = _signed64(v)
        elif number == 2:
            nanos = v
    return seconds + nanos / 1e9
