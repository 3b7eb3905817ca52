"""Devices: keys, enrolment by key and by one-time token, assignment, disabling, status and its history."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loa.control_plane import audit, devices, enrolment
from loa.control_plane.auth import Actor
from loa.control_plane.db import Database
from loa.control_plane.errors import ConflictError, InvalidError, NotFoundError
from loa.control_plane.events import Event
from loa.protocol import device_id

ACTOR = Actor("installer", "198.51.100.7")


def _key() -> bytes:
    return X25519PrivateKey.generate().public_key().public_bytes_raw()


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 6, 1, 7, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db(db_url: str, clock: Clock) -> Database:
    database = Database.open(db_url, clock=clock)
    from loa.control_plane import zones

    with database.write() as tx:
        zones.create(tx, ACTOR, code="48", name="Đà Nẵng")
        zones.create(tx, ACTOR, code="20194", name="Hòa Hiệp Bắc", parent="48")
    yield database  # type: ignore[misc]
    database.close()


def test_keys_are_read_as_installers_write_them() -> None:
    key = _key()
    for text in (base64.b64encode(key).decode(), base64.urlsafe_b64encode(key).decode().rstrip("="), key.hex(),
                 key.hex().upper(), f"  {base64.b64encode(key).decode()}\n"):
        assert devices.parse_public_key(text) == key
    for bad in ("", "abc", base64.b64encode(key[:31]).decode(), "zz" * 32, "é" * 44):
        with pytest.raises(InvalidError, match="32-byte"):
            devices.parse_public_key(bad)
    with pytest.raises(InvalidError, match="small-order"):
        devices.parse_public_key(bytes(32).hex())
    with pytest.raises(InvalidError, match="small-order"):
        devices.parse_public_key((b"\x01" + bytes(31)).hex())


def test_enrol_by_key(db: Database) -> None:
    key = _key()
    with db.write() as tx:
        record = devices.enrol(tx, ACTOR, public_key=base64.b64encode(key).decode(), kind="speaker", zone="20194",
                               name="Cụm loa chợ")
    assert record.id == device_id(key)
    assert (record.kind, record.zone, record.name, record.enrolled_by) == ("speaker", "20194", "Cụm loa chợ",
                                                                           "installer")
    assert not record.online
    with pytest.raises(ConflictError, match="already enrolled"), db.write() as tx:
        devices.enrol(tx, ACTOR, public_key=key, kind="board", zone=None)
    with pytest.raises(NotFoundError), db.write() as tx:
        devices.enrol(tx, ACTOR, public_key=_key(), kind="speaker", zone="nowhere")
    with pytest.raises(InvalidError, match="kind"), db.write() as tx:
        devices.enrol(tx, ACTOR, public_key=_key(), kind="toaster", zone=None)
    with db.read() as conn:
        [entry] = audit.entries(conn, action="device.enrol")
        assert entry.target == record.id
        assert entry.source == "198.51.100.7"
        assert entry.details["public_key"] == base64.b64encode(key).decode()


def test_assign_rename_disable_and_filters(db: Database) -> None:
    with db.write() as tx:
        a = devices.enrol(tx, ACTOR, public_key=_key(), kind="speaker", zone="20194").id
        b = devices.enrol(tx, ACTOR, public_key=_key(), kind="board", zone="48").id
        c = devices.enrol(tx, ACTOR, public_key=_key(), kind="speaker", zone=None).id
    with db.write() as tx:
        devices.assign(tx, ACTOR, c, "20194")
        devices.rename(tx, ACTOR, a, "Thôn 1")
        devices.set_disabled(tx, ACTOR, b, True)
        with pytest.raises(NotFoundError):
            devices.assign(tx, ACTOR, a, "missing")
    with db.read() as conn:
        assert {d.id for d in devices.list_devices(conn, within="20194")} == {a, c}
        assert {d.id for d in devices.list_devices(conn, zone="48")} == {a, b, c}
        assert [d.id for d in devices.list_devices(conn, disabled=True)] == [b]
        assert [d.id for d in devices.list_devices(conn, kind="board")] == [b]
        assert [d.id for d in devices.list_devices(conn, q="Thôn")] == [a]
        ordered = sorted([a, b, c])
        assert [d.id for d in devices.list_devices(conn, after=ordered[0], limit=1)] == [ordered[1]]
        assert [e.action for e in audit.entries(conn, limit=3)] == ["device.disable", "device.rename",
                                                                   "device.assign"]


def test_status_transitions_make_history_and_events(db: Database, clock: Clock) -> None:
    published: list[tuple[Event, ...]] = []
    db.publish = lambda events: published.append(tuple(events))
    with db.write() as tx:
        ident = devices.enrol(tx, ACTOR, public_key=_key(), kind="speaker", zone="20194").id
    published.clear()
    with db.write() as tx:
        online = devices.record_status(tx, ident, online=True, status={"fw": "1.4.2", "volume": 80}, reason="hello")
    assert (online.online, online.firmware, online.last_seen) == (True, "1.4.2", clock.now)
    clock.now += timedelta(minutes=1)
    with db.write() as tx:
        same = devices.record_status(tx, ident, status={"volume": 70})
    assert same.status == {"fw": "1.4.2", "volume": 70}
    clock.now += timedelta(minutes=1)
    with db.write() as tx:
        faulty = devices.record_status(tx, ident, status={"faults": ["line_open"]})
    assert faulty.faulty
    clock.now += timedelta(minutes=1)
    with db.write() as tx:
        offline = devices.record_status(tx, ident, online=False, reason="keepalive timeout")
    assert not offline.online
    assert offline.last_seen == clock.now - timedelta(minutes=1)
    events = [e for batch in published for e in batch]
    assert [(e.topic, e.data["online"], e.data["faulty"]) for e in events] == [
        ("device.status", True, False), ("device.status", True, True), ("device.status", False, True)]
    assert events[0].zones == ("48", "20194")
    assert events[1].data["faults"] == ["line_open"]
    with db.read() as conn:
        changes = devices.history(conn, ident)
        assert [(c.online, c.reason) for c in changes] == [(False, "keepalive timeout"), (True, "hello")]
        assert [c.online for c in devices.history(conn, ident, before=changes[0].id)] == [True]
        assert [d.id for d in devices.list_devices(conn, faulty=True)] == [ident]


_UPDATES = st.lists(st.tuples(
    st.integers(0, 2),
    st.sampled_from([None, True, False]),
    st.none() | st.dictionaries(st.sampled_from(["fw", "model", "volume", "faults"]),
                                st.sampled_from(["1.0", "x" * 70, 3, [], ["amp"], None]), max_size=3),
    st.sampled_from([None, "", "session", "timeout", "r" * 80])), max_size=12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(updates=_UPDATES)
def test_a_batch_of_status_updates_is_the_same_as_one_at_a_time(db: Database, updates: list[Any]) -> None:
    """record_statuses writes in a few statements what record_status writes update by update: the same records,
    history and events."""
    published: list[Event] = []
    db.publish = published.extend
    with db.write() as tx:
        one = [devices.enrol(tx, ACTOR, public_key=_key(), kind="speaker", zone="20194").id for _ in range(3)]
        batch = [devices.enrol(tx, ACTOR, public_key=_key(), kind="speaker", zone="20194").id for _ in range(3)]
    published.clear()
    with db.write() as tx:
        for device, online, status, reason in updates:
            devices.record_status(tx, one[device], online=online, status=status, reason=reason)
    seen_one, published[:] = list(published), []
    with db.write() as tx:
        returned = devices.record_statuses(tx, [devices.StatusUpdate(batch[device], online, status, reason)
                                                for device, online, status, reason in updates])
    seen_batch = list(published)
    rename = dict(zip(one, batch, strict=True))

    assert [({**e.data, "device": rename[e.data["device"]]}, e.zones) for e in seen_one] == [
        (e.data, e.zones) for e in seen_batch]
    with db.read() as conn:
        for a, b in rename.items():
            first, second = devices.get(conn, a), devices.get(conn, b)
            fields = ("online", "faulty", "last_seen", "status", "status_at", "model", "firmware")
            assert [getattr(first, f) for f in fields] == [getattr(second, f) for f in fields]
            assert [(c.online, c.reason) for c in devices.history(conn, a)] == [
                (c.online, c.reason) for c in devices.history(conn, b)]
            if b in returned:
                assert returned[b] == second


def test_a_status_batch_naming_an_unknown_device_writes_nothing(db: Database) -> None:
    with db.write() as tx:
        ident = devices.enrol(tx, ACTOR, public_key=_key(), kind="speaker", zone="20194").id
    with pytest.raises(NotFoundError), db.write() as tx:
        devices.record_statuses(tx, [devices.StatusUpdate(ident, online=True),
                                     devices.StatusUpdate("0" * 16, online=True)])
    with db.read() as conn:
        assert not devices.get(conn, ident).online
        assert devices.history(conn, ident) == []


def test_enrolment_tokens(db: Database, clock: Clock) -> None:
    with db.write() as tx:
        shown, record = enrolment.create_token(tx, ACTOR, zone="20194", ttl=timedelta(days=7), kind="speaker",
                                             name="Cụm loa đình làng")
    assert len(shown) == 19
    assert shown.count("-") == 3
    assert record.hint == shown[:4]
    key = _key()
    with db.write() as tx:
        # What an installer types: lower case, without dashes.
        device = enrolment.redeem_token(tx, shown.replace("-", "").lower(), public_key=key, kind="speaker",
                                      model="LOA-S1", firmware="1.4.2", source="100.64.0.9")
    assert (device.id, device.zone, device.name, device.model) == (device_id(key), "20194", "Cụm loa đình làng",
                                                                  "LOA-S1")
    assert device.enrolled_by == f"token:{record.id}"
    for token, kind in ((shown, "speaker"), ("AAAA-BBBB-CCCC-DDDD", "speaker")):
        with pytest.raises(InvalidError, match="enrolment refused"), db.write() as tx:
            enrolment.redeem_token(tx, token, public_key=_key(), kind=kind)
    with db.write() as tx:
        board_only, _ = enrolment.create_token(tx, ACTOR, zone="48", ttl=timedelta(hours=1), kind="board")
        expiring, _ = enrolment.create_token(tx, ACTOR, zone="48", ttl=timedelta(hours=1))
        revoked, revoked_record = enrolment.create_token(tx, ACTOR, zone="48", ttl=timedelta(hours=1))
        enrolment.revoke_token(tx, ACTOR, revoked_record.id)
    with pytest.raises(InvalidError), db.write() as tx:
        enrolment.redeem_token(tx, board_only, public_key=_key(), kind="speaker")
    with pytest.raises(InvalidError), db.write() as tx:
        enrolment.redeem_token(tx, revoked, public_key=_key(), kind="speaker")
    with db.read() as conn:
        assert len(enrolment.list_tokens(conn, active_at=clock.now)) == 2
        assert enrolment.enrolment_open(conn, clock.now)
    clock.now += timedelta(hours=2)
    with pytest.raises(InvalidError), db.write() as tx:
        enrolment.redeem_token(tx, expiring, public_key=_key(), kind="speaker")
    with db.read() as conn:
        assert enrolment.list_tokens(conn, active_at=clock.now) == []
        assert not enrolment.enrolment_open(conn, clock.now)
        assert {t.zone for t in enrolment.list_tokens(conn, within="20194")} == {"20194"}
        entry = audit.entries(conn, action="device.enrol_token")[0]
        assert (entry.actor, entry.source) == (f"device:{device.id}", "100.64.0.9")
    with pytest.raises(ConflictError, match="already used"), db.write() as tx:
        enrolment.revoke_token(tx, ACTOR, record.id)
    with pytest.raises(InvalidError, match="1 minute"), db.write() as tx:
        enrolment.create_token(tx, ACTOR, zone="48", ttl=timedelta(days=365))
