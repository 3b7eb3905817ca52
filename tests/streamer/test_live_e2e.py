"""Live input: ffmpeg sends plain RTP/Opus to the streamer's live port, exactly as an operator would
(``ffmpeg -re -i mic.wav -c:a libopus -f rtp rtp://127.0.0.1:PORT``); a device receives the re-broadcast, as
SRTP it can decode. Mono 20 ms Opus passes through untouched; stereo 40 ms frames are decoded and re-encoded."""

from __future__ import annotations

import random
import shutil
import socket
import wave
from pathlib import Path

import anyio
import numpy as np
import pytest
from streamer_kit import KitDevice, province, run_device

from loa.streamer.core import StreamerCore
from loa.streamer.service import StreamerService, epoch_for, open_udp_socket
from loa.streamer.sources import LiveStatistics

pytestmark = pytest.mark.e2e
FFMPEG = shutil.which("ffmpeg")


def write_wav(path: Path, freq: float, seconds: float, channels: int) -> None:
    t = np.arange(int(seconds * 48_000)) / 48_000
    mono = (0.3 * np.sin(2 * np.pi * freq * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(48_000)
        w.writeframes(np.repeat(mono, channels).tobytes())


@pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed")
@pytest.mark.parametrize(("backend", "channels", "extra", "passthrough"), [
    ("trio", 1, [], True),
    ("asyncio", 2, ["-frame_duration", "40"], False),
])
def test_ffmpeg_rtp_opus_is_rebroadcast(tmp_path: Path, backend: str, channels: int, extra: list[str],
                                        passthrough: bool) -> None:
    assert FFMPEG is not None
    mic = tmp_path / "mic.wav"
    write_wav(mic, 660.0, 3.0, channels)
    rng = random.Random(11)

    async def main() -> tuple[KitDevice, LiveStatistics, int]:
        core = StreamerCore(static_private=rng.randbytes(32), zones=province(),
                            epoch_ns=epoch_for(anyio.current_time()), send_clock=anyio.current_time)
        server_sock = open_udp_socket("127.0.0.1", 0)
        service = StreamerService(core, server_sock)
        device = KitDevice(server_public=core.public_key, server=service.address, seed=5)
        core.add_device(device.public_key, "C11", service.now())
        with server_sock, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            async with anyio.create_task_group() as tg:
                await tg.start(service.serve)
                tg.start_soon(run_device, device, sock)
                with anyio.fail_after(10):
                    while not device.zone_path:
                        await anyio.sleep(0.01)
                source = await service.open_live_source("127.0.0.1", 0)
                assert source.address is not None
                bid = service.start_broadcast(source, ["D1"], name="micro xã")
                command = [FFMPEG, "-hide_banner", "-loglevel", "error", "-re", "-i", str(mic), "-c:a", "libopus",
                           *extra, "-f", "rtp", f"rtp://127.0.0.1:{source.address[1]}"]
                with anyio.fail_after(30):
                    await anyio.run_process(command)
                await anyio.sleep(0.3)
                stats = source.statistics()
                service.stop_broadcast(bid)
                service.stop()
                with anyio.fail_after(5):
                    while bid not in device.left:
                        await anyio.sleep(0.01)
                tg.cancel_scope.cancel()
        return device, stats, bid

    device, stats, bid = anyio.run(main, backend=backend)
    frames = device.decode(bid)
    assert len(frames) >= 120  # about 3 s of 20 ms frames (some gaps at the start, before the prebuffer filled)
    pcm = np.concatenate(frames[10:-5]).astype(np.float64)
    assert pcm.std() > 1000
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    assert abs(np.argmax(spectrum) * 48_000 / len(pcm) - 660.0) < 5.0
    if passthrough:
        assert stats.passed_through >= 140
        assert stats.decoded == 0
    else:
        assert stats.passed_through == 0
        assert stats.decoded >= 70
