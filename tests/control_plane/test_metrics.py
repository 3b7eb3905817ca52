"""The event-loop gauges of /metrics: ``loa_async_tasks`` counts the loop's live tasks on trio and on asyncio."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from fastapi.testclient import TestClient
from prometheus_client import generate_latest

from loa.control_plane import process_memory
from loa.control_plane.api import create_app
from loa.control_plane.api.metrics import Metrics, count_tasks
from loa.control_plane.settings import ControlPlane
from loa.control_plane.testing import fast_settings

BACKENDS = ["trio", "asyncio"]


def _gauge(text: str, name: str) -> float | None:
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("extra", [0, 1, 7])
def test_count_tasks_sees_every_live_task(backend: str, extra: int) -> None:
    async def main() -> tuple[int, int, int]:
        before = count_tasks()
        release = anyio.Event()
        async with anyio.create_task_group() as tg:  # the group's host task is the one counting
            for _ in range(extra):
                tg.start_soon(release.wait)
            await anyio.sleep(0.01)
            during = count_tasks()
            release.set()
        await anyio.sleep(0.01)
        return before, during, count_tasks()

    before, during, after = anyio.run(main, backend=backend)
    assert before >= 1
    assert during == before + extra
    assert after == before  # ended tasks are no longer counted


def test_count_tasks_outside_a_loop_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="no event loop"):
        count_tasks()


@pytest.mark.parametrize("backend", BACKENDS)
def test_scrape_from_a_worker_thread_reads_the_loop(tmp_path: Path, backend: str) -> None:
    """As the /metrics route runs: in a worker thread, the count taken on the loop, with the loop's tasks."""
    cp = ControlPlane(fast_settings(tmp_path))
    try:
        registry = Metrics(cp).registry
        scrape: Callable[[], bytes] = lambda: generate_latest(registry)  # noqa: E731

        async def main() -> tuple[float | None, float | None]:
            first = _gauge((await anyio.to_thread.run_sync(scrape)).decode(), "loa_async_tasks")
            release = anyio.Event()
            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    tg.start_soon(release.wait)
                await anyio.sleep(0.01)
                second = _gauge((await anyio.to_thread.run_sync(scrape)).decode(), "loa_async_tasks")
                release.set()
            return first, second

        first, second = anyio.run(main, backend=backend)
    finally:
        cp.close()
    assert first is not None
    assert first >= 1
    assert second == first + 5


def test_metrics_route_has_the_task_gauge_and_no_streamer_gauges_without_a_streamer(tmp_path: Path) -> None:
    cp = ControlPlane(fast_settings(tmp_path))
    try:
        with TestClient(create_app(control_plane=cp)) as client:
            text = client.get("/metrics").text
    finally:
        cp.close()
    tasks = _gauge(text, "loa_async_tasks")
    assert tasks is not None
    assert tasks >= 1
    assert "loa_streamer_sessions" not in text
    blocks = _gauge(text, "loa_python_allocated_blocks")
    assert blocks is not None
    assert blocks > 10_000  # an interpreter with the app loaded holds far more


def test_collected_outside_any_loop_the_gauge_is_absent(tmp_path: Path) -> None:
    cp = ControlPlane(fast_settings(tmp_path))
    try:
        text = generate_latest(Metrics(cp).registry).decode()
    finally:
        cp.close()
    assert "loa_async_tasks" not in text
    assert "loa_audit_entries" in text  # the rest is still there


def _labelled(text: str, name: str, label: str) -> float | None:
    found = re.search(rf'^{name}\{{state="{label}"\}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else None


@pytest.mark.skipif(process_memory.heap() is None, reason="needs the GNU C library (mallinfo2)")
def test_memory_gauges_follow_what_the_c_allocator_and_sqlite_hold(tmp_path: Path) -> None:
    cp = ControlPlane(fast_settings(tmp_path))
    try:
        registry = Metrics(cp).registry
        before = generate_latest(registry).decode()
        held = [bytes(4096) + bytes([i % 251]) for i in range(8192)]  # 32 MiB from the C allocator
        after = generate_latest(registry).decode()
        del held
    finally:
        cp.close()
    in_use = [_labelled(page, "loa_c_heap_bytes", "in_use") or 0.0 for page in (before, after)]
    grew = in_use[1] - in_use[0]
    assert 30 * 2**20 < grew < 40 * 2**20, grew
    assert (_labelled(after, "loa_c_heap_bytes", "free") or -1) >= 0
    sqlite_held = _gauge(after, "loa_sqlite_bytes")
    assert sqlite_held is not None
    assert sqlite_held > 0  # the control plane's open connections
