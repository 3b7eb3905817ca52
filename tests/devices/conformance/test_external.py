"""External mode, end to end: `loa conformance run --device external` against a separate `loa device` process,
set up exactly as spec/CONFORMANCE.md section 2 tells a vendor: the device shows its key, the kit is given it, the
kit prints its address, server key and authority key, and the device is provisioned with those and runs in test
mode. Without --restart-cmd the kit reboots the device after every case; the verdicts must be those of the
reference device (roaming, which the kit cannot do to an external device, is UNIMPLEMENTED)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LOA = [sys.executable, "-m", "loa.cli"]
# one or two cases per section, among them the ones that leave state behind for the next case: a reboot and
# settings (4.4.2, 4.6.1), an emergency broadcast (6.4.1), preemption (6.2.2), a session the case ends (3.11.1)
CASES = ["3.3.1", "3.6.1", "3.9.1", "3.11.1", "4.3.2", "4.4.2", "4.6.1", "5.6.1", "6.2.2", "6.4.1", "8.0.1"]
EXPECTED = dict.fromkeys(CASES, "OK") | {"3.9.1": "UNIMPLEMENTED"}
DEADLINE_S = 85.0


def _value(lines: list[str], label: str) -> str:
    (line,) = [line for line in lines if line.startswith(label)]
    return line.removeprefix(label).strip()


def _device_key(tmp_path: Path) -> str:
    """The device's public key as `loa device` shows it on its first start (which creates its key file)."""
    unused_server = base64.b64encode(os.urandom(32)).decode()
    shown = subprocess.run([*LOA, "device", "--server", "127.0.0.1:9", "--server-key", unused_server,
                            "--key-file", str(tmp_path / "device.key"), "--duration", "0.1"],
                           capture_output=True, text=True, timeout=30, check=True)
    return _value(shown.stdout.splitlines(), "device public key:")


def test_external_device_in_its_own_process(tmp_path: Path) -> None:
    begin = time.monotonic()
    out = tmp_path / "report"
    kit_cmd = [*LOA, "conformance", "run", "--device", "external", "--device-key", _device_key(tmp_path),
               "--listen", "127.0.0.1:0", "--kit-key", str(tmp_path / "kit.key"), "--wait", "15",
               "--out", str(out)]
    for case in CASES:
        kit_cmd += ["--cases", case]
    # LOA_DEBUG: should the kit ever stop on an internal error, its traceback is in what this test shows
    kit = subprocess.Popen(kit_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "LOA_DEBUG": "1"})
    device: subprocess.Popen[bytes] | None = None
    device_log = (tmp_path / "device.log").open("wb")
    try:
        assert kit.stdout is not None
        printed: list[str] = []
        while not printed or not printed[-1].startswith("waiting for the device"):
            line = kit.stdout.readline()
            assert line, f"the kit stopped before waiting for the device: {printed}"
            printed.append(line.strip())
        host, _, port = _value(printed, "kit server address:").rpartition(":")
        assert host == "127.0.0.1", printed
        assert int(port) > 0, printed  # the port bound, not the 0 asked for
        device = subprocess.Popen(
            [*LOA, "device", "--server", _value(printed, "kit server address:"),
             "--server-key", _value(printed, "kit server public key:"),
             "--authority-key", _value(printed, "kit authority public key (alerts):"),
             "--key-file", str(tmp_path / "device.key"), "--test-mode"],
            stdout=device_log, stderr=subprocess.STDOUT)
        _, progress = kit.communicate(timeout=DEADLINE_S - (time.monotonic() - begin))
    finally:
        for process in (kit, device):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        device_log.close()
        assert kit.stdout is not None
        kit.stdout.close()
    assert (out / "index.json").is_file(), f"the kit exited {kit.returncode} without reports:\n{progress}"
    (rows,) = json.loads((out / "index.json").read_text(encoding="utf-8")).values()
    verdicts = {case: row["verdict"] for case, row in rows.items()}
    assert verdicts == EXPECTED, progress + (tmp_path / "device.log").read_text(errors="replace")
    assert time.monotonic() - begin < DEADLINE_S
