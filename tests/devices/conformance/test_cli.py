"""`loa conformance`: list, mutants, and one clear line for each user mistake."""

from __future__ import annotations

import socket
from pathlib import Path

from click.testing import CliRunner

from loa.cli import main
from loa.devices.conformance.mutants import MUTANTS
from loa.devices.conformance.registry import all_cases


def test_list_prints_every_case() -> None:
    result = CliRunner().invoke(main, ["conformance", "list"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert [line.split()[0] for line in lines] == [c.id for c in all_cases()]


def test_mutants_lists_names_and_defects() -> None:
    result = CliRunner().invoke(main, ["conformance", "mutants"])
    assert result.exit_code == 0
    for mutant in MUTANTS.values():
        assert mutant.name in result.output
        assert mutant.defect in result.output


def _one_line_error(args: list[str], needle: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert needle in result.output
    assert "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("Error")]) == 1


def test_bad_device(tmp_path: object) -> None:
    _one_line_error(["conformance", "run", "--device", "toaster", "--out", str(tmp_path)], "bad --device 'toaster'")


def test_unknown_mutant(tmp_path: object) -> None:
    _one_line_error(["conformance", "run", "--device", "mutant:nope", "--out", str(tmp_path)], "unknown mutant 'nope'")


def test_bad_cases_pattern(tmp_path: object) -> None:
    _one_line_error(["conformance", "run", "--device", "reference", "--out", str(tmp_path), "--cases", "99.9"],
                    "pattern '99.9' matches no case")


def test_external_needs_a_device_key_or_token(tmp_path: object) -> None:
    _one_line_error(["conformance", "run", "--device", "external", "--out", str(tmp_path)], "--device-key")


def test_external_address_in_use_is_one_line_before_any_address_is_printed(tmp_path: Path) -> None:
    """The kit binds before it prints its address: a device is never told an address nobody listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["conformance", "run", "--device", "external", "--out", str(tmp_path),
                                           "--device-key", "AA" * 32, "--kit-key", str(tmp_path / "kit.key"),
                                           "--listen", f"127.0.0.1:{port}", "--cases", "3.3.1"])
    assert result.exit_code != 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.output
    assert "kit server address" not in result.output
    assert "Traceback" not in result.output


def test_listen_port_must_be_a_port(tmp_path: Path) -> None:
    _one_line_error(["conformance", "run", "--device", "external", "--out", str(tmp_path), "--device-key", "AA" * 32,
                     "--listen", "127.0.0.1:65536"], "port 0-65535")
