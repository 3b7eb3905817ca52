"""loa sessions (PROTOCOL.md section 3, spec/parts/session.md), sans-I/O in the style of h11/h2.

Both sides take datagrams and ``now`` (float seconds on the caller's clock) and return events; datagrams to send
are drained with ``datagrams_to_send()``; the caller calls ``handle_timeout(now)`` at ``next_timeout()``.

* :class:`DeviceSession` - the initiator: ``connect``, ``send``, ``receive_datagram``, ``close``.
* :class:`ServerEndpoint` - the responder for many devices: ``receive_datagram(data, address, now)``,
  ``send(device, plaintext, now)``, ``forget``.

Events (frozen dataclasses; ``device_pub`` is None on the device side):

* :class:`SessionStarted` ``(device_pub, boot, peer_restarted)`` - a new session can carry messages.
* :class:`Message` ``(device_pub, plaintext)`` - an authenticated control-message plaintext.
* :class:`Keepalive` ``(device_pub)`` - an authenticated empty transport message.
* :class:`SessionLost` ``(device_pub)`` - no usable session remains.
* :class:`Dropped` ``(error)`` - a datagram was dropped and counted under this error name.

Failure semantics: ``receive_datagram`` never raises for any bytes (bad input becomes ``Dropped`` and a counter
in ``statistics()``, and changes no state); local calls that the transition tables do not allow raise
:class:`~loa.protocol.errors.LocalProtocolError` and change nothing.
"""

from __future__ import annotations

from loa.protocol._session_core import (
    DEAD_AFTER,
    HANDSHAKES_PER_SECOND_BEFORE_COOKIE,
    JOIN_JITTER,
    JOIN_RETRY,
    KEEPALIVE_INTERVAL,
    NOISE_PROTOCOL,
    PROLOGUE,
    REJECT_AFTER_TIME,
    REKEY_AFTER_TIME,
    REKEY_JITTER,
    REKEY_TIMEOUT,
    RETRY_MAX,
    RETRY_ROUND_TRIPS,
    Dropped,
    Event,
    Keepalive,
    Message,
    SessionLost,
    SessionStarted,
    device_id,
)
from loa.protocol._session_device import (
    DEVICE_TRANSITIONS,
    DeviceInput,
    DeviceSession,
    DeviceState,
    DeviceStatistics,
)
from loa.protocol._session_server import (
    SERVER_TRANSITIONS,
    PeerState,
    ServerEndpoint,
    ServerInput,
    ServerStatistics,
)
from loa.protocol.cookie import COOKIE_LIFETIME, COOKIE_SECRET_LIFETIME, Address

__all__ = [
    "COOKIE_LIFETIME",
    "COOKIE_SECRET_LIFETIME",
    "DEAD_AFTER",
    "DEVICE_TRANSITIONS",
    "HANDSHAKES_PER_SECOND_BEFORE_COOKIE",
    "JOIN_JITTER",
    "JOIN_RETRY",
    "KEEPALIVE_INTERVAL",
    "NOISE_PROTOCOL",
    "PROLOGUE",
    "REJECT_AFTER_TIME",
    "REKEY_AFTER_TIME",
    "REKEY_JITTER",
    "REKEY_TIMEOUT",
    "RETRY_MAX",
    "RETRY_ROUND_TRIPS",
    "SERVER_TRANSITIONS",
    "Address",
    "DeviceInput",
    "DeviceSession",
    "DeviceState",
    "DeviceStatistics",
    "Dropped",
    "Event",
    "Keepalive",
    "Message",
    "PeerState",
    "ServerEndpoint",
    "ServerInput",
    "ServerStatistics",
    "SessionLost",
    "SessionStarted",
    "device_id",
]
