"""Prefetch, resumable fetch and scheduled start of stored programmes (PROTOCOL.md sections 4.9, 5.8, 7.2)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from serverdriver import NS, STEADY, World

from loa.codecs import write_ogg_opus
from loa.devices.content import DirectoryStore, MemoryStore, merge_range
from loa.devices.fetch import WINDOW, Fetcher
from loa.protocol.control import Chunk, Fetch, Have, Play, Prefetch


@pytest.fixture(scope="module")
def programme(tmp_path_factory: pytest.TempPathFactory, payloads: list[bytes]) -> tuple[bytes, bytes]:
    """An Ogg Opus programme of 12 s (600 packets) and its content id."""
    path = tmp_path_factory.mktemp("content") / "news.opus"
    write_ogg_opus(path, (payloads * 3)[:600], frame_ms=20)
    blob = path.read_bytes()
    return blob, hashlib.sha256(blob).digest()


def test_prefetch_with_a_break_then_start_at_one_server_instant(programme: tuple[bytes, bytes]) -> None:
    blob, cid = programme
    world = World(40, **STEADY)
    nodes = [world.add_device(offset_s=o, drift_ppm=d) for o, d in ((6.0, 80.0), (-6.0, -80.0), (0.5, 5.0))]
    world.run(120.0)
    world.server.content[cid] = blob
    for node in nodes:
        world.server.send(world.pub(node), Prefetch(cid=cid, size=len(blob), name="Bản tin sáng"))
    world.run(0.1)
    assert all(0 < sum(b - a for a, b in n.core.store.ranges(cid)) < len(blob) for n in nodes)
    world.net.add_outage(world.net.now, world.net.now + 5.0)  # the link breaks in the middle of the fetch
    world.run(5.0)
    assert not world.server.messages_of(Have)
    requests = len(world.server.messages_of(Fetch))
    assert world.run_until(lambda: len(world.server.messages_of(Have)) == 3, 30.0)
    assert {h.ok for h in world.server.messages_of(Have)} == {True}
    # resumed: after the break the devices asked only for what they lacked (plus the few re-asked ranges)
    chunks = -(-len(blob) // 1024)
    assert len(world.server.messages_of(Fetch)) <= 3 * (chunks + 2 * WINDOW)
    assert requests > 0
    at = world.server.server_time() + 3 * NS
    for node in nodes:
        world.server.send(world.pub(node), Play(bid=9, cid=cid, at=at, cls=0, lvl=1, policy="resume", zone="760"))
    world.run(16.0)
    starts = [n.core.log.for_bid(9)[0] for n in nodes]
    assert all(abs(e.server_at - at) < 1000 for e in starts)
    true_starts = [e.true_at for e in starts]
    assert max(true_starts) - min(true_starts) < 0.001  # the same server instant on every device
    for node in nodes:
        assert len(node.core.log.for_bid(9)) == 600
        assert node.core.arbiter.current is None  # it ended with its content


def test_a_late_play_starts_in_step_and_a_fetch_resumes_across_reboot(programme: tuple[bytes, bytes]) -> None:
    blob, cid = programme
    world = World(41)
    node = world.add_device()
    world.run(10.0)
    pub = world.pub(node)
    world.server.content[cid] = blob
    world.server.send(pub, Prefetch(cid=cid, size=len(blob), name="news"))
    world.run(0.08)
    held = sum(b - a for a, b in node.core.store.ranges(cid))
    assert 0 < held < len(blob)
    node.core.reboot(node.clock.local(world.net.now))  # the store and the fetch survive the reboot
    assert world.run_until(lambda: bool(world.server.messages_of(Have)), 30.0)
    asked = {m.off for m in world.server.messages_of(Fetch)}
    assert len(asked) == -(-len(blob) // 1024)  # every range asked for; none needed twice after the reboot
    # a play received 2 s after its instant starts 2 s into the programme
    at = world.server.server_time() - 2 * NS
    world.server.send(pub, Play(bid=3, cid=cid, at=at, cls=0, lvl=1, policy="resume", zone="760"))
    world.run(4.0)  # (after the reboot the clock estimate needs a moment: a device plays once it is ready)
    first = node.core.log.for_bid(3)[0]
    assert first.rtp_ts >= 2 * 48_000
    assert abs(first.server_at - (at + first.rtp_ts * NS // 48_000)) < 1000


def test_content_that_does_not_match_its_id_is_given_up(programme: tuple[bytes, bytes]) -> None:
    blob, cid = programme
    world = World(42)
    node = world.add_device()
    world.run(5.0)
    world.server.content[cid] = blob[:-1] + bytes([blob[-1] ^ 1])
    world.server.send(world.pub(node), Prefetch(cid=cid, size=len(blob), name="news"))
    assert world.run_until(lambda: bool(world.server.messages_of(Have)), 30.0)
    (have,) = world.server.messages_of(Have)
    assert not have.ok
    assert len(world.server.messages_of(Fetch)) == 2 * -(-len(blob) // 1024)  # fetched twice, then gave up
    assert not node.core.store.has(cid)


def test_fetcher_takes_only_what_it_asked_for_and_no_room_is_refused() -> None:
    store = MemoryStore(capacity=4000)
    fetcher = Fetcher(store)
    blob = bytes(range(256)) * 12  # 3072 bytes
    cid = hashlib.sha256(blob).digest()
    assert fetcher.start(hashlib.sha256(b"x" * 5000).digest(), 5000) is not None  # cannot fit: refused at once
    assert fetcher.start(cid, len(blob)) is None
    requests = fetcher.requests_due(0.0, 0.1)
    assert [(r.off, r.len) for r in requests] == [(0, 1024), (1024, 1024), (2048, 1024)]
    assert fetcher.on_chunk(Chunk(cid=cid, off=512, data=blob[512:1536])) is None  # not a range it asked for
    assert fetcher.on_chunk(Chunk(cid=cid, off=0, data=blob[:1000])) is None  # wrong length
    assert store.ranges(cid) == []
    assert fetcher.requests_due(0.5, 0.1) == []
    assert len(fetcher.requests_due(1.0, 0.1)) == 3  # asked again after 1 s
    for off in (2048, 0, 1024):
        outcome = fetcher.on_chunk(Chunk(cid=cid, off=off, data=blob[off : off + 1024]))
    assert outcome is not None
    assert outcome.ok
    assert store.read(cid) == blob
    assert fetcher.ignored == 2


def test_directory_store_keeps_ranges_across_restarts(tmp_path: Path, programme: tuple[bytes, bytes]) -> None:
    blob, cid = programme
    store = DirectoryStore(tmp_path)
    store.write(cid, len(blob), 0, blob[:4096])
    store.write(cid, len(blob), 8192, blob[8192:9216])
    again = DirectoryStore(tmp_path)  # a restarted device
    assert again.ranges(cid) == [(0, 4096), (8192, 9216)]
    again.write(cid, len(blob), 4096, blob[4096:8192])
    again.write(cid, len(blob), 9216, blob[9216:])
    assert again.ranges(cid) == [(0, len(blob))]
    assert again.commit(cid)
    assert again.has(cid)
    assert again.programme(cid).samples == 600 * 960 - 312
    assert sorted(p.name for p in tmp_path.iterdir()) == [cid.hex()]
    assert merge_range([(0, 2), (5, 8)], 2, 5) == [(0, 8)]
