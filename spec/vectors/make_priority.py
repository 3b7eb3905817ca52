"""Write spec/vectors/priority.json: arbitration sequences at a device (PROTOCOL.md sections 6.1-6.2).

Each vector is a sequence of steps, an arrival ``{"arrive": {bid, cls, lvl, policy}}`` or an end
``{"end": bid}``, each with the events it causes and the current and waiting broadcasts after it.
Deterministic. Run: python spec/vectors/make_priority.py
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

from loa.protocol.priority import Arbiter

OUT = pathlib.Path(__file__).with_name("priority.json")

N, P, E = 0, 1, 2
COMMUNE, DISTRICT, PROVINCE, NATIONAL = 0, 1, 2, 3

Step = tuple[Any, ...]


def arrive(bid: int, cls: int, lvl: int, policy: str = "resume") -> Step:
    return ("arrive", bid, cls, lvl, policy)


def end(bid: int) -> Step:
    return ("end", bid)


SCENARIOS: list[tuple[str, str, list[Step]]] = [
    (
        "idle_start",
        "the first broadcast becomes current, and its end leaves the device idle",
        [arrive(1, N, COMMUNE), end(1)],
    ),
    (
        "preempt_resume",
        "a higher rank preempts; the preempted programme (resume) plays again when it ends",
        [arrive(1, N, COMMUNE), arrive(2, P, DISTRICT), end(2), end(1)],
    ),
    (
        "preempt_drop",
        "a preempted broadcast whose policy is drop is forgotten",
        [arrive(1, N, PROVINCE, "drop"), arrive(2, E, COMMUNE), end(2)],
    ),
    (
        "equal_waits",
        "equal ranks never preempt: the second waits and starts when the first ends",
        [arrive(1, P, DISTRICT), arrive(2, P, DISTRICT), end(1), end(2)],
    ),
    (
        "lower_dropped",
        "a lower rank with policy drop is dropped on arrival",
        [arrive(1, P, PROVINCE), arrive(2, N, NATIONAL, "drop"), end(1)],
    ),
    (
        "class_before_level",
        "an emergency from a commune outranks a normal programme from the nation",
        [arrive(1, N, NATIONAL), arrive(2, E, COMMUNE), end(2)],
    ),
    (
        "level_within_class",
        "between two emergencies the province's outranks the district's",
        [arrive(1, E, DISTRICT), arrive(2, E, PROVINCE), arrive(3, E, DISTRICT), end(2), end(1), end(3)],
    ),
    (
        "chain",
        "normal, priority, emergency stack up and unwind in reverse",
        [arrive(1, N, COMMUNE), arrive(2, P, COMMUNE), arrive(3, E, COMMUNE), end(3), end(2), end(1)],
    ),
    (
        "waiting_order",
        "waiting broadcasts resume by rank, then by arrival",
        [
            arrive(9, E, NATIONAL),
            arrive(1, N, COMMUNE),
            arrive(2, P, COMMUNE),
            arrive(3, N, COMMUNE),
            arrive(4, P, COMMUNE),
            end(9),
            end(2),
            end(4),
            end(1),
            end(3),
        ],
    ),
    (
        "preempted_keeps_arrival",
        "a preempted broadcast keeps its arrival order among equals",
        [arrive(1, N, DISTRICT), arrive(2, E, PROVINCE), arrive(3, N, DISTRICT), end(2), end(1), end(3)],
    ),
    (
        "end_waiting",
        "a waiting broadcast that ends is removed from the list",
        [arrive(1, E, PROVINCE), arrive(2, N, COMMUNE), arrive(3, P, DISTRICT), end(3), end(1), end(2)],
    ),
    (
        "idempotent",
        "arriving again, and ending what is not held, change nothing",
        [arrive(1, N, COMMUNE), arrive(1, E, NATIONAL), end(7), end(1), arrive(1, N, COMMUNE), end(1)],
    ),
    (
        "drop_never_returns",
        "a dropped broadcast does not return when the preemptor ends, nor on a new arrival",
        [arrive(1, P, DISTRICT, "drop"), arrive(2, E, DISTRICT), end(2), arrive(1, P, DISTRICT)],
    ),
    (
        "alert_over_live",
        "an emergency alert preempts a live relay; a second alert of the same rank waits",
        [arrive(10, N, DISTRICT), arrive(20, E, PROVINCE), arrive(21, E, PROVINCE), end(20), end(21), end(10)],
    ),
]


def event_json(event: Any) -> dict[str, Any]:
    return {"event": type(event).__name__, **dataclasses.asdict(event)}


def run(steps: list[Step]) -> list[dict[str, Any]]:
    arbiter = Arbiter()
    out: list[dict[str, Any]] = []
    for step in steps:
        if step[0] == "arrive":
            _, bid, cls, lvl, policy = step
            events = arbiter.arrive(bid, cls, lvl, policy)
            record: dict[str, Any] = {"arrive": {"bid": bid, "cls": cls, "lvl": lvl, "policy": policy}}
        else:
            events = arbiter.end(step[1])
            record = {"end": step[1]}
        record.update(events=[event_json(e) for e in events], current=arbiter.current, waiting=list(arbiter.waiting))
        out.append(record)
    return out


def main() -> None:
    doc = {
        "name": "priority",
        "description": "Arbitration at a device. Each vector is a sequence of steps: 'arrive' (bid, cls, lvl, "
        "policy) or 'end' (bid); after each, the events it caused in order (Started, Preempted, Resumed, Waiting, "
        "Dropped with reason preempted or outranked, Ended), the current bid (null when idle) and the waiting "
        "bids in the order they would resume.",
        "spec": "PROTOCOL.md sections 6.1, 6.2",
        "context": {},
        "vectors": [
            {"id": f"priority.{name}", "description": description, "steps": run(steps)}
            for name, description, steps in SCENARIOS
        ],
    }
    OUT.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
