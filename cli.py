"""The `loa` command line: one entry point, subcommands loaded on demand.

Every subcommand lives in the module that owns its job; this file only maps names to those modules so that
`loa --help` stays fast and a broken optional dependency of one subcommand cannot break the others.
User-facing failures raise :class:`click.ClickException` (or :class:`UserError`) and print one clear line;
nothing a user types produces a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from loa import __version__


class UserError(click.ClickException):
    """A failure the user can act on (bad file, bad address, missing tool): printed as one line, exit code 1."""


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when used."""

    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._lazy))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self._lazy:
            module, _, attr = self._lazy[cmd_name][0].partition(":")
            command = getattr(importlib.import_module(module), attr)
            if not isinstance(command, click.Command):  # pragma: no cover - a wiring mistake, caught by tests
                raise TypeError(f"{module}:{attr} is not a click command")
            return command
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Show the one-line help from the table so `loa --help` does not import every subsystem.
        rows = [(name, self._lazy[name][1]) for name in sorted(self._lazy)]
        rows += [(name, cmd.get_short_help_str()) for name, cmd in sorted(self.commands.items())]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


# name -> ("module:attribute", one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("loa.control_plane.commands:serve", "Run loa: HTTP API and event stream; first admin on first start."),
    "audit": ("loa.control_plane.commands:audit", "Verify the audit log's hash chain."),
    "admin": ("loa.control_plane.admin:admin", "Administer a running loa through its HTTP API."),
    "streamer": ("loa.streamer.cli:streamer", "Run the streamer of a site: sessions, broadcasts, alerts, programmes."),
    "device": ("loa.devices.cli:device", "Run the reference speaker cluster (prints its public key on first start)."),
    "board": ("loa.devices.board:board", "Run the reference e-board (what it shows, as a PNG), or render offline."),
    "fleet": ("loa.devices.cli:fleet", "Run N simulated speaker clusters in one process, each with its own session."),
    "conformance": ("loa.devices.conformance.cli:conformance", "Test a device against spec/PROTOCOL.md."),
    "send": ("loa.streamer.send:send", "Stream a file or a test tone as standard RTP/Opus (optionally SRTP)."),
    "bench": ("loa.bench.cli:bench", "Run a benchmark; with --json the last line is one JSON object."),
}

BENCHES: dict[str, tuple[str, str]] = {
    "codec": ("loa.bench.codec:codec", "Opus encode/decode cost per frame, ours beside PyAV's."),
    "alert": ("loa.bench.alert:alert", "Alert delivery and first playout across a fleet in another process."),
    "loss": ("loa.bench.loss:loss", "Exactly played frames and byte overhead at 5 % random and 20 % bursty loss."),
    "faults": ("loa.bench.faults:faults", "Frames played, alert delivery and rejoin time under loss, jitter, outages."),
    "sync": ("loa.bench.sync:sync", "Play-time skew of one frame across devices with skewed clocks."),
    "latency": ("loa.bench.latency:latency", "Live announcement RTP in -> device playout, beside GStreamer."),
    "fanout": ("loa.bench.fanout:fanout", "Fan-out sender CPU per datagram: ours, a sendto loop and the C ceiling."),
    "api": ("loa.bench.api:api", "Control plane API rate and p99: device status reads, alert triggers, /healthz."),
    "fuzz": ("loa.bench.fuzz.run:fuzz", "Coverage-guided fuzzing of every parser (atheris); crash inputs kept."),
    "sessions": ("loa.bench.sessions:sessions", "Server memory per device session; handshakes/s beside bare crypto."),
    "scale": ("loa.bench.scale:scale", "Fan-out cost against devices and streams; frame sizes; multicast."),
    "crash": ("loa.bench.crash:crash", "SIGKILL `loa serve` under work and devices: records, slots, rejoin."),
    "soak": ("loa.bench.soak:soak", "A bounded soak of a province: memory flat, no descriptor or task leak."),
    "hostile": ("loa.bench.hostile:hostile", "Forged and replayed alerts and commands: none accepted, all counted."),
    "flood": ("loa.bench.flood:flood", "Flood during a stream and an alert: late frames, amplification."),
    "all": ("loa.bench.all:all_benches", "Every benchmark with its peers: results.json, report.md and plots."),
}


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="loa")
def main() -> None:
    """loa: open real-time broadcast server for IP loudspeaker clusters and e-boards."""


def run() -> None:
    """Console entry point: never lets a traceback reach the user."""
    try:
        main(standalone_mode=True)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # the last line of defence for the user's terminal
        click.echo(f"loa: internal error: {type(exc).__name__}: {exc}", err=True)
        click.echo("loa: please report this with the command you ran (set LOA_DEBUG=1 for details)", err=True)
        if _debug():
            raise
        sys.exit(70)


def _debug() -> bool:
    return os.environ.get("LOA_DEBUG") == "1"


if __name__ == "__main__":  # `python -m loa.cli`, as the benchmarks run each other
    run()
