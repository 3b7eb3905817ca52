"""`loa bench hostile`: forged, unsigned, expired, replayed and wrong-zone alerts and commands at volume.

Every attempt is sent to a reference device (:class:`~loa.devices.core.SpeakerCore`) that holds a real session
with the real streamer core (:class:`~loa.streamer.core.StreamerCore`), and must be refused and counted, by the
device's own counters, exactly once under the error name PROTOCOL.md section 8 gives for it. Genuine alerts,
cancels and commands are interleaved, so that "nothing accepted" cannot be met by a device that accepts nothing:
every genuine one must take effect.

Kinds of attempt (``KINDS``; the counter each must land in, by name):

* through the server, inside the device's authenticated session (what a relay or a compromised server can send):
  ``alert_wrong_key`` (the lab authority's ``kid``, signed by another key: ``SignatureError``),
  ``alert_body_bit`` (a genuine alert with one random bit of its body flipped: the body's parse error when it no
  longer parses, ``UnknownKeyError`` when the flip lands in ``kid``, else ``SignatureError``),
  ``alert_sig_bit`` (one bit of a genuine signature flipped: ``SignatureError``), ``alert_unsigned`` (64 zero
  bytes or 64 random bytes as the signature: ``SignatureError``), ``alert_expired`` (genuinely signed,
  ``expires`` passed: ``ExpiredError``), ``alert_future`` (issued more than 30 s ahead: ``ExpiredError``),
  ``alert_replay_id`` (a new, genuinely signed alert reusing the id of one accepted: ``ReplayError``),
  ``alert_replay_message`` (the accepted alert message itself again: ``ReplayError``), ``alert_wrong_zone``
  (``WrongZoneError``), ``alert_unknown_authority`` (a whole alert signed by an authority the device does not
  know: ``UnknownKeyError``), ``cancel_forged`` (a cancel of the live genuine alert signed by another key:
  ``SignatureError``; the genuine alert must still be held afterwards);
* off-path, straight to the device's address: ``replay_alert_datagram`` and ``replay_command_datagram`` (a
  captured transport datagram that carried a genuine alert or command, resent: ``ReplayError``),
  ``command_wrong_key`` (a control message sealed under a key of the attacker's, the device's receiver index and
  a counter ahead of the window: ``AuthError``), ``command_counter_moved`` (a captured datagram with its counter
  moved ahead: ``AuthError``), ``command_forged_tag`` (random ciphertext under the device's index: ``AuthError``),
  ``command_unknown_index`` (``UnknownKeyError``), ``command_plain`` (an unencrypted control message: its first
  byte makes it RTP from an address that is not the server's, ``UnknownKeyError``), ``beacon_replay`` (the genuine
  alert as an alert beacon, PROTOCOL.md 6.4.2) and ``beacon_forged`` (a beacon signed by a stranger's key), both
  from an address that is not the server's: ``UnknownKeyError``, never a signature check.

Two shares of the ``--attempts``:

* ``--udp`` attempts go over real loopback UDP: the streamer service (:class:`~loa.streamer.service.StreamerService`)
  and ``--udp-devices`` reference devices (:class:`~loa.devices.runner.DeviceRunner`, the code of ``loa device``),
  each on its own socket, in this process; the off-path kinds come from attacker sockets on 127.0.0.2-9. Attempts
  go in batches of one kind; after each batch the bench waits until the devices' counters moved by exactly the
  batch (per kind: attempts, and counted under the documented names);
* the rest sans-I/O: the same server core and device core, datagrams handed over by function call under a virtual
  clock (no loss, no delay), so that each single attempt's counter change is checked on its own.

Metrics: per kind ``K``: ``attempts_K``, ``accepted_K`` (must be 0), ``counted_K`` (attempts counted exactly
once under a documented name); totals ``attempts``, ``accepted``, ``counted``, ``miscounted`` (= attempts -
counted), ``miscounted_as`` (``kind:name`` of what the counters of miscounted attempts moved),
``duplicates`` (copies of reliable messages the server sent again because an acknowledgement came late: the
device acknowledges them again and does not evaluate them again, so they are not counts of an attempt),
``udp_attempts``; ``genuine_alerts``/``genuine_alerts_accepted``, ``genuine_commands``/
``genuine_commands_applied``, ``genuine_cancels``/``genuine_cancels_applied``, ``genuine_held_after_forged_cancel``
(rounds); ``body_bit_reasons`` (the names the flipped bodies were refused under); ``attempts_per_s``.

The parts: the kinds, their forging and counting in :mod:`loa.bench._hostile_attempts`; the two shares in
:mod:`loa.bench._hostile_sans_io` and :mod:`loa.bench._hostile_udp`; this module is the command.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import click

from loa.bench._hostile_attempts import KINDS, HostileResult, Kind
from loa.bench._hostile_sans_io import run_sans_io
from loa.bench._hostile_udp import run_udp
from loa.bench._report import emit, environment
from loa.cli import UserError

__all__ = ["KINDS", "HostileResult", "Kind", "run_sans_io", "run_udp"]


@click.command("hostile")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object as the last line.")
@click.option("--attempts", type=click.IntRange(len(KINDS), 10_000_000), default=100_000, show_default=True,
              help="Hostile attempts in all, across every kind.")
@click.option("--udp", "udp", type=click.IntRange(0, 1_000_000), default=10_000, show_default=True,
              help="How many of them go over real loopback UDP through the streamer service.")
@click.option("--udp-devices", type=click.IntRange(1, 50), default=2, show_default=True,
              help="Reference devices on their own sockets for the UDP share.")
@click.option("--seed", type=int, default=1, show_default=True)
def hostile(*, as_json: bool, attempts: int, udp: int, udp_devices: int, seed: int) -> None:
    """Forged, unsigned, expired, replayed and wrong-zone alerts and commands: none accepted, each counted once."""
    if udp > attempts:
        raise UserError(f"--udp ({udp}) cannot exceed --attempts ({attempts})")
    result = HostileResult()
    started = time.monotonic()
    last = [started]

    def progress(label: str, total: int) -> Callable[[int], None]:
        def show(done: int) -> None:
            if time.monotonic() - last[0] >= 5.0 or done >= total:
                last[0] = time.monotonic()
                print(f"hostile {label}: {done}/{total}", file=sys.stderr)
        return show

    if udp:
        run_udp(udp, devices=udp_devices, seed=seed, result=result, progress=progress("udp", udp))
    rest = attempts - result.udp_attempts
    if rest > 0:
        run_sans_io(rest, seed=seed, result=result, progress=progress("sans-I/O", rest))
    elapsed = time.monotonic() - started
    metrics = result.metrics()
    metrics["attempts_per_s"] = round(metrics["attempts"] / elapsed, 1)
    metrics["seconds"] = round(elapsed, 2)
    env = environment(transport="sans-I/O pair under a virtual clock, and UDP loopback (streamer service and "
                                "reference devices in this process)", udp_devices=udp_devices, seed=seed)
    emit("hostile", metrics, as_json=as_json, env=env)
