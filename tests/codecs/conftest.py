"""Fixtures for the codec tests: ffmpeg itself and fixture files it makes at test time."""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

# Container -> ffmpeg encoder and options for the fixture files (each checked against `ffmpeg -encoders`).
FORMATS: dict[str, tuple[str, list[str]]] = {
    "mp3": ("libmp3lame", ["-b:a", "128k"]),
    "wav": ("pcm_s16le", []),
    "m4a": ("aac", ["-b:a", "128k"]),
    "ogg": ("libvorbis", ["-q:a", "5"]),
    "flac": ("flac", []),
}

# 3 s at 44.1 kHz stereo: 440 Hz + 1.5 kHz, identical channels, peak 0.4 (about -12 LUFS).
SOURCE_EXPR = "0.3*sin(2*PI*440*t)+0.1*sin(2*PI*1500*t)"
SOURCE_SECONDS = 3.0


def ffmpeg_path() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        pytest.skip("ffmpeg is not installed")
    return path


@functools.cache
def ffmpeg_encoders() -> frozenset[str]:
    out = subprocess.run([ffmpeg_path(), "-hide_banner", "-encoders"], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    return frozenset(line.split()[1] for line in out.splitlines() if line.startswith(" A"))


def run_ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_path(), "-hide_banner", "-v", "error", "-nostdin", "-y", *args],
                   check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def ffmpeg() -> Callable[..., None]:
    """Run ffmpeg quietly with the given arguments (skips the test if ffmpeg is missing)."""
    ffmpeg_path()
    return run_ffmpeg


@pytest.fixture(scope="session")
def make_source(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Return a factory: container extension -> a fixture file of the source signal made by ffmpeg."""
    folder = tmp_path_factory.mktemp("sources")
    made: dict[str, Path] = {}

    def make(ext: str) -> Path:
        if ext not in made:
            encoder, options = FORMATS[ext]
            if encoder not in ffmpeg_encoders():
                pytest.skip(f"this ffmpeg cannot write {ext} (no {encoder} encoder)")
            path = folder / f"source.{ext}"
            expr = f"aevalsrc={SOURCE_EXPR}|{SOURCE_EXPR}:s=44100:d={SOURCE_SECONDS}"
            run_ffmpeg("-f", "lavfi", "-i", expr, "-c:a", encoder, *options, str(path))
            made[ext] = path
        return made[ext]

    return make
