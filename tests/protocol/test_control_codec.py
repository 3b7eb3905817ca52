"""Control messages: schema, encode/decode both ways, limits, unknown types and fields, hostile input."""

from __future__ import annotations

import contextlib
import hashlib
import typing
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loa.protocol import control as c
from loa.protocol._schema import MAX_ENTRIES, Field, Kind, Record
from loa.protocol.errors import (
    FieldError,
    LocalProtocolError,
    MalformedError,
    OversizeError,
)

CID = hashlib.sha256(b"x").digest()
SPEC_TYPES = [
    "ack",
    "time_req",
    "time_resp",
    "hello",
    "config",
    "volume",
    "mute",
    "amp",
    "source",
    "fm_presets",
    "reboot",
    "prefetch",
    "fetch",
    "chunk",
    "have",
    "play",
    "join",
    "rotate",
    "leave",
    "alert",
    "alert_cancel",
    "board",
    "board_clear",
    "telemetry",
    "state",
    "rtcp",
    "played",
    "bye",
]
RELIABLE = set(SPEC_TYPES) - {"ack", "time_req", "time_resp", "fetch", "chunk", "rtcp", "bye"}


def pk(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def test_schema_covers_the_message_table_of_section_4_2() -> None:
    assert list(c.SCHEMA) == SPEC_TYPES
    assert {t for t, spec in c.SCHEMA.items() if spec.reliable} == RELIABLE
    assert {cls.TYPE for cls in typing.get_args(c.ReliableMessage)} == RELIABLE
    assert {cls.TYPE for cls in typing.get_args(c.Message)} == set(SPEC_TYPES)
    for t in SPEC_TYPES:
        assert c.is_reliable(t) == (t in RELIABLE)
    assert not c.is_reliable("x_future")


def test_volume_example_of_section_4_2_byte_for_byte() -> None:
    data = bytes.fromhex("83 a1 74 a6 76 6f 6c 75 6d 65 a2 69 64 07 a5 6c 65 76 65 6c 50")
    assert c.encode(c.Volume(level=80, id=7)) == data
    assert c.decode(data) == c.Volume(level=80, id=7)


def test_keys_are_t_then_id_then_sorted() -> None:
    wire = c.to_map(c.Join(bid=1, ssrc=2, key=bytes(30), cls=0, lvl=0, policy="drop", zone="z", delay_ms=0, id=3))
    assert list(wire) == ["t", "id", "bid", "cls", "delay_ms", "key", "lvl", "policy", "ssrc", "zone"]
    nested = c.to_map(c.Config(values=c.ConfigValues(zones=("a",), delay_ms=1, watchdog_ms=500), id=1))
    assert list(nested["values"]) == ["delay_ms", "watchdog_ms", "zones"]


def test_optional_fields_are_left_out_and_nullable_ones_written() -> None:
    assert c.to_map(c.Source(src="ip", id=1)) == {"t": "source", "id": 1, "src": "ip"}
    assert c.to_map(c.State(bid=None, src="idle", since=0, id=1)) == {
        "t": "state",
        "id": 1,
        "bid": None,
        "since": 0,
        "src": "idle",
    }


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (c.Volume(level=300, id=1), "0..100"),
        (c.Volume(level=80), "id"),
        (c.Volume(level=80, id=0), "id"),
        (c.Volume(level=80, id=2**32), "id"),
        (c.Volume(level=True, id=1), "integer"),
        (c.Source(src="fm", id=1), "freq_khz"),
        (c.Board(item=1, cls=0, lvl=0, id=1), "text"),
        (c.Have(cid=b"short", ok=True, id=1), "length"),
        (c.Bye(reason="x" * 600), "512"),
        (c.Ack(ids=tuple(range(1, 66))), "entries"),
        (c.Chunk(cid=CID, off=0, data=bytes(1025)), "1024"),
        (c.Config(values=c.ConfigValues(vol_min=90, vol_max=10), id=1), "vol_min"),
        (c.Telemetry(v=c.TelemetryValues(loss=float("nan")), id=1), "finite"),
        (c.FmPresets(presets=({"freq_khz": 99900, "name": "x"},), id=1), "fm preset"),  # type: ignore[arg-type]
        (c.Telemetry(v=c.TelemetryValues(drops={1: 2}), id=1), "key"),  # type: ignore[dict-item]
    ],
)
def test_encode_refuses_invalid_messages(message: Any, error: str) -> None:
    with pytest.raises(LocalProtocolError, match=error):
        c.encode(message)


