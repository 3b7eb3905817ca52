"""Write spec/vectors/control.json: control message vectors (PROTOCOL.md section 4). Deterministic.

Run: python spec/vectors/make_control.py
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Any

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from loa.protocol import control as c
from loa.protocol.alert import Alert, AlertCancel, key_id, sign_alert, sign_cancel

OUT = pathlib.Path(__file__).with_name("control.json")
T = 1_750_000_000_000_000_000
CID = hashlib.sha256(b"loa test programme").digest()
KEY = bytes(range(30))
ENROLMENT = "K7Q2-9XF3"
AUTHORITY = Ed25519PrivateKey.from_private_bytes(
    bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
)
KID = key_id(AUTHORITY.public_key())
ALERT_BODY, ALERT_SIG = sign_alert(
    Alert(id="a-1", kid=KID, status="actual", cls=2, lvl=2, zones=("79",), issued=T, expires=T + 3600 * 10**9, bid=77),
    AUTHORITY,
)
CANCEL_BODY, CANCEL_SIG = sign_cancel(AlertCancel(kid=KID, cancel="a-1", issued=T + 60 * 10**9), AUTHORITY)
NACK = bytes.fromhex("81cd0003 00000001 2a2a2a2a 04d20005")

VALID: list[tuple[str, str, c.Message]] = [
    ("ack", "acknowledgement of four ids", c.Ack(ids=(1, 2, 3, 300))),
    ("time_req", "clock probe, t1 on the device clock", c.TimeReq(t1=T + 123_456_789)),
    ("time_resp", "clock answer", c.TimeResp(t1=T + 123_456_789, t2=T + 140_000_000, t3=T + 140_250_000)),
    (
        "hello",
        "first message of a speaker, with an enrolment token",
        c.Hello(kind="speaker", model="LOA-S1", fw="1.4.2", caps=("fm", "mic", "line", "amp"), token=ENROLMENT, id=1),
    ),
    (
        "config",
        "every config value",
        c.Config(
            values=c.ConfigValues(
                telemetry_s=60,
                keepalive_s=15,
                delay_ms=500,
                watchdog_ms=1500,
                fallback="fm",
                fallback_khz=99900,
                exercise=False,
                zones=("79", "760", "26734", "26734-03"),
                preroll_ms=8000,
                tz="Asia/Ho_Chi_Minh",
                vol_min=10,
                vol_max=90,
            ),
            id=2,
        ),
    ),
    ("config.partial", "config that changes one value", c.Config(values=c.ConfigValues(watchdog_ms=5000), id=3)),
    ("volume", "the literal example of section 4.2", c.Volume(level=80, id=7)),
    ("mute", "mute on", c.Mute(on=True, id=8)),
    ("amp", "amplifier on with 8 s pre-roll", c.Amp(on=True, preroll_ms=8000, id=9)),
    ("source", "relay FM 99.9 MHz", c.Source(src="fm", freq_khz=99900, id=10)),
    ("source.ip", "back to IP audio", c.Source(src="ip", id=11)),
    (
        "fm_presets",
        "two FM stations",
        c.FmPresets(
            presets=(c.FmPreset(freq_khz=99900, name="VOV1"), c.FmPreset(freq_khz=102700, name="Huyện")), id=12
        ),
    ),
    ("reboot", "reboot in 5 s", c.Reboot(delay_ms=5000, id=13)),
    ("prefetch", "fetch a 48 kB programme", c.Prefetch(cid=CID, size=48_213, name="Bản tin sáng", id=14)),
    ("fetch", "ask for 1024 bytes at offset 2048", c.Fetch(cid=CID, off=2048, len=1024)),
    ("chunk", "a piece of content", c.Chunk(cid=CID, off=2048, data=b"OggS" + bytes(12))),
    ("have", "content verified", c.Have(cid=CID, ok=True, id=1)),
    (
        "play",
        "play stored content at a server time",
        c.Play(bid=4242, cid=CID, at=T + 30 * 10**9, cls=0, lvl=0, policy="resume", zone="26734", id=15),
    ),
    (
        "join",
        "join a live multicast stream",
        c.Join(
            bid=4243,
            ssrc=0x2A2A2A2A,
            key=KEY,
            cls=1,
            lvl=1,
            policy="drop",
            zone="760",
            delay_ms=400,
            group="239.1.2.3:5004",
            id=16,
        ),
    ),
    ("rotate", "new SSRC and key", c.Rotate(bid=4243, ssrc=0x2B2B2B2B, key=KEY[::-1], id=17)),
    ("leave", "the broadcast ended", c.Leave(bid=4243, id=18)),
    (
        "alert",
        "a signed alert (body and signature as in alert.json)",
        c.SignedAlert(body=ALERT_BODY, sig=ALERT_SIG, id=19),
    ),
    ("alert_cancel", "a signed cancel", c.SignedAlertCancel(body=CANCEL_BODY, sig=CANCEL_SIG, id=20)),
    (
        "board",
        "an e-board text item shown until a time",
        c.Board(item=5, cls=1, lvl=0, text="Lịch tiêm chủng: 8h thứ Hai", until=T + 86400 * 10**9, id=21),
    ),
    ("board_clear", "remove an item", c.BoardClear(item=5, id=22)),
    (
        "telemetry",
        "a speaker's status report",
        c.Telemetry(
            v=c.TelemetryValues(
                imei="356938035643809",
                serial="LS1-000123",
                fw="1.4.2",
                uptime_s=86400,
                net="cell",
                stream="playing",
                mode="ip",
                rx_bytes=10_485_760,
                stream_s=3600,
                volume=80,
                muted=False,
                amp="on",
                line="ok",
                power="mains",
                battery_pct=100,
                temp_c=41,
                store_free=1_073_741_824,
                fm_khz=99900,
                fm_rssi=38,
                fm_snr=21,
                lat=108_038_000,
                lon=1_066_298_000,
                cell_dbm=-97,
                cell_op="45204",
                cell_rat="4g",
                cell_band="B3",
                loss=0.015625,
                jitter_ms=3.5,
                late=2,
                fec_recovered=17,
                plc=3,
                nacks_sent=9,
                clk_offset_ns=-1_234_567,
                clk_drift_ppm=12.5,
                clk_err_ns=180_000,
                drops={"AuthError": 1, "ReplayError": 4},
                faults=("line_open",),
            ),
            id=2,
        ),
    ),
    ("state", "playing nothing since a time", c.State(bid=None, src="idle", since=T, id=3)),
    ("state.playing", "playing a broadcast", c.State(bid=4242, src="ip", since=T + 30 * 10**9, id=4)),
    ("rtcp", "an RTCP generic NACK", c.Rtcp(pkt=NACK)),
    (
        "played",
        "two frames played",
        c.Played(
            log=(
                c.PlayedFrame(bid=4242, ssrc=0x2A2A2A2A, seq=1000, rtp_ts=960000, at=T),
                c.PlayedFrame(bid=4242, ssrc=0x2A2A2A2A, seq=1001, rtp_ts=960960, at=T + 20_000_000),
            ),
            id=5,
        ),
    ),
    ("bye", "closing the session", c.Bye(reason="shutdown")),
]


def pk(obj: Any) -> bytes:
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


VOLUME = pk({"t": "volume", "id": 7, "level": 80})

DECODE_ONLY: list[tuple[str, str, bytes, dict[str, Any], bool]] = [
    (
        "unknown_type",
        "a reliable message of a type this version does not define: acknowledged and ignored",
        pk({"t": "x_future", "id": 9, "what": [1, 2, 3]}),
        {"t": "x_future", "id": 9},
        True,
    ),
    (
        "unknown_type.no_id",
        "an unreliable message of an unknown type: ignored",
        pk({"t": "x_future"}),
        {"t": "x_future", "id": None},
        True,
    ),
    (
        "unknown_field",
        "an unknown field is ignored",
        pk({"t": "volume", "id": 7, "level": 80, "ramp_ms": 500}),
        {"t": "volume", "id": 7, "level": 80},
        False,
    ),
    (
        "key_order",
        "keys in any order are accepted",
        pk({"level": 80, "id": 7, "t": "volume"}),
        {"t": "volume", "id": 7, "level": 80},
        False,
    ),
    (
        "long_int",
        "an integer in a longer form than needed is accepted",
        bytes.fromhex("83a174a6766f6c756d65a26964ce00000007a56c6576656ccd0050"),
        {"t": "volume", "id": 7, "level": 80},
        False,
    ),
    (
        "id_on_unreliable",
        "an id on an unreliable type is ignored like an unknown field",
        pk({"t": "time_req", "id": 0, "t1": 5}),
        {"t": "time_req", "t1": 5},
        False,
    ),
    (
        "board.until_nil",
        "board with until nil: no end time",
        pk({"t": "board", "id": 4, "cls": 0, "item": 1, "lvl": 0, "text": "x", "until": None}),
        {"t": "board", "id": 4, "cls": 0, "item": 1, "lvl": 0, "text": "x"},
        False,
    ),
]


def nest(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


INVALID: list[tuple[str, str, bytes, str]] = [
    ("not_msgpack", "0xc1 is never used in msgpack", b"\xc1", "MalformedError"),
    ("empty", "no bytes at all", b"", "MalformedError"),
    ("truncated", "the volume example cut short", VOLUME[:10], "MalformedError"),
    ("array", "an array, not a map", pk(["volume", 7, 80]), "MalformedError"),
    ("scalar", "a string, not a map", pk("volume"), "MalformedError"),
    ("trailing", "the volume example followed by one more byte", VOLUME + b"\x00", "MalformedError"),
    ("two_maps", "two maps in one message", VOLUME + VOLUME, "MalformedError"),
    ("missing_t", "no t", pk({"id": 7, "level": 80}), "MalformedError"),
    ("t_not_str", "t is an integer", pk({"t": 5, "id": 7}), "MalformedError"),
    ("t_bin", "t is binary, not a str", pk({"t": b"volume", "id": 7, "level": 80}), "MalformedError"),
    (
        "duplicate_key",
        "level twice",
        bytes.fromhex("84a174a6766f6c756d65a2696407a56c6576656c50a56c6576656c51"),
        "MalformedError",
    ),
    ("int_key", "a map key that is not a str", pk({"t": "volume", "id": 7, "level": 80, 1: 2}), "MalformedError"),
    ("bin_key", "a map key that is binary", pk({"t": "volume", "id": 7, "level": 80, b"x": 2}), "MalformedError"),
    (
        "invalid_utf8",
        "a str that is not UTF-8",
        b"\x82" + pk("t") + pk("bye") + pk("reason") + b"\xa2\xff\xfe",
        "MalformedError",
    ),
    (
        "ext",
        "an ext value (not a protocol value type)",
        pk({"t": "volume", "id": 7, "level": 80, "x": msgpack.ExtType(5, b"")}),
        "MalformedError",
    ),
    ("missing_field", "volume without level", pk({"t": "volume", "id": 7}), "FieldError"),
    ("missing_id", "a reliable message without id", pk({"t": "volume", "level": 80}), "FieldError"),
    ("wrong_type", "level is a str", pk({"t": "volume", "id": 7, "level": "80"}), "FieldError"),
    ("bool_for_int", "level is a bool", pk({"t": "volume", "id": 7, "level": True}), "FieldError"),
    ("float_for_int", "level is a float", pk({"t": "volume", "id": 7, "level": 80.0}), "FieldError"),
    ("nil_required", "level is nil", pk({"t": "volume", "id": 7, "level": None}), "FieldError"),
    ("volume_range", "volume 101", pk({"t": "volume", "id": 7, "level": 101}), "FieldError"),
    ("negative_uint", "volume -1", pk({"t": "volume", "id": 7, "level": -1}), "FieldError"),
    ("id_zero", "id 0", pk({"t": "volume", "id": 0, "level": 80}), "FieldError"),
    ("id_too_big", "id 2^32", pk({"t": "volume", "id": 2**32, "level": 80}), "FieldError"),
    ("id_str", "id is a str", pk({"t": "volume", "id": "7", "level": 80}), "FieldError"),
    ("unknown_type.bad_id", "an unknown type whose id is negative", pk({"t": "x_future", "id": -1}), "FieldError"),
    ("oversize_string", "a 513-byte str", pk({"t": "bye", "reason": "x" * 513}), "OversizeError"),
    (
        "too_many_items",
        "an array of 65 entries",
        pk({"t": "hello", "id": 1, "kind": "speaker", "model": "m", "fw": "1", "caps": ["c"] * 65}),
        "OversizeError",
    ),
    (
        "too_many_keys",
        "a map of 65 entries",
        pk({"t": "volume", "id": 7, "level": 80, **{f"k{i}": i for i in range(62)}}),
        "OversizeError",
    ),
    ("oversize_message", "1169 bytes", pk({"t": "x_future", "b": bytes(1169 - 17)}), "OversizeError"),
    (
        "nesting",
        "arrays nested 9 deep in an unknown field",
        pk({"t": "bye", "reason": "", "x": nest(8)}),
        "OversizeError",
    ),
    ("nesting.deep", "arrays nested 1100 deep", bytes.fromhex("81a178") + b"\x91" * 1100 + b"\x00", "OversizeError"),
    (
        "cid_length",
        "a 31-byte cid",
        pk({"t": "prefetch", "id": 1, "cid": CID[:31], "size": 1, "name": ""}),
        "FieldError",
    ),
    ("cid_str", "a cid as str", pk({"t": "have", "id": 1, "cid": "x" * 32, "ok": True}), "FieldError"),
    (
        "key_length",
        "a 29-byte SRTP key",
        pk({"t": "rotate", "id": 1, "bid": 1, "ssrc": 1, "key": KEY[:29]}),
        "FieldError",
    ),
    (
        "sig_length",
        "a 63-byte signature",
        pk({"t": "alert", "id": 1, "body": ALERT_BODY, "sig": ALERT_SIG[:63]}),
        "FieldError",
    ),
    ("source_fm_without_freq", "source fm needs freq_khz", pk({"t": "source", "id": 1, "src": "fm"}), "FieldError"),
    ("source_value", "an undefined source", pk({"t": "source", "id": 1, "src": "tape"}), "FieldError"),
    (
        "board_empty",
        "board needs text or cid",
        pk({"t": "board", "id": 1, "item": 1, "cls": 0, "lvl": 0}),
        "FieldError",
    ),
    ("ack_empty", "ack of no ids", pk({"t": "ack", "ids": []}), "FieldError"),
    ("ack_id_zero", "ack of id 0", pk({"t": "ack", "ids": [0]}), "FieldError"),
    (
        "policy_value",
        "an undefined policy",
        pk({"t": "play", "id": 1, "bid": 1, "cid": CID, "at": 0, "cls": 0, "lvl": 0, "policy": "later", "zone": "79"}),
        "FieldError",
    ),
    ("class_range", "class 3", pk({"t": "board", "id": 1, "item": 1, "cls": 3, "lvl": 0, "text": "x"}), "FieldError"),
    ("fetch_len", "fetch of more than 1024 bytes", pk({"t": "fetch", "cid": CID, "off": 0, "len": 1025}), "FieldError"),
    (
        "config_zones_type",
        "config zones is a str",
        pk({"t": "config", "id": 1, "values": {"zones": "79"}}),
        "FieldError",
    ),
    (
        "config_volume_limits",
        "vol_min above vol_max",
        pk({"t": "config", "id": 1, "values": {"vol_min": 80, "vol_max": 20}}),
        "FieldError",
    ),
    ("telemetry_range", "telemetry volume 101", pk({"t": "telemetry", "id": 1, "v": {"volume": 101}}), "FieldError"),
    (
        "telemetry_loss_range",
        "telemetry loss above 1",
        pk({"t": "telemetry", "id": 1, "v": {"loss": 1.5}}),
        "FieldError",
    ),
    (
        "played_entry",
        "a played entry of 3 values, not 5",
        pk({"t": "played", "id": 1, "log": [[1, 2, 3]]}),
        "FieldError",
    ),
]


def jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$bin": value.hex()}
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def main() -> None:
    vectors: list[dict[str, Any]] = []
    for name, description, message in VALID:
        vectors.append(
            {
                "id": f"control.{name}",
                "description": description,
                "hex": c.encode(message).hex(),
                "decoded": jsonable(c.to_map(message)),
            }
        )
    for name, description, data, decoded, unknown in DECODE_ONLY:
        vector = {
            "id": f"control.{name}",
            "description": description,
            "hex": data.hex(),
            "decoded": decoded,
            "decode_only": True,
        }
        if unknown:
            vector["unknown"] = True
        vectors.append(vector)
    for name, description, data, error in INVALID:
        vectors.append({"id": f"control.err.{name}", "description": description, "hex": data.hex(), "error": error})
    doc = {
        "name": "control",
        "description": "Control messages: one msgpack map per message; keys t, id, then the rest sorted. "
        "Vectors with decode_only decode to 'decoded' but are not what an encoder writes; with unknown the "
        "decoder returns an unknown-type message (t and id) rather than an error. Floats are msgpack float64.",
        "spec": "PROTOCOL.md section 4",
        "context": {},
        "vectors": vectors,
    }
    OUT.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
