"""The media watchdog (PROTOCOL.md section 5.6): fallback to FM, the local programme or silence, and back."""

from __future__ import annotations

import hashlib
import itertools

import pytest
from serverdriver import World

from loa.codecs import write_ogg_opus
from loa.protocol.control import ConfigValues, State, Telemetry


class Sources:
    """A decoding sink that remembers which source played when."""

    decode = True

    def __init__(self) -> None:
        self.frames: list[tuple[float, str, str]] = []

    def on_frame(self, at: float, pcm: object, info: object) -> None:
        self.frames.append((at, info.source, info.kind))  # type: ignore[attr-defined]

    def close(self) -> None:
        return None

    def runs(self) -> list[tuple[str, float, float]]:
        """(source, first start, last start) of each run of frames from one source."""
        out: list[tuple[str, float, float]] = []
        for at, source, _ in self.frames:
            if out and out[-1][0] == source:
                out[-1] = (source, out[-1][1], at)
            else:
                out.append((source, at, at))
        return out


@pytest.mark.parametrize(("fallback", "expected"), [("fm", "fm"), ("silence", None), ("local", "local")])
def test_watchdog_falls_back_and_returns_when_the_stream_resumes(
    payloads: list[bytes], tmp_path: object, fallback: str, expected: str | None
) -> None:
    config = ConfigValues(zones=("79",), telemetry_s=30, watchdog_ms=2000, fallback=fallback, fallback_khz=99900)
    world = World(50, config=config)
    sink = Sources()
    node = world.add_device(sink=sink)
    if fallback == "local":  # a prefetched programme to fall back to
        path = f"{tmp_path}/local.opus"
        write_ogg_opus(path, payloads[:100], frame_ms=20)
        with open(path, "rb") as f:
            blob = f.read()
        cid = hashlib.sha256(blob).digest()
        node.core.store.write(cid, len(blob), 0, blob)
        assert node.core.store.commit(cid)
    world.run(10.0)
    pub = world.pub(node)
    stream = world.server.start_stream(5, [pub], payloads=payloads, start_in=0.1)
    world.run(3.0)
    stream.paused = True  # the source stalls: nothing is sent
    silence_from = world.net.now
    world.run(4.0)
    core = node.core
    assert core.statistics().faults == ("watchdog",)
    assert core.stream_state() == "stalled"
    reports = world.server.messages_of(Telemetry)
    assert reports[-1].v.faults == ("watchdog",)  # reported at once, not at the next interval
    stream.paused = False
    stream.mark_gap()
    world.run(3.0)
    assert core.statistics().faults == ()
    assert core.statistics().watchdog_fires == 1
    runs = sink.runs()
    sources = [source for source, _, _ in runs]
    assert sources == (["ip", expected, "ip"] if expected else ["ip"])
    if expected is None:  # silence: a gap in the stream's frames, nothing in between
        starts = [at for at, _, _ in sink.frames]
        assert max(b - a for a, b in itertools.pairwise(starts)) > 3.9  # paused for 4 s
    else:
        _, begin, end = runs[1]
        # it fell back 2 s (watchdog_ms) after the last packet, and played until the stream's next frame
        assert silence_from + 2.0 < begin < silence_from + 2.1
        assert runs[2][1] - end <= 0.02 + 1e-6
    states = [(m.bid, m.src) for m in world.server.messages_of(State)]
    assert states[-3:] == [(5, "ip"), (5, expected or "idle"), (5, "ip")]
