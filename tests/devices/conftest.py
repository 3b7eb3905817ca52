"""Fixtures for the device tests: the test-only server driver (serverdriver.py) and pre-encoded audio."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # lets the tests import serverdriver

from serverdriver import tone_payloads


@pytest.fixture(scope="session")
def payloads() -> list[bytes]:
    """250 Opus packets (5 s, 20 ms each, FEC on) of a 440 Hz tone."""
    return tone_payloads(250, 440.0)


@pytest.fixture(scope="session")
def alert_payloads() -> list[bytes]:
    """250 Opus packets of a 880 Hz tone (the alert's audio)."""
    return tone_payloads(250, 880.0)
