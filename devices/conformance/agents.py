"""The devices the kit tests ("agents"): the reference device, its mutants, or a vendor's device on the network.

An :class:`Agent` starts a fresh device for each case against that case's kit server and stops it afterwards.
Verdicts never look inside a device: every check reads what came over the wire, so an in-process reference
device and an external one are judged alike.

* :class:`ReferenceAgent` runs :class:`~loa.devices.core.SpeakerCore` (or a mutant subclass) in-process on its own
  real UDP socket on loopback (:class:`~loa.devices.runner.DeviceRunner`), in conformance test mode, with a
  simulated clock offset and drift; a new device (new ``boot``) per case. It can move to a new socket
  (roaming).
* :class:`ExternalAgent` waits for the vendor's device to handshake with the kit. Before each case it runs the
  operator's ``--restart-cmd`` (if given). After each case it undoes the case's tricks (filters, refusals), waits
  for the device's session if the case broke it, ends every broadcast the case started (``leave``), unmutes, and
  sends ``reboot {delay_ms: 0}``: the next case starts from a fresh ``boot`` and a fresh session, and takes the
  HandshakeInit the rebooted device sent at once (see :attr:`KitState.carried`).
"""

from __future__ import annotations

import abc
import os
import subprocess
import time
import traceback
from collections.abc import Callable

import anyio
from anyio.abc import TaskGroup

from loa.devices.conformance.kit import KitServer, KitState, KitTimeout
from loa.devices.content import MemoryStore
from loa.devices.core import SpeakerCore
from loa.devices.runner import DeviceRunner, open_udp_socket
from loa.devices.simclock import SimulatedClock
from loa.protocol.control import Join, Leave, Mute, Play, Reboot, decode
from loa.protocol.errors import LocalProtocolError, ProtocolError
from loa.protocol.noise import x25519_public

__all__ = ["Agent", "Device", "ExternalAgent", "ReferenceAgent"]

REFERENCE_CLOCK = SimulatedClock(drift_ppm=20.0, offset_s=-1234.5)
REBOOT_ACK_WAIT_S = 2.0  # how long a reset waits for the ack of its reboot before the next case starts


class Device:
    """One started device (for one case). ``error``: why an in-process device stopped on its own (a crash)."""

    error: str | None = None

    async def stop(self) -> None:
        """Stop it (in-process) or ask it to restart (external)."""

    async def rebind(self) -> None:
        """Move the device to a new local address (roaming); :class:`Unimplemented` when the kit cannot."""
        from loa.devices.conformance.registry import Unimplemented

        raise Unimplemented("the kit cannot change this device's address: test roaming by hand (section 7.7)")


class Agent(abc.ABC):
    name: str
    connect_timeout: float = 10.0

    def prepare(self, state: KitState) -> None:  # noqa: B027 - nothing to enrol by default
        """Enrol what the kit must know before the first case (the device's key)."""

    @abc.abstractmethod
    async def start(self, kit: KitServer, tg: TaskGroup) -> Device: ...


class _InProcess(Device):
    def __init__(self, runner: DeviceRunner, scope: anyio.CancelScope) -> None:
        self.runner = runner
        self.scope = scope
        self.extra: list[object] = []

    async def stop(self) -> None:
        self.scope.cancel()
        await anyio.sleep(0)

    async def rebind(self) -> None:
        runner = self.runner
        new = open_udp_socket(runner.server, "127.0.0.1")
        self.extra.append(runner.sock)
        runner.sock = new
        assert runner._task_group is not None
        runner._task_group.start_soon(runner._receive_loop, new)


class ReferenceAgent(Agent):
    """The reference device, or a mutant: ``core_class`` is SpeakerCore or a subclass with one defect."""

    def __init__(self, name: str = "reference", core_class: Callable[..., SpeakerCore] = SpeakerCore,
                 clock: SimulatedClock = REFERENCE_CLOCK) -> None:
        self.name = name
        self.core_class = core_class
        self.clock = clock
        self.private = os.urandom(32)
        self.public = x25519_public(self.private)

    def prepare(self, state: KitState) -> None:
        state.enrolled.add(self.public)

    async def start(self, kit: KitServer, tg: TaskGroup) -> Device:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        authority = kit.state.authority.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        host = kit.address[0]
        core = self.core_class(
            static_private=self.private, server_public=kit.public_key, authority_keys=[authority],
            server_address=kit.address, store=MemoryStore(), test_mode=True, log_limit=20_000,
            timestamp_source=lambda _now: time.time_ns(),
        )
        runner = DeviceRunner(core, kit.address, clock=self.clock, bind_host=host)
        scope = anyio.CancelScope()
        device = _InProcess(runner, scope)

        async def run() -> None:
            with scope:
                try:
                    await runner.run()
                except Exception as exc:  # noqa: BLE001 - a crashing device is a verdict, not a kit failure
                    device.error = "".join(traceback.format_exception(exc)).strip()
            for sock in device.extra:
                sock.close()  # type: ignore[attr-defined]

        tg.start_soon(run)
        return device


class _External(Device):
    def __init__(self, kit: KitServer, connect_wait: float) -> None:
        self.kit = kit
        self.connect_wait = connect_wait

    def _started_bids(self) -> set[int]:
        bids: set[int] = set()
        for _, plaintext in self.kit.sent_plaintexts:
            try:
                message = decode(plaintext)
            except ProtocolError:
                continue
            if isinstance(message, Join | Play):
                bids.add(message.bid)
        return bids

    async def stop(self) -> None:
        """Reset the device for the next case (module docstring). Never raises: a device that does not come
        back is the next case's finding (its handshake wait)."""
        kit = self.kit
        kit.reset_case_hooks()
        if kit.device is None or not kit.conn.is_connected(kit.device):
            try:
                await kit.connected(self.connect_wait)  # it lost its session in the case: it handshakes again
            except KitTimeout:
                return
        try:
            for bid in sorted(self._started_bids()):
                kit.send(Leave(bid=bid))  # a reboot waits for the end of an emergency broadcast (section 4.4)
            kit.send(Mute(on=False))
            reboot = kit.send(Reboot(delay_ms=0))
        except (LocalProtocolError, AssertionError):
            return
        kit.hold_handshakes = True  # the rebooted device's first HandshakeInit is for the next case
        try:
            await kit.wait_for(lambda: reboot in kit.acked_ids(), REBOOT_ACK_WAIT_S, "the ack of reboot")
        except KitTimeout:
            return  # no ack: the next case's handshake wait says whether the device came back


class ExternalAgent(Agent):
    """A vendor's device reached over the network (see the module docstring)."""

    def __init__(self, *, device_key: bytes | None, restart_cmd: str | None = None, wait: float = 60.0,
                 name: str = "external") -> None:
        self.name = name
        self.device_key = device_key
        self.restart_cmd = restart_cmd
        self.connect_timeout = wait

    def prepare(self, state: KitState) -> None:
        if self.device_key is not None:
            state.enrolled.add(self.device_key)

    async def start(self, kit: KitServer, tg: TaskGroup) -> Device:
        if self.restart_cmd:
            kit.state.carried.clear()  # from the boot the command ends
            command = self.restart_cmd
            await anyio.to_thread.run_sync(
                lambda: subprocess.run(command, shell=True, check=False, timeout=120)  # noqa: S602 - the operator's own command
            )
        kit.take_carried()
        return _External(kit, self.connect_timeout)
