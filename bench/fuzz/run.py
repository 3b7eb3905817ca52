"""`loa bench fuzz`: coverage-guided fuzzing of every parser with atheris (libFuzzer), one process per target.

Each target (:data:`loa.bench.fuzz.TARGETS`) runs in its own process (``python -m loa.bench.fuzz._worker``)
for ``--seconds`` or ``--runs`` executions, whichever comes first, starting from its corpus directory
``tests/fuzz/corpus/<target>/`` (seeds and every crash found before) plus a scratch corpus of what it finds.
When an input crashes (an exception other than the parser's documented errors, a hang longer than
``--timeout`` seconds, or memory above ``--rss-limit-mb``) libFuzzer stops; the input is saved to the
corpus directory as ``crash-<sha1>`` (``timeout-<sha1>``, ``oom-<sha1>``), its traceback printed to stderr,
and the target restarted for the time left, at most ``--max-crashes`` times.

Metrics, per target ``<t>_`` and in total: ``executions``, ``crashes``, ``exec_per_s`` (executions over the
fuzzing wall time), ``cov`` (edges of instrumented Python code covered) and ``ft`` (libFuzzer features), as
libFuzzer last reported them; ``crash_inputs`` lists the files saved; ``slow_units`` counts inputs libFuzzer
reported as slow (over 10 s of wall time but within ``--timeout``: not crashes; on a loaded machine a stall of the
process is enough). Progress goes to stderr every 10 s.
Bounded: each process is killed ``--seconds`` + 60 s after it starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import click

from loa.bench._report import emit, environment
from loa.bench.fuzz import TARGETS, load

DEFAULT_CORPUS = Path(__file__).resolve().parent.parent.parent / "tests" / "fuzz" / "corpus"
_STATUS = re.compile(r"^#(\d+)\s+(\w+)\s+cov: (\d+) ft: (\d+)(?: corp: (\d+)/)?")
_STAT = re.compile(r"^stat::(\w+):\s+(\d+)")
_ARTIFACT = re.compile(r"Test unit written to (\S+)")
_SLACK = 60.0
_SLOW_UNIT = "slow-unit-"


@dataclass
class TargetResult:
    name: str
    executions: int = 0
    seconds: float = 0.0
    cov: int = 0
    ft: int = 0
    corpus: int = 0
    crash_inputs: list[str] = field(default_factory=list)
    slow_units: list[str] = field(default_factory=list)


def atheris_version() -> str | None:
    """The installed atheris version, or None when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("atheris")
    except PackageNotFoundError:
        return None


def _say(text: str) -> None:
    click.echo(text, err=True)


def _run_once(name: str, seconds: float, runs: int | None, *, corpus: Path, scratch: Path, artifacts: Path,
              timeout: int, rss_limit_mb: int, log: IO[str],
              slow_units: list[str]) -> tuple[int, int, int, int, float, Path | None]:
    """One worker process; returns (executions, cov, ft, corpus size, seconds, crash artifact or None). Inputs
    libFuzzer reports as slow (``slow-unit-*``, over 10 s of wall time, but within ``--timeout``) are not
    crashes: their names go to ``slow_units`` and the files are removed."""
    max_len = int(getattr(load(name), "MAX_LEN", 4096))
    args = [sys.executable, "-m", "loa.bench.fuzz._worker", name,
            f"-max_total_time={max(1, round(seconds))}", f"-max_len={max_len}", f"-timeout={timeout}",
            f"-rss_limit_mb={rss_limit_mb}", f"-artifact_prefix={artifacts}{os.sep}", "-print_final_stats=1",
            "-print_pcs=0", str(scratch), str(corpus)]
    if runs is not None:
        args.insert(5, f"-runs={runs}")
    executions = cov = ft = size = 0
    stats: dict[str, int] = {}
    artifact: Path | None = None
    started = time.monotonic()
    last_report = started
    env = dict(os.environ, LOA_FUZZ_SCRATCH=str(scratch.parent / "files"))
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               errors="replace", start_new_session=True, env=env)
    assert process.stderr is not None
    _share_niceness(process.pid)
    deadline = started + seconds + _SLACK
    try:
        for line in process.stderr:
            log.write(line)
            if status := _STATUS.match(line):
                executions, cov, ft = int(status[1]), int(status[3]), int(status[4])
                size = int(status[5]) if status[5] else size
            elif stat := _STAT.match(line):
                stats[stat[1]] = int(stat[2])
            elif found := _ARTIFACT.search(line):
                if Path(found[1]).name.startswith(_SLOW_UNIT):
                    slow_units.append(Path(found[1]).name)
                    Path(found[1]).unlink(missing_ok=True)
                else:
                    artifact = Path(found[1])
            now = time.monotonic()
            if now - last_report >= 10:
                last_report = now
                _say(f"fuzz {name}: {executions} runs, cov {cov}, ft {ft}, "
                     f"{executions / max(now - started, 1e-9):.0f} exec/s")
            if now > deadline:
                break
    finally:
        if process.poll() is None and time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=_SLACK)
    elapsed = time.monotonic() - started
    executions = max(executions, stats.get("number_of_executed_units", 0))
    if artifact is None and process.returncode not in (0, None):
        found_files = sorted((p for p in artifacts.glob("*-*") if not p.name.startswith(_SLOW_UNIT)),
                             key=lambda p: p.stat().st_mtime)
        artifact = found_files[-1] if found_files else None
    return executions, cov, ft, size, elapsed, artifact


