"""Live broadcasts and alerts at the server: who is a member, what each member was told, key rotation.

Sans-I/O; the core owns one :class:`LiveBroadcasts` and hands it a :class:`~loa.streamer.settings.DeviceLink`
to reach devices. For every live stream (a source played to zones) and every alert (the same, preceded by a
signed ``alert`` and ``amp``), it keeps the members (the enrolled speakers standing in the target zones), sends
each its ``join``, puts its session address (or its zone's multicast group) among the stream's destinations,
follows acknowledgements to know who holds which key, and rotates the key when membership shrinks and before a
stream's sequence number wraps (PROTOCOL.md sections 5.3, 5.4, 6.3-6.5, 7.3-7.5).

Failure semantics: the public calls validate first and raise ``ValueError`` subclasses with nothing changed
(``ZoneError`` for an unknown zone, ``AlertError`` for a refused alert or cancel, ``ValueError`` for a bad
class, level, policy or delay); ``KeyError`` for an unknown bid.
"""

from __future__ import annotations

import math
import random
from collections import Counter, deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from loa.codecs import CodecError
from loa.protocol.alert import PublicKey
from loa.protocol.beacon import encode_beacon
from loa.protocol.control import Amp, Join, Leave, Rotate, SignedAlert, SignedAlertCancel
from loa.protocol.errors import LocalProtocolError
from loa.protocol.priority import Policy, rank
from loa.streamer.alerts import (
    AlertError,
    AlertRecord,
    AlertTargets,
    check_signed_alert,
    check_signed_cancel,
    sign_new_alert,
    sign_new_cancel,
)
from loa.streamer.broadcast import ROTATE_GRACE_S, LiveBroadcast, Member
from loa.streamer.destinations import Sink
from loa.streamer.registry import DeviceEntry, Registry
from loa.streamer.retransmit import RetransmitRing
from loa.streamer.settings import DeviceLink, Settings
from loa.streamer.sources import Source
from loa.streamer.status import BroadcastEnded, BroadcastStatus, StreamerEvent
from loa.streamer.zones import ZoneTree

__all__ = ["LiveBroadcasts", "check_target", "member_zone"]

Address = tuple[str, int]
_NS = 1_000_000_000


def check_target(tree: ZoneTree, zones: Sequence[str], cls: int, lvl: int, policy: str) -> tuple[str, ...]:
    """Validate a broadcast's target and rank; returns the zones without repeats. ZoneError/ValueError."""
    if isinstance(zones, str):
        zones = (zones,)
    if not zones:
        raise ValueError("a broadcast needs at least one zone")
    for code in zones:
        tree.get(code)
    try:
        rank(cls, lvl)
    except LocalProtocolError as exc:
        raise ValueError(str(exc)) from None
    if policy not in tuple(Policy):
        raise ValueError(f"policy must be 'resume' or 'drop', not {policy!r}")
    return tuple(dict.fromkeys(zones))


def member_zone(tree: ZoneTree, zones: Sequence[str], entry: DeviceEntry) -> str:
    """The target zone a member stands in (the ``zone`` of its ``join``/``play``, for reports)."""
    return next((z for z in zones if tree.is_within(entry.zone, z)), zones[0])


