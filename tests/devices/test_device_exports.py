"""The public surface of loa.devices is its __all__, and the package keeps to the import rules."""

from __future__ import annotations

import importlib
import subprocess
import sys

import loa.devices


def test_every_exported_name_exists_and_nothing_public_is_left_out() -> None:
    exported = loa.devices.__all__
    assert len(exported) == len(set(exported))
    assert [n for n in exported if not hasattr(loa.devices, n)] == []
    public = {n for n, v in vars(loa.devices).items()
              if not n.startswith("_") and not isinstance(v, type(importlib)) and n != "annotations"}
    assert public - set(exported) == set()


def test_devices_never_import_the_server_side() -> None:
    code = ("import sys, loa.devices, loa.devices.cli, loa.devices.runner; "
            "print(sorted(m for m in sys.modules if m.startswith(('loa.streamer', 'loa.control_plane'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
