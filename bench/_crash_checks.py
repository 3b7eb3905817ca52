"""The workload of ``loa bench crash`` and its checks: what the client had acknowledged (:class:`Ledger`), the
requests it keeps making while the server is killed and restarted (:class:`Workload`), and the comparison of the
server's records with what was acknowledged (:func:`verify`) and of the schedule's firings with its slots
(:func:`check_slots`). See :mod:`loa.bench.crash` for the rules.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from loa.bench._serve import REQUEST_TIMEOUT_S, Api, UnacknowledgedError, wav_tone

UPLOAD_S = 0.5
SLOT_GAP_S = 6  # slots are at least this far apart (a programme lasts PROGRAMME_S)

if TYPE_CHECKING:
    from loa.bench.crash import Fleet

@dataclass
class Ledger:
    """What the server acknowledged, and what was asked when the answer never came."""

    uploads: dict[int, str] = field(default_factory=dict)            # item id -> content id
    pending_uploads: set[str] = field(default_factory=set)            # titles of unanswered uploads
    entries: dict[int, dict[str, Any] | None] = field(default_factory=dict)  # id -> fields (None: deleted)
    pending_entries: dict[int, list[dict[str, Any] | None]] = field(default_factory=dict)
    pending_creates: dict[str, dict[str, Any]] = field(default_factory=dict)  # title -> fields
    slots: dict[int, datetime] = field(default_factory=dict)          # slot entry id -> occurrence
    broadcasts: set[int] = field(default_factory=set)
    acknowledged: int = 0
    unacknowledged: int = 0
    adopted: int = 0


def _fields(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: entry[k] for k in ("title", "start", "zones", "item", "enabled")}


class Workload:
    """The client thread: uploads, schedule edits and slots, paced, each result kept in the ledger."""

    def __init__(self, api: Api, ledger: Ledger, rng: random.Random, programme: int, slot_ahead: float) -> None:
        self.api = api
        self.slot_ahead = slot_ahead
        self.ledger = ledger
        self.rng = rng
        self.programme = programme
        self.lock = threading.Lock()
        self.running = threading.Event()
        self.stop_all = threading.Event()
        self.busy = threading.Lock()  # held while one operation is under way
        self.counter = 0
        self.want_slot = True  # each round adds one slot first
        self.slot_floor = datetime.now(UTC)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self.stop_all.is_set():
            if not self.running.wait(0.1):
                continue
            with self.busy:
                if not self.running.is_set():
                    continue
                try:
                    self._one()
                except UnacknowledgedError:
                    with self.lock:
                        self.ledger.unacknowledged += 1
                    time.sleep(0.05)
            time.sleep(self.rng.uniform(0.02, 0.15))

    def pause(self) -> None:
        """Stop issuing requests; returns once none is under way."""
        self.running.clear()
        with self.busy:
            pass

    def close(self) -> None:
        self.stop_all.set()
        self.running.clear()
        self._thread.join(REQUEST_TIMEOUT_S + 5)

    def _name(self, what: str) -> str:
        self.counter += 1
        return f"{what} {self.counter} {self.rng.getrandbits(32):08x}"

    def _one(self) -> None:
        roll = self.rng.random()
        live = [i for i, f in self.ledger.entries.items() if f is not None and i not in self.ledger.slots]
        if roll < 0.15 or self.want_slot:
            self.want_slot = False
            self._slot()
        elif roll < 0.4:
            self._upload()
        elif roll < 0.7 or not live:
            self._create()
        elif roll < 0.88:
            self._patch(self.rng.choice(live))
        else:
            self._delete(self.rng.choice(live))

    def _upload(self) -> None:
        title = self._name("upload")
        blob = wav_tone(UPLOAD_S, self.rng.uniform(200.0, 2000.0))
        with self.lock:
            self.ledger.pending_uploads.add(title)
        item = self.api.call("POST", "/api/v1/library/audio", files={"file": (f"{title}.wav", blob, "audio/wav")},
                             data={"title": title, "zone": "P"})
        with self.lock:
            self.ledger.pending_uploads.discard(title)
            self.ledger.uploads[int(item["id"])] = str(item["content_id"])
            self.ledger.acknowledged += 1

    def _body(self, title: str, start: datetime, zone: str = "A") -> dict[str, Any]:
        return {"title": title, "item": self.programme, "zones": [zone], "start": start.isoformat(), "tz": "UTC",
                "force": True}

    def _create(self) -> None:
        title = self._name("entry")
        start = (datetime.now(UTC) + timedelta(days=2, minutes=self.rng.randrange(0, 10_000))).replace(microsecond=0)
        body = self._body(title, start)
        expected = {"title": title, "start": start.replace(tzinfo=None).isoformat(), "zones": ["A"],
                    "item": self.programme, "enabled": True}
        with self.lock:
            self.ledger.pending_creates[title] = expected
        saved = self.api.call("POST", "/api/v1/schedule", json=body)
        with self.lock:
            self.ledger.pending_creates.pop(title, None)
            self.ledger.entries[int(saved["entry"]["id"])] = _fields(saved["entry"])
            self.ledger.acknowledged += 1

    def _patch(self, entry_id: int) -> None:
        before = self.ledger.entries[entry_id]
        assert before is not None
        change: dict[str, Any] = {"title": self._name("edited")}
        if self.rng.random() < 0.3:
            change["enabled"] = not before["enabled"]
        after = {**before, **change}
        with self.lock:
            self.ledger.pending_entries[entry_id] = [after]
        saved = self.api.call("PATCH", f"/api/v1/schedule/{entry_id}", json={**change, "force": True})
        with self.lock:
            self.ledger.pending_entries.pop(entry_id, None)
            self.ledger.entries[entry_id] = _fields(saved["entry"])
            self.ledger.acknowledged += 1

    def _delete(self, entry_id: int) -> None:
        with self.lock:
            self.ledger.pending_entries[entry_id] = [None]
        self.api.call("DELETE", f"/api/v1/schedule/{entry_id}")
        with self.lock:
            self.ledger.pending_entries.pop(entry_id, None)
            self.ledger.entries[entry_id] = None
            self.ledger.acknowledged += 1

    def _slot(self) -> None:
        """A one-off slot of the programme for zone A, 1 to ``slot_ahead`` s ahead, apart from every other slot."""
        at = (datetime.now(UTC) + timedelta(seconds=self.rng.uniform(1.0, self.slot_ahead))).replace(microsecond=0)
        at = max(at, self.slot_floor + timedelta(seconds=SLOT_GAP_S))
        self.slot_floor = at
        title = self._name("slot")
        expected = {"title": title, "start": at.replace(tzinfo=None).isoformat(), "zones": ["A"],
                    "item": self.programme, "enabled": True}
        with self.lock:
            self.ledger.pending_creates[title] = expected
        saved = self.api.call("POST", "/api/v1/schedule", json=self._body(title, at))
        entry_id = int(saved["entry"]["id"])
        with self.lock:
            self.ledger.pending_creates.pop(title, None)
            self.ledger.entries[entry_id] = _fields(saved["entry"])
            self.ledger.slots[entry_id] = at
            self.ledger.acknowledged += 1


# -- checks --------------------------------------------------------------------------------------------------------


@dataclass
class Findings:
    lost: list[str] = field(default_factory=list)
    corrupted: list[str] = field(default_factory=list)


def verify(api: Api, ledger: Ledger, checked_content: dict[str, bool]) -> Findings:
    """Compare the server's records with the ledger (the workload is paused); adopt what in-flight requests
    did. ``checked_content`` caches content ids already downloaded and hashed (content is immutable)."""
    found = Findings()
    items = {int(i["id"]): i for i in api.pages("/api/v1/library")}
    for item_id, content_id in ledger.uploads.items():
        item = items.get(item_id)
        if item is None:
            found.lost.append(f"library item {item_id}")
        elif item["content_id"] != content_id:
            found.corrupted.append(f"library item {item_id}: content id {item['content_id']} != {content_id}")
    for item_id, item in items.items():
        if item["kind"] != "audio":
            continue
        title = str(item["title"])
        if item_id not in ledger.uploads and title in ledger.pending_uploads:  # an unanswered upload took effect
            ledger.uploads[item_id] = str(item["content_id"])
            ledger.pending_uploads.discard(title)
            ledger.adopted += 1
        content_id = str(item["content_id"])
        if content_id not in checked_content:
            response = api.client.get(f"/api/v1/library/{item_id}/content",
                                      headers={"Authorization": f"Bearer {api.token}"})
            checked_content[content_id] = (response.status_code == 200
                                           and hashlib.sha256(response.content).hexdigest() == content_id)
        if not checked_content[content_id]:
            found.corrupted.append(f"library item {item_id}: its content is missing or does not match {content_id}")
    ledger.pending_uploads.clear()  # an upload not there now never will be

    entries = {int(e["id"]): e for e in api.pages("/api/v1/schedule")}
    for entry_id, expected in list(ledger.entries.items()):
        allowed = [expected, *ledger.pending_entries.get(entry_id, [])]
        there = entries.get(entry_id)
        actual = None if there is None else _fields(there)
        if actual in allowed:
            ledger.entries[entry_id] = actual
            if actual != expected:
                ledger.adopted += 1
        elif actual is None:
            found.lost.append(f"schedule entry {entry_id}")
        else:
            found.corrupted.append(f"schedule entry {entry_id}: {actual} is none of {allowed}")
    ledger.pending_entries.clear()
    by_title = {str(e["title"]): e for e in entries.values()}
    for title, expected in list(ledger.pending_creates.items()):
        there = by_title.get(title)
        if there is not None:
            entry_id = int(there["id"])
            if _fields(there) != expected:
                found.corrupted.append(f"schedule entry {entry_id}: {_fields(there)} != {expected}")
            ledger.entries[entry_id] = _fields(there)
            if title.startswith("slot"):
                ledger.slots[entry_id] = datetime.fromisoformat(expected["start"]).replace(tzinfo=UTC)
            ledger.adopted += 1
    ledger.pending_creates.clear()
    known = set(ledger.entries)
    for entry_id, entry in entries.items():
        if entry_id not in known and str(entry["title"]).startswith(("entry", "slot", "edited")):
            found.corrupted.append(f"schedule entry {entry_id} was never asked for")

    for bid in ledger.broadcasts:
        try:
            api.read(f"/api/v1/broadcasts/{bid}")
        except UnacknowledgedError:
            found.lost.append(f"broadcast {bid}")
    audit = api.read("/api/v1/audit/verify")
    if not audit["ok"]:
        found.corrupted.append(f"audit chain: {audit['summary']}")
    return found



def check_slots(api: Api, ledger: Ledger, fleet: Fleet | None, *,
                note: Callable[[str], None] = lambda _s: None) -> dict[str, int]:
    """Every slot due by now fired exactly once (see the module docstring); ``note`` gets one line per slot
    missed or doubled, naming it, its firings and its broadcast ids."""
    now = datetime.now(UTC)
    due = {e: at for e, at in ledger.slots.items() if at <= now - timedelta(seconds=3)}
    scheduled = api.pages("/api/v1/broadcasts", kind="scheduled")
    bids_at: dict[datetime, set[int]] = defaultdict(set)
    for row in scheduled:
        bids_at[datetime.fromisoformat(row["started_at"]).astimezone(UTC)].add(int(row["bid"]))
    missed = doubled = late = 0
    slot_of_bid: dict[int, int] = {}
    for entry_id, at in due.items():
        firings = api.read(f"/api/v1/schedule/{entry_id}/firings")["items"]
        started = [f for f in firings if f["status"] == "started"]
        missed += not started
        if not started:
            note(f"slot {entry_id} at {at.isoformat()} missed: firings {firings}")
        bids = set(bids_at.get(at, set()))
        for firing in started:
            bids.update(int(b) for b in firing["broadcasts"])
            claimed = datetime.fromisoformat(firing["claimed_at"]).astimezone(UTC)
            late += claimed > at - timedelta(seconds=1)  # claimed after its time: the server was down then
        doubled += len(bids) > 1 or len(started) > 1
        if len(bids) > 1 or len(started) > 1:
            note(f"slot {entry_id} at {at.isoformat()} doubled: broadcasts {sorted(bids)}, firings {firings}")
        for bid in bids:
            slot_of_bid[bid] = entry_id
    if fleet is not None:  # the devices' side: one slot played under two broadcast ids
        device_doubles: set[int] = set()
        for states in fleet.states.values():
            seen: dict[int, set[int]] = defaultdict(set)
            for _, played, src in list(states):
                if src == "local" and played is not None and played in slot_of_bid:
                    seen[slot_of_bid[played]].add(played)
            for e, b in seen.items():
                if len(b) > 1 and e not in device_doubles:
                    device_doubles.add(e)
                    note(f"slot {e} played by a device under broadcasts {sorted(b)}")
        doubled = max(doubled, len(device_doubles))
    return {"slots": len(due), "late_slots": late, "doubled_slots": doubled, "missed_slots": missed}


