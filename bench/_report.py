"""Common output for every `loa bench` command.

With ``--json`` a benchmark prints, as its last line, exactly one JSON object::

    {"bench": NAME, "metrics": {...}, "env": {...}}

Metrics are plain numbers; units are part of the metric name (``_us``, ``_ms``, ``_pps``...) or documented by
the benchmark. ``env`` says where and on what the figures were measured, so two runs can be compared.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from loa import __version__


def environment(**extra: Any) -> dict[str, Any]:
    """Describe the machine, interpreter and commit the figures were measured on."""
    env: dict[str, Any] = {
        "loa": __version__,
        "commit": _commit(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "machine": platform.machine(),
        "system": platform.system(),
        "cpus": os.cpu_count(),
        "cpu": _cpu_model(),
    }
    env.update(extra)
    return env


def emit(name: str, metrics: Mapping[str, Any], *, as_json: bool, env: Mapping[str, Any] | None = None,
         human: str | None = None) -> None:
    """Print the result: a human table (unless ``as_json``), then with ``as_json`` the one JSON line."""
    if not as_json:
        click.echo(human if human is not None else _table(name, metrics))
        return
    record = {"bench": name, "metrics": dict(metrics), "env": dict(env or environment())}
    sys.stdout.write(json.dumps(record, sort_keys=True) + "\n")
    sys.stdout.flush()


def _table(name: str, metrics: Mapping[str, Any]) -> str:
    width = max((len(k) for k in metrics), default=0)
    lines = [f"{name}:"]
    for key, value in metrics.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        lines.append(f"  {key.ljust(width)}  {shown}")
    return "\n".join(lines)


def _commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return platform.processor() or None


def read_status(path: Path) -> dict[str, Any]:
    """The JSON status file a bench's child process rewrites (by rename) while it runs; ``{}`` while there is none
    yet or it cannot be read."""
    try:
        status: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return status
