"""The device's alert book (loa.devices.alerts.AlertBook): what it remembers against replays, and for how long."""

from __future__ import annotations

from unittest.mock import patch

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from loa.devices import alerts
from loa.devices.alerts import CANCEL_MEMORY_NS, AlertBook
from loa.protocol.alert import Alert, AlertCancel, key_id, sign_alert, sign_cancel
from loa.protocol.errors import ExpiredError, ReplayError

NS = 1_000_000_000
T0 = 1_750_000_000 * NS
AUTHORITY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
AUTHORITY_PUBLIC = AUTHORITY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
KID = key_id(AUTHORITY_PUBLIC)
KEPT = 5  # MAX_REMEMBERED while the test runs, so that the oldest is forgotten often

_steps = st.lists(
    st.one_of(
        st.tuples(st.just("alert"), st.integers(0, 9), st.integers(-60, 3600)),  # id, expires - now (s)
        st.tuples(st.just("cancel"), st.integers(0, 9), st.just(0)),
        st.tuples(st.just("wait"), st.just(0), st.integers(0, 2 * 24 * 3600)),  # s, then expire()
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(_steps)
def test_the_next_expiry_is_always_the_earliest_time_remembered(steps: list[tuple[str, int, int]]) -> None:
    """``next_expiry`` (read at every timeout) is kept beside what the book remembers; a model of section 6.5's
    memory (accepted pairs until their ``expires``, cancelled ones at least a day, the earliest forgotten first
    when it is full) says what that is after every accept, cancel and expiry."""
    remembered: dict[str, int] = {}  # id -> until, in the order the book's dict keeps
    accepted: set[str] = set()
    expires_of: dict[str, int] = {}
    now = T0
    with patch.object(alerts, "MAX_REMEMBERED", KEPT):
        book = AlertBook([AUTHORITY_PUBLIC])

        def remember(ident: str, until: int) -> None:
            remembered[ident] = until
            if len(remembered) > KEPT:
                del remembered[min(remembered, key=remembered.__getitem__)]  # still accepted, if it was

        for kind, n, arg in steps:
            ident = f"a-{n}"
            if kind == "alert":
                expires = now + arg * NS
                body, sig = sign_alert(Alert(id=ident, kid=KID, status="actual", cls=2, lvl=2, zones=("79",),
                                             issued=min(now, expires - 1), expires=expires, bid=100 + n), AUTHORITY)
                try:
                    book.accept(body, sig, now=now, zones=("79",), exercise=False)
                except ExpiredError:
                    assert expires <= now
                except ReplayError:
                    assert ident in remembered
                else:
                    assert expires > now
                    assert ident not in remembered
                    accepted.add(ident)
                    expires_of[ident] = expires
                    remember(ident, expires)
            elif kind == "cancel":
                body, sig = sign_cancel(AlertCancel(kid=KID, cancel=ident, issued=now), AUTHORITY)
                bid = book.cancel(body, sig, now=now)
                assert (bid is not None) == (ident in accepted)
                until = expires_of[ident] if ident in accepted else now + CANCEL_MEMORY_NS
                accepted.discard(ident)
                remember(ident, max(until, remembered.get(ident, until)))
            else:
                now += arg * NS
                ended = book.expire(now)
                gone = {i for i, until in remembered.items() if until <= now}
                assert sorted(ended) == sorted(100 + int(i[2:]) for i in gone & accepted)
                for i in gone:
                    del remembered[i]
                accepted -= gone
            assert book.remembered() == len(remembered)
            assert book.next_expiry() == min(remembered.values(), default=None)
