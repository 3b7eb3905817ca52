"""Stored programmes: the content store, prefetch with lost chunks, and the scheduled start (PROTOCOL.md
sections 4.9, 5.8, 7.2)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from streamer_kit import EPOCH_NS, SERVER, World

from loa.codecs import encode_file_to_ogg_opus, tone
from loa.protocol.control import Fetch, Have, Leave, Play, Prefetch
from loa.protocol.sim import LinkConditions
from loa.streamer.content import ContentError, ContentStore
from loa.streamer.settings import Settings
from loa.streamer.status import BroadcastEnded, ContentReported


@pytest.fixture(scope="module")
def programme(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("programme") / "bản tin sáng.opus"
    encode_file_to_ogg_opus(tone(3.0, 523.25), path, bitrate=48_000)
    return path


def test_the_store_names_content_by_its_hash_and_refuses_what_is_not_ogg_opus(programme: Path,
                                                                               tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    info = store.publish(programme)
    blob = programme.read_bytes()
    assert info.cid == hashlib.sha256(blob).digest()
    assert info.size == len(blob)
    assert info.name == "bản tin sáng.opus"
    assert 2_990_000_000 <= info.duration_ns <= 3_010_000_000
    assert (tmp_path / "store" / f"{info.cid.hex()}.opus").read_bytes() == blob
    assert store.read(info.cid, 0, 4) == b"OggS"
    assert store.read(info.cid, len(blob) - 10, 1024) == blob[-10:]
    assert store.read(info.cid, len(blob) + 5, 100) == b""
    assert store.read(info.cid, 0, 5000) == blob[:1024]  # a chunk is at most 1024 bytes
    again = ContentStore(tmp_path / "store").get(info.cid)  # a later run finds it in the directory
    assert again is not None
    assert again.size == info.size
    not_opus = tmp_path / "notes.opus"
    not_opus.write_bytes(b"hello" * 100)
    with pytest.raises(ContentError, match=r"notes\.opus"):
        store.publish(not_opus)
    with pytest.raises(ContentError, match="missing"):
        store.publish(tmp_path / "missing.opus")
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == [f"{info.cid.hex()}.opus"]
    store.close()


def test_prefetch_survives_lost_chunks_and_play_starts_at_its_instant(programme: Path, tmp_path: Path) -> None:
    world = World(content=ContentStore(tmp_path / "store"))
    near, far = world.device("C11"), world.device("H111")
    outsider = world.device("C21")
    assert world.run_until(lambda: world.online(near, far, outsider), 10.0)
    for device in (near, far):
        world.net.set_link(SERVER, world.address(device), LinkConditions(loss=0.3, delay=(0.02, 0.08)))
    cid = world.core.publish_content(programme)
    blob = programme.read_bytes()
    at_ns = EPOCH_NS + round((world.now + 60.0) * 1e9)
    bid = world.core.schedule_play(cid, ["C11"], at_ns, world.now, cls=0, lvl=0, policy="drop")
    assert world.run_until(lambda: bool(near.of_type(Play)) and bool(far.of_type(Play)), 40.0)
    for device in (near, far):
        assert device.content[cid] == blob  # every byte, verified against the cid
        (play,) = device.of_type(Play)
        assert (play.bid, play.cid, play.at, play.policy, play.zone) == (bid, cid, at_ns, "drop", "C11")
        assert device.of_type(Prefetch)[0].size == len(blob)
    assert not outsider.of_type(Prefetch)
    assert not outsider.of_type(Play)
    chunks = -(-len(blob) // 1024)
    sent = world.core.statistics().chunks_sent
    assert sent > 2 * chunks  # lost chunks were asked again and answered
    reports = [e for e in world.core.events() if isinstance(e, ContentReported)]
    assert {(e.cid, e.ok) for e in reports} == {(cid, True)}
    assert world.core.broadcast_status(bid).kind == "play"
    # the programme is forgotten once it has played to its end
    assert world.run_until(lambda: not world.core.broadcasts(), 80.0)
    assert EPOCH_NS + round(world.now * 1e9) >= at_ns + 2_990_000_000
    assert any(isinstance(e, BroadcastEnded) and e.reason == "played" for e in world.core.events())
    assert not near.of_type(Leave)


def test_play_goes_out_before_its_instant_even_without_the_content(programme: Path, tmp_path: Path) -> None:
    world = World(content=ContentStore(tmp_path / "store"), settings=Settings(play_lead_s=5.0))
    lazy = world.device("C11")
    lazy.fetch_window = 0  # never fetches
    assert world.run_until(lambda: world.online(lazy), 10.0)
    cid = world.core.publish_content(programme)
    at = world.now + 20.0
    world.core.schedule_play(cid, ["D1"], EPOCH_NS + round(at * 1e9), world.now)
    assert world.run_until(lambda: bool(lazy.of_type(Play)), 30.0)
    assert at - 5.0 <= world.now < at - 4.9
    assert not lazy.of_type(Have)


def test_fetch_is_served_only_for_content_prefetched_to_that_device(programme: Path, tmp_path: Path) -> None:
    world = World(content=ContentStore(tmp_path / "store"))
    member, other = world.device("C11"), world.device("C21")
    assert world.run_until(lambda: world.online(member, other), 10.0)
    cid = world.core.publish_content(programme)
    world.core.schedule_play(cid, ["C11"], EPOCH_NS + round((world.now + 30) * 1e9), world.now)
    other.conn.send(Fetch(cid=cid, off=0, len=1024), world.now)
    other.conn.send(Fetch(cid=bytes(32), off=0, len=1024), world.now)
    world.run_until(lambda: cid in member.content, 10.0)
    assert world.core.device_status(other.public_key).chunks == 0
    assert world.core.device_status(other.public_key).drops["fetch_refused"] == 2
    with pytest.raises(ContentError):
        world.core.schedule_play(bytes(32), ["C11"], EPOCH_NS, world.now)


def test_a_device_that_already_holds_the_content_is_sent_play_at_once(programme: Path, tmp_path: Path) -> None:
    world = World(content=ContentStore(tmp_path / "store"))
    device = world.device("C11")
    assert world.run_until(lambda: world.online(device), 10.0)
    cid = world.core.publish_content(programme)
    device.content[cid] = programme.read_bytes()
    world.core.schedule_play(cid, ["C11"], EPOCH_NS + round((world.now + 600) * 1e9), world.now)
    assert world.run_until(lambda: bool(device.of_type(Play)), 2.0)
    assert world.core.statistics().chunks_sent == 0
