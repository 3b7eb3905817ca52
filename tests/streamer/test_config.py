"""The site file: every mistake is one clear line naming the file, the entry and the problem; the example site
loads; the CLI reports errors without a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import loa
from loa.streamer.cli import streamer
from loa.streamer.config import SiteConfigError, load_site

ZONES = """
[[zone]]
code = "42"
name = "Tỉnh Hà Tĩnh"
[[zone]]
code = "436"
name = "Huyện Hương Khê"
parent = "42"
"""
KEY = "Ke5TVMjP7UNMvb4XeZewDvEhqABkz5iGW9sHJDakzj8="

# (id, file contents, the message after "site.toml: ")
CASES = [
    ("toml", "[server\nudp=1", "not valid TOML: "),
    ("unknown table", ZONES + "[zones]\n", ("unknown table 'zones' (known: server, config, zone, device, authority, "
                                          "broadcast)")),
    ("udp", '[server]\nudp = "localhost:4433"\n' + ZONES,
     "[server]: udp: expected HOST:PORT with a numeric IP address, not 'localhost:4433'"),
    ("udp port", '[server]\nudp = "127.0.0.1:70000"\n' + ZONES, ("[server]: udp: port must be 0-65535 in "
                                                               "'127.0.0.1:70000'")),
    ("server key", '[server]\nport = 4433\n' + ZONES, ("[server]: unknown key 'port' (known: udp, key_file, "
                                                      "content_dir, name, zeroconf, backend, volume, "
                                                      "bitrate, fec)")),
    ("backend", '[server]\nbackend = "gevent"\n' + ZONES, ("[server]: backend must be one of trio, asyncio, not "
                                                          "'gevent'")),
    ("volume", "[server]\nvolume = 150\n" + ZONES, "[server]: volume must be 0-100, not 150"),
    ("volume type", '[server]\nvolume = "80"\n' + ZONES, "[server]: volume must be int, not '80'"),
    ("zeroconf type", "[server]\nzeroconf = 1\n" + ZONES, "[server]: zeroconf must be bool, not 1"),
    ("config range", "[config]\nwatchdog_ms = 10\n" + ZONES, "[config]: watchdog_ms: 10 outside 200..60000"),
    ("config rule", "[config]\nvol_min = 90\nvol_max = 10\n" + ZONES, "[config]: vol_min must be at most vol_max"),
    ("config choice", '[config]\nfallback = "radio"\n' + ZONES, ("[config]: fallback: 'radio' is not one of local, fm, "
                                                                "silence")),
    ("config zones", '[config]\nzones = ["42"]\n' + ZONES, "[config]: unknown key 'zones'"),
    ("no zone", "[server]\n", "no [[zone]]: a site needs at least one zone"),
    ("zone table", '[zone]\ncode = "42"\n', "[[zone]] must be an array of tables ([[zone]]), not a single table"),
    ("zone code", '[[zone]]\nname = "Tỉnh"\n', "[[zone]] #1: missing 'code'"),
    ("zone code spaces", '[[zone]]\ncode = " 42"\n', ("[[zone]] #1 (code \" 42\"): code must be 1-64 bytes "
                                                    "without outer spaces, not ' 42'")),
    ("zone twice", ZONES + '[[zone]]\ncode = "42"\n', ("[[zone]] #3 (code \"42\"): zone code '42' is already used "
                                                      "by [[zone]] #1 (code \"42\")")),
    ("zone parent", ZONES + '[[zone]]\ncode = "18451"\nparent = "44x"\n',
     "[[zone]] #3 (code \"18451\"): unknown parent \"44x\""),
    ("zone cycle", '[[zone]]\ncode = "a"\nparent = "b"\n[[zone]]\ncode = "b"\nparent = "a"\n',
     "[[zone]]: zones ['a', 'b'] form a cycle through their parents"),
    ("zone group", ZONES.replace('parent = "42"', 'parent = "42"\ngroup = "10.0.0.1:5004"'),
     ("[[zone]] #2 (code \"436\"): group: a multicast group is ADDR:PORT with a multicast address, not "
     "'10.0.0.1:5004'")),
    ("zone depth", "".join(f'[[zone]]\ncode = "z{i}"\n' + (f'parent = "z{i - 1}"\n' if i else "")
                           for i in range(9)),
     "[[zone]] #9 (code \"z8\"): lies 9 levels deep, at most 8 fit a device's zone path"),
    ("zone key", ZONES + '[[zone]]\ncode = "x"\ncolour = "red"\n', "[[zone]] #3 (code \"x\"): unknown key 'colour'"),
    ("device key", ZONES + '[[device]]\nkey = "abc"\nzone = "42"\nname = "Cụm loa 1"\n',
     "[[device]] #1 (name \"Cụm loa 1\"): key: not a 32-byte key in base64 or hex: 'abc'"),
    ("device zone", ZONES + f'[[device]]\nkey = "{KEY}"\nzone = "99"\n', "[[device]] #1: unknown zone \"99\""),
    ("device zone missing", ZONES + f'[[device]]\nkey = "{KEY}"\n', "[[device]] #1: missing 'zone'"),
    ("device kind", ZONES + f'[[device]]\nkey = "{KEY}"\nzone = "42"\nkind = "siren"\n',
     "[[device]] #1: kind must be one of speaker, board, not 'siren'"),
    ("device twice", ZONES + f'[[device]]\nkey = "{KEY}"\nzone = "42"\n[[device]]\nkey = "{KEY}"\nzone = "436"\n',
     "[[device]] #2: the same key as [[device]] #1"),
    ("device volume", ZONES + f'[[device]]\nkey = "{KEY}"\nzone = "42"\nvolume = -1\n',
     "[[device]] #1: volume must be 0-100, not -1"),
    ("authority", ZONES + '[[authority]]\nname = "Sở"\n', ("[[authority]] #1 (name \"Sở\"): needs public_key, or "
                                                         "private_key_file for a lab that signs its own alerts")),
    ("authority key", ZONES + '[[authority]]\npublic_key = "xyz"\n', ("[[authority]] #1: public_key: not a 32-byte "
                                                                    "key")),
    ("broadcast source", ZONES + '[[broadcast]]\nsource = "radio"\nzones = ["42"]\n',
     "[[broadcast]] #1: source must be one of tone, demo, file, live, not 'radio'"),
    ("broadcast zones", ZONES + '[[broadcast]]\nsource = "tone"\nzones = []\n',
     "[[broadcast]] #1: zones must be a non-empty list of zone codes"),
    ("broadcast zone", ZONES + '[[broadcast]]\nname = "Tin sáng"\nsource = "tone"\nzones = ["9"]\n',
     "[[broadcast]] #1 (name \"Tin sáng\"): unknown zone \"9\""),
    ("broadcast emergency", ZONES + '[[broadcast]]\nsource = "tone"\nzones = ["42"]\nclass = "emergency"\n',
     "[[broadcast]] #1: emergency class plays only with a signed alert; trigger an alert instead"),
    ("broadcast class", ZONES + '[[broadcast]]\nsource = "tone"\nzones = ["42"]\nclass = 7\n',
     "[[broadcast]] #1: class must be 0-2, not 7"),
    ("broadcast level", ZONES + '[[broadcast]]\nsource = "tone"\nzones = ["42"]\nlevel = "village"\n',
     "[[broadcast]] #1: level must be one of commune, district, province, national, not 'village'"),
    ("broadcast policy", ZONES + '[[broadcast]]\nsource = "tone"\nzones = ["42"]\npolicy = "later"\n',
     "[[broadcast]] #1: policy must be resume or drop, not 'later'"),
    ("broadcast file", ZONES + '[[broadcast]]\nsource = "file"\nzones = ["42"]\n',
     "[[broadcast]] #1: file is needed with source = \"file\" and only then"),
    ("broadcast live", ZONES + '[[broadcast]]\nsource = "live"\nzones = ["42"]\nlive = "mic"\n',
     "[[broadcast]] #1: live: expected HOST:PORT with a numeric IP address, not 'mic'"),
]


@pytest.mark.parametrize(("text", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_mistake_is_one_line_naming_file_entry_and_problem(tmp_path: Path, text: str, message: str) -> None:
    site = tmp_path / "site.toml"
    site.write_text(text, encoding="utf-8")
    with pytest.raises(SiteConfigError) as caught:
        load_site(site)
    line = str(caught.value)
    assert "\n" not in line
    assert line.startswith(f"{site}: {message}"), line


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SiteConfigError, match=r"nowhere\.toml: cannot read the site file: No such file"):
        load_site(tmp_path / "nowhere.toml")


def test_the_example_site_loads() -> None:
    example = Path(loa.__file__).resolve().parent / "streamer" / "example-site.toml"
    site = load_site(example)
    assert len(site.zones) == 9
    assert site.zones.path("18451-01") == ("42", "436", "18451", "18451-01")
    assert site.zones.get("42").name == "Tỉnh Hà Tĩnh"
    assert {d.kind for d in site.devices} == {"speaker", "board"}
    assert site.groups == {"436": "239.42.36.1:5004"}
    assert site.settings.config.preroll_ms == 8000
    assert site.settings.config.zones is None
    assert site.server.key_file == example.parent / "loa-state" / "server.key"
    assert [b.source for b in site.broadcasts] == ["demo"]
    assert len(site.authorities) == 2


def test_the_cli_reports_a_bad_site_in_one_line(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(ZONES + '[[device]]\nkey = "abc"\nzone = "42"\n', encoding="utf-8")
    result = CliRunner().invoke(streamer, ["--config", str(site)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [(f"Error: {site}: [[device]] #1: key: not a 32-byte key in base64 "
                                                  f"or hex: 'abc'")]
    result = CliRunner().invoke(streamer, ["--config", str(tmp_path / "nowhere.toml")])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    site.write_text(ZONES, encoding="utf-8")
    result = CliRunner().invoke(streamer, ["--config", str(site), "--udp", "here:1"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: --udp: expected HOST:PORT with a numeric IP address, not 'here:1'"


def test_the_cli_reports_an_unusable_key_file_in_one_line(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    (tmp_path / "server.key").write_text("not a key\n")
    site.write_text(ZONES, encoding="utf-8")
    result = CliRunner().invoke(streamer, ["--config", str(site), "--udp", "127.0.0.1:0", "--no-zeroconf"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        f"Error: {tmp_path / 'server.key'}: not a key file (expected one line of base64 of 32 bytes)")


def test_the_command_has_help() -> None:
    result = CliRunner().invoke(streamer, ["--help"])
    assert result.exit_code == 0
    for option in ("--config", "--udp", "--backend", "--no-zeroconf"):
        assert option in result.output