def test_encode_refuses_non_messages() -> None:
    with pytest.raises(LocalProtocolError):
        c.encode(c.UnknownMessage("x", 1))  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        c.encode("volume")  # type: ignore[arg-type]


def test_encode_refuses_a_message_over_1168_bytes() -> None:
    big = c.SignedAlert(body=bytes(1100), sig=bytes(64), id=1)
    assert len(pk(c.to_map(big))) > 1168
    with pytest.raises(LocalProtocolError, match="1168"):
        c.encode(big)


def test_floats_are_float64_and_ints_accepted_for_floats() -> None:
    data = c.encode(c.Telemetry(v=c.TelemetryValues(jitter_ms=2), id=1))
    assert b"\xa9jitter_ms\xcb\x40\x00\x00\x00\x00\x00\x00\x00" in data
    decoded = c.decode(pk({"t": "telemetry", "id": 1, "v": {"jitter_ms": 2, "loss": 0.5}}))
    assert isinstance(decoded, c.Telemetry)
    assert decoded.v.jitter_ms == 2.0
    assert isinstance(decoded.v.jitter_ms, float)


def test_unknown_type_is_not_an_error() -> None:
    assert c.decode(pk({"t": "x_future", "id": 9, "a": 1})) == c.UnknownMessage("x_future", 9)
    assert c.decode(pk({"t": "x_future"})) == c.UnknownMessage("x_future", None)


def test_unknown_fields_are_ignored_at_every_level() -> None:
    data = pk({"t": "config", "id": 1, "x": [1], "values": {"watchdog_ms": 500, "future_key": {"a": 1}}})
    assert c.decode(data) == c.Config(values=c.ConfigValues(watchdog_ms=500), id=1)


def test_side_turns_wrong_direction_types_into_unknown() -> None:
    hello = c.encode(c.Hello(kind="board", model="m", fw="1", caps=(), id=4))
    assert c.decode(hello, side=c.Side.DEVICE) == c.UnknownMessage("hello", 4)
    assert isinstance(c.decode(hello, side=c.Side.SERVER), c.Hello)
    bye = c.encode(c.Bye(reason=""))
    assert isinstance(c.decode(bye, side=c.Side.DEVICE), c.Bye)
    assert isinstance(c.decode(bye, side=c.Side.SERVER), c.Bye)


def test_envelope_keeps_the_id_of_a_message_with_bad_fields() -> None:
    envelope = c.decode_envelope(pk({"t": "volume", "id": 12, "level": 999}))
    assert envelope.id == 12
    with pytest.raises(FieldError):
        c.decode_message(envelope)


def test_from_map_applies_the_same_rules() -> None:
    assert c.from_map({"t": "leave", "id": 1, "bid": 5}) == c.Leave(bid=5, id=1)
    with pytest.raises(OversizeError):
        c.from_map({"t": "bye", "reason": "x" * 513})
    with pytest.raises(MalformedError):
        c.from_map({"id": 1})


def test_limits_count_keys_and_entries() -> None:
    ok = pk({"t": "bye", "reason": "", **{f"k{i}": 0 for i in range(MAX_ENTRIES - 2)}})
    assert isinstance(c.decode(ok), c.Bye)
    with pytest.raises(OversizeError):
        c.decode(pk({"t": "bye", "reason": "", **{f"k{i}": 0 for i in range(MAX_ENTRIES - 1)}}))
    with pytest.raises(OversizeError):
        c.decode(pk({"t": "bye", "reason": "", "x" * 513: 0}))


# ---- schema-driven generation of valid messages ----


