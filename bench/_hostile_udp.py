"""The real-UDP share of `loa bench hostile`: the streamer service and reference devices (the code of
`loa device`), each on its own loopback socket, in this process; the off-path kinds come from attacker sockets on
127.0.0.2-9. Attempts go in batches of one kind; after each batch the devices' counters must have moved by
exactly the batch.

Failure semantics: RuntimeError when the devices do not come up within 30 s; a batch not counted within
``UDP_WAIT_S`` is tallied as miscounted (never waited on for longer). Every socket is closed on the way out.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable

import anyio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from loa.bench._hostile_attempts import (
    HOME,
    KINDS,
    Address,
    Forger,
    Genuine,
    HostileResult,
    Snapshot,
    counted,
    raw_public,
    schedule,
    snapshot,
    zones,
)
from loa.devices.content import MemoryStore
from loa.devices.core import SpeakerCore
from loa.devices.runner import DeviceRunner
from loa.devices.sinks import CounterSink
from loa.protocol.alert import key_id
from loa.protocol.control import Volume
from loa.streamer.core import StreamerCore
from loa.streamer.service import StreamerService, epoch_for, open_udp_socket

__all__ = ["UDP_BATCH", "TappedSpeaker", "run_udp"]

UDP_BATCH = 10
UDP_WAIT_S = 5.0


class TappedSpeaker(SpeakerCore):
    """A reference device that also keeps what came from the server's address (the attacker's recording)."""

    tap: list[bytes] | None = None

    def receive_datagram(self, data: bytes, source: Address, now: float, *, group: str | None = None) -> None:
        if self.tap is not None and source == self.server_address and data[:1] == b"\x04":
            self.tap.append(data)
        super().receive_datagram(data, source, now, group=group)


async def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll ``predicate`` until true (True) or ``timeout`` seconds passed (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await anyio.sleep(0.002)
    return True


async def _udp(attempts: int, devices: int, seed: int, result: HostileResult,
               progress: Callable[[int], None] | None) -> None:
    rng = random.Random(seed)
    authority = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
    forger = Forger(random.Random(seed + 3), authority)
    core = StreamerCore(static_private=rng.randbytes(32), zones=zones(), epoch_ns=epoch_for(anyio.current_time()),
                        authorities={key_id(authority.public_key()): authority.public_key()},
                        send_clock=anyio.current_time)
    service = StreamerService(core, open_udp_socket("127.0.0.1", 0))
    attackers = [open_udp_socket(f"127.0.0.{2 + i}", 0) for i in range(8)]
    cores: list[TappedSpeaker] = []
    runners: list[DeviceRunner] = []
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(service.serve)
            for i in range(devices):
                device = TappedSpeaker(static_private=rng.randbytes(32), server_public=core.public_key,
                                       authority_keys=[raw_public(authority)], server_address=service.address,
                                       sink=CounterSink(decode=False), store=MemoryStore(1 << 20),
                                       rng=random.Random(seed + 10 + i), log_limit=0,
                                       timestamp_source=lambda _now: time.time_ns())
                core.add_device(device.public_key, HOME, service.now(), name=f"hostile-{i}")
                runner = DeviceRunner(device, service.address, bind_host="127.0.0.1")
                cores.append(device)
                runners.append(runner)
                tg.start_soon(runner.run)
            service.changed()
            if not await _wait(lambda: all(c.clock.ready and c.settings.zones for c in cores), 30):
                raise RuntimeError("the devices did not come up (session, clock estimate, config) within 30 s")
            await _udp_rounds(attempts, service, cores=cores, runners=runners, attackers=attackers, forger=forger,
                              result=result, progress=progress)
            tg.cancel_scope.cancel()
    finally:
        for sock in attackers:
            sock.close()
        service.sock.close()


async def _udp_rounds(attempts: int, service: StreamerService, *, cores: list[TappedSpeaker],
                      runners: list[DeviceRunner], attackers: list[socket.socket], forger: Forger,
                      result: HostileResult, progress: Callable[[int], None] | None) -> None:
    core = service.core
    per_batch = UDP_BATCH * len(cores)
    done = 0
    rounds = schedule(random.Random(forger.rng.random()), -(-attempts // per_batch))
    for kinds in rounds:
        now_ns = core.server_time(service.now())
        genuine: list[Genuine] = []
        for device in cores:  # one genuine alert and one genuine command per device, recorded
            alert, message = forger.genuine(now_ns, core.allocate_bid())
            g = Genuine(alert, message)
            accepted = device.alerts_accepted
            device.tap = g.alert_datagrams
            core.send_command(device.public_key, message, service.now())
            service.changed()
            held = await _wait(_more_accepted(device, accepted), UDP_WAIT_S)
            result.genuine_alerts += 1
            result.genuine_alerts_accepted += held and device.alerts.for_bid(alert.bid) is not None
            level = (device.settings.volume_level + 1 + forger.rng.randrange(100)) % 101
            device.tap = g.command_datagrams
            core.send_command(device.public_key, Volume(level=level), service.now())
            service.changed()
            applied = await _wait(_volume_is(device, level), UDP_WAIT_S)
            device.tap = None
            result.genuine_commands += 1
            result.genuine_commands_applied += applied
            genuine.append(g)
        for name in kinds:
            kind = KINDS[name]
            before = [snapshot(d) for d in cores]
            for _ in range(UDP_BATCH):
                for device, runner, g in zip(cores, runners, genuine, strict=True):
                    if kind.via == "server":
                        core.send_command(device.public_key, forger.message(name, core.server_time(service.now()),
                                                                            g), service.now())
                    else:
                        forger.rng.choice(attackers).sendto(forger.datagram(name, g), runner.local_address)
                service.changed()
                await anyio.sleep(0)
            await _settle(cores, before)
            for device, old in zip(cores, before, strict=True):
                now = snapshot(device)
                ok, drops = counted(kind, old, now, UDP_BATCH)
                result.add(name, ok, drops, device.alerts_accepted - old.accepted, UDP_BATCH)
                result.duplicates += now.duplicates - old.duplicates
                result.udp_attempts += UDP_BATCH
        if "cancel_forged" in kinds:
            result.rounds_with_forged_cancel += len(cores)
            result.held_after_forged_cancel += sum(d.alerts.for_bid(g.alert.bid) is not None
                                                   for d, g in zip(cores, genuine, strict=True))
        for device, g in zip(cores, genuine, strict=True):
            core.send_command(device.public_key, forger.genuine_cancel(g.alert, core.server_time(service.now())),
                              service.now())
        service.changed()
        result.genuine_cancels += len(cores)
        await _wait(_all_cancelled([(d, g.alert.bid) for d, g in zip(cores, genuine, strict=True)]), UDP_WAIT_S)
        result.genuine_cancels_applied += sum(d.alerts.for_bid(g.alert.bid) is None
                                              for d, g in zip(cores, genuine, strict=True))
        done += len(kinds) * per_batch
        if progress is not None:
            progress(done)


def _more_accepted(device: SpeakerCore, accepted: int) -> Callable[[], bool]:
    return lambda: device.alerts_accepted > accepted


def _volume_is(device: SpeakerCore, level: int) -> Callable[[], bool]:
    return lambda: device.settings.volume_level == level


def _all_cancelled(held: list[tuple[SpeakerCore, int]]) -> Callable[[], bool]:
    return lambda: all(d.alerts.for_bid(bid) is None for d, bid in held)


async def _settle(cores: list[TappedSpeaker], before: list[Snapshot]) -> None:
    """Wait until each device counted a whole batch (or ``UDP_WAIT_S`` passed: the shortfall is miscounted),
    then a little longer, so that a second count of one attempt would show."""
    deadline = time.monotonic() + UDP_WAIT_S
    while time.monotonic() < deadline:
        if all(sum((snapshot(d).drops - b.drops).values()) >= UDP_BATCH for d, b in zip(cores, before, strict=True)):
            break
        await anyio.sleep(0.002)
    await anyio.sleep(0.01)


def run_udp(attempts: int, *, devices: int, seed: int, result: HostileResult,
            progress: Callable[[int], None] | None = None) -> None:
    """About ``attempts`` attempts over loopback UDP (whole batches: a multiple of ``UDP_BATCH`` x ``devices``)."""
    async def main() -> None:
        await _udp(attempts, devices, seed, result, progress)
    anyio.run(main, backend="asyncio", backend_options={"use_uvloop": True})
