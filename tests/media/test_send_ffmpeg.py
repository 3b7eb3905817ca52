"""`loa send` interoperates with ffmpeg: an independent RTP/SRTP receiver plays what we send, given our SDP.

A known signal (tones and a chirp) is written to a WAV file; `loa send` streams it in real time as RTP (RTCP
on PORT+1) and as SRTP (RTCP multiplexed on PORT); ffmpeg, started from the SDP, decodes it to a WAV file,
and the decoded audio must match the source (normalised cross-correlation >= 0.95 after alignment).
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from click.testing import CliRunner

from loa.streamer.send import send

RATE = 48_000
FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed (./dev.sh setup installs it)")
LOA = [sys.executable, "-c", "from loa.cli import run; run()"]


def source_signal() -> npt.NDArray[np.float64]:
    """3.5 s: four 0.4 s tones, then a 2 s logarithmic chirp from 200 Hz to 5 kHz, at -6 dBFS."""
    parts = []
    for f in (440.0, 660.0, 880.0, 1320.0):
        t = np.arange(int(0.4 * RATE)) / RATE
        parts.append(np.sin(2 * np.pi * f * t))
    t = np.arange(2 * RATE) / RATE
    k = np.log(5000 / 200) / 2
    parts.append(np.sin(2 * np.pi * 200 * (np.exp(k * t) - 1) / k))
    return 0.5 * np.concatenate(parts)


def write_wav(path: Path, x: npt.NDArray[np.float64]) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((x * 32767).astype("<i2").tobytes())


def read_wav(path: Path) -> npt.NDArray[np.float64]:
    with wave.open(str(path), "rb") as w:
        assert w.getframerate() == RATE
        assert w.getnchannels() == 1
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64) / 32768


def aligned_correlation(ref: npt.NDArray[np.float64], got: npt.NDArray[np.float64]) -> tuple[float, int]:
    """Normalised correlation of ``got`` with ``ref`` over their overlap at the best lag, and that lag."""
    n = 1 << (len(ref) + len(got)).bit_length()
    xcorr = np.fft.irfft(np.fft.rfft(got, n) * np.conj(np.fft.rfft(ref, n)), n)
    lag = int(np.argmax(xcorr))
    lag = lag - n if lag > n // 2 else lag  # got[i + lag] ~ ref[i]
    r = ref[max(0, -lag) :]
    g = got[max(0, lag) :]
    m = min(len(r), len(g))
    r, g = r[:m], g[:m]
    return float(np.dot(r, g) / np.sqrt(np.dot(r, r) * np.dot(g, g))), lag


def free_port_pair() -> int:
    """An even UDP port P with P and P + 1 free on the loopback interface."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1]) & ~1
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, socket.socket(
                socket.AF_INET, socket.SOCK_DGRAM
            ) as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no free UDP port pair")


def wait_for(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path.name} was not written within {timeout} s")
        time.sleep(0.02)


@pytest.mark.e2e
@needs_ffmpeg
@pytest.mark.parametrize("extra", [[], ["--srtp", "--rtcp-mux"]], ids=["rtp", "srtp-rtcp-mux"])
def test_ffmpeg_plays_what_loa_send_sends(tmp_path: Path, extra: list[str]) -> None:
    assert FFMPEG is not None
    src = tmp_path / "source.wav"
    ref = source_signal()
    write_wav(src, ref)
    sdp = tmp_path / "out.sdp"
    out = tmp_path / "decoded.wav"
    port = free_port_pair()
    sender = subprocess.Popen(
        [*LOA, "send", str(src), "--to", f"127.0.0.1:{port}", "--sdp", str(sdp), "--start-delay", "1.2",
         "--bitrate", "32000", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    receiver = None
    try:
        wait_for(sdp, 20)
        text = sdp.read_text()
        assert ("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" in text) == ("--srtp" in extra)
        receiver = subprocess.Popen(
            [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-protocol_whitelist", "file,udp,rtp",
             "-i", str(sdp), "-ac", "1", "-t", "10", "-y", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        _, send_err = sender.communicate(timeout=20)
        assert sender.returncode == 0, send_err
        _, ff_err = receiver.communicate(timeout=15)  # the closing RTCP BYE ends ffmpeg's input at once
        assert receiver.returncode == 0, ff_err
    finally:
        for proc in (sender, receiver):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
    got = read_wav(out)
    assert len(got) > 0.8 * len(ref)
    corr, lag = aligned_correlation(ref, got)
    assert corr >= 0.95, f"correlation {corr:.3f} at lag {lag}"
    summary = re.search(r"sent (\d+) packets .* \((\d+) late\)", send_err)
    assert summary is not None, send_err
    sent, late = int(summary[1]), int(summary[2])
    assert late <= sent // 10, send_err


@pytest.fixture
def corrupt_file(tmp_path: Path) -> Path:
    path = tmp_path / "corrupt.mp3"
    path.write_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(range(256)) * 20)
    return path


@pytest.mark.parametrize(
    "args",
    [
        ["{tmp}/missing.wav", "--to", "127.0.0.1:5004", "--sdp", "{tmp}/a.sdp"],
        ["{corrupt}", "--to", "127.0.0.1:5004", "--sdp", "{tmp}/a.sdp"],
        ["--tone", "--to", "127.0.0.1", "--sdp", "{tmp}/a.sdp"],
        ["--tone", "--to", "127.0.0.1:99999", "--sdp", "{tmp}/a.sdp"],
        ["--tone", "--to", "no-such-host.invalid:5004", "--sdp", "{tmp}/a.sdp"],
        ["--tone", "--to", "127.0.0.1:5004", "--sdp", "{tmp}/no/such/dir/a.sdp"],
        ["{corrupt}", "--tone", "--to", "127.0.0.1:5004", "--sdp", "{tmp}/a.sdp"],
    ],
    ids=["missing-file", "corrupt-file", "no-port", "bad-port", "unresolvable", "unwritable-sdp", "file-and-tone"],
)
def test_bad_input_is_one_line_and_exit_code_1(tmp_path: Path, corrupt_file: Path, args: list[str]) -> None:
    argv = [a.format(tmp=tmp_path, corrupt=corrupt_file) for a in args]
    result = CliRunner().invoke(send, argv)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.output
    assert not (tmp_path / "a.sdp").exists()


def test_bad_input_through_the_console_entry_point(tmp_path: Path) -> None:
    out = subprocess.run(
        [*LOA, "send", str(tmp_path / "missing.ogg"), "--to", "127.0.0.1:5004", "--sdp", str(tmp_path / "a.sdp")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert out.returncode == 1
    assert len(out.stderr.strip().splitlines()) == 1
    assert "missing.ogg" in out.stderr
    assert "Traceback" not in out.stderr
