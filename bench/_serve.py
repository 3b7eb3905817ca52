"""A throw-away ``loa serve`` and its client, for benchmarks that run the whole server in a child process.

:class:`Child` is a child process whose output lines are kept with the monotonic time they were read
(:func:`spawn` starts one); :func:`free_port` picks a port no socket holds; :func:`wav_tone` makes a WAV file to
upload; :class:`RtpFeeder` plays an operator's microphone (an RTP/Opus stream) into a live broadcast's port;
:class:`Api` is the HTTP client of one operator (its token, retries of reads, pages), and
:class:`UnacknowledgedError` says a write's answer never came (it may or may not have taken effect). Used by
``loa bench crash`` and ``loa bench soak``.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2
import numpy as np

from loa.cli import UserError

START_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 60.0


# -- processes ---------------------------------------------------------------------------------------------------


@dataclass
class Child:
    """A child process whose output lines are kept with the monotonic time they were read."""

    proc: subprocess.Popen[str]
    lines: list[tuple[float, str]] = field(default_factory=list)
    on_line: Callable[[float, str], None] | None = None

    def start_reader(self) -> None:
        def read(stream: Any) -> None:
            for line in stream:
                stamped = (time.monotonic(), line.rstrip("\n"))
                if self.on_line is not None:
                    self.on_line(*stamped)
                self.lines.append(stamped)

        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                threading.Thread(target=read, args=(stream,), daemon=True).start()

    def find(self, pattern: str, timeout: float) -> tuple[float, re.Match[str]]:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            lines = list(self.lines)
            for at, line in lines[seen:]:
                if (found := re.search(pattern, line)) is not None:
                    return at, found
            seen = len(lines)
            if self.proc.poll() is not None and seen == len(self.lines):
                break
            time.sleep(0.01)
        tail = "\n".join(line for _, line in self.lines[-20:])
        raise UserError(f"`loa serve` did not print {pattern!r} in {timeout:g} s; its output ends:\n{tail}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, grace: float = 10.0) -> None:
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


def spawn(args: list[str], *, module: str = "loa.cli", on_line: Callable[[float, str], None] | None = None) -> Child:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    child = Child(proc, on_line=on_line)
    child.start_reader()
    return child


def free_port(kind: int, rng: random.Random) -> int:
    """A free port below the usual ephemeral range (32768-60999), so that no socket bound to port 0 takes it
    while the server is down."""
    for _ in range(200):
        port = rng.randrange(20_000, 32_000)
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise UserError("no free port found between 20000 and 32000 on 127.0.0.1")


# -- test content --------------------------------------------------------------------------------------------------


def wav_tone(seconds: float, frequency: float) -> bytes:
    """A mono 48 kHz WAV file of a tone (every upload gets its own frequency, so its own content id)."""
    t = np.arange(int(48_000 * seconds)) / 48_000
    samples = (0.3 * 32767 * np.sin(2 * math.pi * frequency * t)).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48_000)
        w.writeframes(samples.tobytes())
    return out.getvalue()


class RtpFeeder:
    """Sends a 440 Hz RTP/Opus stream (20 ms frames, real time) to a live input until stopped."""

    def __init__(self, address: tuple[str, int]) -> None:
        from loa.codecs import OpusEncoder
        from loa.protocol.rtp import write_opus_rtp

        encoder = OpusEncoder()
        t = np.arange(960) / 48_000
        self._frame = encoder.encode((0.2 * 32767 * np.sin(2 * math.pi * 440 * t)).astype(np.int16))
        self._write = write_opus_rtp
        self._address = address
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        ssrc = random.getrandbits(32)
        buf = bytearray(1500)
        start = time.monotonic()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for k in range(10**7):
                wait = start + k * 0.02 - time.monotonic()
                if self._stop.wait(max(0.0, wait)):
                    return
                size = self._write(buf, sequence=k & 0xFFFF, timestamp=(k * 960) & 0xFFFFFFFF, ssrc=ssrc,
                                   payload=self._frame, marker=k == 0)
                with contextlib.suppress(OSError):
                    sock.sendto(bytes(buf[:size]), self._address)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


# -- the HTTP side -------------------------------------------------------------------------------------------------


class UnacknowledgedError(Exception):
    """A request got no 2xx answer (the server was killed under it, or refused it)."""


class Api:
    def __init__(self, base: str) -> None:
        self.client = httpx2.Client(base_url=base, timeout=REQUEST_TIMEOUT_S)
        self.token = ""

    def close(self) -> None:
        self.client.close()

    def login(self, username: str, password: str) -> str:
        response = self.client.post("/api/v1/auth/login", json={"username": username, "password": password})
        if response.status_code != 200:
            raise UnacknowledgedError(f"login {username}: {response.status_code} {response.text[:200]}")
        return str(response.json()["token"])

    def call(self, method: str, path: str, *, token: str | None = None, **kwargs: Any) -> Any:
        try:
            response = self.client.request(method, path, headers={"Authorization": f"Bearer {token or self.token}"},
                                           **kwargs)
        except httpx2.HTTPError as exc:
            raise UnacknowledgedError(f"{method} {path}: {type(exc).__name__}") from None
        if not 200 <= response.status_code < 300:
            raise UnacknowledgedError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return response.json() if response.content else None

    def read(self, path: str, **params: Any) -> Any:
        """A GET, tried three times (a freshly started server on a busy machine can be slow)."""
        for attempt in range(3):
            try:
                return self.call("GET", path, params=params)
            except UnacknowledgedError:
                if attempt == 2:
                    raise
                time.sleep(1.0)
        raise AssertionError("unreachable")

    def pages(self, path: str, **params: Any) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        cursor = None
        for _ in range(10_000):
            page = self.read(path, limit=1000, **params, **({"cursor": cursor} if cursor else {}))
            rows.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                break
        return rows