def _strategy(field: Field) -> st.SearchStrategy[Any]:
    kind = field.kind
    if kind in (Kind.UINT, Kind.INT):
        lo = int(field.lo) if field.lo is not None else (0 if kind is Kind.UINT else -(2**63))
        hi = int(field.hi) if field.hi is not None else (2**64 - 1 if kind is Kind.UINT else 2**63 - 1)
        base: st.SearchStrategy[Any] = st.integers(lo, hi)
    elif kind is Kind.BOOL:
        base = st.booleans()
    elif kind is Kind.FLOAT:
        base = st.floats(field.lo, field.hi, allow_nan=False)
    elif kind is Kind.STR:
        if field.choices:
            base = st.sampled_from(field.choices)
        else:
            lo = int(field.lo or 0)
            hi = min(int(field.hi if field.hi is not None else 512), 40)
            base = st.text(min_size=lo, max_size=hi).filter(lambda s: lo <= len(s.encode()) <= (field.hi or 512))
    elif kind is Kind.BIN:
        base = st.binary(min_size=int(field.lo or 0), max_size=min(int(field.hi or 64), 64))
    elif kind is Kind.ARRAY:
        assert field.items is not None
        base = st.lists(_strategy(field.items), min_size=int(field.lo or 0), max_size=min(int(field.hi or 4), 4))
    elif kind is Kind.MAP:
        assert field.items is not None
        base = st.dictionaries(st.text(min_size=1, max_size=8), _strategy(field.items), max_size=3)
    else:
        assert field.record is not None
        base = _record_strategy(field.record)
    return st.one_of(st.none(), base) if field.nullable else base


def _record_strategy(record: Record) -> st.SearchStrategy[Any]:
    if record.positional:
        return st.tuples(*(_strategy(f) for f in record.fields.values())).map(list)
    required = {k: _strategy(f) for k, f in record.fields.items() if not f.optional}
    optional = {k: _strategy(f) for k, f in record.fields.items() if f.optional}
    return st.fixed_dictionaries(required, optional=optional)


@st.composite
def wire_messages(draw: st.DrawFn) -> dict[str, Any]:
    spec = c.SCHEMA[draw(st.sampled_from(SPEC_TYPES))]
    wire: dict[str, Any] = {"t": spec.t}
    if spec.reliable:
        wire["id"] = draw(st.integers(1, 2**32 - 1))
    wire.update(draw(_record_strategy(spec.record)))
    return wire


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wire_messages())
def test_every_valid_message_round_trips(wire: dict[str, Any]) -> None:
    try:
        message = c.from_map(wire)
    except FieldError:
        return  # cross-field rules (source fm without freq, board without text or cid, vol_min > vol_max)
    except OversizeError:
        return
    assert not isinstance(message, c.UnknownMessage)
    if len(pk(c.to_map(message))) > 1168:
        with pytest.raises(LocalProtocolError, match="1168"):
            c.encode(message)
        return
    data = c.encode(message)
    decoded = c.decode(data)
    assert decoded == message
    assert c.encode(decoded) == data
    keys = list(msgpack.unpackb(data, raw=False))
    fixed = ["t", "id"] if c.SCHEMA[wire["t"]].reliable else ["t"]
    assert keys[: len(fixed)] == fixed
    assert keys[len(fixed) :] == sorted(keys[len(fixed) :])


# ---- hostile input: only protocol errors, never anything else ----


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_decode_errors(data: bytes) -> None:
    with contextlib.suppress(MalformedError, OversizeError, FieldError):
        c.decode(data)


@settings(max_examples=500, deadline=None)
@given(wire_messages(), st.data())
def test_mutated_messages_raise_only_decode_errors(wire: dict[str, Any], data: st.DataObject) -> None:
    try:
        encoded = bytearray(pk(wire))
    except (OverflowError, TypeError):
        return
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        i = data.draw(st.integers(0, max(len(encoded) - 1, 0)))
        if op == "flip" and encoded:
            encoded[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "cut":
            del encoded[i:]
        else:
            encoded[i:i] = bytes([data.draw(st.integers(0, 255))])
    with contextlib.suppress(MalformedError, OversizeError, FieldError):
        c.decode(bytes(encoded))


@pytest.mark.parametrize("depth", [7, 8, 50, 1023, 1024, 1025, 1160])
def test_nesting_depth(depth: int) -> None:
    data = b"\x83\xa1t\xa3bye\xa6reason\xa0\xa1x" + b"\x91" * depth + b"\x00"
    if len(data) > 1168:
        with pytest.raises(OversizeError):
            c.decode(data)
    elif depth + 1 <= 8:
        assert isinstance(c.decode(data), c.Bye)
    else:
        with pytest.raises(OversizeError):
            c.decode(data)
