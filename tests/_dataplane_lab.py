"""What the data plane tests share: polling for a condition, running a lab (a control plane's data plane on
loopback and its devices) around a test body, and a directory served over HTTP on loopback (what a relay plays).

A lab is any object with ``dp`` (a :class:`loa.control_plane.dataplane.DataPlane`), ``sock`` (set by its
``start``) and ``async start()``; each test module keeps its own, with the devices it needs.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import anyio
import anyio.abc

__all__ = ["run_lab", "serve_directory", "wait_for"]


async def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await anyio.sleep(0.05)


class _Lab(Protocol):
    dp: Any
    sock: Any

    async def start(self) -> None: ...


L = TypeVar("L", bound=_Lab)


def run_lab(make: Callable[[anyio.abc.TaskGroup], L], body: Callable[[L], Awaitable[None]]) -> None:
    """Start the lab ``make`` builds, run ``body`` on it (60 s at most), then stop its data plane (10 s at most)."""

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            lab = make(tg)
            await lab.start()
            with anyio.fail_after(60):
                await body(lab)
            lab.dp.stop()
            with anyio.fail_after(10):
                await lab.dp.wait_stopped()
            tg.cancel_scope.cancel()
        lab.sock.close()

    anyio.run(main, backend="trio")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *_args: Any) -> None:
        pass


@contextlib.contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """``directory`` over HTTP on 127.0.0.1 while the block runs; yields its base URL (no trailing slash)."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(directory)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
