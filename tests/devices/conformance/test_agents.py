"""The external agent's reset between cases never raises: a device that does not ack its reboot is the next case's
finding, never an internal error that ends the whole run without reports. Real kit socket and a real in-process
reference device on loopback; only the kit's clock is made to leap, as a late wake-up on a loaded machine does."""

from __future__ import annotations

import os
import time

import anyio
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from loa.devices.conformance import kit as kit_module
from loa.devices.conformance.agents import Agent, Device, ReferenceAgent, _External
from loa.devices.conformance.context import Context
from loa.devices.conformance.kit import KitServer, KitState
from loa.devices.conformance.registry import Case
from loa.devices.conformance.runner import run_cases
from loa.devices.conformance.wirelog import DatagramLog
from loa.protocol.control import Reboot, decode
from loa.protocol.errors import ProtocolError

pytestmark = pytest.mark.e2e


class _LeapingTime:
    """The `time` module, except that every reading of the monotonic clock is a second later than the last."""

    def __init__(self) -> None:
        self.leaped = 0.0

    def monotonic(self) -> float:
        self.leaped += 1.0
        return time.monotonic() + self.leaped

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)


def _sent_reboots(kit: KitServer) -> int:
    count = 0
    for _, plaintext in kit.sent_plaintexts:
        try:
            count += isinstance(decode(plaintext), Reboot)
        except ProtocolError:
            continue
    return count


def test_reset_of_a_device_that_never_acks_its_reboot_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> int:
        state = KitState(static_private=os.urandom(32), authority=Ed25519PrivateKey.generate())
        agent = ReferenceAgent()
        agent.prepare(state)
        kit = KitServer(state, DatagramLog())
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(kit.run)
                device = await agent.start(kit, tg)
                await kit.connected(10.0)
                await device.stop()  # gone without a word: the kit still holds its session, and no ack will come
                monkeypatch.setattr(kit_module, "time", _LeapingTime())
                with anyio.fail_after(10.0):
                    await _External(kit, connect_wait=1.0).stop()
                tg.cancel_scope.cancel()
        finally:
            kit.close()
        return _sent_reboots(kit)

    assert anyio.run(main, backend="trio") == 1  # the reset reached its wait for the ack, and came back from it


class _BrokenReset(Device):
    async def stop(self) -> None:
        raise RuntimeError("the reset broke")

    async def rebind(self) -> None:
        raise NotImplementedError


class _BrokenResetAgent(Agent):
    name = "broken-reset"

    async def start(self, kit: KitServer, tg: anyio.abc.TaskGroup) -> Device:
        return _BrokenReset()


async def _starts_the_device(ctx: Context) -> None:
    await ctx.start(connect=False)


def test_a_reset_that_raises_fails_its_case_and_the_run_goes_on() -> None:
    cases = [Case(f"9.9.{n}", "a case", "", "", "", "MUST", _starts_the_device, timeout=1.0) for n in (1, 2)]
    state = KitState(static_private=os.urandom(32), authority=Ed25519PrivateKey.generate())
    results = anyio.run(lambda: run_cases(cases, _BrokenResetAgent(), state, port=0, jobs=1), backend="trio")
    assert [r.case.id for r in results] == ["9.9.1", "9.9.2"]
    for result in results:
        (failed,) = [check for check in result.checks if not check.ok]
        assert failed.what == "the kit ran the case without an internal error"
        assert "RuntimeError: the reset broke" in failed.observed
