"""`loa bench all --out DIR`: every benchmark in one run, with its peers and ceilings, as JSON, Markdown and PNG.

Each benchmark runs in a child process (``python -m loa.cli bench NAME --json ARGS``; its standard error goes to
``DIR/logs/NAME.log``) and its last output line, the one JSON object of :mod:`loa.bench._report`, is kept. The
plan below gives each benchmark's arguments for the full run (under 10 minutes on a 2-core machine) and for
``--quick`` (tiny sizes, for tests: well under two minutes). The two costliest are scaled down for the full run
against their standalone defaults: ``sessions`` stops at 2,000 sessions, once (5,000 took 94-150 s alone) and
``scale`` measures the simultaneous streams over 1,000 devices and the streamer service at 100, 1,000 and 10,000
devices (its 5,000 and 20,000 points, each a set of sessions of its own, are left to ``loa bench scale``: 20,000
cost 92 s of a 578 s run, 31 s to make the sessions and 61 s to measure them; the bare fan-out and its C ceiling
still run at all five counts). The alert curve runs at 20, 100, 200 and 500 devices:
1,000 and 10,000 are ``loa bench alert``'s default (at 1,000 a fleet whose decoding devices report no playout
waits for its time limit, over two minutes). The others run shorter than alone (fewer seconds, kills,
attempts; the soak holds 100 devices for 45 s where ``loa bench soak`` holds 10,000 for 10 minutes).
``--repeat N`` runs the whole plan N times; every metric is then reported as the median with its min and max
over the runs (the benchmarks also repeat inside, see each one's ``repeat``).

Written into ``DIR``:

* ``results.json``: ``{"commit", "machine", "backend", "created", "quick", "repeat", "command", "benches":
  {NAME: {"metrics": {KEY: {"value", "unit", "min", "max"}}, "env", "argv", "seconds"}}, "failed": {NAME:
  reason}}``. Units come from :func:`unit_of`; ``value`` may be null where a benchmark had nothing to measure.
* ``report.md``: where and how it was measured, then one table per benchmark (metric, median, unit, min-max),
  the peers and ceilings named, and the plots.
* PNG plots (:mod:`loa.bench.plots`).

Progress goes to standard error: a bar with the benchmarks done, their rate and the time left on a terminal,
one plain line per benchmark otherwise, so that ``--json`` keeps standard output to its one JSON line. A
benchmark that fails (exit status, timeout, no JSON line) is recorded in ``failed`` with the end of its log;
the others still run, the files are still written, and the command then exits with status 1 naming it.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from loa.bench._report import emit, environment
from loa.cli import UserError

__all__ = ["PLAN", "Step", "aggregate", "all_benches", "unit_of"]


@dataclass(frozen=True)
class Step:
    """One benchmark of the plan: its arguments and a rough duration (seconds) for the progress estimate."""

    name: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    full_s: float
    quick_s: float
    timeout_s: float = 300.0


PLAN: tuple[Step, ...] = (
    Step("codec", ("--seconds", "2", "--repeat", "3"), ("--seconds", "0.1", "--repeat", "1"), 5, 3),
    Step("fanout", ("--devices", "1000,10000", "--packets", "100000", "--repeat", "2", "--peers", "gstreamer"),
         ("--devices", "10,50", "--packets", "500", "--repeat", "1", "--stream-seconds", "0.2"), 15, 6),
    Step("scale", ("--repeat", "1", "--packets", "40000", "--streamer-counts", "100,1000,10000",
                   "--streams-devices", "1000", "--stream-seconds", "0.5"),
         ("--devices", "10,50", "--streams", "1,5", "--streams-devices", "50", "--packets", "500",
          "--stream-seconds", "0.2", "--frame-devices", "50", "--multicast", "3,10", "--repeat", "1"), 100, 8,
         timeout_s=600.0),
    Step("sessions", ("--devices", "100,1000,2000", "--repeat", "1"),
         ("--devices", "10,50", "--repeat", "1"), 30, 3),
    Step("alert", ("--devices", "20,100,200,500", "--settle", "2"),
         ("--devices", "4", "--full", "2", "--settle", "1"), 65, 10, timeout_s=300.0),
    Step("loss", ("--devices", "10", "--seconds", "10"), ("--devices", "2", "--settle", "10", "--seconds", "1"), 12, 5),
    Step("sync", ("--devices", "30", "--seconds", "3"),
         ("--devices", "3", "--settle", "20", "--seconds", "0.5"), 17, 5),
    Step("latency", ("--devices", "3", "--seconds", "5"), ("--devices", "2", "--seconds", "0.5"), 25, 12,
         timeout_s=120.0),
    Step("api", ("--backends", "sqlite", "--seconds", "3", "--requests", "500", "--devices", "200"),
         ("--backends", "sqlite", "--seconds", "0.5", "--requests", "20", "--devices", "5", "--clients", "2"), 20, 12),
    Step("faults", ("--devices", "3", "--seconds", "3",
                    "--scenarios", "loss5,loss20,burst20,reorder10,dup10,jitter200,outage_down_3s,outage_up_3s,move"),
         ("--devices", "2", "--seconds", "1", "--scenarios", "loss10"), 70, 15, timeout_s=420.0),
    Step("hostile", ("--attempts", "10000", "--udp", "2000"), ("--attempts", "200", "--udp", "40"), 14, 6),
    Step("flood", ("--rate", "20000", "--seconds", "3", "--alerts", "1", "--rounds", "1", "--devices", "20"),
         ("--rate", "1000", "--seconds", "1", "--alerts", "1", "--devices", "3", "--full", "2"), 25, 15),
    Step("crash", ("--kills", "1", "--devices", "4"), ("--kills", "1", "--devices", "2"), 45, 40, timeout_s=420.0),
    Step("fuzz", ("--seconds", "1"), ("--seconds", "1", "--target", "datagram"), 60, 6),
    Step("soak", ("--devices", "100", "--minutes", "0.75", "--warmup-minutes", "0.25", "--alert-every", "15",
                  "--alert-seconds", "3", "--sample-every", "2"),
         ("--devices", "5", "--minutes", "0.3", "--warmup-minutes", "0.1", "--alert-every", "12",
          "--alert-seconds", "2", "--sample-every", "1"), 55, 25, timeout_s=240.0),
)

# What each benchmark is measured against, for the report.
PEERS: dict[str, str] = {
    "codec": "peer: PyAV's libopus on the same audio, same settings (ratio_vs_pyav)",
    "fanout": ("ceiling: a C sendmmsg program; peers: a Python sendto loop, GStreamer multiudpsink, the streamer "
               "service on trio and asyncio (ratio_to_ceiling keys)"),
    "scale": "ceiling: the C sendmmsg program on the same destinations at every point (ratio_to_ceiling keys)",
    "sessions": ("goal: 2 KiB per session (goal_ratio); ceiling: X25519 + ChaCha20-Poly1305 by cryptography "
                 "alone (ratio_to_ceiling)"),
    "alert": ("floor: the C sendmmsg program sending one datagram to each device (floor_ms, ratio_to_floor); "
              "playout includes the 500 ms playout delay (the floor of playout_*)"),
    "loss": "reference: a loss-free stream's bytes (overhead); goal exact_fraction_5pct >= 0.995",
    "sync": "peer: Snapcast's published figure, 'typically the deviation is below 0.2ms' (ratio_vs_snapcast; env "
            "has the URL and why no snapclient was measured)",
    "api": "peer: /healthz on the same server and clients, the floor of any request (ratio keys)",
    "faults": "reference: the same programme without impairment (exact fraction 1.0); SECURITY.md has the full table",
    "hostile": "goal: zero accepted, every attempt counted once, every genuine alert and command accepted",
    "flood": "reference: the same stream and alert without the flood in the same run (ratio keys); amplification <= 1",
    "crash": "goal: zero lost or corrupted records, no slot missed or doubled; rejoin <= 5 s, fallback <= 2 s",
    "fuzz": "goal: zero crashes; 10^6 executions per target are in SECURITY.md (longer runs)",
    "soak": ("goals: RSS growth after warm-up <= 5 %, no descriptor or task growth, every session kept, alerts held "
             "and the live stream back (goals_missed); 45 s here, the 10-minute runs are in SECURITY.md"),
    "latency": ("peer: GStreamer udpsrc ! rtpjitterbuffer ! rtpopusdepay ! opusdec ! fakesink sync=true on the same "
                "RTP stream, at its default 200 ms and at 20 ms (ratio_vs_gstreamer, ratio_vs_gstreamer_low)"),
}

_UNITS: tuple[tuple[str, str], ...] = (
    (r"us_per_pkt", "µs CPU/datagram"),
    (r"us_per_frame", "µs CPU/frame"),
    (r"(^|_)us(_|$)", "µs"),
    (r"(^|_)ms(_|$)", "ms"),
    (r"_per_s(_|$)", "1/s"),
    (r"(^|_)rps(_|$)", "requests/s"),
    (r"(^|_)s(_|$)|_seconds", "s"),
    (r"^(frames|devices|repeat|full|retransmissions|streams_devices|frame_devices)(_|$)", "count"),
    (r"ratio|gain|overhead", "ratio"),
    (r"fraction|delivery|loss_seen", "fraction"),
    (r"pct", "%"),
    (r"bytes|^size$", "bytes"),
    (r"pps", "datagrams/s"),
    (r"bitrate", "bit/s"),
)


def unit_of(key: str) -> str:
    """The unit of a metric, from its name (see the benchmarks' docstrings); "1" for a plain number."""
    for pattern, unit in _UNITS:
        if re.search(pattern, key):
            return unit
    return "1"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def aggregate(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per metric over repeated runs: the median value, min, max and unit (non-numbers: the last value)."""
    keys: list[str] = []
    for run in runs:
        keys += [key for key in run if key not in keys]
    out: dict[str, dict[str, Any]] = {}
    for key in keys:
        values = [run[key] for run in runs if key in run]
        numbers = [float(v) for v in values if _number(v)]
        entry: dict[str, Any] = {"unit": unit_of(key)}
        if numbers:
            median = statistics.median(numbers)
            entry["value"] = int(median) if median.is_integer() and all(isinstance(v, int) for v in values) else \
                round(median, 6)
            entry["min"] = min(numbers)
            entry["max"] = max(numbers)
        else:
            entry["value"] = values[-1] if values else None
        out[key] = entry
    return out


class _Progress:
    """Progress on standard error: a rich bar on a terminal, plain lines otherwise."""

    def __init__(self, steps: Sequence[Step], quick: bool, repeat: int) -> None:
        self.total = sum(s.quick_s if quick else s.full_s for s in steps) * repeat
        self.count = len(steps) * repeat
        self.done = 0
        self.began = time.monotonic()
        self._bar: Any = None
        self._task: Any = None
        from rich.console import Console

        console = Console(stderr=True)
        if console.is_terminal:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.fields[steps]}"), TextColumn("{task.fields[rate]}"),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                 console=console, transient=False)
            self._task = self._bar.add_task("loa bench all", total=self.total, steps=f"0/{self.count}",
                                            rate="", start=True)
            self._bar.start()

    def plain(self, line: str) -> None:
        if self._bar is None:
            click.echo(line, err=True)

    @contextmanager
    def step(self, name: str, estimate: float) -> Iterator[None]:
        """Advance the bar while ``name`` runs (by elapsed time, up to its estimate), then to its end."""
        start = time.monotonic()
        base = self._completed()
        stop = threading.Event()

        def tick() -> None:
            while not stop.wait(0.5):
                self._update(base + min(time.monotonic() - start, estimate * 0.95), f"running {name}")

        ticker = threading.Thread(target=tick, daemon=True)
        ticker.start()
        try:
            yield
        finally:
            stop.set()
            ticker.join()
            self.done += 1
            self._spent += estimate
            self._update(self._spent, f"{name} done")

    _spent = 0.0

    def _completed(self) -> float:
        return self._spent

    def _update(self, completed: float, description: str) -> None:
        if self._bar is None:
            return
        minutes = (time.monotonic() - self.began) / 60
        rate = f"{self.done / minutes:.1f} benches/min" if self.done and minutes > 0 else ""
        self._bar.update(self._task, completed=completed, description=description,
                         steps=f"{self.done}/{self.count}", rate=rate)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _run_step(step: Step, args: Sequence[str], log: Path) -> tuple[dict[str, Any] | None, str | None, float]:
    """Run one benchmark in a child process; (its JSON record, why it failed, seconds)."""
    argv = [sys.executable, "-m", "loa.cli", "bench", step.name, "--json", *args]
    began = time.monotonic()
    with log.open("ab") as err:
        err.write(("$ " + " ".join(argv[1:]) + "\n").encode())
        err.flush()
        try:
            done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=err, timeout=step.timeout_s, check=False,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"})
        except subprocess.TimeoutExpired:
            return None, f"timed out after {step.timeout_s:.0f} s", time.monotonic() - began
    seconds = time.monotonic() - began
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
        return None, f"exit status {done.returncode}: {tail[0][:300]}", seconds
    try:
        record = json.loads(lines[-1])
    except json.JSONDecodeError:
        return None, "its last line is not the JSON object", seconds
    if not isinstance(record, dict) or record.get("bench") != step.name:
        return None, "its JSON line does not name it", seconds
    return record, None, seconds


def _select(only: str | None, skip: str | None) -> list[Step]:
    names = [s.name for s in PLAN]
    chosen = list(PLAN)
    for option, text in (("--only", only), ("--skip", skip)):
        if text is None:
            continue
        picked = {part.strip() for part in text.split(",") if part.strip()}
        unknown = picked - set(names)
        if unknown or not picked:
            raise UserError(f"{option} must name some of {', '.join(names)}, not {text!r}")
        chosen = [s for s in chosen if (s.name in picked) == (option == "--only")]
    if not chosen:
        raise UserError("no benchmark left to run")
    return chosen


@click.command("all")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory for results.json, report.md, the plots and logs/ (created if needed).")
@click.option("--quick", is_flag=True, help="Tiny sizes: checks that everything runs; the figures mean little.")
@click.option("--repeat", type=click.IntRange(1, 10), default=1, show_default=True,
              help="Runs of the whole plan; each metric is the median, with min and max.")
@click.option("--only", default=None, help="Comma-separated benchmarks to run (default: all).")
@click.option("--skip", default=None, help="Comma-separated benchmarks to leave out.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (a summary) as the last line.")
def all_benches(*, out_dir: Path, quick: bool, repeat: int, only: str | None, skip: str | None,
                as_json: bool) -> None:
    """Run every benchmark with its peers and ceilings; write results.json, report.md and PNG plots."""
    steps = _select(only, skip)
    try:
        (out_dir / "logs").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {out_dir}: {exc.strerror or exc}") from None
    records: dict[str, list[dict[str, Any]]] = {}
    seconds: dict[str, list[float]] = {}
    argvs: dict[str, list[str]] = {}
    failed: dict[str, str] = {}
    progress = _Progress(steps, quick, repeat)
    began = time.monotonic()
    try:
        for turn in range(repeat):
            for step in steps:
                if step.name in failed:
                    continue
                args = step.quick if quick else step.full
                argvs[step.name] = ["loa", "bench", step.name, "--json", *args]
                progress.plain(f"loa bench all: {step.name} (run {turn + 1} of {repeat})...")
                with progress.step(step.name, step.quick_s if quick else step.full_s):
                    record, why, spent = _run_step(step, args, out_dir / "logs" / f"{step.name}.log")
                if record is None:
                    failed[step.name] = why or "failed"
                    progress.plain(f"loa bench all: {step.name} failed: {why}")
                    continue
                records.setdefault(step.name, []).append(record)
                seconds.setdefault(step.name, []).append(round(spent, 1))
                progress.plain(f"loa bench all: {step.name} done in {spent:.1f} s")
    finally:
        progress.close()
    env = environment()
    benches: dict[str, Any] = {}
    for name, runs in records.items():
        benches[name] = {"metrics": aggregate([run.get("metrics", {}) for run in runs]),
                         "env": runs[-1].get("env", {}), "argv": argvs[name], "seconds": seconds[name],
                         "runs": len(runs)}
    backend = next((b["env"].get("backend") for b in benches.values() if b["env"].get("backend")), None)
    results = {
        "commit": env.get("commit"),
        "machine": {key: env.get(key) for key in ("machine", "system", "cpu", "cpus", "python", "implementation")}
        | {"node": platform.node()},
        "backend": backend,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "repeat": repeat,
        "command": _command(quick, repeat, only, skip),
        "seconds": round(time.monotonic() - began, 1),
        "benches": benches,
        "failed": failed,
    }
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    from loa.bench.plots import write_plots

    plots = write_plots({name: b["metrics"] for name, b in benches.items()}, out_dir)
    (out_dir / "report.md").write_text(render_report(results, [p.name for p in plots]))
    summary = {"out": str(out_dir), "benches": sorted(benches), "failed": failed, "plots": [p.name for p in plots],
               "seconds": results["seconds"]}
    if as_json:
        emit("all", summary, as_json=True, env=env)
    else:
        click.echo(f"loa bench all: {len(benches)} benchmarks in {results['seconds']:.0f} s; "
                   f"{out_dir / 'report.md'}, {out_dir / 'results.json'}, {len(plots)} plots")
    if failed:
        raise UserError(f"{len(failed)} benchmark(s) failed: "
                        + "; ".join(f"{name}: {why}" for name, why in failed.items())
                        + f" (logs in {out_dir / 'logs'})")


def _command(quick: bool, repeat: int, only: str | None, skip: str | None) -> str:
    parts = ["loa", "bench", "all", "--out", "DIR"]
    if quick:
        parts.append("--quick")
    if repeat != 1:
        parts += ["--repeat", str(repeat)]
    if only:
        parts += ["--only", only]
    if skip:
        parts += ["--skip", skip]
    return " ".join(parts)


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "—" if value is None else str(value)


def render_report(results: Mapping[str, Any], plots: Sequence[str]) -> str:
    """The Markdown report of a results.json structure."""
    machine = results["machine"]
    lines = [
        "# loa benchmarks",
        "",
        f"- command: `{results['command']}` ({results['seconds']:.0f} s)",
        f"- commit: `{results['commit']}`, created {results['created']}",
        (f"- machine: {machine.get('cpu')} ({machine.get('cpus')} CPUs, {machine.get('machine')}, "
         f"{machine.get('system')}), Python {machine.get('python')} ({machine.get('implementation')})"),
        f"- fan-out backend: {results['backend']}",
        f"- runs of the whole plan: {results['repeat']}"
        + (" (value = median, min–max over the runs)" if results["repeat"] > 1 else
           " (each benchmark repeats inside; see its `repeat`)"),
    ]
    if results["quick"]:
        lines.append("- **quick run**: tiny sizes that check the harness; the figures are not meaningful")
    lines += ["", ("Every absolute figure stands beside a peer or ceiling measured in the same run; ratios are "
                   "the figures to compare across machines."), ""]
    for name, bench in results["benches"].items():
        took = ", ".join(f"{s:.0f} s" for s in bench["seconds"])
        lines += [f"## {name}", "", f"`{' '.join(bench['argv'])}` ({took})", ""]
        if name in PEERS:
            lines += [f"Compared with — {PEERS[name]}.", ""]
        repeated = results["repeat"] > 1
        lines.append("| metric | value | unit |" + (" min–max |" if repeated else ""))
        lines.append("|---|---:|---|" + ("---|" if repeated else ""))
        for key, entry in bench["metrics"].items():
            row = f"| {key} | {_shown(entry['value'])} | {entry['unit']} |"
            if repeated:
                spread = f"{_shown(entry['min'])}–{_shown(entry['max'])}" if "min" in entry else ""
                row += f" {spread} |"
            lines.append(row)
        notes = {k: v for k, v in bench["env"].items()
                 if k in ("backend", "gstreamer", "multicast", "snapcast_source", "network", "transport", "method",
                          "failed", "libopus", "pyav_libopus", "snapcast_not_measured")}
        if notes:
            lines += ["", *(f"- {k}: {v}" for k, v in notes.items())]
        lines.append("")
    if results["failed"]:
        lines += ["## Failed", "", *(f"- {name}: {why}" for name, why in results["failed"].items()), ""]
    if plots:
        lines += ["## Plots", "", *(f"![{Path(p).stem}]({p})" for p in plots), ""]
    return "\n".join(lines)
