"""The audit log: append-only, tamper-evident (a SHA-256 hash chain), written in the transaction it records.

Entry ``n`` stores ``hash_n = SHA-256(hash_{n-1} || canonical(entry_n))`` with ``hash_0`` = 32 zero bytes and
``canonical`` the UTF-8 JSON of ``{seq, at, actor, action, target, details, source}`` with keys sorted, no
whitespace and non-ASCII kept as is (details hold strings, integers, booleans, null, lists and objects: no
floats, so every language computes the same bytes). ``seq`` runs 1, 2, 3... without gaps; the one-row table
``audit_head`` holds the last ``seq`` and hash. A transaction's entries are appended just before it commits,
under a lock on that row, so concurrent writers are ordered and every change's entry commits or rolls back with
the change itself.

:func:`verify` walks the chain and names the first entry that is missing, altered, reordered or inserted, and
entries cut off the end (the head disagrees). A chain can be rewritten from some point on by whoever can write
the database and recompute hashes; record :attr:`AuditReport.head` elsewhere now and then and pass it back as
``expect`` to detect that too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select, update

from loa.control_plane.db import Tx
from loa.control_plane.db.schema import audit_head, audit_log
from loa.control_plane.events import Event

__all__ = ["GENESIS", "AuditEntry", "AuditReport", "entries", "entry_hash", "format_time", "record", "verify"]

GENESIS = "0" * 64
_BATCH = 1000
MAX_DETAILS = 16_384


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    at: str
    actor: str
    action: str
    target: str
    details: Mapping[str, Any]
    source: str | None
    hash: str


@dataclass(frozen=True, slots=True)
class AuditReport:
    """The outcome of :func:`verify`: ``ok``, how many entries were checked, and the first problem if any."""

    ok: bool
    entries: int
    head_seq: int
    head_hash: str
    bad_seq: int | None = None
    problem: str | None = None

    @property
    def head(self) -> str:
        """``SEQ:HASH`` of the verified chain's last entry: record it elsewhere to pin the chain later."""
        return f"{self.head_seq}:{self.head_hash}"

    def summary(self) -> str:
        if self.ok:
            return f"audit log intact: {self.entries} entries, head {self.head}"
        return f"audit log BROKEN at entry {self.bad_seq}: {self.problem}"


