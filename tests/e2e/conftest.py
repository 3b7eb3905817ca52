"""End-to-end fixtures: the helpers beside these tests are importable, and every async test runs on trio and on
asyncio (anyio's pytest plugin)."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Real sockets and real time on a shared machine: an end-to-end test that fails is run again, at most twice.
    A test broken for good still fails; one that needed a rerun is reported as such (``R`` in the summary)."""
    for item in items:
        if Path(str(item.fspath)).resolve().parent == Path(_HERE):
            item.add_marker(pytest.mark.flaky(reruns=2, reruns_delay=1))


@pytest.fixture(autouse=True)
def _collect_what_the_test_left() -> Iterator[None]:
    """Collect garbage after each end-to-end test, so that a socket it leaves unclosed (a ResourceWarning, an
    error here) is reported against it, not against whichever later test the collector happens to run in."""
    yield
    gc.collect()
