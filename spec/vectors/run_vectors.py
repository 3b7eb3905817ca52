"""A tiny wire-vector runner: the shape every implementation's own runner takes (PROTOCOL.md section 11).

Usage: ``python spec/vectors/run_vectors.py [FILE.json ...]`` (default: the five files beside this one). For each
file it prints a ``FAIL <id>: <why>`` line per failing vector, then ``<file>: N passed, M failed``; the exit
status is 1 if any vector of any file failed (2 for a file it cannot read).

The file's ``name`` picks one small check per kind (the first half of this script, to imitate in any language):

* ``control``, ``session``, ``media``: ``hex`` decodes to exactly ``decoded`` and ``decoded`` encodes to exactly
  ``hex`` (given the file's ``context`` updated by the vector's); an ``error`` vector is rejected with that error.
* ``alert``: ``hex`` is an alert or cancel message (or, of kind ``beacon``, an alert beacon datagram) whose
  ``body``/``sig`` verify to ``decoded``; re-signing
  ``decoded`` with the context's authority key gives ``hex`` again; an ``error`` vector is refused with that error.
* ``priority``: the ``steps`` (``arrive``/``end``) give exactly each step's ``events``, ``current``, ``waiting``.

The checks call a handful of functions, the PLUG-IN POINTS in the second half. Here they are loa's own
(``loa.protocol``); a vendor replaces their bodies with calls into their implementation (or a host build of their
firmware) and keeps the checks as they are. Binary values in ``decoded`` are ``{"$bin": hex}``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FILES = ["control.json", "session.json", "alert.json", "priority.json", "media.json"]


# ======================================= the runner: imitate this part ========================================


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or [HERE / f for f in FILES]
    results = [run(p) for p in paths]  # every file runs, not just up to the first failure
    return 2 if None in results else 0 if all(results) else 1


def run(path: Path) -> bool | None:
    """Check every vector of one file; print its failures and its tally. None: the file cannot be read."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        check = CHECKS[doc["name"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"{path.name}: cannot run: {exc!r}")
        return None
    passed = failed = 0
    for vector in doc["vectors"]:
        ctx = {**doc["context"], **vector.get("context", {})}
        try:
            why = check(vector, ctx)
        except Exception as exc:  # noqa: BLE001 - a crash on a vector is a failure of that vector
            why = f"raised {exc!r}"
        if why is None:
            passed += 1
        else:
            failed += 1
            print(f"FAIL {vector['id']}: {why}")
    print(f"{path.name}: {passed} passed, {failed} failed")
    return failed == 0


def rejected(vector: dict[str, Any], call: Any, *args: Any) -> str | None:
    """An error vector: ``call(*args)`` must raise the error the vector names."""
    try:
        call(*args)
    except Exception as exc:  # noqa: BLE001 - any error is compared by name below
        return None if error_name(exc) == vector["error"] else f"rejected with {error_name(exc)}, not {vector['error']}"
    return f"accepted; expected {vector['error']}"


def differs(what: str, got: Any, want: Any) -> str | None:
    return None if got == want else f"{what}: got {got!r}, expected {want!r}"


def check_control(v: dict[str, Any], ctx: dict[str, Any]) -> str | None:
    data = bytes.fromhex(v["hex"])
    if "error" in v:
        return rejected(v, control_decode, data)
    if why := differs("decode", control_decode(data), v["decoded"]):
        return why
    if v.get("decode_only"):  # also the "unknown" vectors: decoded only as {t, id}
        return None
    return differs("encode", control_encode(v["decoded"]).hex(), v["hex"])


def check_session(v: dict[str, Any], ctx: dict[str, Any]) -> str | None:
    data = bytes.fromhex(v["hex"])
    if "error" in v:
        return rejected(v, session_decode, data, ctx)
    return differs("decode", session_decode(data, ctx), v["decoded"]) or differs(
        "encode", session_encode(v["decoded"], ctx).hex(), v["hex"])


def check_alert(v: dict[str, Any], ctx: dict[str, Any]) -> str | None:
    data = bytes.fromhex(v["hex"])
    if "error" in v:
        return rejected(v, alert_open, data, ctx)
    kind, body, sig, decoded = alert_open(data, ctx)
    return (differs("kind", kind, v["kind"]) or differs("body", body.hex(), v["body"])
            or differs("sig", sig.hex(), v["sig"]) or differs("decode", decoded, v["decoded"])
            or differs("sign", alert_sign(kind, v["decoded"], ctx).hex(), v["hex"]))


