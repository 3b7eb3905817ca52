"""A `loa` command as a child process for the tests: its output read as it comes, waited on by pattern, stopped.

:func:`serving` starts `loa serve` on loopback (HTTP and UDP on ports the kernel picks), waits until it has
printed where it listens and its public keys, and stops it on leaving. :func:`spawn` starts any other `loa`
command (`loa fleet`, ...) the same way.

Failure semantics: :meth:`Child.find` raises AssertionError, with the last lines of output, when the pattern does
not show within its timeout or the process exited without printing it; :meth:`Child.stop` sends SIGTERM, then
SIGKILL after ``grace`` seconds, and never raises for a process that already ended.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

__all__ = ["Child", "Serve", "serving", "spawn"]


@dataclass
class Child:
    """A running `loa` command; ``lines`` is everything it printed so far (stdout and stderr, interleaved)."""

    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    _readers: list[threading.Thread] = field(default_factory=list)

    def start_reader(self) -> None:
        def read(stream: IO[str]) -> None:
            for line in stream:
                self.lines.append(line.rstrip("\n"))

        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                reader = threading.Thread(target=read, args=(stream,), daemon=True)
                reader.start()
                self._readers.append(reader)

    def find(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """The first line matching ``pattern`` (see the module docstring for failures)."""
        deadline = time.monotonic() + timeout
        while True:
            exited = self.proc.poll() is not None
            if exited:  # what it printed last is read before giving up
                for reader in self._readers:
                    reader.join(timeout=5)
            for line in list(self.lines):
                if (found := re.search(pattern, line)) is not None:
                    return found
            if exited or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r}; output:\n" + "\n".join(self.lines[-40:]))

    def stop(self, grace: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def spawn(*args: str) -> Child:
    """``python -m loa.cli ARGS`` with unbuffered output, read by two threads."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "loa.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    child = Child(proc)
    child.start_reader()
    return child


@dataclass(frozen=True)
class Serve:
    """A `loa serve` that is up: its API base URL, device UDP address, server and alert authority public keys."""

    child: Child
    api: str
    udp: str
    server_key: str
    authority: str

    def first_password(self, timeout: float = 30.0) -> str:
        """The first administrator's password, printed on the first start of a data directory only."""
        return self.child.find(r"password: (\S+)", timeout).group(1)


@contextlib.contextmanager
def serving(data_dir: Path, *, timeout: float = 60.0) -> Iterator[Serve]:
    """`loa serve --data-dir DATA_DIR` on 127.0.0.1 (ports picked by the kernel), up for the ``with`` block."""
    child = spawn("serve", "--data-dir", str(data_dir), "--http", "127.0.0.1:0", "--udp", "127.0.0.1:0")
    try:
        api = child.find(r"API on (http://\S+)", timeout).group(1)
        udp = child.find(r"devices on udp (\S+); server public key (\S+)", timeout)
        authority = child.find(r"alert authority public key (\S+)", timeout).group(1)
        yield Serve(child, api, udp.group(1), udp.group(2), authority)
    finally:
        child.stop()
