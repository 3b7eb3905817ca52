"""The alert record's rules without a database: the state table (nothing reaches the air unapproved) and the
checks of a draft."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loa.control_plane import alert_records
from loa.control_plane.alert_records import TRANSITIONS, AlertAudio, AlertDraft, next_state
from loa.control_plane.errors import ConflictError, InvalidError

CONTENT = "ab" * 32
DRAFT = AlertDraft(zones=("20194", "20194"), status="actual", audio=AlertAudio(CONTENT), title=" Bão số 3 ",
                   text="Sơ tán\nngay")


# -- the state table --------------------------------------------------------------------------------------------

EVENTS = sorted({event for moves in TRANSITIONS.values() for event in moves})


def test_the_state_table() -> None:
    terminal = {s for s, moves in TRANSITIONS.items() if not moves}
    assert terminal == {"cancelled", "expired"}
    assert all("cancel" in moves for s, moves in TRANSITIONS.items() if s not in terminal)
    into_approved = {(s, e) for s, moves in TRANSITIONS.items() for e, t in moves.items() if t == "approved"}
    assert into_approved == {("draft", "trigger"), ("failed", "trigger"), ("pending_approval", "confirm")}
    into_active = {(s, e) for s, moves in TRANSITIONS.items() for e, t in moves.items() if t == "active"}
    assert into_active == {("approved", "dispatched")}
    editable = {s: moves["edit"] for s, moves in TRANSITIONS.items() if "edit" in moves}
    assert editable == {"draft": "draft", "failed": "draft"}


@given(st.lists(st.sampled_from(EVENTS), max_size=12))
def test_no_path_reaches_the_air_without_an_approval(events: list[str]) -> None:
    state, approved = "draft", False
    for event in events:
        try:
            state = next_state(state, event)
        except ConflictError:
            assert event not in TRANSITIONS[state]
            continue
        approved = approved or state == "approved"
        if state == "active":
            assert approved
        if state == "pending_approval":
            approved = False  # a retried alert is approved afresh


def test_a_good_draft_is_normalised() -> None:
    checked = alert_records.check_draft(DRAFT)
    assert checked.zones == ("20194",)
    assert checked.title == "Bão số 3"
    assert checked.text == "Sơ tán\nngay"
    assert alert_records.check_draft(replace(DRAFT, text="  ")).text is None


@pytest.mark.parametrize(("changes", "message"), [
    ({"zones": ()}, "1-64 zones"),
    ({"zones": tuple(f"Z{i}" for i in range(65))}, "1-64 zones"),
    ({"status": "drill"}, "status must be one of"),
    ({"cls": 3}, "class must be"),
    ({"ttl_s": 59}, "seconds"),
    ({"preroll_ms": 120_001}, "pre-roll"),
    ({"title": "a\tb"}, "title must not contain control characters"),
    ({"text": "ệ" * 200}, "at most 512 bytes"),
    ({"audio": AlertAudio()}, "give the alert's audio"),
    ({"audio": AlertAudio(CONTENT, live_port=5004)}, "give the alert's audio"),
    ({"audio": AlertAudio("AB" * 32)}, "64 lower-case hex digits"),
    ({"audio": AlertAudio(CONTENT, library_item=0)}, "library_item is a library item id"),
    ({"audio": AlertAudio(library_item=3, live_port=5004)}, "library_item goes with content_id"),
    ({"audio": AlertAudio(live_port=70_000)}, "live_port is a UDP port"),
])
def test_a_bad_draft_is_refused_with_the_field_named(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidError, match=message):
        alert_records.check_draft(replace(DRAFT, **changes))