def check_media(v: dict[str, Any], ctx: dict[str, Any]) -> str | None:
    data = bytes.fromhex(v["hex"])
    if "error" in v:
        return rejected(v, media_decode, data, ctx)
    if "plain" in v and (why := differs("unprotect", media_unprotect(data, ctx).hex(), v["plain"])):
        return why
    return differs("decode", media_decode(data, ctx), v["decoded"]) or differs(
        "encode", media_encode(v["decoded"], ctx).hex(), v["hex"])


def check_priority(v: dict[str, Any], ctx: dict[str, Any]) -> str | None:
    arbiter = priority_new()
    for n, step in enumerate(v["steps"], 1):
        arrive = step.get("arrive")
        events = priority_arrive(arbiter, **arrive) if arrive else priority_end(arbiter, step["end"])
        current, waiting = priority_state(arbiter)
        got = {"events": events, "current": current, "waiting": waiting}
        if why := differs(f"step {n}", got, {k: step[k] for k in got}):
            return why
    return None


CHECKS = {"control": check_control, "session": check_session, "alert": check_alert, "media": check_media,
          "priority": check_priority}


# ============================ PLUG-IN POINTS: loa's implementation; replace with yours ============================


def error_name(exc: Exception) -> str:
    """The section 8 name of the error your implementation raised (loa's error classes carry those names)."""
    return type(exc).__name__


def from_json(v: Any) -> Any:
    if isinstance(v, dict):
        return bytes.fromhex(v["$bin"]) if set(v) == {"$bin"} else {k: from_json(x) for k, x in v.items()}
    return [from_json(x) for x in v] if isinstance(v, list) else v


def to_json(v: Any, *, binary: bool = True) -> Any:
    """Plain JSON values: bytes as ``{"$bin": hex}`` (or a bare hex string), tuples as lists, dataclasses as maps."""
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        v = {f.name: getattr(v, f.name) for f in dataclasses.fields(v)}
    if isinstance(v, bytes):
        return {"$bin": v.hex()} if binary else v.hex()
    if isinstance(v, dict):
        return {k: to_json(x, binary=binary) for k, x in v.items()}
    return [to_json(x, binary=binary) for x in v] if isinstance(v, list | tuple) else v


# -- control (section 4): bytes <-> the message's map -----------------------------------------------------------


def control_decode(data: bytes) -> Any:
    from loa.protocol import control

    message = control.decode(data)
    if isinstance(message, control.UnknownMessage):
        return {"t": message.t, "id": message.id}
    return to_json(control.to_map(message))


def control_encode(decoded: Any) -> bytes:
    from loa.protocol import control

    return control.encode(control.from_map(from_json(decoded)))  # type: ignore[arg-type]


# -- session (section 3): the receiving side's whole procedure, and the sender's, with the context's keys -------


def _key(ctx: dict[str, Any], name: str) -> bytes:
    return bytes.fromhex(ctx[name])


def _device_init(ctx: dict[str, Any], timestamp: int | None = None) -> Any:
    """The HandshakeInit the context's device sent (its fixed ephemeral), and its handshake state."""
    from loa.protocol._session_core import build_init
    from loa.protocol.cookie import mac1_key

    return build_init(device_static=_key(ctx, "device_static_private"), server_pub=_key(ctx, "server_static_public"),
                      ephemeral=_key(ctx, "device_ephemeral_private"), sender_index=ctx["device_sender_index"],
                      timestamp=ctx["timestamp"] if timestamp is None else timestamp, boot=ctx["device_boot"],
                      cookie=bytes.fromhex(ctx["cookie"]) if "cookie" in ctx else None,
                      server_mac1_key=mac1_key(_key(ctx, "server_static_public")))


