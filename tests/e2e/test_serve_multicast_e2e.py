"""`loa serve --multicast CODE=ADDR:PORT` as a real process on loopback (PROTOCOL.md section 5.7): a live relay
started through the API reaches the reference devices of the zone through its IP multicast group (they join it on
127.0.0.1, the interface of their bind address) and they play it from there; a device that does not say
``multicast`` in ``hello`` plays the same stream by unicast and joins nothing."""

from __future__ import annotations

import base64
import copy
import functools
import http.server
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from _serve import Child, spawn
from _site import wait_for

from loa.bench.alert import free_group
from loa.codecs import encode_file_to_ogg_opus, tone
from loa.control_plane import devices
from loa.control_plane.auth import Actor
from loa.control_plane.settings import ControlPlane
from loa.control_plane.testing import Seed, fast_settings
from loa.devices.content import MemoryStore
from loa.devices.core import DEFAULT_CAPS, SpeakerCore
from loa.devices.runner import DeviceRunner
from loa.protocol.noise import x25519_public

pytestmark = pytest.mark.e2e
ZONE = "20194"  # a commune of the seeded province; its hamlets 20194-01 and 20194-02 hold the devices
FRAMES = 100  # 2 s of programme on every device


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def radio(tmp_path: Path) -> Iterator[str]:
    """A 30-second Ogg Opus tone served over HTTP on loopback: the stream the server relays."""
    (tmp_path / "www").mkdir()
    encode_file_to_ogg_opus(tone(30.0, 523.0), tmp_path / "www" / "radio.opus", bitrate=32_000)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                            functools.partial(_Quiet, directory=str(tmp_path / "www")))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/radio.opus"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.anyio
async def test_serve_sends_a_zone_stream_to_its_multicast_group(anyio_backend: str, tmp_path: Path,
                                                                radio: str) -> None:
    rng = random.Random(f"serve-multicast-{tmp_path}")
    group = free_group(rng)
    data = tmp_path / "data"
    # The zones, an operator and the devices are in the database before the server starts with --multicast.
    cp = ControlPlane(fast_settings(data))
    try:
        seed = Seed(cp)
        seed.province()
        token = seed.user("dai-tinh", "noc")
        names = {"cụm 1": "20194-01", "cụm 2": "20194-02", "cụm 3": "20194-01", "cũ": "20194-02"}
        keys = {name: rng.randbytes(32) for name in names}
        with cp.db.write() as tx:
            for name, zone in names.items():
                devices.enrol(tx, Actor("test"), public_key=x25519_public(keys[name]), kind="speaker", zone=zone,
                              name=name)
    finally:
        cp.close()
    server = spawn("serve", "--data-dir", str(data), "--http", "127.0.0.1:0", "--udp", "127.0.0.1:0",
                   "--multicast", f"{ZONE}={group}")
    try:
        await _play_from_the_group(server, token, keys, group, radio)
    finally:
        server.stop()


async def _play_from_the_group(server: Child, token: str, keys: dict[str, bytes], group: str, radio: str) -> None:
    find = functools.partial(anyio.to_thread.run_sync, abandon_on_cancel=True)
    api = (await find(lambda: server.find(r"API on (http://\S+)", 60))).group(1)
    udp = await find(lambda: server.find(r"devices on udp (\S+):(\d+); server public key (\S+)", 60))
    await find(lambda: server.find(rf"loa: zone {ZONE} streams to multicast group {group}$", 10))
    address = (udp.group(1), int(udp.group(2)))
    server_key = base64.b64decode(udp.group(3))
    client = httpx2.Client(base_url=api, timeout=30.0, headers={"Authorization": f"Bearer {token}"})
    cores: dict[str, SpeakerCore] = {}
    runners: dict[str, DeviceRunner] = {}
    try:
        with anyio.fail_after(40):
            async with anyio.create_task_group() as tg:
                for i, (name, private) in enumerate(keys.items()):
                    caps = DEFAULT_CAPS if name != "cũ" else tuple(c for c in DEFAULT_CAPS if c != "multicast")
                    cores[name] = SpeakerCore(static_private=private, server_public=server_key,
                                              server_address=address, store=MemoryStore(1 << 20),
                                              rng=random.Random(i), caps=caps)
                    runners[name] = DeviceRunner(cores[name], address, bind_host="127.0.0.1")
                    tg.start_soon(runners[name].run)
                await wait_for(lambda: all(c.statistics().clock_ready for c in cores.values()), 20,
                               "every device online and in sync")
                started = await anyio.to_thread.run_sync(lambda: client.post("/api/v1/broadcasts", json={
                    "zones": [ZONE], "title": "Đài tỉnh", "url": radio}))
                assert started.status_code == 201, started.text
                bid = started.json()["bid"]
                await wait_for(lambda: all(len(c.log.for_bid(bid)) >= FRAMES for c in cores.values()), 20,
                               f"{FRAMES} frames on every device")
                wanted = {name: core.groups() for name, core in cores.items()}
                joined = {name: runner.groups() for name, runner in runners.items()}
                stats = {name: copy.copy(runner.stats) for name, runner in runners.items()}
                stopped = await anyio.to_thread.run_sync(lambda: client.post(f"/api/v1/broadcasts/{bid}/stop"))
                assert stopped.status_code == 200, stopped.text
                await wait_for(lambda: not any(r.groups() for r in runners.values()), 10,
                               "every device to leave the group")
                tg.cancel_scope.cancel()
    finally:
        client.close()
    seen = {name: (s.received, s.group_received) for name, s in stats.items()}
    print(f"group {group}; datagrams received (all, on the group): {seen}")
    members = ("cụm 1", "cụm 2", "cụm 3")
    assert {n: wanted[n] for n in members} == {n: {group} for n in members}
    assert {n: joined[n] for n in members} == {n: {group} for n in members}
    for name in members:
        assert stats[name].group_errors == 0
        assert stats[name].group_received >= FRAMES  # every frame played came on the group
        assert stats[name].received - stats[name].group_received < FRAMES // 2  # the session carried control only
    assert wanted["cũ"] == joined["cũ"] == set()
    assert stats["cũ"].group_received == 0
    assert len(cores["cũ"].log.for_bid(bid)) >= FRAMES  # by unicast