def format_time(when: datetime) -> str:
    """The fixed ISO 8601 form the log stores (UTC, microseconds, ``Z``); it sorts as text."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _check_json(value: Any, path: str = "details") -> None:
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_json(item, f"{path}[{i}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{path}: keys must be strings, not {type(key).__name__}")
            _check_json(item, f"{path}.{key}")
        return
    raise TypeError(f"{path}: {type(value).__name__} is not allowed in audit details")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def entry_hash(prev_hash: str, *, seq: int, at: str, actor: str, action: str, target: str,
               details: Mapping[str, Any], source: str | None) -> str:
    """``SHA-256(prev || canonical(entry))`` as lowercase hex."""
    body = _canonical({"seq": seq, "at": at, "actor": actor, "action": action, "target": target,
                       "details": details, "source": source})
    return hashlib.sha256(bytes.fromhex(prev_hash) + body.encode("utf-8")).hexdigest()


def record(tx: Tx, *, actor: str, action: str, target: str = "", details: Mapping[str, Any] | None = None,
           source: str | None = None) -> None:
    """Add one entry to ``tx``: it is appended when ``tx`` commits, in the same transaction, so it commits or rolls
    back with the change it records.

    The entries of a transaction are chained just before it commits, after all its other writes: the lock on the
    chain's head is thus always the last lock a transaction takes, so writers cannot deadlock on it, and it is
    held only for the commit. Raises ``TypeError`` for details that are not plain JSON (floats included) and
    ``ValueError`` when they exceed ``MAX_DETAILS`` bytes (at once, not at commit).
    """
    details = dict(details or {})
    _check_json(details)
    if len(_canonical(details).encode("utf-8")) > MAX_DETAILS:
        raise ValueError(f"audit details exceed {MAX_DETAILS} bytes")
    pending: list[tuple[str, str, str, dict[str, Any], str | None]] = tx.state.setdefault("audit", [])
    if not pending:
        tx.before_commit.append(lambda: _append(tx, pending))
    pending.append((actor, action, target, details, source))


def _append(tx: Tx, pending: list[tuple[str, str, str, dict[str, Any], str | None]]) -> None:
    head = tx.conn.execute(
        select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1).with_for_update()).one()
    seq, digest, at = head.seq, head.hash, format_time(tx.now)
    rows = []
    for actor, action, target, details, source in pending:
        seq += 1
        digest = entry_hash(digest, seq=seq, at=at, actor=actor, action=action, target=target, details=details,
                            source=source)
        rows.append({"seq": seq, "at": at, "actor": actor, "action": action, "target": target,
                     "details": _canonical(details), "source": source, "hash": digest})
        tx.emit(Event("audit", {"seq": seq, "at": at, "actor": actor, "action": action, "target": target,
                                "source": source}, permission="audit.read"))
    tx.conn.execute(audit_log.insert(), rows)
    tx.conn.execute(update(audit_head).where(audit_head.c.id == 1).values(seq=seq, hash=digest))


def _rows(conn: Connection) -> Iterator[Any]:
    after = 0
    while True:
        batch = conn.execute(
            select(audit_log).where(audit_log.c.seq > after).order_by(audit_log.c.seq).limit(_BATCH)).all()
        yield from batch
        if len(batch) < _BATCH:
            return
        after = batch[-1].seq


def verify(conn: Connection, *, expect: tuple[int, str] | None = None) -> AuditReport:
    """Check the whole chain (in batches; memory stays bounded) and the head; optionally a pinned ``(seq, hash)``."""
    prev, expected, checked = GENESIS, 1, 0
    pinned_seen = expect is None or expect[0] == 0

    def broken(seq: int, problem: str) -> AuditReport:
        return AuditReport(False, checked, expected - 1, prev, seq, problem)

    for row in _rows(conn):
        if row.seq != expected:
            return broken(expected, f"entry {expected} is missing (the next entry is {row.seq})")
        try:
            details = json.loads(row.details)
        except ValueError:
            return broken(row.seq, "its details are not valid JSON")
        if not isinstance(details, dict):
            return broken(row.seq, "its details are not a JSON object")
        digest = entry_hash(prev, seq=row.seq, at=row.at, actor=row.actor, action=row.action, target=row.target,
                            details=details, source=row.source)
        if digest != row.hash:
            return broken(row.seq, "it does not match its hash: altered, reordered or inserted")
        if expect is not None and row.seq == expect[0]:
            if row.hash != expect[1]:
                return broken(row.seq, f"its hash differs from the pinned head {expect[0]}:{expect[1]}")
            pinned_seen = True
        prev, expected, checked = row.hash, expected + 1, checked + 1
    head = conn.execute(select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)).one_or_none()
    if head is None:
        return broken(expected, "the audit head record is missing")
    if head.seq != expected - 1 or head.hash != prev:
        if head.seq >= expected:
            return broken(expected, f"entries {expected}..{head.seq} are missing from the end of the log")
        return broken(expected - 1, f"the head ({head.seq}:{head.hash}) does not match the last entry")
    if not pinned_seen:
        assert expect is not None
        return broken(expect[0], f"the pinned entry {expect[0]} is not in the log (the log ends at {expected - 1})")
    return AuditReport(True, checked, expected - 1, prev)


def entries(conn: Connection, *, before: int | None = None, limit: int = 100, actor: str | None = None,
            action: str | None = None, target: str | None = None, since: datetime | None = None,
            until: datetime | None = None) -> list[AuditEntry]:
    """Entries newest first, optionally only those before ``seq`` ``before`` and matching the filters."""
    query = select(audit_log).order_by(audit_log.c.seq.desc()).limit(limit)
    if before is not None:
        query = query.where(audit_log.c.seq < before)
    if actor is not None:
        query = query.where(audit_log.c.actor == actor)
    if action is not None:
        query = query.where(audit_log.c.action == action)
    if target is not None:
        query = query.where(audit_log.c.target == target)
    if since is not None:
        query = query.where(audit_log.c.at >= format_time(since))
    if until is not None:
        query = query.where(audit_log.c.at < format_time(until))
    out = []
    for row in conn.execute(query):
        try:
            details = json.loads(row.details)
        except ValueError:
            details = None
        if not isinstance(details, dict):
            details = {"unparsable": row.details}
        out.append(AuditEntry(row.seq, row.at, row.actor, row.action, row.target, details, row.source, row.hash))
    return out
