"""Running cases: a fresh kit server and a fresh device per case, per-case timeouts, verdicts, in parallel.

:func:`run_cases` runs the selected cases against one agent and returns a :class:`CaseResult` per case. In-process
agents run ``jobs`` cases at once, each on its own kit socket; an external device runs one case at a time, in case
order, on the one address it was given (one socket for the whole run, so that a handshake the device starts between
two cases waits in it for the next case). A case that overruns its timeout is FAILED; an error inside the kit itself
is FAILED too, with its traceback in the report (the kit never hides a failure it cannot explain).
"""

from __future__ import annotations

import socket
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import anyio

from loa.devices.conformance.agents import Agent
from loa.devices.conformance.context import Context
from loa.devices.conformance.kit import KitServer, KitState, KitTimeout, open_kit_socket
from loa.devices.conformance.registry import Case, Check, Unimplemented, Verdict, verdict_of
from loa.devices.conformance.wirelog import DatagramLog

__all__ = ["CaseResult", "run_cases"]

SETTLE_S = 0.05


@dataclass(slots=True)
class CaseResult:
    case: Case
    agent: str
    verdict: Verdict
    duration_ms: int
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    log: DatagramLog = field(default_factory=DatagramLog)
    reason: str = ""


def _kit_error(exc: Exception) -> Check:
    return Check("the kit ran the case without an internal error", False, "no error",
                 "".join(traceback.format_exception(exc)).strip())


async def run_case(c: Case, agent: Agent, state: KitState, *, host: str = "127.0.0.1", port: int = 0,
                   sock: socket.socket | None = None) -> CaseResult:
    log = DatagramLog()
    begin = time.monotonic()
    checks: list[Check] = []
    notes: list[str] = []
    reason = ""
    unimplemented = False
    kit = KitServer(state, log, host=host, port=port, sock=sock)
    ctx = Context(kit, agent, None)  # type: ignore[arg-type]
    try:
        async with anyio.create_task_group() as tg:
            ctx.tg = tg
            await tg.start(kit.run)
            try:
                with anyio.fail_after(c.timeout + agent.connect_timeout):
                    await c.run(ctx)
            except Unimplemented as exc:
                unimplemented, reason = True, str(exc)
            except KitTimeout as exc:
                checks.append(Check(str(exc), False, "the awaited behaviour within the case's time", "nothing"))
            except TimeoutError:
                checks.append(Check(f"the case finished within {c.timeout:g} s", False, "done in time",
                                    "the case's timeout expired"))
            except Exception as exc:  # noqa: BLE001 - a kit error is reported, never hidden
                checks.append(_kit_error(exc))
            finally:
                with anyio.CancelScope(shield=True):
                    if ctx.device is not None:
                        try:
                            await ctx.device.stop()
                        except Exception as exc:  # noqa: BLE001 - this case's report says so; the run goes on
                            checks.append(_kit_error(exc))
                    await anyio.sleep(SETTLE_S)
                tg.cancel_scope.cancel()
    finally:
        kit.close()
    if ctx.device is not None and ctx.device.error is not None:
        checks.append(Check("the device kept running", False, "no crash", ctx.device.error))
    checks = ctx.checks + checks
    notes = ctx.notes + notes
    verdict = verdict_of(c, checks, unimplemented=unimplemented)
    if not reason and verdict is Verdict.FAILED:
        reason = next(ch.what for ch in checks if not ch.ok and ch.level == "MUST")
    elif not reason and verdict is Verdict.NON_STRICT:
        reason = next(ch.what for ch in checks if not ch.ok)
    return CaseResult(c, agent.name, verdict, round((time.monotonic() - begin) * 1000), checks, notes, log, reason)


async def run_cases(cases: Sequence[Case], agent: Agent, state: KitState, *, jobs: int = 1, host: str = "127.0.0.1",
                    port: int = 0, sock: socket.socket | None = None,
                    on_result: Callable[[CaseResult], None] | None = None) -> list[CaseResult]:
    """Run ``cases`` (``jobs`` at a time; one after the other on one socket when ``port`` is fixed or ``sock``, an
    already bound kit socket the caller owns, is given) and return their results in case order. OSError if the
    fixed address cannot be bound."""
    agent.prepare(state)
    if sock is not None:
        host, port = sock.getsockname()[:2]
        out: list[CaseResult] = []
        for c in cases:
            out.append(await run_case(c, agent, state, host=host, port=port, sock=sock))
            if on_result is not None:
                on_result(out[-1])
        return out
    if port:
        with open_kit_socket(host, port) as bound:
            return await run_cases(cases, agent, state, sock=bound, on_result=on_result)
    results: dict[str, CaseResult] = {}
    limiter = anyio.CapacityLimiter(max(1, jobs))

    async def one(c: Case) -> None:
        async with limiter:
            result = await run_case(c, agent, state, host=host, port=port)
        results[c.id] = result
        if on_result is not None:
            on_result(result)

    async with anyio.create_task_group() as tg:
        for c in cases:
            tg.start_soon(one, c)
    return [results[c.id] for c in cases]