def _transport_keys(ctx: dict[str, Any]) -> Any:
    from loa.protocol._session_core import SessionKeys
    from loa.protocol.noise import CipherState
    from loa.protocol.replay import ReplayWindow

    up = ctx["direction"] == "device_to_server"
    key = _key(ctx, "k_ds" if up else "k_sd")
    index = ctx["server_sender_index" if up else "device_sender_index"]
    keys = SessionKeys(index, index, send=CipherState(key=key), recv=CipherState(key=key), created=0.0)
    if "window" in ctx:
        keys.window = ReplayWindow.from_state(ctx["window"]["greatest"], ctx["window"]["seen"])
    return keys


def session_decode(data: bytes, ctx: dict[str, Any]) -> dict[str, Any]:
    from loa.protocol import _session_core as core
    from loa.protocol.cookie import mac1_key, open_cookie_reply
    from loa.protocol.datagram import HandshakeInit, HandshakeResponse, Transport, parse
    from loa.protocol.errors import UnknownKeyError
    from loa.protocol.noise import x25519_public
    from loa.protocol.restart import check_notice, notice_key, parse_notice

    if ctx.get("receiver") == "notice":  # section 3.16, at a device whose session is with server_boot
        key = notice_key(_key(ctx, "device_static_private"), x25519_public(_key(ctx, "server_static_private")))
        new_boot = check_notice(key, data, ctx["server_boot"])
        old_boot, _, notice_mac = parse_notice(data)
        return {"type": "RestartNotice", "old_boot": old_boot, "new_boot": new_boot, "mac": notice_mac.hex()}
    message = parse(data)
    fields: dict[str, Any] = {"type": type(message).__name__, **to_json(message, binary=False)}
    receiver = ctx.get("receiver")
    if receiver == "server" and isinstance(message, HandshakeInit):
        core.check_init_mac1(message, mac1_key(_key(ctx, "server_static_public")))
        opened = core.open_init(message, server_static=_key(ctx, "server_static_private"))
        if opened.device_pub.hex() not in ctx.get("enrolled", [ctx["device_static_public"]]):
            raise UnknownKeyError("not enrolled")
        core.check_timestamp(ctx.get("stored_timestamp"), opened.timestamp)
        fields |= {"device_static_public": opened.device_pub.hex(), "timestamp": opened.timestamp,
                   "boot": opened.boot}
    elif receiver == "device" and isinstance(message, HandshakeResponse):
        boot, keys = core.open_response(message, _device_init(ctx)[1], now=0.0,
                                        device_mac1_key=mac1_key(_key(ctx, "device_static_public")))
        fields |= {"boot": boot, "k_ds": bytes(keys.send.key or b"").hex(), "k_sd": bytes(keys.recv.key or b"").hex()}
    elif receiver == "device":
        init = _device_init(ctx)[0]
        fields["cookie"] = open_cookie_reply(message, init.mac1, _key(ctx, "server_static_public")).hex()  # type: ignore[arg-type]
    elif receiver == "transport" and isinstance(message, Transport):
        keys = _transport_keys(ctx)
        if message.receiver_index != keys.local_index:
            raise UnknownKeyError("no session with this index")
        fields["plaintext"] = core.open_transport(keys, message)[0].hex()
    return fields


def session_encode(decoded: dict[str, Any], ctx: dict[str, Any]) -> bytes:
    from loa.protocol import _session_core as core
    from loa.protocol.cookie import address_bytes, mac, make_cookie_reply
    from loa.protocol.restart import encode_notice

    if decoded["type"] == "RestartNotice":
        return encode_notice(_key(ctx, "notice_key"), decoded["old_boot"], decoded["new_boot"])
    if decoded["type"] == "HandshakeInit":
        return bytes(_device_init(ctx, decoded["timestamp"])[0].to_bytes())
    if decoded["type"] == "HandshakeResponse":
        opened = core.open_init(_device_init(ctx)[0], server_static=_key(ctx, "server_static_private"))
        response, _ = core.build_response(opened.handshake, ephemeral=_key(ctx, "server_ephemeral_private"),
                                          sender_index=decoded["sender_index"], boot=decoded["boot"],
                                          receiver_index=decoded["receiver_index"], now=0.0)
        return bytes(response.to_bytes())
    if decoded["type"] == "CookieReply":
        cookie = mac(_key(ctx, "cookie_secret"), address_bytes(tuple(ctx["source_address"])))
        return bytes(make_cookie_reply(decoded["receiver_index"], cookie, _device_init(ctx)[0].mac1,
                                       _key(ctx, "server_static_public"), bytes.fromhex(decoded["nonce"])).to_bytes())
    keys = _transport_keys(ctx)
    keys.sent = decoded["counter"]
    return bytes(core.seal_transport(keys, bytes.fromhex(decoded["plaintext"])).to_bytes())


