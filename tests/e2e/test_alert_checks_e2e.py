"""Alerts that are forged, unsigned, from an unknown authority, expired or replayed, sent through the real server
to real devices, are ignored and counted by error name; a genuine one still plays."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from _site import Site, wait_for
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from loa.protocol.alert import ALERT_CONTEXT, Alert, encode_alert, key_id, sign_alert
from loa.protocol.control import SignedAlert
from loa.streamer.sources import ToneSource

pytestmark = pytest.mark.e2e
NS = 1_000_000_000


def _signed(alert: Alert, key: Ed25519PrivateKey) -> SignedAlert:
    body, sig = sign_alert(alert, key)
    return SignedAlert(body=body, sig=sig)


@pytest.mark.anyio
async def test_bad_alerts_are_counted_and_a_genuine_one_plays(anyio_backend: str, tmp_path: Path) -> None:
    site = Site(tmp_path, seed=21)
    stranger = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    lab_kid = key_id(site.authority_public)
    with anyio.fail_after(25):
        async with anyio.create_task_group() as tg:
            await site.start_server(tg)
            devices = [site.add_device("A"), site.add_device("A")]
            await wait_for(lambda: all(d.core.statistics().clock_ready and d.core.settings.zones
                                       for d in devices), 10, "clock sync and config")
            now_ns = site.server_now_ns()

            def alert(name: str, *, kid: bytes = lab_kid, issued: int = now_ns, ttl_s: float = 60) -> Alert:
                return Alert(id=name, kid=kid, status="actual", cls=2, lvl=2, zones=("A",), issued=issued,
                             expires=issued + round(ttl_s * NS), bid=site.core.allocate_bid())

            forged_body = encode_alert(alert("forged"))
            bad = [
                SignedAlert(body=forged_body, sig=stranger.sign(ALERT_CONTEXT + forged_body)),  # SignatureError
                SignedAlert(body=encode_alert(alert("unsigned")), sig=bytes(64)),  # SignatureError
                _signed(alert("stranger", kid=key_id(stranger.public_key())), stranger),
                _signed(alert("expired", issued=now_ns - 120 * NS), site.authority),
            ]
            for message in bad:
                for device in devices:
                    site.core.send_command(device.public_key, message, site.service.now())
            site.service.changed()
            refused = {"SignatureError": 2, "UnknownKeyError": 1, "ExpiredError": 1}
            await wait_for(lambda: all(d.core.statistics().alerts_refused == refused for d in devices), 5,
                           "the refusals")
            genuine = alert("genuine", ttl_s=30)
            body, sig = sign_alert(genuine, site.authority)
            bid = site.service.trigger_alert(ToneSource(1000.0, seconds=1.0), body=body, sig=sig)
            assert bid == genuine.bid
            await wait_for(lambda: all(sum(e.bid == bid for e in d.core.log.entries) >= 45 for d in devices), 8,
                           "the genuine alert's audio")
            for device in devices:  # the genuine alert again: a replay
                site.core.send_command(device.public_key, SignedAlert(body=body, sig=sig), site.service.now())
            site.service.changed()
            await wait_for(lambda: all(d.core.statistics().alerts_refused.get("ReplayError") == 1
                                       for d in devices), 5, "the replay's refusal")
            site.close()
            await site.stop_server()
            tg.cancel_scope.cancel()
    for device in devices:
        stats = device.core.statistics()
        assert stats.alerts_accepted == 1
        assert stats.alerts_refused == {**refused, "ReplayError": 1}
        for name, count in stats.alerts_refused.items():
            assert stats.drops[name] >= count
        played = {e.bid for e in device.core.log.entries}
        assert played == {bid}  # nothing of the refused ones played
