"""The parts meet where an integrator joins them: a fleet's device list is a valid part of a streamer site."""

from __future__ import annotations

from pathlib import Path

from loa.devices.fleet import write_devices_toml
from loa.devices.identity import load_or_create_key
from loa.streamer.config import load_site

EXAMPLE = Path(__file__).resolve().parents[1] / "streamer" / "example-site.toml"


def test_fleet_devices_toml_appends_to_the_example_site(tmp_path: Path) -> None:
    keys = [load_or_create_key(tmp_path / f"d{i}.key")[0] for i in range(3)]
    write_devices_toml(tmp_path / "devices.toml", keys, zone="18451")
    site = tmp_path / "site.toml"
    site.write_text(EXAMPLE.read_text(encoding="utf-8") + "\n" + (tmp_path / "devices.toml").read_text(),
                    encoding="utf-8")
    before = load_site(EXAMPLE)
    after = load_site(site)
    assert len(after.devices) == len(before.devices) + 3
