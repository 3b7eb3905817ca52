"""`loa bench NAME`: the benchmark harness entry point."""

from __future__ import annotations

import click

from loa.cli import BENCHES, LazyGroup


@click.group(cls=LazyGroup, lazy=BENCHES)
def bench() -> None:
    """Run a benchmark. Every figure is reported beside a peer or ceiling measured in the same run."""