# -- alert (sections 6.4, 6.5): verify a signed alert or cancel, and sign one ----------------------------------


def alert_open(data: bytes, ctx: dict[str, Any]) -> tuple[str, bytes, bytes, Any]:
    """(kind, body, sig, the verified body as a map without its absent fields); raises what the device would
    refuse it with."""
    from loa.protocol import control
    from loa.protocol.alert import verify_alert, verify_cancel

    trusted = {bytes.fromhex(k): bytes.fromhex(p) for k, p in ctx["trusted_keys"].items()}
    if data[:1] == b"\x05":  # an alert beacon (section 6.4.2): the datagram, then the alert as in 6.4
        from loa.protocol.beacon import parse_beacon

        body, sig = parse_beacon(data)
        seen = {(bytes.fromhex(kid), alert_id) for kid, alert_id in ctx["seen"]}
        alert = verify_alert(body, sig, trusted, now=ctx["now"], zone_path=ctx["zone_path"], seen_ids=seen)
        return "beacon", body, sig, {k: x for k, x in to_json(alert).items() if x is not None}
    message = control.decode(data)
    if isinstance(message, control.SignedAlert):
        seen = {(bytes.fromhex(kid), alert_id) for kid, alert_id in ctx["seen"]}
        alert = verify_alert(message.body, message.sig, trusted, now=ctx["now"], zone_path=ctx["zone_path"],
                             seen_ids=seen)
        return "alert", message.body, message.sig, {k: x for k, x in to_json(alert).items() if x is not None}
    if isinstance(message, control.SignedAlertCancel):
        cancel = verify_cancel(message.body, message.sig, trusted, now=ctx["now"])
        return "cancel", message.body, message.sig, {k: x for k, x in to_json(cancel).items() if x is not None}
    raise TypeError(f"not an alert or alert_cancel: {message!r}")


