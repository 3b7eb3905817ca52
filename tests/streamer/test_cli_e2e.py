"""`loa streamer --config site.toml` as a user runs it: the key file is created private, a device enrolled in the
site file connects and gets its zone path and the boot programme, and SIGTERM says bye and exits cleanly."""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from streamer_kit import KitDevice, run_device

from loa.protocol.control import Bye, Join
from loa.protocol.noise import x25519_public

pytestmark = pytest.mark.e2e
COMMAND = [sys.executable, "-c", "from loa.streamer.cli import streamer; streamer()"]


def test_the_command_runs_a_site_until_sigterm(tmp_path: Path) -> None:
    device_key = os.urandom(32)
    site = tmp_path / "site.toml"
    site.write_text(f"""
[server]
key_file = "state/server.key"
[config]
delay_ms = 300
[[zone]]
code = "42"
name = "Tỉnh Hà Tĩnh"
[[zone]]
code = "18451"
name = "Xã Hương Trạch"
parent = "42"
[[device]]
key = "{base64.b64encode(x25519_public(device_key)).decode()}"
zone = "18451"
name = "Cụm loa thôn Bình Trung"
[[broadcast]]
name = "Thử âm"
source = "tone"
zones = ["42"]
""", encoding="utf-8")
    with subprocess.Popen([*COMMAND, "--config", str(site), "--udp", "127.0.0.1:0", "--no-zeroconf"],
                          stderr=subprocess.PIPE, text=True, encoding="utf-8") as process:
        try:
            run_against(process, tmp_path, device_key)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def run_against(process: subprocess.Popen[str], tmp_path: Path, device_key: bytes) -> None:
    """Wait for the service to listen, connect the enrolled device, stop the service with SIGTERM."""
    assert process.stderr is not None
    lines = []
    while not any("listening on udp" in line for line in lines):
        line = process.stderr.readline()
        assert line, "".join(lines)
        lines.append(line)
    match = re.search(r"udp 127\.0\.0\.1:(\d+); server public key (\S+)", lines[-1])
    assert match is not None
    port, public = int(match.group(1)), base64.b64decode(match.group(2))
    key_file = tmp_path / "state" / "server.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert x25519_public(base64.b64decode(key_file.read_text())) == public

    device = KitDevice(server_public=public, server=("127.0.0.1", port), static_private=device_key)

    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            async with anyio.create_task_group() as tg:
                tg.start_soon(run_device, device, sock)
                with anyio.fail_after(10):
                    while len(device.media) < 25:
                        await anyio.sleep(0.02)
                process.send_signal(signal.SIGTERM)
                with anyio.fail_after(5):
                    while not device.of_type(Bye):
                        await anyio.sleep(0.02)
                tg.cancel_scope.cancel()

    anyio.run(main, backend="trio")
    assert device.zone_path == ("42", "18451")
    (join,) = device.of_type(Join)
    assert (join.zone, join.delay_ms) == ("42", 300)
    assert device.of_type(Bye)[0].reason == "server shutting down"
    assert process.wait(timeout=10) == 0
    output = "".join(lines) + process.stderr.read()
    assert "Traceback" not in output
    assert "SIGTERM: saying bye to every device and stopping" in output
    assert "online from 127.0.0.1" in output