def _share_niceness(pid: int) -> None:
    """Give the worker's scheduling group this process's niceness. The worker has a session of its own (so that
    it is killed with its children), and on Linux with autogroup scheduling a new session is a new group that
    shares the processor equally with every other group whatever its processes' niceness: without this,
    ``nice loa bench fuzz`` would not yield to other work. Best effort (no autogroups: nothing to do)."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/autogroup").write_text(str(os.nice(0)))


def fuzz_target(name: str, *, seconds: float, runs: int | None, corpus_root: Path, timeout: int,
                rss_limit_mb: int, max_crashes: int) -> TargetResult:
    """Fuzz one target for ``seconds`` (or ``runs`` executions); crash inputs go to its corpus directory."""
    result = TargetResult(name)
    corpus = corpus_root / name
    corpus.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"loa-fuzz-{name}-") as work:
        scratch, artifacts, seeds = Path(work, "corpus"), Path(work, "artifacts"), Path(work, "seeds")
        scratch.mkdir()
        artifacts.mkdir()
        shutil.copytree(corpus, seeds)  # a copy: an input that still crashes is taken out of it, not of the corpus
        known = {_sha1(p.read_bytes()): p for p in corpus.iterdir() if p.is_file()}
        log_path = Path(work, "log")
        while True:
            left = seconds - result.seconds
            left_runs = None if runs is None else runs - result.executions
            with log_path.open("w") as log:
                executions, cov, ft, size, elapsed, artifact = _run_once(
                    name, left, left_runs, corpus=seeds, scratch=scratch, artifacts=artifacts, timeout=timeout,
                    rss_limit_mb=rss_limit_mb, log=log, slow_units=result.slow_units)
            result.executions += executions
            result.seconds += elapsed
            result.cov, result.ft = max(result.cov, cov), max(result.ft, ft)
            result.corpus = max(result.corpus, size)
            if artifact is None or not artifact.is_file():
                break
            digest = _sha1(artifact.read_bytes())
            kind = artifact.name.split("-", 1)[0]
            if digest in known:  # a corpus file that still crashes: stop feeding it, keep fuzzing
                saved = known[digest]
                (seeds / saved.name).unlink(missing_ok=True)
                _say(f"fuzz {name}: CRASH on {saved}, already in the corpus (not fixed yet)")
            else:
                saved = corpus / f"{kind}-{digest}"
                shutil.copyfile(artifact, saved)
                known[digest] = saved
                _say(f"fuzz {name}: CRASH saved to {saved}")
            artifact.unlink()
            if str(saved) not in result.crash_inputs:
                result.crash_inputs.append(str(saved))
            _say(_crash_report(log_path.read_text(errors="replace")))
            if len(result.crash_inputs) >= max_crashes or result.seconds >= seconds - 1 or \
                    (left_runs is not None and executions >= left_runs):
                break
    return result


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()  # noqa: S324 - names a file, as libFuzzer does


def _crash_report(log: str) -> str:
    """The part of a libFuzzer log that says what crashed (the Python traceback, or libFuzzer's error)."""
    lines = log.splitlines()
    start = next((i for i, line in enumerate(lines) if "Uncaught Python exception" in line or "ERROR:" in line),
                 max(0, len(lines) - 30))
    return "\n".join(lines[start : start + 40])


def _metrics(results: list[TargetResult]) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    for r in results:
        metrics.update({f"{r.name}_executions": r.executions, f"{r.name}_crashes": len(r.crash_inputs),
                        f"{r.name}_exec_per_s": round(r.executions / r.seconds, 1) if r.seconds else 0.0,
                        f"{r.name}_cov": r.cov, f"{r.name}_ft": r.ft, f"{r.name}_seconds": round(r.seconds, 1),
                        f"{r.name}_slow_units": len(r.slow_units)})
    metrics["executions"] = sum(r.executions for r in results)
    metrics["crashes"] = sum(len(r.crash_inputs) for r in results)
    metrics["targets"] = len(results)
    metrics["crash_inputs"] = [p for r in results for p in r.crash_inputs]
    metrics["slow_units"] = sum(len(r.slow_units) for r in results)
    return metrics


def _human(results: list[TargetResult]) -> str:
    rows = [f"{'target':<10} {'executions':>11} {'exec/s':>8} {'cov':>5} {'ft':>6} {'crashes':>7}"]
    for r in results:
        rate = r.executions / r.seconds if r.seconds else 0.0
        rows.append(f"{r.name:<10} {r.executions:>11} {rate:>8.0f} {r.cov:>5} {r.ft:>6} {len(r.crash_inputs):>7}")
        rows += [f"  {p}" for p in r.crash_inputs]
    return "\n".join(rows)


def write_seed_files(names: list[str], corpus_root: Path) -> int:
    """Write every target's seeds as ``seed-<id>`` files into its corpus directory; returns how many."""
    count = 0
    for name in names:
        directory = corpus_root / name
        directory.mkdir(parents=True, exist_ok=True)
        for seed_id, data in load(name).seeds().items():
            (directory / f"seed-{re.sub(r'[^A-Za-z0-9._-]', '_', seed_id)}").write_bytes(data)
            count += 1
    return count


@click.command()
@click.option("--target", "targets", multiple=True, type=click.Choice(sorted(TARGETS)),
              help="Target to fuzz (repeatable); default: every target.")
@click.option("--seconds", type=click.FloatRange(min=1), default=None,
              help="Fuzzing time per target in seconds (required unless --write-seeds).")
@click.option("--runs", type=click.IntRange(min=1), default=None, help="Stop a target after this many executions.")
@click.option("--corpus", "corpus_root", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_CORPUS,
              show_default=True, help="Corpus root: <root>/<target>/ holds seeds and saved crash inputs.")
@click.option("--timeout", type=click.IntRange(min=1), default=20, show_default=True,
              help="Seconds one input may take before it counts as a hang.")
@click.option("--rss-limit-mb", type=click.IntRange(min=256), default=2048, show_default=True,
              help="Memory (MB) a target process may use before the input counts as a crash.")
@click.option("--max-crashes", type=click.IntRange(min=1), default=5, show_default=True,
              help="Stop a target after this many crash inputs.")
@click.option("--write-seeds", is_flag=True, help="Only (re)write each target's seed files into the corpus.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line with the results.")
def fuzz(  # noqa: PLR0917 - click passes every option as an argument
         targets: tuple[str, ...], seconds: float | None, runs: int | None, corpus_root: Path, timeout: int,
         rss_limit_mb: int, max_crashes: int, write_seeds: bool, as_json: bool) -> None:
    """Coverage-guided fuzzing of every parser (atheris/libFuzzer); crash inputs go to the corpus."""
    from loa.cli import UserError

    names = list(targets) or list(TARGETS)
    if write_seeds:
        _say(f"wrote {write_seed_files(names, corpus_root)} seed files under {corpus_root}")
        return
    if seconds is None:
        raise UserError("give --seconds (fuzzing time per target)")
    if atheris_version() is None:
        raise UserError("atheris is not installed: pip install 'loa[fuzz]' (a wheel for Linux x86-64, CPython 3.11)")
    results = []
    for name in names:
        _say(f"fuzz {name}: {TARGETS[name]} ({seconds:g} s{'' if runs is None else f', at most {runs} runs'})")
        result = fuzz_target(name, seconds=seconds, runs=runs, corpus_root=corpus_root, timeout=timeout,
                             rss_limit_mb=rss_limit_mb, max_crashes=max_crashes)
        _say(f"fuzz {name}: {result.executions} runs in {result.seconds:.0f} s, cov {result.cov}, ft {result.ft}, "
             f"{len(result.crash_inputs)} crashes")
        results.append(result)
    emit("fuzz", _metrics(results), as_json=as_json, env=environment(atheris=atheris_version()),
         human=_human(results))