class LiveBroadcasts:
    """Every live stream and alert of one streamer."""

    def __init__(
        self,
        link: DeviceLink,
        *,
        zones: ZoneTree,
        registry: Registry,
        settings: Settings,
        groups: Mapping[str, Address],
        authorities: Mapping[bytes, PublicKey],
        server_time: Callable[[float], int],
        allocate_bid: Callable[[], int],
        claim_bid: Callable[[int], None],
        events: deque[StreamerEvent],
        drops: Counter[str],
        rng: random.Random,
        random_bytes: Callable[[int], bytes],
    ) -> None:
        self._link = link
        self._zones = zones
        self._registry = registry
        self._settings = settings
        self._groups = groups
        self.authorities = authorities
        self._server_time = server_time
        self._allocate_bid = allocate_bid
        self._claim_bid = claim_bid
        self._events = events
        self._drops = drops
        self._rng = rng
        self._random_bytes = random_bytes
        self._live: dict[int, LiveBroadcast] = {}
        self._covering: dict[int, set[str]] = {}
        self._alerts: dict[int, AlertRecord] = {}
        self._alert_ids: set[tuple[bytes, str]] = set()
        self._memberships: dict[bytes, set[int]] = {}
        self._watch: dict[bytes, set[int]] = {}
        # alerts announced (their `alert` queued) whose amp and stream start_alert has yet to send
        # announced alerts not started: (source, zones, policy, name, every target, the speakers among them)
        self._announced: dict[int, tuple[Source, tuple[str, ...], str, str, list[bytes], list[bytes]]] = {}

    # -- queries -----------------------------------------------------------------------------------------------

    def __contains__(self, bid: object) -> bool:
        return bid in self._live or bid in self._alerts

    def bids(self) -> list[int]:
        return list(self._live)

    def memberships(self, key: bytes) -> set[int]:
        return self._memberships.get(key, set())

    def ring_for(self, key: bytes, ssrc: int, now: float) -> RetransmitRing | None:
        """The retransmission ring of stream ``ssrc`` if ``key`` is a member of its broadcast, else None."""
        for bid in self._memberships.get(key, ()):
            ring = self._live[bid].ring_for(ssrc, now)
            if ring is not None:
                return ring
        return None

    def status(self, bid: int, is_online: Callable[[bytes], bool]) -> BroadcastStatus:
        broadcast = self._live[bid]
        stats = broadcast.stream.ring.statistics()
        return BroadcastStatus(
            bid, "alert" if bid in self._alerts else "live", broadcast.name, broadcast.zones, broadcast.cls,
            broadcast.lvl, broadcast.policy, len(broadcast.members), sum(map(is_online, broadcast.members)),
            broadcast.stream.ssrc, broadcast.frames, broadcast.silent_frames, broadcast.gaps,
            broadcast.late_frames, stats.resent, broadcast.rotating,
        )

    # -- the media plane ---------------------------------------------------------------------------------------

    def next_frame_time(self, bid: int) -> float | None:
        broadcast = self._live.get(bid)
        return None if broadcast is None else broadcast.next_frame_time()

    def produce(self, bid: int, now: float) -> list[bytes]:
        broadcast = self._live.get(bid)
        if broadcast is None:
            return []
        try:
            out = broadcast.produce(now)
        except CodecError:
            self._drops["source_failed"] += 1
            broadcast.stop(now)
            out = broadcast.produce(now)
        if broadcast.ended:
            self._finish(bid, "finished", now)
        elif broadcast.needs_rotation:  # its sequence number nears the wrap (section 5.3.2): every member may
            self._rotate(broadcast, now, grace_s=math.inf)  # take until then to acknowledge
        return out

    def destinations(self, bid: int) -> list[tuple[Hashable, tuple[Any, ...]]]:
        broadcast = self._live.get(bid)
        return [] if broadcast is None else broadcast.destinations.items()

    def attach_sink(self, bid: int, sink: Sink) -> None:
        self._live[bid].destinations.attach(sink)

    # -- starting and ending -----------------------------------------------------------------------------------

    def start(self, source: Source, zones: Sequence[str], now: float, *, cls: int, lvl: int, policy: str,
              name: str = "", delay_ms: int | None = None) -> int:
        targets = check_target(self._zones, zones, cls, lvl, policy)
        delay = self._check_delay(delay_ms)
        return self._start(self._allocate_bid(), source, targets, now, cls=cls, lvl=lvl, policy=policy, name=name,
                           delay_ms=delay, audio_from=None)

    def _check_delay(self, delay_ms: int | None) -> int:
        delay = self._settings.delay_ms if delay_ms is None else delay_ms
        if not 0 <= delay <= 10_000:
            raise ValueError(f"delay_ms must be 0-10000, not {delay}")
        return delay

    def _start(self, bid: int, source: Source, zones: tuple[str, ...], now: float, *, cls: int, lvl: int,
               policy: str, name: str, delay_ms: int, audio_from: float | None, alerted: bool = False) -> int:
        start = now + self._settings.start_lead_s
        broadcast = LiveBroadcast(
            bid, source, zones=zones, cls=cls, lvl=lvl, policy=policy, start=start,
            server_start_ns=self._server_time(start), name=name, delay_ms=delay_ms, audio_from=audio_from,
            encoder=self._settings.encoder, rng=self._rng, random_bytes=self._random_bytes,
        )
        self._live[bid] = broadcast
        self._covering[bid] = self._zones.covering(zones)
        self._add_members(broadcast, sorted(self._registry.in_zones(self._covering[bid], kinds=("speaker",))), now,
                          alerted=alerted)
        return bid

    def stop(self, bid: int, now: float) -> None:
        """End a live stream or alert now. KeyError if it is not running."""
        rec = self._alerts.get(bid)
        if bid not in self._live and (rec is None or rec.ended):
            raise KeyError(f"no running broadcast {bid}")
        self._end(bid, "stopped", now)

    def _end(self, bid: int, reason: str, now: float) -> None:
        broadcast = self._live.get(bid)
        if broadcast is not None:
            broadcast.stop(now)
            self._finish(bid, reason, now)
            return
        rec = self._alerts[bid]
        if not rec.ended:
            rec.ended = True
            self._amp_off(rec, now)

    def _finish(self, bid: int, reason: str, now: float) -> None:
        """Members leave at once; the broadcast stays until its frame clock has sent the closing BYE."""
        broadcast = self._live[bid]
        if self._covering.pop(bid, None) is not None:
            since = self._born(bid)
            for key in list(broadcast.members):
                self._memberships[key].discard(bid)
                self._link.end(key, bid, Leave(bid=bid), now, since=since)
                self._unwatch(key, bid)
            broadcast.members.clear()
            rec = self._alerts.get(bid)
            if rec is not None and not rec.ended:
                rec.ended = True
                self._amp_off(rec, now)
            self._events.append(BroadcastEnded(bid, reason))
        if broadcast.ended:
            del self._live[bid]

    def _born(self, bid: int) -> float:
        """When this run first sent anything of broadcast ``bid``: an alert's beacon, else the stream's start."""
        rec = self._alerts.get(bid)
        return rec.announced_at if rec is not None else self._live[bid].start

    def close(self, now: float) -> None:
        """End every live broadcast: members are told ``leave``; each frame clock sends its closing BYE at its
        next frame."""
        for bid in list(self._live):
            self._live[bid].stop(now)
            self._finish(bid, "stopped", now)

    # -- members -----------------------------------------------------------------------------------------------

    def _group_for(self, bid: int, entry: DeviceEntry, key: bytes) -> str | None:
        """The multicast group of the member's nearest zone inside the target that has one; only for devices
        that said (in ``hello``) they can join groups."""
        hello = self._link.runtime(key).hello
        if not self._groups or hello is None or "multicast" not in hello.caps:
            return None
        covering = self._covering[bid]
        for code in reversed(self._zones.path(entry.zone)):
            if code not in covering:
                break
            group = self._groups.get(code)
            if group is not None:
                host, port = group
                return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return None

    def _add_member(self, broadcast: LiveBroadcast, key: bytes, now: float) -> None:
        self._add_members(broadcast, [key], now)

    def _add_members(self, broadcast: LiveBroadcast, keys: list[bytes], now: float, *, alerted: bool = False) -> None:
        """Make ``keys`` (enrolled speakers) members: of an alert they get ``alert`` and ``amp`` first (unless
        ``alerted``: already sent), then ``join``, each message encoded once for all of them."""
        added: list[tuple[bytes, Member]] = []
        for key in keys:
            entry = self._registry.entry(key)
            member = Member(zone=member_zone(self._zones, broadcast.zones, entry))
            member.group = self._group_for(broadcast.bid, entry, key)
            broadcast.members[key] = member
            self._memberships.setdefault(key, set()).add(broadcast.bid)
            added.append((key, member))
        if broadcast.bid in self._alerts and not alerted:
            self._send_alerts(broadcast.bid, keys, keys, now)
        self._send_joins(broadcast, added, now)
        for key, member in added:
            if member.group is not None:
                broadcast.groups[member.group] = broadcast.groups.get(member.group, 0) + 1
                host, _, port = member.group.rpartition(":")
                broadcast.destinations.set(("group", member.group), (host.strip("[]"), int(port)))
            self._place(broadcast, key)

    def _remove_member(self, broadcast: LiveBroadcast, key: bytes, now: float, *, notify: bool) -> None:
        member = broadcast.members.pop(key)
        self._memberships[key].discard(broadcast.bid)
        self._unwatch(key, broadcast.bid)
        if member.group is not None:
            broadcast.groups[member.group] -= 1
            if not broadcast.groups[member.group]:
                del broadcast.groups[member.group]
                broadcast.destinations.discard(("group", member.group))
        broadcast.destinations.discard(key)
        broadcast.rotation_acked(key)
        if notify:
            self._link.end(key, broadcast.bid, Leave(bid=broadcast.bid), now, since=self._born(broadcast.bid))

    def _send_join(self, broadcast: LiveBroadcast, key: bytes, member: Member, now: float) -> None:
        self._send_joins(broadcast, [(key, member)], now)

    def _send_joins(self, broadcast: LiveBroadcast, members: list[tuple[bytes, Member]], now: float) -> None:
        """``join`` to each member; one encoding per distinct (zone, group) of the members."""
        stream = broadcast.stream
        shapes: dict[tuple[str, str | None], list[tuple[bytes, Member]]] = {}
        for key, member in members:
            shapes.setdefault((member.zone, member.group), []).append((key, member))
        for (zone, group), same in shapes.items():
            join = Join(bid=broadcast.bid, ssrc=stream.ssrc, key=stream.key, cls=broadcast.cls, lvl=broadcast.lvl,
                        policy=broadcast.policy, zone=zone, delay_ms=broadcast.delay_ms, group=group)
            ids = self._link.send_many([key for key, _ in same], join, now)
            for (key, member), msg_id in zip(same, ids, strict=True):
                member.join_id = msg_id
                member.join_acked = False
                member.rotate_id = None
                member.gen = stream.gen
                self._watch.setdefault(key, set()).add(broadcast.bid)

    def _place(self, broadcast: LiveBroadcast, key: bytes) -> None:
        """Put a member's unicast destination where its session is (or take it out while it has none)."""
        member = broadcast.members.get(key)
        if member is None or member.group is not None:
            return
        address = self._link.online_address(key)
        if address is None:
            broadcast.destinations.discard(key)
        else:
            broadcast.destinations.set(key, address)

    def device_moved(self, key: bytes) -> None:
        """``key`` came online, went offline or roamed: follow its session address."""
        for bid in self._memberships.get(key, ()):
            self._place(self._live[bid], key)

    def device_offline(self, key: bytes) -> None:
        for bid in self._memberships.get(key, ()):
            broadcast = self._live[bid]
            broadcast.destinations.discard(key)
            broadcast.rotation_acked(key)  # an offline member does not hold a rotation up

    def resync(self, key: bytes, entry: DeviceEntry | None, now: float) -> None:
        """Bring ``key``'s memberships in line with its registry entry (None: removed). A member that no longer
        belongs is told ``leave`` (unless revoked or removed) and the stream's key rotates."""
        active = entry is not None and entry.enrolled
        for bid, broadcast in list(self._live.items()):
            if bid not in self._covering:
                continue  # ending
            wanted = active and entry is not None and entry.kind == "speaker" and entry.zone in self._covering[bid]
            if key in broadcast.members and not wanted:
                self._remove_member(broadcast, key, now, notify=active)
                self._rotate(broadcast, now)
            elif wanted and key not in broadcast.members:
                self._add_member(broadcast, key, now)

    def send_state(self, key: bytes, entry: DeviceEntry, now: float) -> None:
        """What ``key`` must be told after it (or the server) started: its alerts and joins. Messages still in
        flight are not repeated (they will arrive); acknowledged ones are (a restarted device lost them)."""
        for bid, rec in self._alerts.items():
            if key in rec.targets and not rec.ended and rec.cancel is None:
                self._send_alerts(bid, [key], [key] if entry.kind == "speaker" else [], now)
        for bid in self._memberships.get(key, ()):
            broadcast = self._live[bid]
            member = broadcast.members[key]
            if member.join_id is None or self._link.acked(key, member.join_id):
                self._send_join(broadcast, key, member, now)

    # -- key rotation (section 5.4) ----------------------------------------------------------------------------

    def _rotate(self, broadcast: LiveBroadcast, now: float, *, grace_s: float = ROTATE_GRACE_S) -> None:
        broadcast.begin_rotation(now, grace_s=grace_s)
        self._send_rotates(broadcast, [(k, m) for k, m in broadcast.members.items() if m.join_acked], now)

    def _send_rotate(self, broadcast: LiveBroadcast, key: bytes, member: Member, now: float) -> None:
        self._send_rotates(broadcast, [(key, member)], now)

    def _send_rotates(self, broadcast: LiveBroadcast, members: list[tuple[bytes, Member]], now: float) -> None:
        """``rotate`` to each member, encoded once."""
        stream = broadcast.latest
        rotate = Rotate(bid=broadcast.bid, ssrc=stream.ssrc, key=stream.key)
        ids = self._link.send_many([key for key, _ in members], rotate, now)
        rotating = broadcast.rotating
        for (key, member), msg_id in zip(members, ids, strict=True):
            member.rotate_id = msg_id
            member.gen = stream.gen
            self._watch.setdefault(key, set()).add(broadcast.bid)
            if rotating and self._link.online_address(key) is not None:
                broadcast.await_rotation_ack(key)

    def watching(self, key: bytes) -> bool:
        return key in self._watch

    def _unwatch(self, key: bytes, bid: int) -> None:
        watched = self._watch.get(key)
        if watched is not None:
            watched.discard(bid)
            if not watched:
                del self._watch[key]

    def check_acks(self, key: bytes, now: float) -> None:
        """Follow ``key``'s acknowledgements of ``join`` and ``rotate``: a member that acknowledged its join
        after a rotation began gets the new key; a rotation goes ahead once every online member has it."""
        for bid in list(self._watch.get(key, ())):
            broadcast = self._live[bid]
            member = broadcast.members[key]
            if not member.join_acked and member.join_id is not None and self._link.acked(key, member.join_id):
                member.join_acked = True
                if member.gen < broadcast.latest.gen:
                    self._send_rotate(broadcast, key, member, now)
            if member.rotate_id is not None and self._link.acked(key, member.rotate_id):
                member.rotate_id = None
                broadcast.rotation_acked(key)
            if member.join_acked and member.rotate_id is None:
                self._unwatch(key, bid)

    # -- alerts ------------------------------------------------------------------------------------------------

    def trigger_alert(self, source: Source, now: float, *, body: bytes | None, sig: bytes | None,
                      signing_key: Ed25519PrivateKey | None, zones: Sequence[str], cls: int, lvl: int, status: str,
                      alert_id: str | None, text: str | None, ttl_s: float | None, preroll_ms: int, policy: str,
                      name: str) -> int:
        bid = self.announce_alert(source, now, body=body, sig=sig, signing_key=signing_key, zones=zones, cls=cls,
                                  lvl=lvl, status=status, alert_id=alert_id, text=text, ttl_s=ttl_s,
                                  preroll_ms=preroll_ms, policy=policy, name=name)
        self.start_alert(bid, now)
        return bid

    def announce_alert(self, source: Source, now: float, *, body: bytes | None, sig: bytes | None,
                       signing_key: Ed25519PrivateKey | None, zones: Sequence[str], cls: int, lvl: int,
                       status: str, alert_id: str | None, text: str | None, ttl_s: float | None, preroll_ms: int,
                       policy: str, name: str) -> int:
        """The first half of :meth:`trigger_alert`: check (or sign) the alert and queue its beacon (section 6.4.2:
        the same datagram, unsealed) to every device of its zones that has a session; nothing else.
        :meth:`start_alert` must follow."""
        if not 0 <= preroll_ms <= 120_000:
            raise ValueError(f"preroll_ms must be 0-120000, not {preroll_ms}")
        now_ns = self._server_time(now)
        if body is not None and sig is not None:
            alert = check_signed_alert(body, sig, self.authorities, now_ns=now_ns, used=self._alert_ids)
        elif signing_key is not None:
            targets = check_target(self._zones, zones, cls, lvl, policy)
            ttl = self._settings.alert_ttl_s if ttl_s is None else ttl_s
            alert, body, sig = sign_new_alert(
                signing_key, bid=self._allocate_bid(), zones=targets, issued_ns=now_ns,
                expires_ns=now_ns + round(ttl * _NS), cls=cls, lvl=lvl, status=status, alert_id=alert_id, text=text,
            )
        else:
            raise AlertError("an alert needs a signed body and signature, or an authority key to sign it")
        known = tuple(z for z in dict.fromkeys(alert.zones) if z in self._zones)
        if not known:
            raise AlertError(f"alert {alert.id!r} targets no zone of this server ({', '.join(alert.zones)})")
        check_target(self._zones, known, alert.cls, alert.lvl, policy)
        try:
            self._claim_bid(alert.bid)
        except ValueError as exc:
            raise AlertError(str(exc)) from None
        expires_at = now + (alert.expires - now_ns) / _NS
        found = self._registry.kinds_in_zones(self._zones.covering(known), ("board", "speaker"))
        boards, speakers = found["board"], found["speaker"]
        self._alerts[alert.bid] = AlertRecord(alert, body, sig, preroll_ms, expires_at, now,
                                              AlertTargets(boards + speakers))
        self._alert_ids.add((alert.kid, alert.id))
        try:
            beacon = encode_beacon(body, sig)
        except LocalProtocolError:
            pass  # too long for one datagram: the reliable copies carry it alone
        else:
            self._link.send_beacon(boards + speakers, beacon)
        self._announced[alert.bid] = (source, known, policy, name or alert.id, boards + speakers, speakers)
        return alert.bid

    def start_alert(self, bid: int, now: float) -> None:
        """The second half of :meth:`trigger_alert`: the reliable ``alert`` to every device told of alert ``bid``,
        ``amp`` on to the speakers among them, then its stream and their ``join``. KeyError unless ``bid`` was
        announced and not started yet."""
        source, known, policy, name, targets, speakers = self._announced.pop(bid)
        rec = self._alerts[bid]
        self._link.send_tracked_many(targets, ("alert", bid), SignedAlert(body=rec.body, sig=rec.sig), now)
        self._link.send_tracked_many(speakers, ("amp", bid), Amp(on=True, preroll_ms=rec.preroll_ms), now)
        self._start(bid, source, known, now, cls=rec.alert.cls, lvl=rec.alert.lvl, policy=policy, name=name,
                    delay_ms=self._settings.delay_ms, audio_from=now + rec.preroll_ms / 1000, alerted=True)

    def _send_alerts(self, bid: int, keys: list[bytes], speakers: list[bytes], now: float) -> None:
        """The signed ``alert`` to every device of ``keys``, then ``amp`` on to the ``speakers`` among them: each
        message encoded once, all the alerts queued before any ``amp`` (they are what must arrive first)."""
        rec = self._alerts[bid]
        rec.targets.update(keys)
        self._link.send_tracked_many(keys, ("alert", bid), SignedAlert(body=rec.body, sig=rec.sig), now)
        self._link.send_tracked_many(speakers, ("amp", bid), Amp(on=True, preroll_ms=rec.preroll_ms), now)

    def _amp_off(self, rec: AlertRecord, now: float) -> None:
        preroll = self._settings.config.preroll_ms or 0
        for key in rec.targets:  # in sorted order
            entry = self._registry.get(key)
            if entry is not None and entry.enrolled and entry.kind == "speaker":
                self._link.send(key, Amp(on=False, preroll_ms=preroll), now)

    def cancel_alert(self, bid: int, now: float, *, body: bytes | None, sig: bytes | None,
                     signing_key: Ed25519PrivateKey | None) -> None:
        rec = self._alerts[bid]
        if rec.cancel is not None:
            return
        now_ns = self._server_time(now)
        if body is not None and sig is not None:
            check_signed_cancel(body, sig, self.authorities, rec.alert, now_ns=now_ns)
        elif signing_key is not None:
            body, sig = sign_new_cancel(signing_key, rec.alert, issued_ns=now_ns)
        else:
            raise AlertError("a cancel needs a signed body and signature, or the authority key to sign it")
        rec.cancel = (body, sig)
        for key in rec.targets:  # in sorted order
            self._link.end(key, bid, SignedAlertCancel(body=body, sig=sig), now, since=rec.announced_at)
        if not rec.ended:
            self._end(bid, "cancelled", now)

    def next_timeout(self) -> float | None:
        return min((rec.expires_at for rec in self._alerts.values()), default=None)

    def handle_timeout(self, now: float) -> None:
        """Alerts past their expiry end; their records (kept for replay checks) are forgotten."""
        for bid, rec in list(self._alerts.items()):
            if now >= rec.expires_at:
                if not rec.ended:
                    self._end(bid, "expired", now)
                for key in rec.targets:  # an expired alert is not played (section 6.4): what has not gone, goes not
                    self._link.end(key, bid, None, now, since=None)
                self._alert_ids.discard((rec.alert.kid, rec.alert.id))
                del self._alerts[bid]
