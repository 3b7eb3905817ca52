"""Schemas of msgpack maps as data, and the one reader that checks received values against them.

A :class:`Field` describes one value: its msgpack kind, its range (numbers), length (str and bin, in bytes) or
entry count (array and map), its allowed strings, whether it may be absent or nil, and what it nests. A
:class:`Record` is a map with known keys (or, with ``positional``, an array read by position) and builds a
frozen dataclass. :func:`unpack_map` turns bytes into one map under the limits of spec section 4.1;
:func:`read` checks a decoded value against a field and converts it; :func:`write` turns Python values back
into plain msgpack-ready values with keys in canonical order (sorted by UTF-8 bytes).

Failure semantics: :func:`unpack_map` raises :class:`OversizeError` or :class:`MalformedError`; :func:`read`
raises :class:`FieldError` only; :func:`write` raises :class:`LocalProtocolError` when a Python value has the
wrong shape (values are range-checked afterwards by reading the written form back).
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from loa.protocol.errors import FieldError, LocalProtocolError, MalformedError, OversizeError

__all__ = [
    "I64_MAX",
    "I64_MIN",
    "MAX_DEPTH",
    "MAX_ENTRIES",
    "MAX_MESSAGE",
    "MAX_STR",
    "U32_MAX",
    "U64_MAX",
    "AtLeastOne",
    "Field",
    "Kind",
    "NotAbove",
    "Record",
    "RequiredIf",
    "Rule",
    "check_limits",
    "pack",
    "read",
    "read_record",
    "unpack_map",
    "write",
    "write_record",
]

msgpack: Any = importlib.import_module("msgpack")  # ships no type information

MAX_MESSAGE = 1168
MAX_ENTRIES = 64
MAX_STR = 512
MAX_DEPTH = 8
U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1
I64_MIN = -(2**63)
I64_MAX = 2**63 - 1


class Kind(enum.StrEnum):
    UINT = "uint"
    INT = "int"
    BOOL = "bool"
    FLOAT = "float"
    STR = "str"
    BIN = "bin"
    ARRAY = "array"
    MAP = "map"
    RECORD = "record"


@dataclass(frozen=True, slots=True)
class Field:
    """One value. ``lo``/``hi`` bound the number, the byte length (str, bin) or the entry count (array, map)."""

    kind: Kind
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    optional: bool = False
    nullable: bool = False
    items: Field | None = None
    record: Record | None = None
    unit: str = ""
    doc: str = ""
    default: object = None


@dataclass(frozen=True, slots=True)
class AtLeastOne:
    """At least one of ``keys`` is present."""

    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RequiredIf:
    """``key`` is required when ``when`` equals ``value``."""

    key: str
    when: str
    value: object


@dataclass(frozen=True, slots=True)
class NotAbove:
    """When both are present, ``low`` <= ``high`` (``strict``: <)."""

    low: str
    high: str
    strict: bool = False


Rule = AtLeastOne | RequiredIf | NotAbove


@dataclass(frozen=True, slots=True)
class Record:
    """A map with known keys (unknown keys are ignored), or with ``positional`` an array of exactly these fields."""

    name: str
    fields: Mapping[str, Field]
    build: type[Any]
    rules: tuple[Rule, ...] = ()
    positional: bool = False


class _DuplicateKeyError(Exception):
    pass


def _pairs(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _DuplicateKeyError
    return result


def unpack_map(data: bytes, *, max_size: int = MAX_MESSAGE) -> dict[str, Any]:
    """Decode ``data`` as exactly one msgpack map within the limits of spec section 4.1.

    Raises :class:`OversizeError` (too many bytes, entries, string bytes or nesting levels) or
    :class:`MalformedError` (not msgpack, not a map, trailing bytes, duplicate or non-str keys, ext types).
    Nothing is allocated beyond what ``data`` itself can describe.
    """
    if len(data) > max_size:
        raise OversizeError(f"{len(data)} bytes, more than {max_size}")
    n = len(data)
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            object_pairs_hook=_pairs,
            max_str_len=n,
            max_bin_len=n,
            max_array_len=n,
            max_map_len=n,
            max_ext_len=0,
        )
    except msgpack.StackError as exc:
        raise OversizeError(f"nesting deeper than {MAX_DEPTH}") from exc
    except msgpack.ExtraData as exc:
        raise MalformedError("trailing bytes after the map") from exc
    except _DuplicateKeyError as exc:
        raise MalformedError("duplicate key in a map") from exc
    except (ValueError, TypeError, OverflowError) as exc:
        raise MalformedError(f"not msgpack: {exc}") from exc
    if not isinstance(obj, dict):
        raise MalformedError(f"a msgpack {type(obj).__name__}, not a map")
    check_limits(obj, 1)
    return obj


def check_limits(obj: object, depth: int = 1) -> None:
    """Raise :class:`OversizeError` or :class:`MalformedError` if a decoded value breaks the section 4.1 limits."""
    if obj is None or isinstance(obj, bool | int | float | bytes):
        return
    if isinstance(obj, str):
        if len(obj.encode()) > MAX_STR:
            raise OversizeError(f"string of more than {MAX_STR} bytes")
        return
    if isinstance(obj, list | dict):
        if depth > MAX_DEPTH:
            raise OversizeError(f"nesting deeper than {MAX_DEPTH}")
        if len(obj) > MAX_ENTRIES:
            raise OversizeError(f"{len(obj)} entries, more than {MAX_ENTRIES}")
        if isinstance(obj, dict):
            for key, value in obj.items():
                if not isinstance(key, str):
                    raise MalformedError("map key that is not a str")
                check_limits(key, depth + 1)
                check_limits(value, depth + 1)
        else:
            for item in obj:
                check_limits(item, depth + 1)
        return
    raise MalformedError(f"msgpack {type(obj).__name__} is not a protocol value type")


def _fail(where: str, what: str) -> FieldError:
    return FieldError(f"{where}: {what}")


def _bounds(field: Field, size: float, where: str, what: str) -> None:
    if field.lo is not None and size < field.lo:
        raise _fail(where, f"{what} {size} below {field.lo}")
    if field.hi is not None and size > field.hi:
        raise _fail(where, f"{what} {size} above {field.hi}")


def read(field: Field, value: object, where: str) -> Any:
    """Check a decoded msgpack value against ``field`` and convert it (arrays to tuples, records to objects).

    Raises :class:`FieldError` naming ``where`` for a wrong type, a value out of range, a missing key.
    """
    if value is None:
        if field.nullable:
            return None
        raise _fail(where, "nil where a value is required")
    kind = field.kind
    if kind in (Kind.UINT, Kind.INT):
        if type(value) is not int:
            raise _fail(where, f"{type(value).__name__} where an integer is required")
        lo = field.lo if field.lo is not None else (0 if kind is Kind.UINT else I64_MIN)
        hi = field.hi if field.hi is not None else (U64_MAX if kind is Kind.UINT else I64_MAX)
        if not lo <= value <= hi:
            raise _fail(where, f"{value} outside {lo}..{hi}")
        return value
    if kind is Kind.BOOL:
        if type(value) is not bool:
            raise _fail(where, f"{type(value).__name__} where a bool is required")
        return value
    if kind is Kind.FLOAT:
        if type(value) is int:
            number = float(value)
        elif type(value) is float and math.isfinite(value):
            number = value
        else:
            raise _fail(where, "not a finite number")
        _bounds(field, number, where, "value")
        return number
    if kind is Kind.STR:
        if type(value) is not str:
            raise _fail(where, f"{type(value).__name__} where a str is required")
        if field.choices and value not in field.choices:
            raise _fail(where, f"{value!r} is not one of {', '.join(field.choices)}")
        _bounds(field, len(value.encode()), where, "length")
        return value
    if kind is Kind.BIN:
        if type(value) is not bytes:
            raise _fail(where, f"{type(value).__name__} where a bin is required")
        _bounds(field, len(value), where, "length")
        return value
    if kind is Kind.ARRAY:
        if type(value) is not list:
            raise _fail(where, f"{type(value).__name__} where an array is required")
        _bounds(field, len(value), where, "entry count")
        assert field.items is not None
        return tuple(read(field.items, item, f"{where}[{i}]") for i, item in enumerate(value))
    if kind is Kind.MAP:
        if type(value) is not dict:
            raise _fail(where, f"{type(value).__name__} where a map is required")
        _bounds(field, len(value), where, "entry count")
        assert field.items is not None
        return {key: read(field.items, item, f"{where}.{key}") for key, item in value.items()}
    assert field.record is not None
    return read_record(field.record, value, where)


def read_record(record: Record, value: object, where: str, **extra: Any) -> Any:
    """Read a record (see :func:`read`); unknown keys of a map are ignored; ``extra`` goes to the builder."""
    if record.positional:
        if type(value) is not list or len(value) != len(record.fields):
            raise _fail(where, f"{record.name} must be an array of {len(record.fields)} values")
        present = dict(zip(record.fields, value, strict=True))
    else:
        if type(value) is not dict:
            raise _fail(where, f"{type(value).__name__} where a map is required")
        present = value
    for rule in record.rules:
        _check_rule(rule, present, where)
    kwargs: dict[str, Any] = dict(extra)
    for key, field in record.fields.items():
        if key in present:
            kwargs[key] = read(field, present[key], f"{where}.{key}")
        elif not field.optional:
            raise _fail(where, f"missing {key!r}")
    return record.build(**kwargs)


def _check_rule(rule: Rule, present: Mapping[str, Any], where: str) -> None:
    if isinstance(rule, AtLeastOne):
        if not any(key in present for key in rule.keys):
            raise _fail(where, f"needs at least one of {', '.join(rule.keys)}")
    elif isinstance(rule, RequiredIf):
        if present.get(rule.when) == rule.value and rule.key not in present:
            raise _fail(where, f"{rule.key!r} is required when {rule.when} is {rule.value!r}")
    else:
        low, high = present.get(rule.low), present.get(rule.high)
        if type(low) is int and type(high) is int and (low >= high if rule.strict else low > high):
            raise _fail(where, f"{rule.low} must be {'below' if rule.strict else 'at most'} {rule.high}")


def write(field: Field, value: object) -> Any:
    """Turn a Python value into a plain msgpack-ready value (maps with sorted keys, tuples as lists).

    Raises :class:`LocalProtocolError` when the value's shape does not fit the field. Ranges are not checked
    here: read the result back with :func:`read` for that.
    """
    if value is None:
        return None
    kind = field.kind
    if kind is Kind.FLOAT and type(value) is int:
        return float(value)
    if kind is Kind.ARRAY:
        if not isinstance(value, tuple | list):
            raise LocalProtocolError(f"{type(value).__name__} where a sequence is required")
        assert field.items is not None
        return [write(field.items, item) for item in value]
    if kind is Kind.MAP:
        if not isinstance(value, Mapping):
            raise LocalProtocolError(f"{type(value).__name__} where a mapping is required")
        assert field.items is not None
        return {key: write(field.items, value[key]) for key in sorted(value, key=_key_order)}
    if kind is Kind.RECORD:
        assert field.record is not None
        return write_record(field.record, value)
    return value


def write_record(record: Record, value: object) -> Any:
    """Write a record object (see :func:`write`); absent optional values (None) are left out."""
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        raise LocalProtocolError(f"{type(value).__name__} where a {record.name} is required")
    if record.positional:
        return [write(field, getattr(value, key)) for key, field in record.fields.items()]
    out: dict[str, Any] = {}
    for key in sorted(record.fields, key=_key_order):
        item = getattr(value, key)
        if item is None and record.fields[key].optional:
            continue
        out[key] = write(record.fields[key], item)
    return out


def _key_order(key: object) -> bytes:
    if not isinstance(key, str):
        raise LocalProtocolError(f"map key {key!r} is not a str")
    return key.encode()


def pack(obj: object) -> bytes:
    """msgpack bytes of a value made by :func:`write`: shortest integers, str as str, bytes as bin, float64."""
    try:
        packed: bytes = msgpack.packb(obj, use_bin_type=True, strict_types=False)
    except (TypeError, ValueError, OverflowError) as exc:
        raise LocalProtocolError(f"cannot encode: {exc}") from exc
    return packed
