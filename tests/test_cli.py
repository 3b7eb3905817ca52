"""The `loa` command line: one entry point, subcommands wired, no tracebacks."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

import loa
from loa.cli import BENCHES, COMMANDS, main


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert loa.__version__ in result.output


def test_help_lists_every_subcommand() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output


@pytest.mark.parametrize(("table", "name"), [(COMMANDS, n) for n in COMMANDS] + [(BENCHES, n) for n in BENCHES])
def test_every_subcommand_is_wired(table: dict[str, tuple[str, str]], name: str) -> None:
    group = main if table is COMMANDS else main.get_command(click.Context(main), "bench")
    assert group is not None
    command = group.get_command(click.Context(group), name)
    assert isinstance(command, click.Command)
    result = CliRunner().invoke(command, ["--help"])
    assert result.exit_code == 0, result.output


def test_unknown_subcommand_is_a_clear_error() -> None:
    result = CliRunner().invoke(main, ["no-such-command"])
    assert result.exit_code == 2
    assert "No such command" in result.output


def test_console_script_runs() -> None:
    out = subprocess.run([sys.executable, "-c", "from loa.cli import run; run()", "--version"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0
    assert loa.__version__ in out.stdout
    assert "Traceback" not in out.stderr
