"""Restart notices on real sockets (PROTOCOL.md section 3.16): the server is killed (no ``bye``) and a new one
starts on the same port with the same key and data; it reads where the devices' sessions were and sends each a
notice, and every device takes it and handshakes at once, instead of noticing the silence from its clock probes
seconds later. A clean stop empties the file (its devices were told ``bye``), and a broken file only costs the
notices."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from _site import Site, wait_for

from loa.streamer import service as service_module
from loa.streamer.peers import load_peers

pytestmark = pytest.mark.e2e


@pytest.mark.anyio
async def test_a_killed_server_s_successor_brings_every_device_back_by_notice(
        anyio_backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_module, "PEERS_SAVE_S", 0.2)
    peers_path = tmp_path / "peers"
    peers_path.write_bytes(b"\xc1 not msgpack")  # hostile or broken: the server starts all the same
    site = Site(tmp_path, seed=71, peers_path=peers_path)
    with anyio.fail_after(40):
        async with anyio.create_task_group() as tg:
            await site.start_server(tg)
            port = site.address[1]
            await wait_for(lambda: any(line.startswith("peers file peers: not a peers file") for line in site.log), 5,
                           "the broken file reported")
            for _ in range(3):
                site.add_device("A", record=False)
            keys = {d.public_key for d in site.devices}

            def saved_boots() -> set[int]:
                peers = load_peers(peers_path)[0]
                return {p.boot for p in peers.values()} if set(peers) == keys else set()

            await wait_for(lambda: all(site.core.sessions.is_online(k) for k in keys), 10, "the first joins")
            old_boot = site.core.sessions.boot
            await wait_for(lambda: saved_boots() == {old_boot}, 5, "the sessions saved")
            await site.kill_server()
            await site.start_server(tg, port=port)
            new_boot = site.core.sessions.boot
            await wait_for(lambda: all(site.core.sessions.is_online(k) for k in keys)
                           and all(d.core.statistics().connected for d in site.devices), 20, "rejoin")
            assert site.service.notices_sent == 3
            assert [d.core.restart_notices for d in site.devices] == [1, 1, 1]
            await wait_for(lambda: "restart notices sent to 3 devices" in site.log, 5, "the notices logged")
            await wait_for(lambda: saved_boots() == {new_boot}, 5, "the new sessions saved")
            site.close()
            await site.stop_server()
            tg.cancel_scope.cancel()
    assert load_peers(peers_path) == ({}, None)  # a clean stop said bye: no session is left to notify
