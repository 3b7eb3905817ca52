"""What a case sees: the kit server, the device it started, the checks it records, and common steps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
from anyio.abc import TaskGroup

from loa.devices.conformance.agents import Agent, Device
from loa.devices.conformance.kit import KitServer
from loa.devices.conformance.media import KitStream
from loa.devices.conformance.registry import Check
from loa.protocol.control import ConfigValues, Hello, Telemetry, TelemetryValues

__all__ = ["CLOCK_EXCHANGES", "Context"]

#: Clock exchanges answered before a case treats the device's estimate as ready: the spec's 8 (section 4.7
#: item 5, the "clock" fault) and two more.
CLOCK_EXCHANGES = 10


class Context:
    def __init__(self, kit: KitServer, agent: Agent, tg: TaskGroup) -> None:
        self.kit = kit
        self.agent = agent
        self.tg = tg
        self.device: Device | None = None
        self.checks: list[Check] = []
        self.notes: list[str] = []
        self._bids = 1000

    # -- recording ------------------------------------------------------------------------------------------

    def check(self, ok: bool, what: str, *, expected: object, observed: object, level: str = "MUST") -> bool:
        self.checks.append(Check(what, bool(ok), str(expected), str(observed), level))
        return bool(ok)

    def note(self, text: str) -> None:
        self.notes.append(text)

    # -- steps ----------------------------------------------------------------------------------------------

    async def start(self, *, config: ConfigValues | None = None,
                    on_hello: Callable[[bytes, Hello], None] | None = None, connect: bool = True) -> None:
        """Start a fresh device against this case's kit; with ``connect``, wait for its session."""
        if config is not None:
            self.kit.config = config
        if on_hello is not None:
            self.kit.on_hello = on_hello
        self.device = await self.agent.start(self.kit, self.tg)
        if connect:
            await self.kit.connected(self.agent.connect_timeout)

    async def clock_ready(self, timeout: float = 12.0) -> None:
        await self.kit.wait_for(lambda: self.kit.time_answers >= CLOCK_EXCHANGES, timeout,
                                f"{CLOCK_EXCHANGES} clock exchanges (time_req)")

    def agent_public(self) -> bytes:
        """The device's static key, as the kit learnt it from the device's HandshakeInit."""
        if self.kit.device is not None:
            return self.kit.device
        peers = list(self.kit.conn.endpoint._peers)
        assert peers, "no HandshakeInit accepted yet"
        return peers[-1]

    def stream(self, **kwargs: Any) -> KitStream:
        self._bids += 1
        kwargs.setdefault("bid", self._bids)
        return self.kit.add_stream(KitStream(server_time=self.kit.server_time, **kwargs))

    def next_bid(self) -> int:
        self._bids += 1
        return self._bids

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)

    async def telemetry_after(self, t: float, timeout: float = 8.0) -> TelemetryValues:
        """The first telemetry report that arrived after kit time ``t`` (case seconds)."""

        def found() -> TelemetryValues | None:
            for m in self.kit.inbound(Telemetry):
                if m.t > t:
                    return m.message.v  # type: ignore[union-attr]
            return None

        value = await self.kit.wait_for(found, timeout, "a telemetry report (config telemetry_s is 5)")
        assert value is not None
        return value