def alert_sign(kind: str, decoded: Any, ctx: dict[str, Any]) -> bytes:
    """The control message (id 1) carrying ``decoded`` signed with the context's authority key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from loa.protocol import control
    from loa.protocol.alert import Alert, AlertCancel, sign_alert, sign_cancel

    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(ctx["authority_secret"]))
    fields: dict[str, Any] = {k: tuple(x) if isinstance(x, list) else x for k, x in from_json(decoded).items()}
    if kind == "beacon":
        from loa.protocol.beacon import encode_beacon

        return encode_beacon(*sign_alert(Alert(**fields), key))
    if kind == "alert":
        body, sig = sign_alert(Alert(**fields), key)
        return control.encode(control.SignedAlert(body=body, sig=sig, id=1))
    body, sig = sign_cancel(AlertCancel(**fields), key)
    return control.encode(control.SignedAlertCancel(body=body, sig=sig, id=1))


# -- media (section 5): RTP, RTCP, SRTP, SRTCP with the context's key -----------------------------------------


RTCP_TYPES = {"SenderReport": "sr", "ReceiverReport": "rr", "SourceDescription": "sdes", "Bye": "bye",
              "GenericNack": "nack", "RawRtcp": "raw"}


def media_unprotect(data: bytes, ctx: dict[str, Any]) -> bytes:
    """SRTP/SRTCP: the plain packet, after the receiver of the context accepted ``ctx["received"]``."""
    from loa.protocol.srtp import StreamUnprotector

    rx = StreamUnprotector(bytes.fromhex(ctx["key"]))
    unprotect = rx.unprotect_rtcp if ctx["layer"] == "srtcp" else rx.unprotect
    for seen in ctx.get("received", []):
        unprotect(bytes.fromhex(seen))
    return bytes(unprotect(data))


def media_decode(data: bytes, ctx: dict[str, Any]) -> dict[str, Any]:
    from loa.protocol.rtcp import SenderReport, parse_rtcp
    from loa.protocol.rtp import parse_rtp
    from loa.protocol.rtptime import ntp64_to_ns

    layer = ctx["layer"]
    plain = media_unprotect(data, ctx) if layer in ("srtp", "srtcp") else data
    if layer in ("rtp", "srtp"):
        packet = parse_rtp(plain)
        out: dict[str, Any] = to_json(packet, binary=False)
        if packet.ntp64 is not None:
            out |= {"ntp64": packet.ntp64, "ntp_ns": ntp64_to_ns(packet.ntp64)}
        return out
    packets = []
    for p in parse_rtcp(plain):
        fields = {"type": RTCP_TYPES[type(p).__name__], **to_json(p, binary=False)}
        packets.append(fields | {"ntp_ns": ntp64_to_ns(p.ntp)} if isinstance(p, SenderReport) else fields)
    if layer == "srtcp":  # the E flag and SRTCP index: the 4 bytes before the 10-byte tag
        return {"packets": packets, "srtcp_index": int.from_bytes(data[-14:-10], "big") & 0x7FFFFFFF}
    return {"packets": packets}


def media_encode(decoded: dict[str, Any], ctx: dict[str, Any]) -> bytes:
    from loa.protocol import rtcp
    from loa.protocol.rtp import ExtensionElement, RtpPacket
    from loa.protocol.srtp import StreamProtector

    layer, protector = ctx["layer"], StreamProtector(bytes.fromhex(ctx["key"]))
    if layer in ("rtp", "srtp"):
        d = decoded
        packet = RtpPacket(payload_type=d["payload_type"], sequence=d["sequence"], timestamp=d["timestamp"],
                           ssrc=d["ssrc"], payload=bytes.fromhex(d["payload"]), marker=d["marker"],
                           csrcs=tuple(d["csrcs"]), extension_profile=d["extension_profile"],
                           extensions=tuple(ExtensionElement(e["id"], bytes.fromhex(e["data"]))
                                            for e in d["extensions"]),
                           extension_data=bytes.fromhex(d["extension_data"]), padding=d["padding"])
        return packet.to_bytes() if layer == "rtp" else bytes(protector.protect(packet.to_bytes()))
    plain = rtcp.build_rtcp([_rtcp_packet(p) for p in decoded["packets"]])
    if layer == "rtcp":
        return plain
    for _ in range(decoded["srtcp_index"] - 1):  # a protector numbers its SRTCP packets from 1
        protector.protect_rtcp(plain)
    return bytes(protector.protect_rtcp(plain))


def _rtcp_packet(p: dict[str, Any]) -> Any:
    from loa.protocol import rtcp

    blocks = tuple(rtcp.ReportBlock(**b) for b in p.get("reports", []))
    match p["type"]:
        case "sr":
            return rtcp.SenderReport(p["ssrc"], p["ntp"], p["rtp_timestamp"], p["packet_count"], p["octet_count"],
                                     blocks)
        case "rr":
            return rtcp.ReceiverReport(p["ssrc"], blocks)
        case "sdes":
            return rtcp.SourceDescription(tuple(
                rtcp.SdesChunk(c["ssrc"], tuple((t, bytes.fromhex(x)) for t, x in c["items"])) for c in p["chunks"]))
        case "bye":
            return rtcp.Bye(tuple(p["ssrcs"]), bytes.fromhex(p["reason"]))
        case "nack":
            return rtcp.GenericNack(p["sender_ssrc"], p["media_ssrc"], tuple(p["lost"]))
    return rtcp.RawRtcp(p["packet_type"], p["count"], bytes.fromhex(p["body"]))


# -- priority (sections 6.1, 6.2): the device's arbiter --------------------------------------------------------


def priority_new() -> Any:
    from loa.protocol.priority import Arbiter

    return Arbiter()


def _events(events: Any) -> list[dict[str, Any]]:
    return [{"event": type(e).__name__, **to_json(e)} for e in events]


def priority_arrive(arbiter: Any, bid: int, cls: int, lvl: int, policy: str) -> list[dict[str, Any]]:
    return _events(arbiter.arrive(bid, cls, lvl, policy))


def priority_end(arbiter: Any, bid: int) -> list[dict[str, Any]]:
    return _events(arbiter.end(bid))


def priority_state(arbiter: Any) -> tuple[int | None, list[int]]:
    """The current bid (None when idle) and the waiting bids in the order they would resume."""
    return arbiter.current, list(arbiter.waiting)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
